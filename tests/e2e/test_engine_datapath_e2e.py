"""The engine's firewall end to end on the lab: real packets from client namespaces are passed or
dropped as the rules say, counted per rule and reported as drop events; the firewall outlives
the process that loaded it; an edit under traffic never shows a packet a mix of two rule sets.

Each test loads its own firewall (pin root /sys/fs/bpf/infw-e2e-<pid>-N, state in tmp_path) on
the lab's node interfaces and removes it afterwards (conftest.LabFirewall). The test process
stays in the host network namespace.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from typing import Any

import pytest

from engine.core.crd import load_yaml
from engine.kernel.abi import NodeCounter
from engine.lab.world import LabInfo, send_packets
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.e2e]

C1_V6_NET = "2001:db8:1::/64"

RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: e2e}
spec:
  interfaces: ["infw-n*"]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]            # c1, IPv4
    rules:
    - order: 10
      protocolConfig: {protocol: UDP, udp: {ports: 5001}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: TCP, tcp: {ports: 80}}
      action: Allow
  - sourceCIDRs: [198.51.100.0/24]         # c2, IPv4
    rules:
    - order: 10
      protocolConfig: {protocol: ICMP, icmp: {icmpType: 8}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: TCP, tcp: {ports: 80}}
      action: Allow
  - sourceCIDRs: ["2001:db8:1::/64"]       # c1, IPv6
    rules:
    - order: 10
      protocolConfig: {protocol: TCP, tcp: {ports: 9000}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 5002}}
      action: Allow
"""


def rule_ids(eng: Any) -> dict[tuple[str, int], int]:
    """(first source CIDR, order) -> rule id, from the engine's own rows."""
    return {(row.cidrs[0], row.order): row.rule_id for row in eng.rule_rows()}


def counters(eng: Any) -> tuple[dict[int, int], dict[NodeCounter, int]]:
    """Packets per rule id and per node counter, straight from the pinned maps."""
    dp = eng.datapath()
    per_rule = {rid: packets for rid, (packets, _) in dp.rule_counters().items()}
    node = {c: packets for c, (packets, _) in dp.node_counters().items()}
    return per_rule, node


def delta(after: dict[Any, int], before: dict[Any, int]) -> dict[Any, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def settle_counters(
    eng: Any, timeout: float = 2.0
) -> tuple[dict[int, int], dict[NodeCounter, int]]:
    """Counters once they stop moving (packets still in flight through the veth)."""
    last = counters(eng)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.15)
        now = counters(eng)
        if now == last:
            return now
        last = now
    return last


# ------------------------------------------------------------------------------- 1. verdicts


