"""spec.nodeSelector on one node: which objects this node enforces, and what it says about the
rest (engine.core.selector, the Engine's compile and guard sites, status)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.core.crd import load_yaml
from engine.core.selector import selects, split_for_node
from engine.engine import Engine
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig, parse_config, parse_node_labels

RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: workers}
spec:
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules: [{order: 10, action: Deny, protocolConfig: {protocol: TCP, tcp: {ports: 8080}}}]
---
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: edge}
spec:
  nodeSelector: {matchLabels: {zone: edge}}
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [198.51.100.0/24]
    rules: [{order: 10, action: Deny, protocolConfig: {protocol: TCP, tcp: {ports: 9090}}}]
"""


@pytest.mark.parametrize(
    ("selector", "labels", "want"),
    [
        ({}, {}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"b": ""}, False),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"b": ""}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
            {"a": "5"},
            False,
        ),
    ],
)
def test_label_selector_semantics(
    selector: dict[str, Any], labels: dict[str, str], want: bool
) -> None:
    assert selects(selector, labels) is want


def test_split_for_node() -> None:
    rs = load_yaml(RULES)
    split = split_for_node(rs, {"node-role.kubernetes.io/worker": ""})
    assert [fw.name for fw in split.enforced.firewalls] == ["workers"]
    assert [fw.name for fw in split.other_nodes] == ["edge"]
    assert any("edge: not for this node" in n for n in split.notes())
    unknown = split_for_node(rs, None)
    assert len(unknown.enforced.firewalls) == 2 and not unknown.labels_known
    assert any("node labels unknown" in n for n in unknown.notes())


def test_node_labels_from_the_config_and_the_flag() -> None:
    assert parse_config({"nodeLabels": {"zone": "edge"}}).node_labels == {"zone": "edge"}
    assert parse_config({}).node_labels is None
    assert parse_node_labels("zone=edge, node-role.kubernetes.io/worker") == {
        "zone": "edge",
        "node-role.kubernetes.io/worker": "",
    }


def _engine(tmp_path: Path, labels: dict[str, str] | None) -> tuple[Engine, FakeKernel]:
    kernel = FakeKernel({"lo": 1, "eth0": 2})
    engine = Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(node_labels=labels),
        session=None,
        kernel=kernel,
    )
    return engine, kernel


def test_only_this_nodes_objects_are_compiled_and_the_rest_is_said(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path, {"zone": "edge"})
    tables, warnings = engine.check(load_yaml(RULES))
    assert any("workers: not for this node" in w for w in warnings)
    enforced = {info.firewall for info in tables.rules.values()}
    assert enforced == {"edge"}
    assert len(tables.rule_ids) == 2, "every stored rule keeps an id"
    result = engine.apply(load_yaml(RULES), confirm_timeout=0)
    assert result.rule_count == 2
    st = engine.status()
    assert st.node_labels == {"zone": "edge"} and st.not_for_node == ("workers",)
    trace = engine.trace("eth0", "192.0.2.7", "tcp", 8080)
    assert trace.reference_verdict == "ALLOW", "the workers' Deny is not for this node"


def test_status_says_when_labels_are_unknown(tmp_path: Path) -> None:
    engine, _ = _engine(tmp_path, None)
    engine.apply(load_yaml(RULES), confirm_timeout=0)
    st = engine.status()
    assert st.node_labels is None and st.not_for_node == ()
    assert engine.trace("eth0", "192.0.2.7", "tcp", 8080).reference_verdict == "DENY"
