"""The reference classifier: DESIGN §2's matching steps stated plainly, the oracle for the kernel.

`classify` evaluates raw rules by brute force; `lookup` walks the compiled images the way the
XDP program does. Tests prove they agree, and the kernel is tested against both.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from engine.core.cidr import Prefix, parse_address, parse_cidr
from engine.core.compiler import (
    CompiledTables,
    FastImages,
    LpmEntry,
    RuleInfo,
    RuleKey,
    SegmentEntry,
    proto_class,
    rule_key,
    space_of,
)
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe, failsafe_for
from engine.core.model import Action, Protocol, Rule, RuleSet
from engine.core.replies import ReplyFlow, reply_flow
from engine.kernel.abi import (
    HOST_LEN_MASK,
    HOST_LEN_SHIFT,
    LISTS_PER_GEN,
    NODE_FLAG,
    NODE_INDEX_MASK,
    ROOT_EMPTY,
    ROOT_HOSTS,
    ROOT_IFINDEXES,
    ROOT_TRIE,
    SEG_CLASS_INDEX,
    V4_SPACE,
    V6_SPACE,
)
from engine.kernel.abi import Action as KernelAction

L4_PORT_PROTOS = frozenset({6, 17, 132})
ICMP_PROTOS = frozenset({1, 58})


class Reason(enum.StrEnum):
    FAILSAFE = "fail-safe"
    RULE = "rule"
    REPLY = "reply"  # a Deny matched, but the packet answers a flow the node opened
    NO_MATCH = "no match"
    UNPARSED = "unparsed"


@dataclass(frozen=True)
class PacketFields:
    """What the classifier needs of a packet. dport/icmp fields are None for non-first fragments."""

    src: str
    ipproto: int
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    nonfirst_fragment: bool = False
    dst: str = ""
    sport: int | None = None  # TCP/UDP/SCTP first fragments: what a reply must match
    icmp_id: int | None = None  # ICMP/ICMPv6 with a whole echo header

    def l4_value(self) -> int:
        """The value the segment trie is keyed on: port, or ICMP type<<8|code, 0 when absent."""
        if self.nonfirst_fragment:
            return 0
        if self.ipproto in L4_PORT_PROTOS:
            return self.dport or 0
        if self.ipproto in ICMP_PROTOS:
            return (self.icmp_type or 0) << 8 | (self.icmp_code or 0)
        return 0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: Reason
    rule_id: int | None = None
    rule: RuleInfo | None = None
    failsafe: FailSafe | None = None

    def describe(self) -> str:
        if self.reason is Reason.FAILSAFE and self.failsafe is not None:
            return f"ALLOW by fail-safe {self.failsafe}"
        if self.reason is Reason.RULE and self.rule is not None:
            r = self.rule
            return (
                f"{self.action.value.upper()} by rule {self.rule_id} ({r.firewall} order "
                f"{r.rule.order}: {r.rule.match_text()} from {', '.join(r.cidrs)})"
            )
        if self.reason is Reason.REPLY:
            return (
                f"ALLOW as a reply to a connection this node opened (rule {self.rule_id} "
                "denies it otherwise; replies are on)"
            )
        if self.reason is Reason.UNPARSED:
            return "ALLOW: the frame could not be parsed (counted as unparsed)"
        return "ALLOW: no rule matches (default pass)"


def rule_matches(rule: Rule, pkt: PacketFields) -> bool:
    """Step 3 and 5: protocol, port range, ICMP type/code; fragments only match L4-free rules."""
    if rule.protocol is None:
        return True
    if rule.protocol.ipproto != pkt.ipproto:
        return False
    if pkt.nonfirst_fragment:
        return not rule.has_l4_fields
    if rule.port_range is not None:
        return pkt.dport is not None and rule.port_range.contains(pkt.dport)
    if rule.icmp_type is not None:
        if pkt.icmp_type != rule.icmp_type:
            return False
        return rule.icmp_code is None or pkt.icmp_code == rule.icmp_code
    return True


def check_failsafe(failsafe: tuple[FailSafe, ...], pkt: PacketFields) -> FailSafe | None:
    if pkt.nonfirst_fragment or pkt.ipproto not in L4_PORT_PROTOS or pkt.dport is None:
        return None
    return failsafe_for(failsafe, pkt.ipproto, pkt.dport)


def classify(
    ruleset: RuleSet,
    rule_ids: Mapping[RuleKey, int],
    interface: str,
    pkt: PacketFields,
    failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE,
    replies: Collection[ReplyFlow] | None = None,
    ifindex: int = 0,
) -> Decision:
    """Brute force over raw rules: the semantics of DESIGN §2, steps 1-4, and with replies on
    (the node's live outbound flows, as their replies will look; None: off) step 5: a denied
    packet that answers one of them passes."""
    fs = check_failsafe(failsafe, pkt)
    if fs is not None:
        return Decision(Action.ALLOW, Reason.FAILSAFE, failsafe=fs)
    addr, is_v4 = parse_address(pkt.src)
    best: tuple[tuple[object, ...], int, RuleInfo] | None = None
    for fw in ruleset.firewalls:
        if not any(fnmatch.fnmatchcase(interface, p) for p in fw.interfaces):
            continue
        for bi, block in enumerate(fw.ingress):
            lengths = [
                p.length
                for p in map(parse_cidr, block.source_cidrs)
                if p.contains_addr(addr, is_v4)
            ]
            if not lengths:
                continue
            for ri, rule in enumerate(block.rules):
                if not rule_matches(rule, pkt):
                    continue
                rank = (rule.order, -max(lengths), fw.name, bi, ri)
                if best is None or rank < best[0]:
                    rid = rule_ids[rule_key(fw.name, block, rule)]
                    best = (
                        rank,
                        rid,
                        RuleInfo(rid, fw.name, fw.interfaces, block.source_cidrs, rule),
                    )
    if best is None:
        return Decision(Action.ALLOW, Reason.NO_MATCH)
    _, rid, info = best
    return _unless_reply(Decision(info.rule.action, Reason.RULE, rid, info), replies, ifindex, pkt)


def _unless_reply(
    decision: Decision, replies: Collection[ReplyFlow] | None, ifindex: int, pkt: PacketFields
) -> Decision:
    """A Deny stands unless the packet answers one of the node's own flows (replies on)."""
    if decision.action is not Action.DENY or replies is None:
        return decision
    if reply_flow(ifindex, pkt) not in replies:
        return decision
    return Decision(Action.ALLOW, Reason.REPLY, decision.rule_id, decision.rule)


def _lpm_scan(entries: tuple[LpmEntry, ...], ifindex: int, addr: int) -> int | None:
    best: tuple[int, int] | None = None
    for entry in entries:
        if entry.ifindex != ifindex or not _lpm_contains(entry.prefix, addr):
            continue
        if best is None or entry.prefix.length > best[0]:
            best = (entry.prefix.length, entry.list_id)
    return None if best is None else best[1]


def _lpm_contains(prefix: Prefix, addr: int) -> bool:
    # The kernel trie knows no families: it compares bits, so the model does the same here.
    shift = 128 - prefix.length
    return (addr >> shift) == (prefix.value >> shift)


def fast_source(fast: FastImages, ifindex: int, addr: int) -> int | None:
    """The XDP program's source step: the array trie of (ifindex, space), or the LPM trie where
    the root says so (or the ifindex is beyond the root array)."""
    space = space_of(addr)
    entry = fast.src_roots.get((ifindex, space), 0) if ifindex < ROOT_IFINDEXES else ROOT_TRIE
    if entry & ROOT_HOSTS:
        shift = 128 - (((entry & HOST_LEN_MASK) >> HOST_LEN_SHIFT) + 1)
        hit = fast.hosts.get((ifindex, addr >> shift << shift))
        if hit is not None:
            return hit
        entry &= ~(ROOT_HOSTS | HOST_LEN_MASK)
    if entry in (0, ROOT_EMPTY):
        return None
    if entry == ROOT_TRIE:
        return _lpm_scan(fast.lpm, ifindex, addr)
    raw = addr.to_bytes(16, "big")[12 if space == V4_SPACE else 0 :]
    for byte in raw:
        if not entry & NODE_FLAG:
            break
        entry = fast.node(entry & NODE_INDEX_MASK)[byte]
    return entry or None


def has_tables(fast: FastImages, ifindex: int) -> bool:
    """Do the tables cover this interface (the program counts its misses as no match), or not
    at all (counted as unconfigured)? Beyond the root array the program cannot tell: covered."""
    if ifindex >= ROOT_IFINDEXES:
        return True
    return any(fast.src_roots.get((ifindex, space)) for space in (V4_SPACE, V6_SPACE))


def _segment_scan(
    segments: tuple[SegmentEntry, ...], list_id: int, cls: int, nonfirst: bool, value: int
) -> tuple[int, Action] | None:
    best: SegmentEntry | None = None
    for seg in segments:
        if seg.list_id != list_id or seg.proto != cls or seg.nonfirst != nonfirst:
            continue
        shift = 16 - seg.length
        if (value >> shift) == (seg.value >> shift) and (best is None or seg.length > best.length):
            best = seg
    return None if best is None else (best.rule_id, best.action)


def fast_segment(
    fast: FastImages, list_id: int, cls: int, nonfirst: bool, value: int
) -> tuple[int, Action] | None:
    """The XDP program's rule step: the list's array trie, or the segment LPM trie."""
    roots = fast.list_roots.get(list_id) if list_id < LISTS_PER_GEN else None
    entry = ROOT_TRIE if roots is None else roots[SEG_CLASS_INDEX[cls] * 2 + int(nonfirst)]
    if entry == ROOT_TRIE:
        return _segment_scan(fast.segments, list_id, cls, nonfirst, value)
    for byte in (value >> 8, value & 0xFF):
        if not entry & NODE_FLAG:
            break
        entry = fast.node(entry & NODE_INDEX_MASK)[byte]
    if not entry:
        return None
    action = Action.ALLOW if entry >> 16 == KernelAction.ALLOW else Action.DENY
    return entry & 0xFFFF, action


def _decide(
    tables: CompiledTables,
    pkt: PacketFields,
    source: Callable[[int], int | None],
    segment: Callable[[int, int, bool, int], tuple[int, Action] | None],
    replies: Collection[ReplyFlow] | None,
    ifindex: int,
) -> Decision:
    """Fail-safe, then the source step, then the rule step: the program's order."""
    if (
        not pkt.nonfirst_fragment
        and pkt.dport is not None
        and (pkt.ipproto, pkt.dport) in tables.failsafe_ports
    ):
        fs = check_failsafe(tables.failsafe, pkt)
        return Decision(Action.ALLOW, Reason.FAILSAFE, failsafe=fs)
    addr, _ = parse_address(pkt.src)
    list_id = source(addr)
    if list_id is None:
        return Decision(Action.ALLOW, Reason.NO_MATCH)
    hit = segment(list_id, proto_class(pkt.ipproto), pkt.nonfirst_fragment, pkt.l4_value())
    if hit is None:
        return Decision(Action.ALLOW, Reason.NO_MATCH)
    rule_id, action = hit
    decision = Decision(action, Reason.RULE, rule_id, tables.rules.get(rule_id))
    return _unless_reply(decision, replies, ifindex, pkt)


def lookup(
    tables: CompiledTables,
    ifindex: int,
    pkt: PacketFields,
    replies: Collection[ReplyFlow] | None = None,
) -> Decision:
    """Walk the compiled images as the XDP program does: fail-safe, source array trie (or LPM),
    rule array trie (or segment LPM), then for a Deny the node's own flows (replies on)."""
    fast = tables.fast
    return _decide(
        tables,
        pkt,
        lambda addr: fast_source(fast, ifindex, addr),
        lambda lid, cls, nonfirst, value: fast_segment(fast, lid, cls, nonfirst, value),
        replies,
        ifindex,
    )


def lookup_lpm(
    tables: CompiledTables,
    ifindex: int,
    pkt: PacketFields,
    replies: Collection[ReplyFlow] | None = None,
) -> Decision:
    """The same decision from the full LPM images alone (the semantics the tries must keep)."""
    return _decide(
        tables,
        pkt,
        lambda addr: _lpm_scan(tables.lpm, ifindex, addr),
        lambda lid, cls, nonfirst, value: _segment_scan(tables.segments, lid, cls, nonfirst, value),
        replies,
        ifindex,
    )


def protocol_number(name: str) -> int:
    """'tcp' -> 6; also accepts a bare number for protocols the CRD does not name."""
    if name.isdigit():
        return int(name)
    return Protocol.parse(name).ipproto
