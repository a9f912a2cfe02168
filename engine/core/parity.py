"""Where an admitted rule set means something else in the operator's datapath than here.

infw keeps its own meaning where the operator's is a defect (README "Operator parity"): rules of
a wider prefix are not hidden by a narrower one, a range's end port is matched, a protocol-less
rule takes every IP protocol. These notes say so for the rule sets where it matters; each kind is
reported once, with a few examples and a count, so a big file stays readable.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from engine.core.blockmemo import BlockMemo
from engine.core.cidr import Prefix, parse_cidr
from engine.core.failsafe import OPERATOR_FAILSAFE, FailSafe
from engine.core.model import Action, IngressBlock, Protocol, Rule, RuleSet

OPERATOR_ORDER_SLOTS = 100  # its daemon indexes a 100-slot array by order: 100 and up fail there
EXAMPLES = 3

NOTES = {
    "order": "order {what} is 100 or more: the operator's daemon keeps orders 1-99 only and "
    "fails to load the node's rules; here it works",
    "range": "ports {what}: the end port matches here (as the operator's webhook reads it); the "
    "operator's datapath leaves the end port out",
    "family": "{what} can never match: the sources are of the other IP family (the same in the "
    "operator)",
    "any": "{what} has no protocol: here it takes every IP protocol; the operator's datapath "
    "applies it to TCP, UDP, SCTP, ICMP and ICMPv6 only",
    "nested": "{what}: here a packet from the narrower prefix meets the wider prefix's rules "
    "too; in the operator only the longest matching prefix's rules apply",
}


def _rules(ruleset: RuleSet) -> Iterator[tuple[str, tuple[str, ...], Rule]]:
    for fw in ruleset.firewalls:
        for block in fw.ingress:
            for rule in block.rules:
                yield fw.name, block.source_cidrs, rule


def _family_mismatch(rule: Rule, cidrs: tuple[str, ...]) -> bool:
    if rule.protocol is Protocol.ICMP:
        return not any(parse_cidr(c).is_v4 for c in cidrs)
    if rule.protocol is Protocol.ICMPV6:
        return all(parse_cidr(c).is_v4 for c in cidrs)
    return False


def _partial_family(rule: Rule, cidrs: tuple[str, ...]) -> bool:
    """An ICMP rule in an entry mixing families: it matches only its family's sources."""
    if not rule.protocol or not rule.protocol.is_icmp:
        return False
    families = {parse_cidr(c).is_v4 for c in cidrs}
    return len(families) == 2


def nested_pairs(ruleset: RuleSet, limit: int = EXAMPLES) -> tuple[list[tuple[str, str]], int]:
    """(wider, narrower) prefix pairs on a shared interface pattern: a few examples and a count.
    Sorting by start address and keeping a stack of open prefixes makes this O(n log n)."""
    by_iface: dict[str, set[Prefix]] = defaultdict(set)
    for fw in ruleset.firewalls:
        prefixes = {parse_cidr(c) for b in fw.ingress if b.rules for c in b.source_cidrs}
        for iface in fw.interfaces:
            by_iface[iface] |= prefixes
    pairs: list[tuple[str, str]] = []
    count = 0
    seen: set[tuple[Prefix, Prefix]] = set()
    for prefixes in by_iface.values():
        stack: list[Prefix] = []
        for p in sorted(prefixes, key=lambda q: (q.is_v4, q.value, q.length)):
            while stack and not stack[-1].encloses(p):
                stack.pop()
            if stack and (stack[-1], p) not in seen:
                seen.add((stack[-1], p))
                count += 1
                if len(pairs) < limit:
                    pairs.append((str(stack[-1]), str(p)))
            stack.append(p)
    return pairs, count


def meaning_notes(ruleset: RuleSet) -> list[str]:
    """One line per kind of difference with the operator's datapath (examples and a count)."""
    found: dict[str, list[str]] = defaultdict(list)
    for name, cidrs, rule in _rules(ruleset):
        label = f"{name} order {rule.order}"
        if rule.order >= OPERATOR_ORDER_SLOTS:
            found["order"].append(f"{rule.order} ({name})")
        if rule.port_range is not None and rule.port_range.low != rule.port_range.high:
            found["range"].append(f"{rule.port_range} ({label})")
        if _family_mismatch(rule, cidrs):
            found["family"].append(f"{label} ({rule.protocol})")
        elif _partial_family(rule, cidrs):
            found["family"].append(f"{label} ({rule.protocol}) for the other family's sources")
        if rule.protocol is None:
            found["any"].append(label)
    pairs, count = nested_pairs(ruleset)
    notes = []
    for kind, items in found.items():
        more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
        notes.append(NOTES[kind].format(what=", ".join(items[:EXAMPLES]) + more))
    if pairs:
        more = f" and {count - len(pairs)} more" if count > len(pairs) else ""
        text = ", ".join(f"{narrow} inside {wide}" for wide, narrow in pairs) + more
        notes.append(NOTES["nested"].format(what=text))
    return notes


def operator_failsafe_refusals(ruleset: RuleSet, node: tuple[FailSafe, ...]) -> list[str]:
    """Deny rules the operator's webhook refuses for its fail-safe ports where this node's own
    list (the guard's) does not hold those ports: infw enforces them, the cluster would not."""
    return [
        f"{fw.name} {', '.join(block.source_cidrs)} order {order}: it covers {', '.join(hits)}"
        for fw in ruleset.firewalls
        for block in fw.ingress
        for order, hits in _OPERATOR_FAILSAFE_HITS(block, node)
    ]


def _operator_failsafe_hits(block: IngressBlock, node: object) -> tuple[tuple[int, list[str]], ...]:
    """(order, ports) of the block's Deny rules that operator_failsafe_refusals names; kept per
    block object (BlockMemo), as it runs on every edit."""
    assert isinstance(node, tuple)
    out = []
    for rule in block.rules:
        ports = rule.ports
        if rule.action is not Action.DENY or ports is None:
            continue
        hits = [
            str(fs)
            for fs in OPERATOR_FAILSAFE
            if fs.protocol is rule.protocol
            and ports.low <= fs.ports.high
            and fs.ports.low <= ports.high
            and not any(
                n.protocol is fs.protocol and n.ports.low <= fs.ports.low <= n.ports.high
                for n in node
            )
        ]
        if hits:
            out.append((rule.order, hits))
    return tuple(out)


_OPERATOR_FAILSAFE_HITS = BlockMemo(_operator_failsafe_hits)
