"""Kernel against reference: random rule sets and random frames through BPF_PROG_TEST_RUN must get
the verdict and deciding rule that engine.core.frame.parse_frame + engine.core.classify give."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Raw

from engine.core.classify import Decision, Reason, classify, lookup, lookup_lpm
from engine.core.compiler import CompiledTables, compile_ruleset
from engine.core.frame import ETH_HLEN, build_frame, parse_frame
from engine.core.model import Action, Firewall, IngressBlock, PortRange, Protocol, Rule, RuleSet
from engine.kernel.abi import Reason as KernelReason
from tests.kernel.conftest import LO_IFINDEX, PIN_BASE, kernel_skip_reason
from tests.unit.strategies import cidrs, packets_for, port_range, tricky_rulesets

pytestmark = [pytest.mark.root, pytest.mark.kernel]

XDP_DROP, XDP_PASS = 1, 2
INTERFACES = {"lo": LO_IFINDEX}  # a test run without a device arrives on loopback
KERNEL_REASON = {
    Reason.FAILSAFE: KernelReason.FAILSAFE,
    Reason.RULE: KernelReason.RULE,
    Reason.NO_MATCH: KernelReason.NO_MATCH,
    Reason.UNPARSED: KernelReason.UNPARSED,
}

Verdict = tuple[int, KernelReason, int]
"""(XDP action, reason, deciding rule id or 0)."""


@pytest.fixture(scope="module")
def kernel() -> Iterator[Any]:
    """One firewall for this module under its own pin root; unloaded and unpinned afterwards."""
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)
    from engine.kernel.datapath import Datapath

    pin_root = os.path.join(PIN_BASE, "differential")
    os.makedirs(PIN_BASE, exist_ok=True)
    dp = Datapath.load(pin_root)
    try:
        yield dp
    finally:
        dp.unload()


class Loaded:
    """What the module's datapath holds now, so a test can put its own tables back cheaply."""

    generation = 0
    tables: CompiledTables | None = None


def write(dp: Any, tables: CompiledTables) -> CompiledTables:
    if Loaded.tables is not tables:
        Loaded.generation += 1
        dp.write_tables(tables, Loaded.generation)
        Loaded.tables = tables
    return tables


def load_rules(dp: Any, ruleset: RuleSet, node_budget: int | None = None) -> CompiledTables:
    tables = compile_ruleset(ruleset, INTERFACES)
    return write(dp, dataclasses.replace(tables, node_budget=node_budget))


def reference(ruleset: RuleSet, tables: CompiledTables, frame: bytes) -> Verdict | None:
    """What the kernel must answer; None for a non-IP frame (passes, no verdict recorded)."""
    parsed = parse_frame(frame)
    if parsed.kind == "non-ip":
        return None
    if parsed.kind == "unparsed":
        return XDP_PASS, KernelReason.UNPARSED, 0
    assert parsed.fields is not None
    decision: Decision = lookup(tables, LO_IFINDEX, parsed.fields)
    brute = classify(ruleset, tables.rule_ids, "lo", parsed.fields, tables.failsafe)
    full = lookup_lpm(tables, LO_IFINDEX, parsed.fields)
    for other in (brute, full):
        assert (other.action, other.reason, other.rule_id) == (
            decision.action,
            decision.reason,
            decision.rule_id,
        )
    drop = decision.reason is Reason.RULE and decision.action is Action.DENY
    return XDP_DROP if drop else XDP_PASS, KERNEL_REASON[decision.reason], decision.rule_id or 0


def kernel_verdict(dp: Any, frame: bytes) -> Verdict:
    xdp_action, last, _ = dp.test_run(frame, LO_IFINDEX)
    assert last.xdp_action in (0, xdp_action)
    return xdp_action, KernelReason(last.reason), last.rule_id


def assert_agree(dp: Any, ruleset: RuleSet, tables: CompiledTables, frame: bytes) -> None:
    want = reference(ruleset, tables, frame)
    got = kernel_verdict(dp, frame)
    if want is None:
        assert (got[0], got[1]) == (XDP_PASS, KernelReason.NONE), f"non-IP frame {frame.hex()}"
        return
    assert got == want, (
        f"frame {frame.hex()}: parsed {parse_frame(frame)}, kernel {got}, reference {want}"
    )


