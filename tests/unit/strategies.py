"""Hypothesis strategies for valid rule sets, shared by the unit and kernel tests."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from engine.core.cidr import parse_cidr
from engine.core.model import Action, Firewall, IngressBlock, PortRange, Protocol, Rule, RuleSet

NAMES = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,6}[a-z0-9])?(\.[a-z0-9]{1,4})?\Z")
IFACES = st.from_regex(r"\A[A-Za-z_.@*?!-][A-Za-z0-9_.@*?!-]{0,14}\Z")


@st.composite
def cidrs(draw: st.DrawFn, v4: bool) -> str:
    if v4:
        length = draw(st.integers(0, 32))
        addr = draw(st.integers(0, 2**32 - 1)) >> (32 - length) << (32 - length) if length else 0
        return str(
            parse_cidr(f"{addr >> 24}.{addr >> 16 & 255}.{addr >> 8 & 255}.{addr & 255}/{length}")
        )
    length = draw(st.integers(0, 128))
    addr = draw(st.integers(0, 2**128 - 1)) >> (128 - length) << (128 - length) if length else 0
    if (addr >> 32) == 0xFFFF and length >= 96:
        addr ^= 1 << 127  # out of the IPv4-mapped range, which must be written as IPv4
    return str(parse_cidr(f"{ipaddress.IPv6Address(addr)}/{length}"))


@st.composite
def rules_for(draw: st.DrawFn, families: set[bool]) -> Rule:
    order = draw(st.integers(1, 65535))
    action = draw(st.sampled_from(list(Action)))
    choices: list[Protocol | None] = [None, Protocol.TCP, Protocol.UDP, Protocol.SCTP]
    if families == {True}:
        choices.append(Protocol.ICMP)
    if families == {False}:
        choices.append(Protocol.ICMPV6)
    proto = draw(st.sampled_from(choices))
    if proto is None:
        return Rule(order, action)
    if proto.has_ports:
        if draw(st.booleans()):
            low = draw(st.integers(1, 65535))
            high = draw(st.integers(low, 65535))
            return Rule(order, action, proto, PortRange(low, high))
        return Rule(order, action, proto)
    icmp_type = draw(st.none() | st.integers(0, 255))
    icmp_code = None if icmp_type is None else draw(st.none() | st.integers(0, 255))
    return Rule(order, action, proto, icmp_type=icmp_type, icmp_code=icmp_code)


@st.composite
def blocks(draw: st.DrawFn) -> IngressBlock:
    fams = draw(st.sampled_from([[True], [False], [True, False]]))
    cs = [draw(cidrs(v4)) for v4 in fams for _ in range(draw(st.integers(1, 2)))]
    rules = draw(
        st.lists(
            rules_for({parse_cidr(c).is_v4 for c in cs}),
            min_size=1,
            max_size=5,
            unique_by=lambda r: r.order,
        )
    )
    return IngressBlock(tuple(dict.fromkeys(cs)), tuple(sorted(rules, key=lambda r: r.order)))


LABELS = st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=3)


@st.composite
def rulesets(draw: st.DrawFn) -> RuleSet:
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    fws = []
    for name in names:
        blks = draw(
            st.lists(
                blocks(), min_size=1, max_size=3, unique_by=lambda b: frozenset(b.source_cidrs)
            )
        )
        ifaces = tuple(draw(st.lists(IFACES, min_size=1, max_size=3, unique=True)))
        selector = draw(st.none() | st.fixed_dictionaries({"matchLabels": LABELS}))
        extra = draw(st.fixed_dictionaries({}, optional={"labels": LABELS, "annotations": LABELS}))
        fws.append(Firewall(name, ifaces, tuple(blks), selector or {}, extra))
    return RuleSet(tuple(fws))


# --- rule sets built to stress the compiler: nested prefixes, ties, overlaps, globs -----------

NODE_INTERFACES: dict[str, int] = {"eth0": 1, "eth1": 2, "ens3": 3, "lo": 4}
IFACE_PATTERNS = ("eth0", "eth1", "eth*", "ens*", "*", "lo", "wlan0")
INTERESTING_PORTS = (1, 21, 22, 23, 53, 67, 68, 69, 79, 80, 81, 443, 1024, 2379, 2380, 6443, 65535)
INTERESTING_ICMP = (0, 3, 8, 128, 129, 255)
V4_BASE = 0x0A000000  # 10.0.0.0/8 holds most IPv4 prefixes, so they nest
V6_BASE = 0x20010DB8 << 96  # 2001:db8::/32 likewise


@st.composite
def nested_prefix(draw: st.DrawFn, v4: bool) -> str:
    """A prefix that often nests in or overlaps the others drawn (same few bases, short paths)."""
    bits = 32 if v4 else 128
    if draw(st.integers(0, 9)) == 0:
        length = 0
        value = 0
    else:
        base_len = 8 if v4 else 32
        base = V4_BASE if v4 else V6_BASE
        extra = draw(st.integers(0, 24 if v4 else 40))
        length = base_len + extra
        # Few distinct bit patterns below the base, so prefixes collide and nest.
        pattern = draw(st.sampled_from([0, 1, 2, 3, 0x55, 0xAAAA])) if extra else 0
        below = (pattern << max(0, extra - pattern.bit_length())) & ((1 << extra) - 1)
        value = (base | below << (bits - length)) if extra else base
        value = (value >> (bits - length)) << (bits - length)
    if v4:
        return str(parse_cidr(f"{ipaddress.IPv4Address(value)}/{length}"))
    return str(parse_cidr(f"{ipaddress.IPv6Address(value)}/{length}"))


@st.composite
def port_range(draw: st.DrawFn) -> PortRange:
    low = draw(st.sampled_from(INTERESTING_PORTS) | st.integers(1, 65535))
    high = draw(
        st.sampled_from([p for p in INTERESTING_PORTS if p >= low] or [low])
        | st.integers(low, 65535)
    )
    return PortRange(low, max(low, high))


@st.composite
def tricky_rule(draw: st.DrawFn, order: int, families: set[bool]) -> Rule:
    action = draw(st.sampled_from(list(Action)))
    choices: list[Protocol | None] = [None, Protocol.TCP, Protocol.UDP, Protocol.SCTP]
    if families == {True}:
        choices.append(Protocol.ICMP)
    if families == {False}:
        choices.append(Protocol.ICMPV6)
    proto = draw(st.sampled_from(choices))
    if proto is None:
        return Rule(order, action)
    if proto.has_ports:
        ports = draw(st.none() | port_range())
        return Rule(order, action, proto, ports)
    icmp_type = draw(st.none() | st.sampled_from(INTERESTING_ICMP))
    icmp_code = None if icmp_type is None else draw(st.none() | st.sampled_from((0, 1, 255)))
    return Rule(order, action, proto, icmp_type=icmp_type, icmp_code=icmp_code)


@st.composite
def tricky_block(draw: st.DrawFn) -> IngressBlock:
    fams = draw(st.sampled_from([[True], [False], [True, False], [True, True]]))
    cs = tuple(dict.fromkeys(draw(nested_prefix(v4)) for v4 in fams))
    families = {parse_cidr(c).is_v4 for c in cs}
    # Orders from a small range: ties across blocks and objects are the interesting case.
    orders = draw(st.lists(st.integers(1, 12), min_size=1, max_size=6, unique=True))
    rules = tuple(draw(tricky_rule(o, families)) for o in sorted(orders))
    return IngressBlock(cs, rules)


@st.composite
def tricky_rulesets(draw: st.DrawFn, max_objects: int = 3) -> RuleSet:
    names = draw(
        st.lists(
            st.sampled_from(["a", "b", "web", "zz"]), min_size=1, max_size=max_objects, unique=True
        )
    )
    fws = []
    for name in names:
        ifaces = tuple(
            draw(st.lists(st.sampled_from(IFACE_PATTERNS), min_size=1, max_size=2, unique=True))
        )
        blks = draw(
            st.lists(
                tricky_block(),
                min_size=1,
                max_size=3,
                unique_by=lambda b: frozenset(b.source_cidrs),
            )
        )
        fws.append(Firewall(name, ifaces, tuple(blks)))
    return RuleSet(tuple(fws))


def ruleset_prefixes(ruleset: RuleSet) -> list[str]:
    return [c for fw in ruleset.firewalls for b in fw.ingress for c in b.source_cidrs]


@st.composite
def source_near(draw: st.DrawFn, ruleset: RuleSet) -> str:
    """An address inside one of the rule set's prefixes, just outside one, or anywhere."""
    prefixes = [parse_cidr(c) for c in ruleset_prefixes(ruleset)]
    how = draw(st.sampled_from(["inside", "inside", "edge", "random4", "random6", "mapped"]))
    if how in ("inside", "edge") and prefixes:
        p = draw(st.sampled_from(prefixes))
        host_bits = 128 - p.length
        value = p.value | draw(st.integers(0, (1 << host_bits) - 1)) if host_bits else p.value
        if how == "edge" and p.length > (96 if p.is_v4 else 0):
            value ^= 1 << (128 - p.length)  # flip the last network bit: the neighbouring prefix
        if p.is_v4:
            return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
        return str(ipaddress.IPv6Address(value))
    if how == "random6":
        return str(ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))))
    v4 = draw(st.integers(0, 2**32 - 1))
    if how == "mapped":
        return str(ipaddress.IPv6Address(0xFFFF << 32 | v4))
    return str(ipaddress.IPv4Address(v4))


@st.composite
def packets_for(
    draw: st.DrawFn, ruleset: RuleSet
) -> tuple[str, int, int | None, int | None, int | None, bool]:
    """(src, ipproto, dport, icmp_type, icmp_code, nonfirst_fragment)."""
    src = draw(source_near(ruleset))
    proto = draw(st.sampled_from([6, 17, 132, 1, 58, 47, 0]))
    nonfirst = draw(st.integers(0, 5)) == 0
    dport = icmp_type = icmp_code = None
    if not nonfirst and proto in (6, 17, 132):
        dport = draw(
            st.sampled_from(INTERESTING_PORTS).flatmap(lambda p: st.sampled_from([p - 1, p, p + 1]))
            | st.integers(0, 65535)
        )
        dport = min(max(dport, 0), 65535)
    if not nonfirst and proto in (1, 58):
        icmp_type = draw(st.sampled_from(INTERESTING_ICMP) | st.integers(0, 255))
        icmp_code = draw(st.sampled_from((0, 1, 2, 255)))
    return src, proto, dport, icmp_type, icmp_code, nonfirst
