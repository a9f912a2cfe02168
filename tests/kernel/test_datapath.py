"""The loaded XDP program, run on hand-built frames with BPF_PROG_TEST_RUN: verdicts, counters,
events, generation switches, reloads, and a second process that opens the pins."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from engine.core.classify import Reason as RefReason
from engine.core.classify import lookup
from engine.core.compiler import CompiledTables
from engine.core.frame import parse_frame
from engine.errors import DatapathError
from engine.kernel import abi as layout
from engine.kernel import bpfsys
from engine.kernel.abi import GEN_BIT, Mode, NodeCounter, Reason
from tests.kernel.conftest import LO_IFINDEX, RULES_YAML, VethNs, compile_rules, in_netns

pytestmark = [pytest.mark.root, pytest.mark.kernel]

XDP_DROP, XDP_PASS = 1, 2
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
V4_SRC, V4_OTHER, V4_DST = "192.0.2.7", "198.51.100.1", "10.0.0.1"
V6_SRC, V6_DST = "2001:db8::7", "2001:db8:ffff::1"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rule_id(tables: CompiledTables, order: int, cidrs: tuple[str, ...]) -> int:
    return tables.rule_ids[("web", tuple(sorted(cidrs)), order)]


BOTH = ("192.0.2.0/24", "2001:db8::/32")
V4_ONLY = ("192.0.2.0/24",)

# name -> (frame, xdp action, reason, (order, cidrs) of the deciding rule or None)
CASES: dict[str, tuple[Packet, int, Reason, tuple[int, tuple[str, ...]] | None]] = {
    "deny tcp port range": (
        ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8001),
        XDP_DROP,
        Reason.RULE,
        (10, BOTH),
    ),
    "allow udp 53": (
        ETH / IP(src=V4_SRC, dst=V4_DST) / UDP(dport=53),
        XDP_PASS,
        Reason.RULE,
        (20, BOTH),
    ),
    "deny any other udp": (
        ETH / IP(src=V4_SRC, dst=V4_DST) / UDP(dport=54),
        XDP_DROP,
        Reason.RULE,
        (30, BOTH),
    ),
    "allow icmp echo": (
        ETH / IP(src=V4_SRC, dst=V4_DST) / ICMP(type=8),
        XDP_PASS,
        Reason.RULE,
        (5, V4_ONLY),
    ),
    "fail-safe ssh beats deny": (
        ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=22),
        XDP_PASS,
        Reason.FAILSAFE,
        None,
    ),
    "no rule for the port": (
        ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=9000),
        XDP_PASS,
        Reason.NO_MATCH,
        None,
    ),
    "no prefix for the source": (
        ETH / IP(src=V4_OTHER, dst=V4_DST) / TCP(dport=8001),
        XDP_PASS,
        Reason.NO_MATCH,
        None,
    ),
    "802.1ad + 802.1Q tags": (
        ETH / Dot1AD(vlan=100) / Dot1Q(vlan=7) / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8080),
        XDP_DROP,
        Reason.RULE,
        (10, BOTH),
    ),
    "ipv4 options": (
        ETH
        / IP(src=V4_SRC, dst=V4_DST, options=[b"\x94\x04\x00\x00", b"\x01" * 8])
        / TCP(dport=8000),
        XDP_DROP,
        Reason.RULE,
        (10, BOTH),
    ),
    "ipv6 hop-by-hop + dest opts": (
        ETH
        / IPv6(src=V6_SRC, dst=V6_DST)
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / TCP(dport=8080),
        XDP_DROP,
        Reason.RULE,
        (10, BOTH),
    ),
    "ipv4 non-first fragment": (
        ETH / IP(src=V4_SRC, dst=V4_DST, proto=17, frag=100) / Raw(b"x" * 32),
        XDP_DROP,
        Reason.RULE,
        (30, BOTH),
    ),
    "truncated tcp": (
        ETH / IP(src=V4_SRC, dst=V4_DST, proto=6) / Raw(b"\x00\x50"),
        XDP_PASS,
        Reason.UNPARSED,
        None,
    ),
    "ipv4 ihl below 5": (
        ETH / IP(src=V4_SRC, dst=V4_DST, ihl=4) / TCP(dport=8001),
        XDP_PASS,
        Reason.UNPARSED,
        None,
    ),
}


@pytest.fixture
def dp(datapath: Any, tables: CompiledTables) -> Iterator[Any]:
    """The session firewall, back in enforce mode with the standard tables after each test."""
    yield datapath
    datapath.set_mode(Mode.ENFORCE)
    datapath.set_event_rate(1000)
    datapath.write_tables(tables, datapath.generation() + 1)


def run_counted(dp: Any, frame: bytes, repeat: int = 1) -> int:
    """A plain test run (no trace metadata): the program treats the frame as a real packet."""
    return bpfsys.prog_test_run(dp.prog_fd, frame, repeat, LO_IFINDEX).retval


def node_delta(
    before: dict[NodeCounter, tuple[int, int]], after: dict[NodeCounter, tuple[int, int]]
) -> dict[NodeCounter, int]:
    return {c: after[c][0] - before[c][0] for c in NodeCounter if after[c][0] != before[c][0]}


@pytest.mark.parametrize("name", list(CASES))
def test_verdict_matches_reference(dp: Any, tables: CompiledTables, name: str) -> None:
    pkt, action, reason, decider = CASES[name]
    frame = bytes(pkt)
    expected_rule = rule_id(tables, *decider) if decider else 0

    # the expectation agrees with the reference parser and classifier
    parsed = parse_frame(frame)
    if reason is Reason.UNPARSED:
        assert parsed.kind == "unparsed"
    else:
        assert parsed.fields is not None
        ref = lookup(tables, LO_IFINDEX, parsed.fields)
        assert (
            ref.reason.value
            == {
                Reason.RULE: RefReason.RULE,
                Reason.FAILSAFE: RefReason.FAILSAFE,
                Reason.NO_MATCH: RefReason.NO_MATCH,
            }[reason].value
        )
        assert (ref.rule_id or 0) == expected_rule

    xdp_action, last, _ = dp.test_run(frame, LO_IFINDEX)
    assert (xdp_action, Reason(last.reason), last.rule_id, last.xdp_action) == (
        action,
        reason,
        expected_rule,
        action,
    )


def test_non_ip_passes_uncounted(dp: Any) -> None:
    before = dp.node_counters()
    xdp_action, last, _ = dp.test_run(bytes(ETH / ARP(psrc=V4_SRC, pdst=V4_DST)), LO_IFINDEX)
    assert xdp_action == XDP_PASS
    assert last.reason == Reason.NONE
    assert node_delta(before, dp.node_counters()) == {}


def test_counters_and_drop_event(dp: Any, tables: CompiledTables) -> None:
    frame = bytes(ETH / Dot1Q(vlan=42) / IP(src=V4_SRC, dst=V4_DST) / TCP(sport=1234, dport=8002))
    rid = rule_id(tables, 10, BOTH)
    events: list[layout.DropEventRecord] = []
    dp.open_events(events.append)
    dp.poll_events(0)  # drain what earlier tests left
    events.clear()
    rules_before, node_before = dp.rule_counters(), dp.node_counters()

    assert run_counted(dp, frame) == XDP_DROP

    packets, nbytes = rules_before.get(rid, (0, 0))
    assert dp.rule_counters()[rid] == (packets + 1, nbytes + len(frame))
    delta = node_delta(node_before, dp.node_counters())
    assert delta == {NodeCounter.DENY: 1, NodeCounter.EVENTS_SENT: 1}
    assert dp.poll_events(1000) == 1
    (ev,) = events
    assert (ev.rule_id, ev.verdict, ev.ifindex, ev.family, ev.l4proto) == (
        rid,
        layout.Action.DENY,
        1,
        4,
        6,
    )
    assert (ev.sport, ev.dport, ev.vlan, ev.pkt_len, ev.flags) == (1234, 8002, 42, len(frame), 0)
    assert bytes(ev.src) == bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 7])


def test_audit_mode_passes_and_reports(dp: Any, tables: CompiledTables) -> None:
    frame = bytes(ETH / IPv6(src=V6_SRC, dst=V6_DST) / TCP(dport=8003))
    events: list[layout.DropEventRecord] = []
    dp.open_events(events.append)
    dp.poll_events(0)
    events.clear()
    dp.set_mode(Mode.AUDIT)
    before = dp.node_counters()

    xdp_action, last, _ = dp.test_run(frame, LO_IFINDEX)  # traced: not counted
    assert (xdp_action, last.reason, last.rule_id, last.xdp_action) == (
        XDP_PASS,
        Reason.RULE,
        rule_id(tables, 10, BOTH),
        XDP_PASS,
    )
    assert node_delta(before, dp.node_counters()) == {}

    assert run_counted(dp, frame) == XDP_PASS
    assert node_delta(before, dp.node_counters()) == {
        NodeCounter.WOULD_DENY: 1,
        NodeCounter.EVENTS_SENT: 1,
    }
    dp.poll_events(1000)
    assert [(e.verdict, e.family, e.dport) for e in events] == [(layout.Action.WOULD_DENY, 6, 8003)]


def test_event_rate_limit(dp: Any) -> None:
    frame = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8004))
    dp.set_event_rate(3)
    ratelimit = dp.maps[layout.MAP_RATELIMIT]
    ratelimit.update(bytes(4), bytes(ratelimit.value_size))  # a fresh window on every CPU
    before = dp.node_counters()
    run_counted(dp, frame, repeat=10)
    delta = node_delta(before, dp.node_counters())
    assert delta == {
        NodeCounter.DENY: 10,
        NodeCounter.EVENTS_SENT: 3,
        NodeCounter.EVENTS_SUPPRESSED: 7,
    }


def drain(dp: Any) -> list[layout.DropEventRecord]:
    """Open the events (if not yet) and drop what earlier tests left; returns the live list."""
    events: list[layout.DropEventRecord] = []
    dp.open_events(events.append)
    dp.poll_events(0)
    events.clear()
    return events


@pytest.mark.parametrize("mode", [Mode.ENFORCE, Mode.AUDIT])
def test_traced_packets_count_nowhere(dp: Any, tables: CompiledTables, mode: Mode) -> None:
    """A traced packet (trace metadata in front of it) gets its verdict in its metadata, and
    moves no rule or node counter and emits no event; repeated runs stay traced (the program
    leaves the magic in place)."""
    events = drain(dp)
    dp.set_mode(mode)
    rules_before, node_before = dp.rule_counters(), dp.node_counters()
    for name, (pkt, action, reason, decider) in CASES.items():
        xdp_action, last, _ = dp.test_run(bytes(pkt), LO_IFINDEX, repeat=3)
        if mode is Mode.AUDIT:
            action = XDP_PASS
        expected_rule = rule_id(tables, *decider) if decider else 0
        got = (xdp_action, Reason(last.reason), last.rule_id, last.xdp_action)
        assert got == (action, reason, expected_rule, action), name
    assert dp.rule_counters() == rules_before
    assert node_delta(node_before, dp.node_counters()) == {}
    assert dp.poll_events(100) == 0 and events == []


def test_untraced_test_runs_count(dp: Any, tables: CompiledTables) -> None:
    """Only a 16-byte metadata block with the magic marks a trace: no ctx at all, a ctx without
    metadata, metadata without the magic and a block too short all count as real packets."""
    frame = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8011))
    rid = rule_id(tables, 10, BOTH)
    events = drain(dp)
    magic = layout.TRACE_MAGIC.to_bytes(4, "little")
    packets = dp.rule_counters().get(rid, (0, 0))[0]
    before = dp.node_counters()
    runs = [
        bpfsys.prog_test_run(dp.prog_fd, frame),  # no ctx: ingress is lo
        bpfsys.prog_test_run(dp.prog_fd, frame, 1, LO_IFINDEX),
        bpfsys.prog_test_run(dp.prog_fd, frame, 1, LO_IFINDEX, meta=bytes(16)),
        bpfsys.prog_test_run(dp.prog_fd, frame, 1, None, meta=magic + bytes(4)),
        bpfsys.prog_test_run(dp.prog_fd, frame, 1, None, meta=magic[::-1] + bytes(28)),
    ]
    assert [r.retval for r in runs] == [XDP_DROP] * 5
    assert dp.rule_counters()[rid][0] == packets + 5
    assert node_delta(before, dp.node_counters()) == {
        NodeCounter.DENY: 5,
        NodeCounter.EVENTS_SENT: 5,
    }
    dp.poll_events(1000)
    assert [(e.rule_id, e.dport) for e in events] == [(rid, 8011)] * 5

    # the control: the same frame with the 16-byte block and the magic is a trace
    before = dp.node_counters()
    traced = bpfsys.prog_test_run(dp.prog_fd, frame, 1, LO_IFINDEX, meta=magic + bytes(12))
    assert traced.retval == XDP_DROP
    assert traced.data_out[12:16] == XDP_DROP.to_bytes(4, "little")  # its answer
    assert dp.rule_counters()[rid][0] == packets + 5
    assert node_delta(before, dp.node_counters()) == {}
    assert dp.poll_events(100) == 0


def test_trace_refuses_a_build_that_does_not_answer(dp: Any) -> None:
    foreign, foreign_fd = _foreign_prog()
    real_fd = dp.prog_fd
    try:
        dp.prog_fd = foreign_fd
        with pytest.raises(DatapathError, match="older build"):
            dp.test_run(bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8012)), LO_IFINDEX)
    finally:
        dp.prog_fd = real_fd
        foreign.cleanup()


def generation_keys(dp: Any) -> tuple[int, int, int, int, int, int]:
    """(src entries of gen 0, of gen 1, seg entries of gen 0, of gen 1, source trie roots of
    gen 0, of gen 1)."""
    src_keys, _, src_n = dp.maps[layout.MAP_SRC].items()
    seg_keys, _, seg_n = dp.maps[layout.MAP_SEG].items()
    src_gens = [src_keys[i * 28 + 4] for i in range(src_n)]
    seg_gens = [
        int.from_bytes(seg_keys[i * 12 + 4 : i * 12 + 8], "little") & GEN_BIT for i in range(seg_n)
    ]
    roots = dp.tables.src_roots()
    half = 2 * layout.ROOT_IFINDEXES
    nonzero = [i for i in range(2 * half) if roots[i]]
    return (
        src_gens.count(0),
        src_gens.count(1),
        sum(1 for g in seg_gens if not g),
        sum(1 for g in seg_gens if g),
        sum(1 for i in nonzero if i < half),
        sum(1 for i in nonzero if i >= half),
    )


@pytest.mark.parametrize("budget", [None, 0, 3], ids=["array tries", "LPM tries", "mixed"])
def test_generation_switch(dp: Any, tables: CompiledTables, budget: int | None) -> None:
    frame = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8005))
    start = dp.config().active_gen
    allow_all = dataclasses.replace(
        compile_rules(RULES_YAML.replace("action: Deny", "action: Allow")), node_budget=budget
    )

    previous = generation_keys(dp)
    dp.write_tables(allow_all, 77)

    cfg = dp.config()
    assert (cfg.active_gen, cfg.generation) == (start ^ 1, 77)
    assert dp.test_run(frame, LO_IFINDEX)[0] == XDP_PASS
    counts = generation_keys(dp)
    live = cfg.active_gen
    # the generation switched away from is left for the next write (or reclaim) to empty
    assert (counts[start], counts[2 + start], counts[4 + start]) == (
        previous[start],
        previous[2 + start],
        previous[4 + start],
    )
    dp.reclaim()
    assert dp.test_run(frame, LO_IFINDEX)[0] == XDP_PASS
    counts = generation_keys(dp)
    fast = allow_all.fast
    assert counts[live] == len(fast.lpm) and counts[live ^ 1] == 0
    assert counts[2 + live] == len(fast.segments) and counts[2 + (live ^ 1)] == 0
    assert counts[4 + live] == len(fast.src_roots) and counts[4 + (live ^ 1)] == 0
    if budget == 0:
        assert fast.node_count == 0
        assert (len(fast.lpm), len(fast.segments)) == (len(allow_all.lpm), len(allow_all.segments))
    elif budget is None:
        assert (len(fast.lpm), len(fast.segments)) == (0, 0)
    else:
        # what the few nodes cannot hold: hosts in the host hash, the rest in the LPM tries
        assert fast.node_count <= budget and (fast.lpm or fast.hosts) and fast.segments
    # hosts sit in the live half's cuckoo buckets, or in the hash where no region fits
    plan = dp.tables.last_hosts
    hashed = plan.hashed if plan is not None else {}
    assert (plan is not None) == bool(fast.hosts)
    hosts = list(dp.maps[layout.MAP_HOSTS].keys())
    assert sorted(k[0] & 1 for k in hosts) == [live] * len(hashed)

    dp.write_tables(tables, 78)
    assert dp.config().active_gen == start
    assert dp.test_run(frame, LO_IFINDEX)[0] == XDP_DROP
    dp.reclaim()  # the half that pointed to the host hash is emptied, the hash with it
    assert not list(dp.maps[layout.MAP_HOSTS].keys())


def test_failed_write_leaves_active_generation(
    dp: Any, tables: CompiledTables, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8006))
    before = dp.config()
    src_map = dp.maps[layout.MAP_SRC]
    real = type(src_map).update_batch

    def failing(self: Any, keys: bytes, values: bytes, flags: int = 0) -> None:
        if self is src_map:
            real(self, keys[: len(keys) // 2], values[: len(values) // 2], flags)
            raise DatapathError("injected failure")
        real(self, keys, values, flags)

    monkeypatch.setattr(type(src_map), "update_batch", failing)
    with pytest.raises(DatapathError, match="injected"):
        dp.write_tables(compile_rules(RULES_YAML.replace("action: Deny", "action: Allow")), 99)
    monkeypatch.undo()

    after = dp.config()
    assert (after.active_gen, after.generation) == (before.active_gen, before.generation)
    counts = generation_keys(dp)
    idle = after.active_gen ^ 1
    assert counts[idle] == counts[2 + idle] == counts[4 + idle] == 0
    assert dp.test_run(frame, LO_IFINDEX)[0] == XDP_DROP


FLIP_PORT = 5050
# Both sets hold both rules (rule ids stay put); only which one decides FLIP_PORT changes. A
# packet that saw half of one generation and half of the other, or a generation emptied or
# overwritten under it, would find no rule list or no segment: it would count as no-match.
FLIP_YAML = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: flip}
spec:
  interfaces: [lo]
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


@pytest.mark.parametrize("budget", [None, 0], ids=["array tries", "LPM tries"])
def test_back_to_back_writes_never_mix_generations(dp: Any, budget: int | None) -> None:
    """Writes with no pause between them (the old generation is emptied and refilled by the
    next write) while another thread runs packets: every packet meets one whole rule set."""
    import threading

    from engine.core.compiler import compile_ruleset
    from engine.core.crd import load_yaml

    deny = compile_ruleset(load_yaml(FLIP_YAML.replace("DENY_PORT", str(FLIP_PORT))), {"lo": 1})
    allow = compile_ruleset(
        load_yaml(FLIP_YAML.replace("DENY_PORT", "5999")), {"lo": 1}, previous_ids=deny.rule_ids
    )
    deny, allow = (dataclasses.replace(t, node_budget=budget) for t in (deny, allow))
    assert deny.rule_ids == allow.rule_ids
    frame = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / UDP(dport=FLIP_PORT))
    dp.write_tables(deny, 700)
    before = dp.node_counters()
    stop = threading.Event()
    ran = [0]
    errors: list[BaseException] = []

    def packets() -> None:
        try:
            while not stop.is_set():  # the syscall releases the GIL: runs beside the writes
                bpfsys.prog_test_run(dp.prog_fd, frame, 200, LO_IFINDEX)
                ran[0] += 200
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=packets, name="test-run")
    runner.start()
    try:
        for flip in range(200):
            dp.write_tables(allow if flip % 2 == 0 else deny, 701 + flip)
    finally:
        stop.set()
        runner.join()
    assert not errors, errors
    delta = node_delta(before, dp.node_counters())
    assert set(delta) <= {
        NodeCounter.DENY,
        NodeCounter.ALLOW,
        NodeCounter.EVENTS_SENT,
        NodeCounter.EVENTS_SUPPRESSED,
    }, delta
    assert delta.get(NodeCounter.DENY, 0) + delta.get(NodeCounter.ALLOW, 0) == ran[0]
    assert delta.get(NodeCounter.DENY, 0) and delta.get(NodeCounter.ALLOW, 0), delta


def test_trace_beside_writes_never_undoes_a_switch(
    dp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Traces in another thread while writes alternate two rule sets with rising generations:
    after every write the config holds that write's generation and switched half (a trace
    that rewrote the config could put back the one before), traces never write a map, and
    they move no counter."""
    import threading

    from engine.core.compiler import compile_ruleset
    from engine.core.crd import load_yaml

    deny = compile_ruleset(load_yaml(FLIP_YAML.replace("DENY_PORT", str(FLIP_PORT))), {"lo": 1})
    allow = compile_ruleset(
        load_yaml(FLIP_YAML.replace("DENY_PORT", "5999")), {"lo": 1}, previous_ids=deny.rule_ids
    )
    frame = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / UDP(dport=FLIP_PORT))
    dp.write_tables(deny, 800)
    before = dp.node_counters()
    stop = threading.Event()
    seen: set[int] = set()
    errors: list[BaseException] = []

    def traces() -> None:
        try:
            while not stop.is_set():
                seen.add(dp.test_run(frame, LO_IFINDEX)[0])
        except BaseException as exc:
            errors.append(exc)

    writers: set[str] = set()
    real_update = type(dp.maps[layout.MAP_CONFIG]).update

    def update(self: Any, key: bytes, value: bytes, flags: int = 0) -> None:
        writers.add(threading.current_thread().name)
        real_update(self, key, value, flags)

    monkeypatch.setattr(type(dp.maps[layout.MAP_CONFIG]), "update", update)
    runner = threading.Thread(target=traces, name="trace")
    runner.start()
    behind: list[tuple[int, int, int]] = []
    try:
        for flip in range(300):
            generation = 801 + flip
            previous = dp.config()
            if previous.generation != generation - 1:
                behind.append((generation - 1, previous.generation, previous.active_gen))
            dp.write_tables(allow if flip % 2 == 0 else deny, generation)
            cfg = dp.config()
            if (cfg.generation, cfg.active_gen) != (generation, previous.active_gen ^ 1):
                behind.append((generation, cfg.generation, cfg.active_gen))
    finally:
        stop.set()
        runner.join()
    monkeypatch.undo()
    assert not errors, errors
    assert "trace" not in writers
    assert behind == [], f"config behind the last write (wanted, got, active): {behind[:5]}"
    final = dp.config()
    assert final.generation == 801 + 299
    assert dp.test_run(frame, LO_IFINDEX)[0] == XDP_DROP  # the last write (flip 299): deny
    assert seen == {XDP_DROP, XDP_PASS}
    assert node_delta(before, dp.node_counters()) == {}


