"""The synthetic rule sets the benchmarks run, and the same rules written for nftables.

Packets only ever come from the documentation ranges; the 100,000-CIDR tables use host
prefixes from 198.18.0.0/15 (RFC 2544's benchmarking range), which only ever appear in rule
data and in frames run through BPF_PROG_TEST_RUN, never on a wire.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from engine.core.model import Action, Firewall, IngressBlock, PortRange, Protocol, Rule, RuleSet

HIT_PORT = 9  # the UDP port the measured packets go to (discard)
SOURCE_V4 = "192.0.2.10"
DEST_V4 = "192.0.2.1"
SOURCE_V6 = "2001:db8:b::10"
DEST_V6 = "2001:db8:b::1"
BLOCK_V4 = "192.0.2.0/24"
BLOCK_V6 = "2001:db8::/32"
BULK_BASE = ipaddress.IPv4Address("198.18.0.0")


def _filler(i: int) -> Rule:
    """Rule number i of a list that the measured packet must fall through: alternating UDP and
    TCP port ranges that never contain HIT_PORT, so every one is a real candidate to skip."""
    proto = Protocol.UDP if i % 2 == 0 else Protocol.TCP
    low = 20_000 + 3 * i  # clear of every fail-safe port (22 .. 10259)
    return Rule(
        order=i + 1,
        action=Action.DENY if i % 3 else Action.ALLOW,
        protocol=proto,
        ports=PortRange(low, low + 1),
    )


def hit_rule(order: int, action: Action) -> Rule:
    return Rule(
        order=order, action=action, protocol=Protocol.UDP, ports=PortRange(HIT_PORT, HIT_PORT)
    )


def rules_hit_at_last(
    count: int,
    action: Action = Action.DENY,
    cidrs: tuple[str, ...] = (BLOCK_V4, BLOCK_V6),
    interfaces: tuple[str, ...] = ("*",),
    name: str = "bench",
) -> RuleSet:
    """One block of `count` rules whose last one decides the measured packet."""
    rules = (*tuple(_filler(i) for i in range(count - 1)), hit_rule(count, action))
    return RuleSet((Firewall(name, interfaces, (IngressBlock(cidrs, rules),)),))


def bulk_cidr(index: int) -> str:
    return f"{BULK_BASE + index}/32"


# Large tables of other shapes (rule data and test-run frames only, never on a wire). An odd
# multiplier spreads consecutive indexes over the whole space, so no two share a /24 or a /48
# and a multibit trie gets a path of its own for each.
_SPREAD = 0x9E3779B97F4A7C15


def scattered_v4(index: int) -> str:
    return f"{ipaddress.IPv4Address((index * 0x9E3779B1) % (1 << 32))}/32"


def host_v6(index: int) -> str:
    low = (index * _SPREAD) % (1 << 96)
    return f"{ipaddress.IPv6Address((0x20010DB8 << 96) | low)}/128"


def net_v6_64(index: int) -> str:
    mid = (index * 0x9E3779B1) % (1 << 32)
    return f"{ipaddress.IPv6Address((0x20010DB8 << 96) | (mid << 64))}/64"


@dataclass(frozen=True)
class BulkShape:
    """blocks x (cidrs_per_block CIDRs, rules_per_block rules): each CIDR carries its block's rules."""

    blocks: int = 1000
    cidrs_per_block: int = 100
    rules_per_block: int = 10

    @property
    def cidrs(self) -> int:
        return self.blocks * self.cidrs_per_block

    @property
    def rules(self) -> int:
        return self.blocks * self.rules_per_block

    def probe_source(self, block: int = 0) -> str:
        """An address of `block` (its first CIDR): the measured packet hits its last rule."""
        return str(BULK_BASE + block * self.cidrs_per_block)


def bulk_ruleset(
    shape: BulkShape,
    interfaces: tuple[str, ...] = ("*",),
    last_action: Action = Action.DENY,
    cidr: Callable[[int], str] = bulk_cidr,
) -> RuleSet:
    blocks: list[IngressBlock] = []
    for b in range(shape.blocks):
        cidrs = tuple(cidr(b * shape.cidrs_per_block + c) for c in range(shape.cidrs_per_block))
        rules = tuple(_filler(i) for i in range(shape.rules_per_block - 1))
        rules += (hit_rule(shape.rules_per_block, last_action),)
        blocks.append(IngressBlock(cidrs, rules))
    return RuleSet((Firewall("bulk", interfaces, tuple(blocks)),))


# --- nftables ---------------------------------------------------------------------------------


def _nft_match(rule: Rule) -> str:
    if rule.protocol is None:
        return ""
    if rule.protocol.has_ports:
        proto = rule.protocol.value.lower()
        if rule.ports is None:
            return f"meta l4proto {proto}"
        return f"{proto} dport {rule.ports}"
    kind = "icmp" if rule.protocol is Protocol.ICMP else "icmpv6"
    if rule.icmp_type is None:
        return f"meta l4proto {kind}"
    code = f" {kind} code {rule.icmp_code}" if rule.icmp_code is not None else ""
    return f"{kind} type {rule.icmp_type}{code}"


def nft_rule_lines(ruleset: RuleSet, counters: bool = True) -> Iterator[str]:
    """Chain statements equivalent to the rule set: one named set per block's CIDRs (declared by
    `nft_set_lines`), rules in infw's evaluation order (ascending order), Allow as accept."""
    ordered: list[tuple[int, int, str, Rule]] = []
    for fw in ruleset.firewalls:
        for bi, block in enumerate(fw.ingress):
            for rule in block.rules:
                ordered.append((rule.order, bi, fw.name, rule))
    ordered.sort(key=lambda e: (e[0], e[1]))
    count = " counter" if counters else ""
    for _, bi, fw_name, rule in ordered:
        block = next(fw for fw in ruleset.firewalls if fw.name == fw_name).ingress[bi]
        verdict = "accept" if rule.action is Action.ALLOW else "drop"
        match = _nft_match(rule)
        for family, key in (("ip", "v4"), ("ip6", "v6")):
            if not [c for c in block.source_cidrs if (":" in c) == (family == "ip6")]:
                continue
            yield f"{family} saddr @{fw_name}_{bi}_{key} {match}{count} {verdict}".replace(
                "  ", " "
            )


def nft_set_lines(ruleset: RuleSet) -> Iterator[str]:
    for fw in ruleset.firewalls:
        for bi, block in enumerate(fw.ingress):
            for key, typ, v6 in (("v4", "ipv4_addr", False), ("v6", "ipv6_addr", True)):
                cidrs = [c for c in block.source_cidrs if (":" in c) == v6]
                if cidrs:
                    yield (
                        f"set {fw.name}_{bi}_{key} {{ type {typ}; flags interval; "
                        f"elements = {{ {', '.join(cidrs)} }} }}"
                    )


def nft_table(
    ruleset: RuleSet,
    family: str,
    table: str,
    hook: str,
    device: str | None = None,
    priority: int = -300,
    counters: bool = True,
) -> str:
    """A whole `nft -f` file: one table with the rule set in one base chain."""
    dev = f' device "{device}"' if device else ""
    lines = [f"table {family} {table} {{"]
    lines += [f"  {s}" for s in nft_set_lines(ruleset)]
    lines.append(
        f"  chain {hook} {{ type filter hook {hook}{dev} priority {priority}; policy accept;"
    )
    lines += [f"    {r}" for r in nft_rule_lines(ruleset, counters)]
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