@st.composite
def frames_for(draw: st.DrawFn, ruleset: RuleSet) -> bytes:
    """A frame from a source near the rule set's prefixes, dressed in VLAN tags, IPv4 options or
    IPv6 extension headers, sometimes truncated or with a few bytes of its headers changed."""
    src, proto, dport, icmp_type, icmp_code, nonfirst = draw(packets_for(ruleset))
    v6 = ":" in src
    dst = draw(st.sampled_from(["2001:db8:ffff::1", "::1"] if v6 else ["10.255.0.1", "127.0.0.1"]))
    vlan = tuple(
        draw(st.lists(st.integers(0, 4095), max_size=3 if draw(st.integers(0, 9)) == 0 else 2))
    )
    options = b"" if v6 else b"\x01" * draw(st.sampled_from([0, 0, 0, 4, 8, 40]))
    ext: tuple[int, ...] = ()
    if v6:
        most = 9 if draw(st.integers(0, 9)) == 0 else 4
        ext = tuple(draw(st.lists(st.sampled_from([0, 43, 60, 44]), max_size=most)))
    frame = build_frame(
        src,
        dst,
        proto,
        dport=dport,
        sport=draw(st.integers(0, 65535)),
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        vlan=vlan,
        payload_len=draw(st.integers(0, 64)),
        nonfirst_fragment=nonfirst,
        ip_options=options,
        ipv6_ext=ext,
    )
    damage = draw(st.sampled_from(["none"] * 6 + ["truncate", "flip"]))
    if damage == "truncate":
        # BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL).
        frame = frame[: draw(st.integers(ETH_HLEN, len(frame) - 1))]
    elif damage == "flip":
        mutable = bytearray(frame)
        for _ in range(draw(st.integers(1, 3))):
            pos = draw(st.integers(12, min(len(mutable), 120) - 1))
            mutable[pos] = draw(st.integers(0, 255))
        frame = bytes(mutable)
    return frame


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_kernel_agrees_with_reference(kernel: Any, data: st.DataObject) -> None:
    ruleset = data.draw(tricky_rulesets())
    tables = load_rules(kernel, ruleset, data.draw(BUDGETS))
    for frame in data.draw(st.lists(frames_for(ruleset), min_size=1, max_size=20)):
        assert_agree(kernel, ruleset, tables, frame)


# Node budgets: the array tries alone, the LPM tries alone, and mixes of both in one table.
BUDGETS = st.sampled_from([None, None, None, 0, 1, 2, 3, 5, 8])


@st.composite
def wide_rulesets(draw: st.DrawFn) -> RuleSet:
    """Prefixes of every length (IPv4 /0../32, IPv6 /0../128: deep trie paths, host routes) and
    long lists of narrow port ranges (two-level rule tries), on lo."""
    blocks = []
    for _ in range(draw(st.integers(1, 3))):
        fams = draw(st.sampled_from([[True], [False], [True, False]]))
        cs = tuple(
            dict.fromkeys(draw(cidrs(v4)) for v4 in fams for _ in range(draw(st.integers(1, 12))))
        )
        count = draw(st.integers(1, 60))
        rules = []
        for order in range(1, count + 1):
            proto = draw(st.sampled_from([Protocol.TCP, Protocol.UDP, Protocol.SCTP, None]))
            action = draw(st.sampled_from(list(Action)))
            if proto is None:
                rules.append(Rule(order * 10, action))
            else:
                rules.append(Rule(order * 10, action, proto, draw(st.none() | port_range())))
        blocks.append(IngressBlock(cs, tuple(rules)))
    unique = {frozenset(b.source_cidrs): b for b in blocks}
    return RuleSet((Firewall("wide", ("lo",), tuple(unique.values())),))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_kernel_agrees_on_wide_tables(kernel: Any, data: st.DataObject) -> None:
    ruleset = data.draw(wide_rulesets())
    tables = load_rules(kernel, ruleset, data.draw(BUDGETS))
    for frame in data.draw(st.lists(frames_for(ruleset), min_size=1, max_size=30)):
        assert_agree(kernel, ruleset, tables, frame)