def test_rule_counters_up_to_max_id(dp: Any, tables: CompiledTables) -> None:
    run_counted(dp, bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8010)))
    everything = dp.rule_counters()
    top = max(tables.rule_ids.values())
    assert everything and max(everything) <= top
    assert dp.rule_counters(top) == everything
    assert dp.rule_counters(layout.RULE_STATS_ENTRIES + 5) == everything  # clamped
    low = min(everything)
    assert dp.rule_counters(low) == {rid: v for rid, v in everything.items() if rid <= low}
    assert dp.rule_counters(low - 1) == {rid: v for rid, v in everything.items() if rid < low}
    keys, _, count = dp.maps[layout.MAP_RULE_STATS].items(3)
    assert (count, keys) == (3, bytes([0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0]))


def test_failsafe_mapped_matches_the_syscall_view(dp: Any, tables: CompiledTables) -> None:
    import array

    from engine.kernel.failsafe import wanted_failsafe
    from engine.kernel.roots import FAILSAFE_OFF

    dp.write_tables(tables, 600)
    ports = dp.tables.failsafe_ports()
    assert ports.is_mapped, "the fail-safe ports are not mapped"
    image = dp.maps[layout.MAP_ROOTS].lookup(bytes(4))  # the element, copied by the kernel
    assert image is not None
    words = array.array("Q", image[FAILSAFE_OFF : FAILSAFE_OFF + layout.FAILSAFE_MAX_ENTRIES * 8])
    assert ports.masks() == {port: mask for port, mask in enumerate(words) if mask}
    assert ports.masks() == wanted_failsafe(tables)


