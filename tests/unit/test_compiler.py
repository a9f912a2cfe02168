"""engine.core.compiler: prefix cover, segments, stable ids, limits, and agreement with the brute force."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import classify as classify_mod
from engine.core import compiler
from engine.core.cidr import parse_cidr
from engine.core.classify import PacketFields, Reason, classify, lookup, lookup_lpm
from engine.core.compiler import (
    VALUE_MAX,
    ListRule,
    assign_rule_ids,
    compile_ruleset,
    first_match_segments,
    range_to_prefixes,
    rule_key,
)
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe
from engine.core.model import (
    Action,
    Firewall,
    IngressBlock,
    PortRange,
    Protocol,
    Rule,
    RuleSet,
    add_rule,
)
from engine.errors import LimitError
from engine.kernel import abi as layout
from tests.unit.strategies import NODE_INTERFACES, packets_for, tricky_rulesets

# --- range_to_prefixes --------------------------------------------------------------------


def covered(prefixes: list[tuple[int, int]], bits: int = 16) -> list[tuple[int, int]]:
    out = []
    for value, length in prefixes:
        size = 1 << (bits - length)
        assert value % size == 0, "prefix not aligned"
        out.append((value, value + size - 1))
    return sorted(out)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, VALUE_MAX).flatmap(lambda lo: st.tuples(st.just(lo), st.integers(lo, VALUE_MAX)))
)
def test_range_to_prefixes_covers_exactly(bounds: tuple[int, int]) -> None:
    low, high = bounds
    prefixes = range_to_prefixes(low, high)
    assert len(prefixes) <= 30
    spans = covered(prefixes)
    assert spans[0][0] == low and spans[-1][1] == high
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start == end + 1  # disjoint and gapless


@pytest.mark.parametrize(
    "low, high, count",
    [(0, VALUE_MAX, 1), (1, VALUE_MAX, 16), (1, VALUE_MAX - 1, 30), (80, 80, 1), (8000, 8080, 3)],
)
def test_range_to_prefixes_known(low: int, high: int, count: int) -> None:
    assert len(range_to_prefixes(low, high)) == count
    assert range_to_prefixes(0, VALUE_MAX) == [(0, 0)]


def test_range_to_prefixes_other_widths() -> None:
    assert covered(range_to_prefixes(3, 12, bits=4), bits=4) == [(3, 3), (4, 7), (8, 11), (12, 12)]


# --- first_match_segments ------------------------------------------------------------------

LIST_RULES = st.builds(
    lambda i, lo, span: ListRule(i, Action.DENY, 6, lo, min(VALUE_MAX, lo + span), True),
    st.integers(1, 1000),
    st.integers(0, VALUE_MAX),
    st.sampled_from([0, 1, 2, 10, 100, 1000, VALUE_MAX]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LIST_RULES, max_size=8), st.lists(st.integers(0, VALUE_MAX), max_size=40))
def test_first_match_segments(rules: list[ListRule], probes: list[int]) -> None:
    segs = first_match_segments(rules)
    # Sorted, disjoint, maximal (neighbours that touch have different winners).
    for (_, end, a), (start, _, b) in itertools.pairwise(segs):
        assert start > end
        assert start > end + 1 or a is not b
    interesting = {p for r in rules for p in (r.low - 1, r.low, r.high, r.high + 1)}
    for value in set(probes) | {v for v in interesting if 0 <= v <= VALUE_MAX}:
        expect = next((r for r in rules if r.low <= value <= r.high), None)
        got = next((w for lo, hi, w in segs if lo <= value <= hi), None)
        assert got is expect


def test_first_match_segments_example() -> None:
    a = ListRule(1, Action.DENY, 6, 100, 200, True)
    b = ListRule(2, Action.ALLOW, 6, 0, VALUE_MAX, False)
    c = ListRule(3, Action.DENY, 6, 150, 300, True)
    assert first_match_segments([a, b, c]) == [(0, 99, b), (100, 200, a), (201, VALUE_MAX, b)]
    assert first_match_segments([c, a]) == [(100, 149, a), (150, 300, c)]
    assert first_match_segments([]) == []


# --- stable ids ------------------------------------------------------------------------------


def base_ruleset() -> RuleSet:
    rs = RuleSet()
    rs = add_rule(
        rs,
        "web",
        ("eth0",),
        ("10.0.0.0/8",),
        Rule(10, Action.DENY, Protocol.TCP, PortRange(80, 80)),
    )
    rs = add_rule(rs, "web", ("eth0",), ("10.0.0.0/8",), Rule(20, Action.ALLOW))
    rs = add_rule(rs, "web", ("eth0",), ("192.0.2.0/24",), Rule(5, Action.DENY, Protocol.UDP))
    rs = add_rule(rs, "db", ("eth*",), ("2001:db8::/32",), Rule(1, Action.DENY))
    return rs


def test_ids_survive_added_rules() -> None:
    rs = base_ruleset()
    first = compile_ruleset(rs, NODE_INTERFACES)
    # A new rule in the middle of an existing block, a new block, and a new object first in line.
    edited = add_rule(rs, "web", ("eth0",), ("10.0.0.0/8",), Rule(15, Action.DENY, Protocol.SCTP))
    edited = add_rule(edited, "web", ("eth0",), ("172.16.0.0/12",), Rule(1, Action.DENY))
    edited = RuleSet(
        (
            Firewall("aaa", ("lo",), (IngressBlock(("0.0.0.0/0",), (Rule(1, Action.DENY),)),)),
            *edited.firewalls,
        )
    )
    second = compile_ruleset(edited, NODE_INTERFACES, previous_ids=first.rule_ids)
    for key, rid in first.rule_ids.items():
        assert second.rule_ids[key] == rid
    new_ids = [rid for key, rid in second.rule_ids.items() if key not in first.rule_ids]
    assert len(new_ids) == 3 and not set(new_ids) & set(first.rule_ids.values())
    assert len(set(second.rule_ids.values())) == len(second.rule_ids)


def test_ids_survive_removals_and_unrelated_changes() -> None:
    rs = base_ruleset()
    first = compile_ruleset(rs, NODE_INTERFACES)
    fewer = rs.without_firewall("db")
    fewer = add_rule(
        fewer, "web", ("eth0", "eth1"), ("10.0.0.0/8",), Rule(20, Action.DENY)
    )  # edit in place
    second = compile_ruleset(fewer, NODE_INTERFACES, previous_ids=first.rule_ids)
    for key, rid in second.rule_ids.items():
        assert first.rule_ids[key] == rid


def test_rule_key_ignores_cidr_order() -> None:
    rule = Rule(1, Action.DENY)
    a = IngressBlock(("10.0.0.0/8", "192.0.2.0/24"), (rule,))
    b = IngressBlock(("192.0.2.0/24", "10.0.0.0/8"), (rule,))
    assert rule_key("x", a, rule) == rule_key("x", b, rule)


def test_ids_are_positive_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = assign_rule_ids(base_ruleset())
    assert sorted(ids.values()) == [1, 2, 3, 4]
    monkeypatch.setattr(compiler, "MAX_RULE_ID", 3)
    with pytest.raises(LimitError) as info:
        assign_rule_ids(base_ruleset())
    assert "3" in str(info.value)


# --- limits ------------------------------------------------------------------------------------


def one_block(
    rules: int, cidrs: tuple[str, ...] = ("10.0.0.0/8",), ifaces: tuple[str, ...] = ("eth0",)
) -> RuleSet:
    block = IngressBlock(
        cidrs,
        tuple(
            Rule(i + 1, Action.DENY, Protocol.TCP, PortRange(i + 1, i + 1)) for i in range(rules)
        ),
    )
    return RuleSet((Firewall("web", ifaces, (block,)),))


def limit_error(call: object) -> str:
    assert callable(call)
    with pytest.raises(LimitError) as info:
        call()
    assert info.value.errors
    return str(info.value)


def test_limit_rules_per_source() -> None:
    text = limit_error(
        lambda: compile_ruleset(one_block(compiler.MAX_RULES_PER_SOURCE + 1), NODE_INTERFACES)
    )
    assert f"{compiler.MAX_RULES_PER_SOURCE}" in text and "10.0.0.0/8" in text
    compile_ruleset(one_block(compiler.MAX_RULES_PER_SOURCE), NODE_INTERFACES)


def test_limit_interfaces() -> None:
    many = {f"veth{i}": i + 1 for i in range(compiler.MAX_INTERFACES + 1)}
    text = limit_error(lambda: compile_ruleset(one_block(1, ifaces=("veth*",)), many))
    assert "interfaces" in text and str(compiler.MAX_INTERFACES) in text


def test_limit_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "MAX_PREFIXES", 3)
    cidrs = ("10.0.0.0/8", "10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16")
    text = limit_error(lambda: compile_ruleset(one_block(1, cidrs), NODE_INTERFACES))
    assert "source prefixes" in text and "3" in text


def test_limit_segments_and_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiler, "MAX_SEGMENTS", 10)
    assert "segment entries" in limit_error(lambda: compile_ruleset(one_block(20), NODE_INTERFACES))
    monkeypatch.undo()
    monkeypatch.setattr(compiler, "MAX_LISTS", 1)
    rs = one_block(1, ("10.0.0.0/8",)).with_firewall(
        Firewall("two", ("eth0",), (IngressBlock(("10.1.0.0/16",), (Rule(1, Action.ALLOW),)),))
    )
    assert "rule lists" in limit_error(lambda: compile_ruleset(rs, NODE_INTERFACES))


def test_limit_failsafe_ports() -> None:
    wide = (*DEFAULT_FAILSAFE, FailSafe(Protocol.UDP, PortRange(1000, 3000), "too wide"))
    assert "fail-safe ports" in limit_error(
        lambda: compile_ruleset(one_block(1), NODE_INTERFACES, wide)
    )


# --- the compiled lookup agrees with the brute force ------------------------------------------------


def test_wider_prefix_lower_order_deny_is_not_hidden() -> None:
    # The operator's anchor consults only the longest prefix; infw merges enclosing prefixes.
    rs = RuleSet(
        (
            Firewall(
                "a",
                ("eth0",),
                (
                    IngressBlock(
                        ("10.0.0.0/8",), (Rule(1, Action.DENY, Protocol.TCP, PortRange(80, 80)),)
                    ),
                    IngressBlock(("10.1.0.0/16",), (Rule(5, Action.ALLOW, Protocol.TCP),)),
                ),
            ),
        )
    )
    tables = compile_ruleset(rs, NODE_INTERFACES)
    pkt = PacketFields(src="10.1.2.3", ipproto=6, dport=80)
    decision = lookup(tables, 1, pkt)
    assert (
        decision.action is Action.DENY
        and decision.rule is not None
        and decision.rule.rule.order == 1
    )
    assert (
        lookup(tables, 1, PacketFields(src="10.1.2.3", ipproto=6, dport=81)).action is Action.ALLOW
    )
    assert lookup(tables, 2, pkt).reason is Reason.NO_MATCH  # eth1 is not selected


def test_ipv4_never_matches_ipv6_any() -> None:
    rs = RuleSet((Firewall("a", ("*",), (IngressBlock(("::/0",), (Rule(1, Action.DENY),)),)),))
    tables = compile_ruleset(rs, NODE_INTERFACES)
    assert (
        lookup(tables, 1, PacketFields(src="192.0.2.1", ipproto=6, dport=80)).reason
        is Reason.NO_MATCH
    )
    assert (
        lookup(tables, 1, PacketFields(src="2001:db8::1", ipproto=6, dport=80)).action
        is Action.DENY
    )


def test_nonfirst_fragments_skip_l4_rules() -> None:
    rs = RuleSet(
        (
            Firewall(
                "a",
                ("eth0",),
                (
                    IngressBlock(
                        ("10.0.0.0/8",),
                        (
                            Rule(1, Action.DENY, Protocol.UDP, PortRange(53, 53)),
                            Rule(2, Action.ALLOW, Protocol.UDP),
                            Rule(3, Action.DENY),
                        ),
                    ),
                ),
            ),
        )
    )
    tables = compile_ruleset(rs, NODE_INTERFACES)
    frag = PacketFields(src="10.0.0.1", ipproto=17, nonfirst_fragment=True)
    assert lookup(tables, 1, frag).rule_id == classify(rs, tables.rule_ids, "eth0", frag).rule_id
    assert lookup(tables, 1, frag).rule is not None and lookup(tables, 1, frag).rule.rule.order == 2  # type: ignore[union-attr]


def test_failsafe_first() -> None:
    rs = RuleSet(
        (Firewall("a", ("eth0",), (IngressBlock(("0.0.0.0/0",), (Rule(1, Action.DENY),)),)),)
    )
    tables = compile_ruleset(rs, NODE_INTERFACES)
    ssh = PacketFields(src="10.0.0.1", ipproto=6, dport=22)
    assert lookup(tables, 1, ssh).reason is Reason.FAILSAFE
    assert classify(rs, tables.rule_ids, "eth0", ssh).reason is Reason.FAILSAFE
    frag = PacketFields(src="10.0.0.1", ipproto=6, nonfirst_fragment=True)
    assert lookup(tables, 1, frag).action is Action.DENY


def agree(
    rs: RuleSet,
    packets: list[tuple[str, int, int | None, int | None, int | None, bool]],
    iface: str,
    node_budget: int | None = None,
) -> None:
    """classify (brute force), lookup (the kernel's path: array tries, LPM where they do not
    fit) and lookup_lpm (the full LPM images) must all decide alike."""
    tables = dataclasses.replace(compile_ruleset(rs, NODE_INTERFACES), node_budget=node_budget)
    for src, proto, dport, icmp_type, icmp_code, nonfirst in packets:
        pkt = PacketFields(
            src=src,
            ipproto=proto,
            dport=dport,
            icmp_type=icmp_type,
            icmp_code=icmp_code,
            nonfirst_fragment=nonfirst,
        )
        want = classify(rs, tables.rule_ids, iface, pkt, DEFAULT_FAILSAFE)
        got = lookup(tables, NODE_INTERFACES[iface], pkt)
        assert (got.action, got.reason, got.rule_id) == (want.action, want.reason, want.rule_id), (
            f"{pkt} on {iface}: brute force {want.describe()}, compiled {got.describe()}"
        )
        full = lookup_lpm(tables, NODE_INTERFACES[iface], pkt)
        assert (full.action, full.reason, full.rule_id) == (want.action, want.reason, want.rule_id)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_compiled_lookup_equals_brute_force(data: st.DataObject) -> None:
    rs = data.draw(tricky_rulesets())
    iface = data.draw(st.sampled_from(sorted(NODE_INTERFACES)))
    packets = data.draw(st.lists(packets_for(rs), min_size=1, max_size=25))
    budget = data.draw(st.sampled_from([None, None, 0, 1, 2, 3, 5, 8, 13]))
    agree(rs, packets, iface, budget)


def test_compiled_lookup_sweep_of_one_ruleset() -> None:
    """A fixed, dense rule set probed at every interesting point (regression net for the property)."""
    rs = RuleSet(
        (
            Firewall(
                "a",
                ("eth*",),
                (
                    IngressBlock(
                        ("10.0.0.0/8", "2001:db8::/32"),
                        (
                            Rule(3, Action.DENY, Protocol.TCP, PortRange(1000, 2000)),
                            Rule(7, Action.ALLOW, Protocol.UDP),
                        ),
                    ),
                    IngressBlock(
                        ("10.1.0.0/16",),
                        (
                            Rule(3, Action.ALLOW, Protocol.TCP, PortRange(1500, 1600)),
                            Rule(4, Action.DENY, Protocol.ICMP, icmp_type=8, icmp_code=0),
                            Rule(9, Action.DENY),
                        ),
                    ),
                ),
            ),
            Firewall(
                "b",
                ("eth0",),
                (
                    IngressBlock(
                        ("0.0.0.0/0",),
                        (
                            Rule(3, Action.ALLOW, Protocol.TCP, PortRange(900, 1499)),
                            Rule(4, Action.ALLOW, Protocol.ICMP, icmp_type=8),
                        ),
                    ),
                    IngressBlock(("10.1.2.0/24",), (Rule(2, Action.DENY, Protocol.SCTP),)),
                ),
            ),
        )
    )
    packets = []
    for src in ("10.1.2.3", "10.1.3.3", "10.2.0.1", "11.0.0.1", "2001:db8::5", "::ffff:10.1.2.3"):
        for proto in (6, 17, 132, 1, 58, 47):
            for value in (0, 22, 899, 900, 999, 1000, 1499, 1500, 1600, 1601, 2000, 2001, 65535):
                ports = proto in (6, 17, 132)
                icmp = proto in (1, 58)
                packets.append(
                    (
                        src,
                        proto,
                        value if ports else None,
                        value >> 8 if icmp else None,
                        value & 0xFF if icmp else None,
                        False,
                    )
                )
            packets.append((src, proto, None, None, None, True))
    for iface in NODE_INTERFACES:
        for budget in (None, 0, 4):
            agree(rs, packets, iface, budget)


# --- array-trie images ------------------------------------------------------------------------


def single_block(cidrs: tuple[str, ...], rules: tuple[Rule, ...], name: str = "a") -> RuleSet:
    return RuleSet((Firewall(name, ("eth0",), (IngressBlock(cidrs, rules),)),))


def test_fast_images_hold_everything_that_fits() -> None:
    tables = compile_ruleset(
        single_block(
            ("10.0.0.0/8", "2001:db8::/32"),
            (Rule(1, Action.DENY, Protocol.TCP, PortRange(80, 80)),),
        ),
        NODE_INTERFACES,
    )
    fast = tables.fast
    assert fast.lpm == () and fast.segments == ()
    assert set(fast.src_roots) == {(1, layout.V4_SPACE), (1, layout.V6_SPACE)}
    assert all(r & layout.NODE_FLAG for r in fast.src_roots.values())
    # 10.0.0.0/8: one node (the root, indexed by the first octet); 2001:db8::/32: four levels
    assert fast.node_count == 1 + 4 + 2  # + the TCP rule's root and its child for port 80
    assert len(fast.nodes) == fast.node_count * layout.NODE_ENTRIES * 4


def test_fast_images_fall_back_per_space_and_list() -> None:
    rs = single_block(
        ("10.0.0.0/8", "2001:db8::/32", "2001:db8:1::/48"),
        (Rule(1, Action.DENY, Protocol.TCP, PortRange(80, 80)),),
    )
    tables = dataclasses.replace(compile_ruleset(rs, NODE_INTERFACES), node_budget=1)
    fast = tables.fast
    # the IPv4 root fits; the IPv6 chains do not: the /48 (it holds no longer prefix) goes to
    # the host hash, the /32 (it holds the /48) to the LPM trie; nor do the list's two nodes fit
    assert fast.src_roots[(1, layout.V4_SPACE)] & layout.NODE_FLAG
    assert fast.src_roots[(1, layout.V6_SPACE)] == compiler.host_root(48, layout.ROOT_TRIE)
    assert list(fast.hosts) == [(1, parse_cidr("2001:db8:1::/48").value)]
    assert [(e.prefix.is_v4, e.prefix.length) for e in fast.lpm] == [(False, 32)]
    assert set(fast.list_roots[1]) == {layout.ROOT_TRIE}
    assert fast.segments == tables.segments
    for src in ("10.1.2.3", "2001:db8::1", "2001:db8:1::1", "2001:db8:2::1", "11.0.0.1"):
        for dport in (79, 80, 81):
            pkt = PacketFields(src=src, ipproto=6, dport=dport)
            want = lookup_lpm(tables, 1, pkt)
            got = lookup(tables, 1, pkt)
            assert (got.action, got.reason, got.rule_id) == (want.action, want.reason, want.rule_id)


def test_fast_images_beyond_the_arrays(monkeypatch: pytest.MonkeyPatch) -> None:
    """An ifindex past the root array, or a list id past the list array, is looked up in the
    LPM tries (the kernel does not index the arrays with them)."""
    rs = RuleSet(
        (
            Firewall("a", ("big",), (IngressBlock(("10.0.0.0/8",), (Rule(1, Action.DENY),)),)),
            Firewall("b", ("eth0",), (IngressBlock(("10.0.0.0/8",), (Rule(2, Action.ALLOW),)),)),
        )
    )
    big = layout.ROOT_IFINDEXES + 5
    monkeypatch.setattr(compiler, "LISTS_PER_GEN", 2)
    monkeypatch.setattr(classify_mod, "LISTS_PER_GEN", 2)
    tables = compile_ruleset(rs, {"big": big, "eth0": 1})
    fast = tables.fast
    assert all(ifindex < layout.ROOT_IFINDEXES for ifindex, _ in fast.src_roots)
    assert {e.ifindex for e in fast.lpm} == {big}
    assert sorted(fast.list_roots) == [1] and {s.list_id for s in fast.segments} == {2}
    for ifindex in (big, 1):
        pkt = PacketFields(src="10.0.0.1", ipproto=17, dport=53)
        assert lookup(tables, ifindex, pkt).rule_id == lookup_lpm(tables, ifindex, pkt).rule_id
        assert lookup(tables, ifindex, pkt).rule_id is not None


def test_fast_images_share_equal_nodes() -> None:
    """Lists that only differ elsewhere share their equal nodes (one copy per generation)."""
    rules = tuple(
        Rule(i + 1, Action.DENY, Protocol.UDP, PortRange(1000 + 7 * i, 1003 + 7 * i))
        for i in range(30)
    )
    rs = RuleSet(
        (
            Firewall(
                "a",
                ("eth0",),
                (
                    IngressBlock(("10.0.0.0/8",), rules),
                    IngressBlock(("10.1.0.0/16",), (Rule(100, Action.ALLOW, Protocol.TCP),)),
                ),
            ),
        )
    )
    fast = compile_ruleset(rs, NODE_INTERFACES).fast
    roots = list(fast.list_roots.values())
    assert len(roots) == 2
    udp = layout.SEG_CLASS_INDEX[17] * 2
    assert roots[0][udp] == roots[1][udp]  # the UDP trie of both lists is one set of nodes


def test_fast_images_of_100k_prefixes_are_quick() -> None:
    import time

    cidrs = tuple(f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}/32" for i in range(100_000))
    rs = single_block(cidrs, (Rule(1, Action.DENY, Protocol.UDP, PortRange(9, 9)),))
    tables = compile_ruleset(rs, NODE_INTERFACES)
    start = time.perf_counter()
    fast = tables.fast
    assert time.perf_counter() - start < 2.0
    assert fast.lpm == () and fast.node_count < 400
    hit = PacketFields(src="198.19.134.159", ipproto=17, dport=9)
    assert lookup(tables, 1, hit).action is Action.DENY
    miss = PacketFields(src="198.19.134.160", ipproto=17, dport=9)
    assert lookup(tables, 1, miss).reason is Reason.NO_MATCH


def test_every_space_of_a_covered_interface_has_a_root_and_others_none() -> None:
    """A zero root is how the program tells an interface with no tables (unconfigured) from a
    covered one whose space holds no prefix (ROOT_EMPTY: no match). Both compilers agree."""
    from engine.core.classify import has_tables
    from engine.core.incremental import IncrementalCompiler

    rs = RuleSet(
        (Firewall("a", ("eth0",), (IngressBlock(("192.0.2.0/24",), (Rule(1, Action.DENY),)),)),)
    )
    for tables in (
        compile_ruleset(rs, NODE_INTERFACES),
        IncrementalCompiler().compile(rs, NODE_INTERFACES),
    ):
        roots = tables.fast.src_roots
        eth0, eth1 = NODE_INTERFACES["eth0"], NODE_INTERFACES["eth1"]
        assert roots[(eth0, layout.V6_SPACE)] == layout.ROOT_EMPTY
        assert roots[(eth0, layout.V4_SPACE)] not in (0, layout.ROOT_EMPTY)
        assert (eth1, layout.V4_SPACE) not in roots and (eth1, layout.V6_SPACE) not in roots
        assert has_tables(tables.fast, eth0) and not has_tables(tables.fast, eth1)
        v6 = PacketFields(src="2001:db8::1", ipproto=17, dport=53)
        assert lookup(tables, eth0, v6).reason is Reason.NO_MATCH
        assert lookup(tables, eth1, v6).reason is Reason.NO_MATCH


def test_host_hash_answers_first_and_only_where_no_longer_prefix_exists() -> None:
    """Many hosts and /64s beyond the arrays: the most common length goes to the host hash
    unless a prefix holds a longer one (that one stays in the trie, and so does the longer);
    brute force, the kernel's path and the LPM images agree on hits, misses and neighbours."""
    v4_hosts = [f"198.18.{i >> 8}.{i & 255}/32" for i in range(0, 1200, 3)]
    v6_nets = [f"2001:db8:{i:x}::/64" for i in range(300)]
    inner = ["2001:db8:7::42/128", "2001:db8:9::/80"]  # inside two of the /64s
    rs = RuleSet(
        (
            Firewall(
                "hosts",
                ("eth0",),
                (
                    IngressBlock(tuple(v4_hosts + v6_nets), (Rule(5, Action.DENY, Protocol.UDP),)),
                    IngressBlock(tuple(inner), (Rule(3, Action.ALLOW, Protocol.UDP),)),
                    IngressBlock(
                        ("198.18.0.0/15", "2001:db8::/32"), (Rule(9, Action.DENY, Protocol.TCP),)
                    ),
                ),
            ),
        )
    )
    tables = dataclasses.replace(compile_ruleset(rs, NODE_INTERFACES), node_budget=3)
    fast = tables.fast
    eth0 = NODE_INTERFACES["eth0"]
    hashed = {value for (_, value) in fast.hosts}
    assert len(hashed) == len(v4_hosts) + len(v6_nets) - 2
    assert parse_cidr("2001:db8:7::/64").value not in hashed  # holds the /128
    assert fast.src_roots[(eth0, layout.V4_SPACE)] & layout.ROOT_HOSTS
    assert fast.src_roots[(eth0, layout.V6_SPACE)] & layout.ROOT_HOSTS
    probes = [
        "198.18.0.0", "198.18.0.1", "198.18.4.173", "198.19.0.1", "10.0.0.1",
        "2001:db8:7::42", "2001:db8:7::43", "2001:db8:9::1", "2001:db8:9:0:1::1",
        "2001:db8:12b::1", "2001:db8:12c::1", "2001:db8:ffff::1", "2001:db9::1",
    ]  # fmt: skip
    for src in probes:
        for proto in (6, 17):
            pkt = PacketFields(src=src, ipproto=proto, dport=53)
            want = classify(rs, tables.rule_ids, "eth0", pkt, DEFAULT_FAILSAFE)
            for got in (lookup(tables, eth0, pkt), lookup_lpm(tables, eth0, pkt)):
                assert (got.action, got.reason, got.rule_id) == (
                    want.action,
                    want.reason,
                    want.rule_id,
                ), f"{src} proto {proto}: {got.describe()} vs {want.describe()}"


def test_a_deep_ipv6_walk_goes_to_the_host_hash_even_when_it_fits() -> None:
    rs = single_block(("2001:db8::1/128", "2001:db8::/32"), (Rule(1, Action.DENY),))
    fast = compile_ruleset(rs, NODE_INTERFACES).fast
    assert fast.src_roots[(1, layout.V6_SPACE)] & layout.ROOT_HOSTS
    assert list(fast.hosts) == [(1, parse_cidr("2001:db8::1/128").value)]