def host_routes() -> RuleSet:
    """Thousands of IPv4 and IPv6 host prefixes (a Deny of 9/udp) under wider ones (9/udp and
    below allowed, the rest denied)."""
    v4 = tuple(f"198.18.{i >> 8}.{i & 255}/32" for i in range(0, 3000, 3))
    v6 = tuple(f"2001:db8:0:{i}::{i}/128" for i in range(0, 600, 3))
    return RuleSet(
        (
            Firewall(
                "hosts",
                ("lo",),
                (
                    IngressBlock(v4 + v6, (Rule(5, Action.DENY, Protocol.UDP, PortRange(9, 9)),)),
                    IngressBlock(
                        ("198.18.0.0/15", "2001:db8::/32"),
                        (
                            Rule(7, Action.ALLOW, Protocol.UDP, PortRange(1, 9)),
                            Rule(8, Action.DENY),
                        ),
                    ),
                ),
            ),
        )
    )


def assert_host_routes_agree(kernel: Any, ruleset: RuleSet, tables: CompiledTables) -> None:
    """Hits on the hosts, misses beside them (the wider prefixes decide), IPv4 and IPv6."""
    for i in range(0, 3002, 7):
        src = f"198.18.{i >> 8}.{i & 255}"
        for dport in (8, 9, 10):
            assert_agree(kernel, ruleset, tables, build_frame(src, "10.0.0.1", 17, dport=dport))
    for i in range(0, 602, 5):
        src = f"2001:db8:0:{i}::{i}"
        assert_agree(kernel, ruleset, tables, build_frame(src, "::1", 17, dport=9))


def test_kernel_agrees_on_many_host_routes(kernel: Any) -> None:
    """Thousands of IPv4 and IPv6 host prefixes under wider ones, hit and missed around them."""
    ruleset = host_routes()
    tables = load_rules(kernel, ruleset)
    assert tables.fast.lpm == ()  # all in the array tries
    assert_host_routes_agree(kernel, ruleset, tables)


