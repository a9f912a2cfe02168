"""`apply` enforces where the objects say (issue #10.5), over the one fake kernel: it loads the
program if needed and attaches to the interfaces the objects name (globs resolved), under the
guard and commit-confirmed; an unconfirmed change also undoes the attachments it made."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.crd import load_yaml
from engine.core.frame import build_frame
from engine.engine import Engine
from engine.errors import GuardRefusal, PrivilegeError
from engine.kernel.fake import FakeKernel
from engine.kernel.seam import XDP_DROP, XDP_PASS
from engine.state.config import NodeConfig

IFACES = {"lo": 1, "eth0": 2, "eth1": 3, "ens3": 4}
RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web}
spec:
  interfaces: [IFACES]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules: [{order: 10, action: Deny, protocolConfig: {protocol: TCP, tcp: {ports: 8080}}}]
"""


def make(tmp_path: Path, kernel: FakeKernel) -> Engine:
    return Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(),
        session=None,
        kernel=kernel,
    )


def tcp(port: int) -> bytes:
    return build_frame("192.0.2.9", "192.0.2.1", 6, dport=port)


def test_a_fresh_nodes_first_apply_drops_on_the_named_interfaces(tmp_path: Path) -> None:
    kernel = FakeKernel(IFACES)
    engine = make(tmp_path, kernel)
    result = engine.apply(
        load_yaml(RULES.replace("IFACES", "eth0, 'ens*', wlan0")), confirm_timeout=0, attach=True
    )
    assert kernel.loads == 1
    assert sorted(kernel.xdp) == ["ens3", "eth0"]
    dp = kernel.pinned[engine.pin_root]
    assert dp.send(tcp(8080), "eth0") == XDP_DROP
    assert dp.send(tcp(8080), "ens3") == XDP_DROP
    assert dp.send(tcp(8080), "eth1") == XDP_PASS, "eth1 is not named"
    text = "\n".join(result.warnings)
    assert "attaching to eth0, ens3" in text and "wlan0" in text, "the missing one is reported"
    # the objects' own names and globs are stored, so the agent and restore follow them
    assert engine.state().interfaces == ("eth0", "ens*", "wlan0")
    kernel.links["wlan0"] = 7  # appears later
    assert any("attached to wlan0" in d for d in engine.follow_interfaces())
    assert kernel.pinned[engine.pin_root].send(tcp(8080), "wlan0") == XDP_DROP
    # Applying again attaches nothing new and compiles nothing.
    engine.apply(load_yaml(RULES.replace("IFACES", "eth0")), confirm_timeout=0, attach=True)
    assert kernel.loads == 1


def test_no_attach_stores_only_and_says_so(tmp_path: Path) -> None:
    kernel = FakeKernel(IFACES)
    engine = make(tmp_path, kernel)
    result = engine.apply(load_yaml(RULES.replace("IFACES", "eth0")), confirm_timeout=0)
    assert kernel.loads == 0 and not kernel.xdp
    assert any(w.startswith("NOT ENFORCED") for w in result.warnings)


def test_an_unconfirmed_apply_undoes_its_attachments(tmp_path: Path) -> None:
    kernel = FakeKernel(IFACES)
    engine = make(tmp_path, kernel)
    engine.attach(["eth1"])
    result = engine.apply(
        load_yaml(RULES.replace("IFACES", "eth0")), confirm_timeout=30, attach=True
    )
    assert result.pending is not None
    dp = kernel.pinned[engine.pin_root]
    assert dp.send(tcp(8080), "eth0") == XDP_DROP
    assert kernel.watchdog.run_due(engine.rollback_pending, now=result.pending.deadline + 1)
    assert sorted(kernel.xdp) == ["eth1"], "eth0 was attached by the change: detached again"
    assert engine.state().interfaces == ("eth1",)
    assert engine.state().ruleset.rule_count() == 0


def test_attaching_on_apply_goes_through_the_guard(tmp_path: Path) -> None:
    kernel = FakeKernel(IFACES)
    kernel.add_foreign("eth0")
    engine = make(tmp_path, kernel)
    with pytest.raises(GuardRefusal):
        engine.apply(load_yaml(RULES.replace("IFACES", "eth0")), confirm_timeout=0, attach=True)
    assert engine.state().generation == 0, "nothing stored"


def test_attaching_needs_privileges(tmp_path: Path) -> None:
    engine = make(tmp_path, FakeKernel(IFACES, privileged=False))
    with pytest.raises(PrivilegeError) as info:
        engine.apply(load_yaml(RULES.replace("IFACES", "eth0")), confirm_timeout=0, attach=True)
    assert "--no-attach" in str(info.value)


def test_restore_attaches_where_the_objects_say(tmp_path: Path) -> None:
    kernel = FakeKernel(IFACES)
    engine = make(tmp_path, kernel)
    engine.apply(load_yaml(RULES.replace("IFACES", "'eth*'")), confirm_timeout=0)  # stored only
    said: list[str] = []
    engine.restore(progress=said.append)
    assert sorted(kernel.xdp) == ["eth0", "eth1"]
