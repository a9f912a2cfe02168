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
from engine.core.cidr import Prefix, parse_cidr, parse_cidrs
from engine.core.failsafe import OPERATOR_FAILSAFE, FailSafe
from engine.core.model import Action, IngressBlock, Protocol, Rule, RuleSet

OPERATOR_ORDER_SLOTS = 100  # its daemon indexes a 100-slot array by order: 100 and up fail there
EXAMPLES = 3

# rules as (object name, the entry's sourceCIDRs, rule): what a single-rule edit touched
Focus = frozenset[tuple[str, tuple[str, ...], Rule]]

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
        prefixes = {p for b in fw.ingress if b.rules for p in parse_cidrs(b.source_cidrs)}
        for iface in fw.interfaces:
            by_iface[iface] |= prefixes
    pairs: list[tuple[str, str]] = []
    count = 0
    seen: set[tuple[Prefix, Prefix]] = set()
    for prefixes in by_iface.values():
        for is_v4 in (False, True):  # IPv6 first, as one sort by (is_v4, value, length) has it
            family = [p for p in prefixes if p.is_v4 is is_v4]
            if len({p.length for p in family}) < 2:
                continue  # distinct prefixes of one length never nest (100,000 /32s, say)
            stack: list[Prefix] = []
            for p in sorted(family):  # by value, then length: a prefix before those inside it
                while stack and not stack[-1].encloses(p):
                    stack.pop()
                if stack and (stack[-1], p) not in seen:
                    seen.add((stack[-1], p))
                    count += 1
                    if len(pairs) < limit:
                        pairs.append((str(stack[-1]), str(p)))
                stack.append(p)
    return pairs, count


def nested_around(
    ruleset: RuleSet, focus: Focus, limit: int = EXAMPLES
) -> tuple[list[tuple[str, str]], int]:
    """nested_pairs for a single-rule edit: the pairs with a prefix of a focus rule, on one of
    its object's interface patterns. One pass over the prefixes there (no sort): two prefixes
    nest when their first min(length) bits agree, so an edit costs a scan, not a sort."""
    objects = {fw.name: fw for fw in ruleset.firewalls}
    mine: dict[str, set[Prefix]] = defaultdict(set)  # interface pattern -> focus prefixes
    for name, cidrs, _ in focus:
        for iface in objects[name].interfaces if name in objects else ():
            mine[iface].update(parse_cidr(c) for c in cidrs)
    pairs: list[tuple[str, str]] = []
    seen: set[tuple[Prefix, Prefix]] = set()
    for fw in ruleset.firewalls:
        targets = [
            (p, p.value, p.length, p.is_v4)
            for p in set().union(*(mine.get(i, ()) for i in fw.interfaces))
        ]
        if not targets:
            continue
        for block in fw.ingress:
            if not block.rules:
                continue
            for q in parse_cidrs(block.source_cidrs):
                for p, value, length, is_v4 in targets:
                    shortest = min(length, q.length)
                    if (
                        q.is_v4 is not is_v4
                        or q.length == length
                        or (q.value ^ value) >> (128 - shortest)
                    ):
                        continue
                    pair = (q, p) if q.length < length else (p, q)
                    if pair not in seen:
                        seen.add(pair)
                        if len(pairs) < limit:
                            pairs.append((str(pair[0]), str(pair[1])))
    return pairs, len(seen)


def changed_rules(old: RuleSet, new: RuleSet) -> Focus:
    """The rules of new that old does not hold as they are (added, edited or moved). An edit
    shares every untouched object and entry with the rule set it came from, so those are
    skipped by identity: the cost is the touched object's, not the rule set's."""
    out: set[tuple[str, tuple[str, ...], Rule]] = set()
    for fw in new.firewalls:
        before = old.firewall(fw.name)
        if before is fw:
            continue
        kept = {id(b) for b in before.ingress} if before else set()
        for block in fw.ingress:
            if id(block) in kept:
                continue
            cidrs = set(block.source_cidrs)
            prior = next(
                (
                    b
                    for b in (before.ingress if before else ())
                    if len(b.source_cidrs) == len(cidrs) and set(b.source_cidrs) == cidrs
                ),
                None,
            )
            known = set(prior.rules) if prior is not None else set()
            out.update((fw.name, block.source_cidrs, r) for r in block.rules if r not in known)
    return frozenset(out)


def meaning_notes(ruleset: RuleSet, focus: Focus | None = None) -> list[str]:
    """One line per kind of difference with the operator's datapath (examples and a count).
    focus (see changed_rules): only what concerns those rules, for a single-rule edit: the same
    notes an apply of the whole file prints about them, without repeating the others'."""
    found: dict[str, list[str]] = defaultdict(list)
    rules = _rules(ruleset) if focus is None else sorted(focus, key=lambda f: (f[0], f[2].order))
    for name, cidrs, rule in rules:
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
    pairs, count = nested_pairs(ruleset) if focus is None else nested_around(ruleset, focus)
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
