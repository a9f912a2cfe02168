"""Flows and the impact preview with real packets in the lab: the kernel's flow table shows
what the clients sent, the preview of a Deny names exactly the lab flows it will drop, and
after the apply exactly those are dropped."""

from __future__ import annotations

import time
from typing import Any

import pytest

from engine.core.crd import load_yaml
from engine.core.flows import FlowKey
from engine.core.model import Action
from engine.lab.world import LabInfo, send_packets
from engine.state.config import NodeConfig
from tests.e2e.labrules import CLIENT_NETS, PortRule, lab_firewall

pytestmark = [pytest.mark.root, pytest.mark.e2e]

RULES = lab_firewall("flows", (CLIENT_NETS, [PortRule(20, "TCP", 443, "Allow")]))
DENY_C1_443 = "deny tcp 443 from 192.0.2.0/24 order 10 firewall flows"


def flows_by_key(fw: Any, eng: Any) -> dict[FlowKey, Any]:
    return {f.key: f.stats for f in fw.node(eng.flows).flows}


def wait_packets(fw: Any, eng: Any, key: FlowKey, at_least: int) -> Any:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        stats = flows_by_key(fw, eng).get(key)
        if stats is not None and stats.packets >= at_least:
            return stats
        time.sleep(0.1)
    raise AssertionError(f"{key.text()}: fewer than {at_least} packets in the flows table")


def test_flows_preview_and_the_drops_after_apply_match(
    fresh_lab: LabInfo, lab_firewall: Any
) -> None:
    c1, c2 = fresh_lab.clients[0], fresh_lab.clients[1]
    eng = lab_firewall.engine(config=NodeConfig(event_rate=100_000, flow_sample=1))
    lab_firewall.node(eng.attach, ["infw-n*"])
    lab_firewall.node(eng.apply, load_yaml(RULES), confirm_timeout=0)
    c1_443 = FlowKey(c1.ifname_node, c1.v4, 6, 443)
    c2_443 = FlowKey(c2.ifname_node, c2.v4, 6, 443)
    c1_53 = FlowKey(c1.ifname_node, c1.v4, 17, 53)
    send_packets(c1.ns, c1.node_v4, "tcp", dport=443, count=6)
    send_packets(c2.ns, c2.node_v4, "tcp", dport=443, count=5)
    send_packets(c1.ns, c1.node_v4, "udp", dport=53, count=4)
    allow_id = eng.rule_rows()[0].rule_id
    first = wait_packets(lab_firewall, eng, c1_443, 6)
    assert (first.action, first.rule_id) == (Action.ALLOW, allow_id)
    assert wait_packets(lab_firewall, eng, c2_443, 5).rule_id == allow_id
    assert wait_packets(lab_firewall, eng, c1_53, 4).reason.value == "no match"

    preview = lab_firewall.node(eng.preview_add, DENY_C1_443)
    assert [c.key for c in preview.traffic.newly_denied] == [c1_443]
    assert preview.traffic.allowed_total.flows == 0

    lab_firewall.node(eng.add_rule, DENY_C1_443, confirm_timeout=0)
    deny_id = next(r.rule_id for r in eng.rule_rows() if r.order == 10)
    before = flows_by_key(lab_firewall, eng)
    send_packets(c1.ns, c1.node_v4, "tcp", dport=443, count=6)
    send_packets(c2.ns, c2.node_v4, "tcp", dport=443, count=5)
    send_packets(c1.ns, c1.node_v4, "udp", dport=53, count=4)
    now_c1 = wait_packets(lab_firewall, eng, c1_443, before[c1_443].packets + 6)
    assert (now_c1.action, now_c1.rule_id) == (Action.DENY, deny_id)
    now_c2 = wait_packets(lab_firewall, eng, c2_443, before[c2_443].packets + 5)
    assert (now_c2.action, now_c2.rule_id) == (Action.ALLOW, allow_id)
    wait_packets(lab_firewall, eng, c1_53, before[c1_53].packets + 4)
    # the drops are exactly the previewed flow: the Deny's counter took c1's six SYNs, and
    # nothing else was denied
    deny_packets = eng.datapath().rule_counters().get(deny_id, (0, 0))[0]
    assert 6 <= deny_packets <= 7, deny_packets  # a SYN may be retransmitted once
    dropped = {k for k, s in flows_by_key(lab_firewall, eng).items() if s.action is Action.DENY}
    assert dropped == {c1_443}
