"""Cleanup end to end: after detach() (which unloads) and lab_down, nothing the test made is left:
no lab namespaces or veths, no pins under the test's pin root, no traffic processes, no
watchdogs or other processes naming the firewall.

Its own module, because it takes the lab down itself (the `lab` fixtures are module-scoped).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from engine.core.crd import load_yaml
from engine.lab.world import LAB_PIN_ROOT, NODE_NS, STATE_DIR, lab_down, lab_up, send_packets
from tests.support import lab_namespaces, traffic_pids, wait_for

pytestmark = [pytest.mark.root, pytest.mark.e2e]

RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: cleanup}
spec:
  interfaces: ["infw-n*"]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: UDP, udp: {ports: 5007}}
      action: Deny
"""


def _host_lab_links() -> list[str]:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = [link.get("ifname") or "" for link in ipr.get_links()]
    return sorted(n for n in names if n.startswith(("infw-n", "infw-c")))


def test_detach_and_lab_down_leave_nothing_behind(lab_firewall: Any) -> None:
    from engine.kernel.datapath import scan_attached

    try:
        lab_down()  # from nothing: someone else's lab (and firewall) would muddy the checks
        info = lab_up(rate=20.0, traffic=True, duration=60.0)
        assert info.up, info.problems
        assert len(traffic_pids()) == 2
        c1 = info.clients[0]
        eng = lab_firewall.engine()
        lab_firewall.node(eng.attach, ["infw-n*"])
        # A pending apply starts a watchdog process; confirming must let it go.
        result = lab_firewall.node(eng.apply, load_yaml(RULES), confirm_timeout=30)
        assert result.pending is not None
        watchdog = eng.store.get_pending().watchdog_pid
        assert watchdog in lab_firewall.leftover_processes()
        send_packets(c1.ns, c1.node_v4, "udp", dport=5007, count=3)
        log = Path(lab_firewall.state_dir) / "watchdog.log"
        assert wait_for(lambda: log.exists() and "armed" in log.read_text(), 3.0)
        eng.confirm()
        assert wait_for(lambda: watchdog not in lab_firewall.leftover_processes(), 3.0)

        assert lab_firewall.node(eng.detach, ["infw-n2"]) == ["infw-n2"]
        on_node = lab_firewall.node(scan_attached)
        assert [a.ifname for a in on_node] == ["infw-n1"]
        assert os.path.exists(os.path.join(lab_firewall.pin_root, "prog"))  # still loaded

        assert lab_firewall.node(eng.detach) == ["infw-n1"]  # no patterns: unload
        assert lab_firewall.node(scan_attached) == []
        assert not os.path.exists(lab_firewall.pin_root), os.listdir(lab_firewall.pin_root)
        assert not eng.loaded() and eng.status().loaded is False
        assert lab_firewall.node(eng.detach) == []  # again: nothing to do, no error
    finally:
        removed = lab_down()
    assert f"namespace {NODE_NS}" in removed
    assert lab_namespaces() == []
    assert _host_lab_links() == []
    assert traffic_pids() == []
    assert lab_firewall.leftover_processes() == []
    assert not os.path.exists(lab_firewall.pin_root)
    assert not Path(LAB_PIN_ROOT).exists()
    assert not STATE_DIR.exists()