def test_real_packets_follow_the_rules_counters_and_events(
    fresh_lab: LabInfo, lab_firewall: Any
) -> None:
    c1, c2 = fresh_lab.clients[0], fresh_lab.clients[1]
    eng = lab_firewall.engine()
    views = lab_firewall.node(eng.attach, ["infw-n*"])
    assert sorted(v.name for v in views) == ["infw-n1", "infw-n2"]
    assert all(v.ours for v in views)
    result = lab_firewall.node(eng.apply, load_yaml(RULES), confirm_timeout=0)
    assert result.pending is None
    ids = rule_ids(eng)
    assert len(set(ids.values())) == 6
    events = lab_firewall.node(eng.open_events, max_per_second=10_000)
    events.poll(0)  # nothing from before

    rules_before, node_before = settle_counters(eng)
    n = 7
    sent = {
        "c1 udp 5001 (deny)": send_packets(c1.ns, c1.node_v4, "udp", dport=5001, count=n),
        "c1 tcp 80 (allow)": send_packets(c1.ns, c1.node_v4, "tcp", dport=80, count=n + 1),
        "c2 icmp echo (deny)": send_packets(c2.ns, c2.node_v4, "icmp", count=n + 2),
        "c2 tcp 80 (allow)": send_packets(c2.ns, c2.node_v4, "tcp", dport=80, count=n + 3),
        "c1 v6 tcp 9000 (deny)": send_packets(c1.ns, c1.node_v6, "tcp", dport=9000, count=n + 4),
        "c1 v6 udp 5002 (allow)": send_packets(c1.ns, c1.node_v6, "udp", dport=5002, count=n + 5),
        "c1 udp 5003 (no match)": send_packets(c1.ns, c1.node_v4, "udp", dport=5003, count=n + 6),
        "c2 tcp 22 (fail-safe)": send_packets(c2.ns, c2.node_v4, "tcp", dport=22, count=n + 7),
    }
    rules_after, node_after = settle_counters(eng)
    per_rule = delta(rules_after, rules_before)
    node = delta(node_after, node_before)

    assert per_rule == {
        ids[("192.0.2.0/24", 10)]: sent["c1 udp 5001 (deny)"],
        ids[("192.0.2.0/24", 20)]: sent["c1 tcp 80 (allow)"],
        ids[("198.51.100.0/24", 10)]: sent["c2 icmp echo (deny)"],
        ids[("198.51.100.0/24", 20)]: sent["c2 tcp 80 (allow)"],
        ids[(C1_V6_NET, 10)]: sent["c1 v6 tcp 9000 (deny)"],
        ids[(C1_V6_NET, 20)]: sent["c1 v6 udp 5002 (allow)"],
    }
    denied = (
        sent["c1 udp 5001 (deny)"] + sent["c2 icmp echo (deny)"] + sent["c1 v6 tcp 9000 (deny)"]
    )
    allowed = sent["c1 tcp 80 (allow)"] + sent["c2 tcp 80 (allow)"] + sent["c1 v6 udp 5002 (allow)"]
    assert node.get(NodeCounter.DENY, 0) == denied
    assert node.get(NodeCounter.ALLOW, 0) == allowed
    assert node.get(NodeCounter.FAILSAFE, 0) == sent["c2 tcp 22 (fail-safe)"]
    assert node.get(NodeCounter.NO_MATCH, 0) == sent["c1 udp 5003 (no match)"]
    assert node.get(NodeCounter.UNPARSED, 0) == 0
    assert node.get(NodeCounter.WOULD_DENY, 0) == 0
    assert node.get(NodeCounter.EVENTS_SENT, 0) == denied
    assert node.get(NodeCounter.EVENTS_SUPPRESSED, 0) == 0

    # The engine's views say the same as the maps.
    snap = eng.stats()
    rows = {r.rule_id: r.packets for r in snap.rules}
    for rid, packets in rules_after.items():
        if rid in rows:
            assert rows[rid] == packets

    # One drop event per denied packet, with the deciding rule and the packet's fields.
    got: list[Any] = []

    def drained() -> bool:
        got.extend(events.poll(100))
        return len(got) >= denied

    wait_for(drained, timeout=3.0)
    assert len(got) == denied, got
    assert all(e.verdict == "DENY" for e in got)
    seen = Counter(
        (e.rule_id, e.interface, e.protocol, e.src, e.dst, e.dport, e.icmp_type) for e in got
    )
    deny_v4, deny_icmp, deny_v6 = (
        ids[("192.0.2.0/24", 10)],
        ids[("198.51.100.0/24", 10)],
        ids[(C1_V6_NET, 10)],
    )
    assert seen == {
        (deny_v4, "infw-n1", "UDP", c1.v4, c1.node_v4, 5001, None): sent["c1 udp 5001 (deny)"],
        (deny_icmp, "infw-n2", "ICMP", c2.v4, c2.node_v4, None, 8): sent["c2 icmp echo (deny)"],
        (deny_v6, "infw-n1", "TCP", c1.v6, c1.node_v6, 9000, None): sent["c1 v6 tcp 9000 (deny)"],
    }
    assert all(e.length >= 42 for e in got)


# ------------------------------------------------------------------------------- 2. persistence

PERSIST_RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: persist}
spec:
  interfaces: ["infw-n*"]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: UDP, udp: {ports: 5005}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 5006}}
      action: Allow