def test_second_process_opens_pins_without_compiling(dp: Any, pin_root: str) -> None:
    run_counted(dp, bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8007)))
    script = (
        "import json, sys\n"
        "from engine.kernel.datapath import Datapath\n"
        f"dp = Datapath.open({pin_root!r})\n"
        "print(json.dumps({'bcc': 'bcc' in sys.modules, 'prog': dp.prog_id,"
        " 'rules': dp.rule_counters(), 'gen': dp.generation()}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    seen = json.loads(out.stdout)
    assert seen["bcc"] is False
    assert seen["prog"] == dp.prog_id
    assert seen["gen"] == dp.generation()
    assert {int(k): tuple(v) for k, v in seen["rules"].items()} == dp.rule_counters()


def test_open_without_pins_is_none(pin_root: str) -> None:
    from engine.kernel.datapath import Datapath

    assert Datapath.open(pin_root + "-absent") is None


def test_write_speed_100k_prefixes(dp: Any, tables: CompiledTables) -> None:
    """DESIGN §7: 100,000 CIDRs applied in well under 2 s (measured ~0.3 s here)."""
    import time

    from engine.core.cidr import Prefix
    from engine.core.compiler import LpmEntry

    first = tables.lpm[0].list_id
    lpm = tuple(
        LpmEntry(LO_IFINDEX, Prefix((0xFFFF << 32) | (10 << 24) | (i << 8), 120, True), first)
        for i in range(100_000)
    )
    big = CompiledTables(
        lpm,
        tables.lists,
        tables.segments,
        tables.failsafe,
        tables.failsafe_ports,
        tables.rules,
        tables.rule_ids,
        tables.interfaces,
    )
    dp.write_tables(big, 1000)  # the first fills an empty generation
    start = time.perf_counter()
    dp.write_tables(big, 1001)  # the second also empties the old one
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"100k-prefix write took {elapsed:.2f} s"
    assert (
        dp.test_run(bytes(ETH / IP(src="10.1.2.3", dst=V4_DST) / TCP(dport=8008)), LO_IFINDEX)[0]
        == XDP_DROP
    )


def test_reload_keeps_counters_and_takes_over(dp: Any, pin_root: str, veth_ns: VethNs) -> None:
    from engine.kernel.datapath import Datapath

    run_counted(dp, bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=8009)))
    counters = dp.rule_counters()
    with in_netns(veth_ns.name):
        assert dp.attach(veth_ns.inner, mode="native") == "native"
        new = Datapath.load(pin_root)
        try:
            assert new.prog_id != dp.prog_id
            assert new.rule_counters() == counters
            assert new.generation() == dp.generation()
            # the interface moved to the new build without a detach
            assert [(a[0], a[3], a[4]) for a in new.attached()] == [
                (veth_ns.inner, new.prog_id, True)
            ]
            new.detach(veth_ns.inner)
            assert new.attached() == []
        finally:
            new.close()
    # the session fixture's handle keeps working on the same maps
    assert dp.rule_counters() == counters