@pytest.mark.parametrize("cuckoo", [True, False], ids=["cuckoo buckets", "hash fallback"])
def test_kernel_agrees_on_hosts_beyond_the_arrays(
    kernel: Any, cuckoo: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hosts the arrays cannot hold (a budget of 2 nodes) go to the exact-prefix tables: the
    cuckoo buckets, or the hosts hash when no region fits; both answer like the reference, for
    hits, misses beside them and the wider prefixes around them, IPv4 and IPv6."""
    from engine.kernel import hostplan

    if not cuckoo:
        monkeypatch.setattr(hostplan, "BUCKETS_PER_GEN", {0: 0, 1: 0})
    ruleset = host_routes()
    tables = load_rules(kernel, ruleset, node_budget=2)
    plan = kernel.tables.last_hosts
    assert plan is not None and len(tables.fast.hosts) >= 1000
    if cuckoo:
        assert not plan.hashed and all(n for _, n, _ in plan.regions.values())
    else:
        assert plan.hashed == dict(tables.fast.hosts)
    assert_host_routes_agree(kernel, ruleset, tables)


# A catch-all Deny behind specific rules: any frame the kernel parses differently from the
# reference (parsed vs unparsed, other port, other protocol) shows up as another verdict.
CATCH_ALL = RuleSet(
    (
        Firewall(
            "probe",
            ("lo",),
            (
                IngressBlock(
                    ("192.0.2.0/24",),
                    (
                        Rule(1, Action.ALLOW, Protocol.TCP, PortRange(8000, 8000)),
                        Rule(2, Action.ALLOW, Protocol.UDP, PortRange(5353, 5353)),
                        Rule(3, Action.ALLOW, Protocol.ICMP, icmp_type=8, icmp_code=0),
                        Rule(4, Action.ALLOW, Protocol.SCTP, PortRange(9, 9)),
                        Rule(5, Action.ALLOW, Protocol.UDP),  # fragments of UDP
                        Rule(99, Action.DENY),
                    ),
                ),
                IngressBlock(
                    ("2001:db8::/32",),
                    (
                        Rule(1, Action.ALLOW, Protocol.TCP, PortRange(8000, 8000)),
                        Rule(2, Action.ALLOW, Protocol.UDP, PortRange(5353, 5353)),
                        Rule(3, Action.ALLOW, Protocol.ICMPV6, icmp_type=128),
                        Rule(99, Action.DENY),
                    ),
                ),
            ),
        ),
    )
)

V4 = IP(src="192.0.2.7", dst="10.0.0.1")
V6 = IPv6(src="2001:db8::7", dst="2001:db8:ffff::1")
ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
SCAPY_FRAMES = {
    "tcp": ETH / V4 / TCP(dport=8000),
    "udp": ETH / V4 / UDP(dport=5353),
    "sctp": ETH / V4 / SCTP(dport=9),
    "icmp echo": ETH / V4 / ICMP(type=8),
    "icmp unreachable": ETH / V4 / ICMP(type=3, code=1),
    "icmpv6 echo": ETH / V6 / ICMPv6EchoRequest(),
    "one vlan": ETH / Dot1Q(vlan=5) / V4 / TCP(dport=8000),
    "qinq": ETH / Dot1AD(vlan=5) / Dot1Q(vlan=6) / V6 / UDP(dport=5353),
    "q in q (0x8100 twice)": ETH / Dot1Q(vlan=5) / Dot1Q(vlan=6) / V4 / TCP(dport=8000),
    "three tags": ETH / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / V4 / TCP(dport=1),
    "ipv4 options": ETH
    / IP(src="192.0.2.7", dst="10.0.0.1", options=b"\x01" * 12)
    / TCP(dport=8000),
    "ipv4 max options": ETH
    / IP(src="192.0.2.7", dst="10.0.0.1", options=b"\x01" * 40)
    / UDP(dport=5353),
    "ipv4 ihl 4": ETH / IP(src="192.0.2.7", dst="10.0.0.1", ihl=4) / TCP(dport=8000),
    "ipv4 version 5": ETH / IP(src="192.0.2.7", dst="10.0.0.1", version=5) / TCP(dport=8000),
    "ipv4 non-first udp fragment": ETH
    / IP(src="192.0.2.7", dst="10.0.0.1", proto=17, frag=3)
    / Raw(b"\0" * 8),
    "ipv4 non-first tcp fragment": ETH
    / IP(src="192.0.2.7", dst="10.0.0.1", proto=6, frag=3)
    / Raw(b"\x1f\x40" * 4),
    "ipv4 first fragment": ETH / IP(src="192.0.2.7", dst="10.0.0.1", flags="MF") / TCP(dport=8000),
    "ipv6 hop-by-hop": ETH / V6 / IPv6ExtHdrHopByHop() / TCP(dport=8000),
    "ipv6 routing": ETH / V6 / IPv6ExtHdrRouting() / UDP(dport=5353),
    "ipv6 dest opts long": ETH
    / V6
    / IPv6ExtHdrDestOpt(autopad=0, options=Raw(b"\x01\x14" + bytes(20)))
    / TCP(dport=8000),
    "ipv6 all four": ETH
    / V6
    / IPv6ExtHdrHopByHop()
    / IPv6ExtHdrRouting()
    / IPv6ExtHdrFragment(m=1)
    / IPv6ExtHdrDestOpt()
    / TCP(dport=8000),
    "ipv6 eight ext": ETH
    / V6
    / (IPv6ExtHdrDestOpt() / IPv6ExtHdrDestOpt())
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / TCP(dport=8000),
    "ipv6 nine ext": ETH
    / V6
    / IPv6ExtHdrHopByHop()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / IPv6ExtHdrDestOpt()
    / TCP(dport=8000),
    "ipv6 non-first fragment": ETH / V6 / IPv6ExtHdrFragment(offset=10, nh=17) / Raw(b"\0" * 8),
    "ipv6 non-first fragment bare": ETH / V6 / IPv6ExtHdrFragment(offset=10, nh=6),
    "ipv6 version 4": ETH / IPv6(src="2001:db8::7", dst="::1", version=4) / TCP(dport=8000),
    "mapped ipv4 source in ipv6": ETH / IPv6(src="::ffff:192.0.2.7", dst="::1") / TCP(dport=8000),
    "gre": ETH / IP(src="192.0.2.7", dst="10.0.0.1", proto=47) / Raw(b"\0" * 4),
    "arp": ETH / ARP(psrc="192.0.2.7", pdst="10.0.0.1"),
    "arp in vlan": ETH / Dot1Q(vlan=3) / ARP(),
    "fail-safe ssh": ETH / V4 / TCP(dport=22),
    "unknown source": ETH / IP(src="198.51.100.1", dst="10.0.0.1") / TCP(dport=1),
}
TRUNCATED = {
    "vlan tag": (ETH / Dot1Q(vlan=5) / V4 / TCP(dport=1), 17),
    "ipv4 header": (ETH / V4 / TCP(dport=1), 33),
    "ipv4 options": (ETH / IP(src="192.0.2.7", options=b"\x01" * 8) / TCP(dport=1), 40),
    "tcp ports": (ETH / V4 / TCP(dport=1), 37),
    "icmp code": (ETH / V4 / ICMP(type=8), 35),
    "ipv6 header": (ETH / V6 / TCP(dport=1), 53),
    "ipv6 hop-by-hop": (ETH / V6 / IPv6ExtHdrHopByHop() / TCP(dport=1), 61),
    "ipv6 hop-by-hop first bytes": (ETH / V6 / IPv6ExtHdrHopByHop() / TCP(dport=1), 55),
    "ipv6 fragment header": (ETH / V6 / IPv6ExtHdrFragment() / TCP(dport=1), 61),
    "udp ports after ext": (ETH / V6 / IPv6ExtHdrDestOpt() / UDP(dport=1), 65),
    "icmpv6 code": (ETH / V6 / ICMPv6EchoRequest(), 55),
}


@pytest.fixture(scope="module")
def catch_all_tables() -> CompiledTables:
    return compile_ruleset(CATCH_ALL, INTERFACES)


@pytest.fixture
def catch_all(kernel: Any, catch_all_tables: CompiledTables) -> CompiledTables:
    """The probe rule set, written again if the property test replaced it."""
    return write(kernel, catch_all_tables)


@pytest.mark.parametrize("name", list(SCAPY_FRAMES))
def test_scapy_frames(kernel: Any, catch_all: CompiledTables, name: str) -> None:
    assert_agree(kernel, CATCH_ALL, catch_all, bytes(SCAPY_FRAMES[name]))


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_frames(kernel: Any, catch_all: CompiledTables, name: str) -> None:
    pkt, cut = TRUNCATED[name]
    frame = bytes(pkt)[:cut]
    assert parse_frame(frame).kind == "unparsed"
    assert_agree(kernel, CATCH_ALL, catch_all, frame)


def test_reload_fills_masks_of_tables_an_older_build_wrote(
    kernel: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older build wrote hosts to the hash and no host regions: a load of this build gives
    every hashed root its masks before the program sees a packet, so the hosts still match."""
    from engine.kernel import hostplan
    from engine.kernel.abi import SRC_ROOTS_ENTRIES
    from engine.kernel.datapath import Datapath
    from engine.kernel.hostplan import HOST_REGION

    monkeypatch.setattr(hostplan, "BUCKETS_PER_GEN", {0: 0, 1: 0})
    hosts = tuple(f"198.18.0.{i}/32" for i in range(1, 200))
    ruleset = RuleSet(
        (
            Firewall(
                "hosts",
                ("lo",),
                (IngressBlock(hosts, (Rule(5, Action.DENY, Protocol.UDP, PortRange(9, 9)),)),),
            ),
        )
    )
    tables = load_rules(kernel, ruleset, node_budget=1)
    assert kernel.tables.last_hosts.hashed
    roots = kernel.tables.roots
    blank = bytes(HOST_REGION.size)
    # what an older build left: no region at all
    roots.write_regions(dict.fromkeys(range(SRC_ROOTS_ENTRIES), blank))
    frame = build_frame("198.18.0.7", "10.0.0.1", 17, dport=9)
    new = Datapath.load(kernel.pin_root)
    try:
        assert new.test_run(frame, LO_IFINDEX)[0] == XDP_DROP
        assert_agree(new, ruleset, tables, frame)
        assert_agree(new, ruleset, tables, build_frame("198.18.0.250", "10.0.0.1", 17, dport=9))
    finally:
        new.close()