"""

_LOAD_AND_DIE = """
from engine.core.crd import load_yaml
eng = engine()
eng.attach(["infw-n*"])
eng.apply(load_yaml(sys.argv[1]), confirm_timeout=0)
ids = {row.order: row.rule_id for row in eng.rule_rows()}
print(json.dumps({"ids": ids, "prog_id": eng.datapath().prog_id}), flush=True)
os.kill(os.getpid(), signal.SIGKILL)   # no cleanup of any kind
"""

_LOOK = """
eng = engine()
status = eng.status()
snap = eng.stats()
print(json.dumps({
    "bcc": "bcc" in sys.modules,
    "loaded": status.loaded,
    "interfaces": sorted([v.name, v.ours, v.prog_id] for v in status.interfaces),
    "generation": status.generation,
    "rules": {row.rule_id: [row.order, row.action, row.packets] for row in snap.rules},
    "deny": snap.totals.denied[0],
    "allow": snap.totals.allowed[0],
    "yaml": eng.export_yaml(),
}))
"""


def test_firewall_outlives_a_killed_loader_and_reopens_without_compiling(
    fresh_lab: LabInfo, lab_firewall: Any
) -> None:
    c1 = fresh_lab.clients[0]
    code, out, err = lab_firewall.script(_LOAD_AND_DIE, PERSIST_RULES)
    assert code == -signal.SIGKILL, err
    loaded = json.loads(out.strip().splitlines()[-1])
    deny_id, allow_id = loaded["ids"]["10"], loaded["ids"]["20"]

    def look() -> dict[str, Any]:
        rc, text, stderr = lab_firewall.script(_LOOK)
        assert rc == 0, stderr
        result: dict[str, Any] = json.loads(text.strip().splitlines()[-1])
        return result

    first = look()
    assert first["bcc"] is False, "opening a running firewall must not import (or run) bcc"
    assert first["loaded"] is True
    prog_id = loaded["prog_id"]
    assert first["interfaces"] == [["infw-n1", True, prog_id], ["infw-n2", True, prog_id]]
    assert load_yaml(first["yaml"]) == load_yaml(PERSIST_RULES)

    # Nobody holds the firewall now but its pins: it still filters and counts.
    denied = send_packets(c1.ns, c1.node_v4, "udp", dport=5005, count=6)
    allowed = send_packets(c1.ns, c1.node_v4, "udp", dport=5006, count=4)
    time.sleep(0.3)
    second = look()
    assert second["bcc"] is False
    assert second["generation"] == first["generation"]
    assert second["interfaces"] == first["interfaces"]

    def packets(view: dict[str, Any], rid: int) -> int:
        return int(view["rules"][str(rid)][2])

    assert second["rules"][str(deny_id)][:2] == [10, "Deny"]
    assert second["rules"][str(allow_id)][:2] == [20, "Allow"]
    assert packets(second, deny_id) - packets(first, deny_id) == denied
    assert packets(second, allow_id) - packets(first, allow_id) == allowed
    assert second["deny"] - first["deny"] == denied
    assert second["allow"] - first["allow"] == allowed
    # A third process: the counters are the kernel's, not reset by anyone opening them.
    third = look()
    assert packets(third, deny_id) >= packets(second, deny_id)
    assert packets(third, allow_id) >= packets(second, allow_id)
    assert third["deny"] >= second["deny"]


# ------------------------------------------------------------------------------- 3. atomic edits

FLIP_PORT = 5050
# Both sets hold both rules (so rule ids, and counters, stay put across the flips); only which
# one decides port FLIP_PORT changes. A packet that saw half of one generation and half of the
# other would find no rule list or no segment: it would be counted as no-match.
FLIP = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: flip}
spec:
  interfaces: ["infw-n*"]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: UDP, udp: {ports: DENY_PORT}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 5000-5100}}
      action: Allow
"""
FLIP_A = FLIP.replace("DENY_PORT", str(FLIP_PORT))  # order 10 denies the stream
FLIP_B = FLIP.replace("DENY_PORT", "5999")  # order 20 allows it


def test_edits_under_traffic_never_mix_two_rule_sets(fresh_lab: LabInfo, lab_firewall: Any) -> None:
    c1 = fresh_lab.clients[0]
    eng = lab_firewall.engine()
    lab_firewall.node(eng.attach, ["infw-n1"])
    rule_a, rule_b = load_yaml(FLIP_A), load_yaml(FLIP_B)
    lab_firewall.node(eng.apply, rule_a, confirm_timeout=0)
    ids = {row.order: row.rule_id for row in eng.rule_rows()}
    deny_id, allow_id = ids[10], ids[20]
    rules_before, node_before = settle_counters(eng)

    stop = threading.Event()
    sent = [0]
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            while not stop.is_set():
                sent[0] += send_packets(c1.ns, c1.node_v4, "udp", dport=FLIP_PORT, count=20)
                time.sleep(0.001)
        except BaseException as exc:
            errors.append(exc)

    sender = threading.Thread(target=stream, name="udp-stream")
    sender.start()
    flips = 0
    try:
        time.sleep(0.1)
        started = time.monotonic()
        while flips < 60 and time.monotonic() - started < 15:
            lab_firewall.node(eng.apply, rule_b if flips % 2 == 0 else rule_a, confirm_timeout=0)
            flips += 1
        time.sleep(0.1)
    finally:
        stop.set()
        sender.join()
    assert not errors, errors
    assert flips == 60
    rules_after, node_after = settle_counters(eng)
    per_rule = delta(rules_after, rules_before)
    node = delta(node_after, node_before)
    assert set(per_rule) <= {deny_id, allow_id}, per_rule
    hit_deny, hit_allow = per_rule.get(deny_id, 0), per_rule.get(allow_id, 0)
    seen_at_xdp = sum(
        node.get(c, 0)
        for c in (
            NodeCounter.ALLOW,
            NodeCounter.DENY,
            NodeCounter.WOULD_DENY,
            NodeCounter.FAILSAFE,
            NodeCounter.NO_MATCH,
            NodeCounter.UNPARSED,
        )
    )
    assert node.get(NodeCounter.NO_MATCH, 0) == 0, (node, sent[0])
    assert node.get(NodeCounter.UNPARSED, 0) == 0, node
    assert hit_deny + hit_allow + node.get(NodeCounter.NO_MATCH, 0) == seen_at_xdp
    assert (node.get(NodeCounter.DENY, 0), node.get(NodeCounter.ALLOW, 0)) == (hit_deny, hit_allow)
    # Every packet sent was seen (the stream is paced for the veth) and both sets decided some.
    assert seen_at_xdp == sent[0]
    assert hit_deny > 0 and hit_allow > 0, per_rule
    assert eng.status().generation == eng.state().generation