def _foreign_prog() -> tuple[Any, int]:
    from bcc import BPF

    b = BPF(text=b"int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
    return b, b.load_func(b"other_xdp", BPF.XDP).fd


def test_attach_modes_and_foreign_program(dp: Any, veth_ns: VethNs) -> None:
    foreign, foreign_fd = _foreign_prog()
    try:
        with in_netns(veth_ns.name):
            inner, outer = veth_ns.inner, veth_ns.outer
            assert dp.attach(inner, mode="auto") == "native"
            assert dp.attach(inner) == "native"  # already ours: nothing to do
            outer_index = socket.if_nametoindex(outer)
            bpfsys.xdp_attach(outer_index, foreign_fd, bpfsys.XDP_FLAGS_SKB_MODE)
            with pytest.raises(DatapathError, match="--force"):
                dp.attach(outer)
            with pytest.raises(DatapathError, match="foreign"):
                dp.detach(outer)
            assert dp.attach(outer, force=True) == "generic"  # replaced in place, same mode
            seen = {(a[0], a[2], a[4]) for a in dp.attached()}
            assert seen == {(inner, "native", True), (outer, "generic", True)}
            dp.detach(inner)
            dp.detach(outer)
            assert dp.attached() == []
    finally:
        foreign.cleanup()


@pytest.mark.parametrize("mode", ["native", "generic"])
def test_packets_from_a_device_are_not_traces(
    dp: Any, tables: CompiledTables, veth_ns: VethNs, mode: str
) -> None:
    """Frames sent into a veth running the program (native and generic XDP) carry no trace
    metadata: each is counted and reported like any packet."""
    from engine.core.compiler import compile_ruleset
    from engine.core.crd import load_yaml

    frame = bytes(
        Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
        / IP(src=V4_SRC, dst=V4_DST)
        / TCP(sport=4321, dport=8013)
    )
    sent = 20
    events = drain(dp)
    with in_netns(veth_ns.name):
        inner = socket.if_nametoindex(veth_ns.inner)
        yaml_text = RULES_YAML.replace("interfaces: [lo]", f"interfaces: [{veth_ns.inner}]")
        veth_tables = compile_ruleset(load_yaml(yaml_text), {veth_ns.inner: inner})
        dp.write_tables(veth_tables, 900)
        rid = veth_tables.rule_ids[("web", tuple(sorted(BOTH)), 10)]
        rules_before, node_before = dp.rule_counters(), dp.node_counters()
        assert dp.attach(veth_ns.inner, mode=mode) == mode
        try:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
                sock.bind((veth_ns.outer, 0))
                for _ in range(sent):
                    sock.send(frame)
            deadline = time.monotonic() + 5
            while dp.rule_counters().get(rid, (0, 0))[0] < rules_before.get(rid, (0, 0))[0] + sent:
                assert time.monotonic() < deadline, "the frames never reached the program"
                time.sleep(0.05)
        finally:
            dp.detach(veth_ns.inner)
    assert dp.rule_counters()[rid][0] == rules_before.get(rid, (0, 0))[0] + sent
    assert node_delta(node_before, dp.node_counters()).get(NodeCounter.DENY) == sent
    dp.poll_events(1000)
    mine = [e for e in events if e.dport == 8013]
    assert len(mine) == sent and {(e.ifindex, e.rule_id) for e in mine} == {(inner, rid)}


def test_other_reader_is_named(dp: Any, pin_root: str) -> None:
    """open_events registers a reader (a shared flock); other_reader_pid names another
    process that reads the same firewall's events, and forgets it once it has exited."""
    from engine.kernel.ringbuf import events_lock_path, lock_holders

    drain(dp)
    assert dp.other_reader_pid() is None  # this process alone
    assert os.getpid() in lock_holders(events_lock_path(pin_root))
    script = (
        "import sys, time\n"
        "from engine.kernel.datapath import Datapath\n"
        f"dp = Datapath.open({pin_root!r})\n"
        "dp.open_events(lambda r: None)\n"
        "print(dp.other_reader_pid(), flush=True)\n"
        "sys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == str(os.getpid())  # the child sees us
        assert dp.other_reader_pid() == child.pid  # and we see the child
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert dp.other_reader_pid() is None


def test_test_run_speed_is_reported(dp: Any) -> None:
    _, _, ns = dp.test_run(
        bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / UDP(dport=53)), LO_IFINDEX, repeat=1000
    )
    assert 0 < ns < 10_000


def test_failsafe_follows_the_tables(dp: Any, tables: CompiledTables) -> None:
    from dataclasses import replace

    ssh = bytes(ETH / IP(src=V4_SRC, dst=V4_DST) / TCP(dport=22))
    sctp_ssh = bytes(
        ETH / IP(src=V4_SRC, dst=V4_DST, proto=132) / Raw(b"\x9c\x40\x00\x16" + bytes(8))
    )
    assert dp.test_run(sctp_ssh, LO_IFINDEX)[1].reason == Reason.NO_MATCH  # 22/tcp only
    without_ssh = replace(
        tables, failsafe_ports=frozenset(p for p in tables.failsafe_ports if p != (6, 22))
    )
    dp.write_tables(without_ssh, 500)
    xdp_action, last, _ = dp.test_run(ssh, LO_IFINDEX)
    assert (xdp_action, last.reason, last.rule_id) == (
        XDP_DROP,
        Reason.RULE,
        rule_id(tables, 40, BOTH),
    )
    dp.write_tables(tables, 501)
    assert dp.test_run(ssh, LO_IFINDEX)[1].reason == Reason.FAILSAFE


def test_verifier_rejection_shows_the_log(tmp_path: Any) -> None:
    from engine.kernel.datapath import Datapath
    from tests.kernel.conftest import PIN_BASE

    with open(os.path.join(REPO, "bpf", "infw.bpf.c")) as f:
        source = f.read()
    # read a packet byte without a bounds check: the verifier must refuse, and say why
    broken = source.replace(
        "int infw_xdp(struct xdp_md *ctx)\n{",
        "int infw_xdp(struct xdp_md *ctx)\n{\n"
        "    if (*(u8 *)(long)ctx->data == 7) return XDP_DROP;",
        1,
    )
    assert broken != source
    path = tmp_path / "broken.bpf.c"
    path.write_text(broken)
    root = os.path.join(PIN_BASE, "broken")
    try:
        with pytest.raises(DatapathError, match="verifier rejected") as info:
            Datapath.load(root, source_path=path)
        assert "invalid access to packet" in str(info.value)
        assert not os.path.exists(os.path.join(root, "prog"))
    finally:
        for name in os.listdir(root) if os.path.isdir(root) else ():
            os.unlink(os.path.join(root, name))
        if os.path.isdir(root):
            os.rmdir(root)


def test_compile_error_is_a_datapath_error(tmp_path: Any) -> None:
    from engine.kernel.datapath import Datapath
    from tests.kernel.conftest import PIN_BASE

    path = tmp_path / "bad.bpf.c"
    path.write_text("int infw_xdp(struct xdp_md *ctx) { return undefined_name; }\n")
    with pytest.raises(DatapathError, match="undefined_name"):
        Datapath.load(os.path.join(PIN_BASE, "bad"), source_path=path)


@pytest.mark.parametrize("name", [layout.MAP_HOSTS, layout.MAP_NODES, layout.MAP_ROOTS])
def test_a_removed_table_pin_is_refused_not_recreated_empty(
    dp: Any, pin_root: str, name: str
) -> None:
    """The roots may name cuckoo regions and point at trie nodes: a load that created an empty
    bucket map, node image or root image in place of a removed pin would let those sources
    through, so it refuses and says what to do."""
    from engine.kernel.datapath import Datapath

    path = os.path.join(pin_root, name)
    os.unlink(path)
    try:
        with pytest.raises(DatapathError, match=rf"incomplete.*{name}") as err:
            Datapath.load(pin_root)
        assert "infw detach" in err.value.fix
    finally:
        bpfsys.obj_pin(dp.maps[name].fd, path)
    assert os.path.exists(path)


VERIFIER_LIMIT = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS: a program past it does not load


def test_the_program_verifies_with_headroom(dp: Any) -> None:
    """The verifier walks every path of the program; past its limit the load fails on the node.
    A change that leaves less than 10% headroom fails here first, where it can be split."""
    processed = bpfsys.prog_info(dp.prog_fd).verified_insns
    assert 0 < processed < 0.9 * VERIFIER_LIMIT, f"the verifier processed {processed} instructions"
