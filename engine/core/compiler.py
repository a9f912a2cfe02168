"""Compile a RuleSet into the images the datapath maps hold (pure Python, no kernel).

Two lookups decide a packet (DESIGN §3):
  1. LPM on (ifindex, source) -> list id. Each prefix's list already holds the rules of every
     enclosing prefix, merged and sorted, so the longest match sees every candidate.
  2. LPM on (list id, protocol class, fragment flag, port or ICMP type<<8|code) -> the first
     matching rule. Each list's value space is cut at rule boundaries into disjoint segments
     labelled with their first match, and each segment is stored as at most 30 prefixes.

`lpm` and `segments` state both lookups completely. The datapath answers them from
`fast_images` instead where they fit (see there): multibit tries of 256-entry nodes in one
array map, so a lookup costs a few inlined array reads instead of a kernel LPM trie walk;
only what does not fit is written to the LPM tries.
"""

from __future__ import annotations

import array
import fnmatch
import functools
import heapq
import itertools
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from engine.core.cidr import MAPPED_V4_PREFIX, Prefix, parse_cidr
from engine.core.failsafe import DEFAULT_FAILSAFE, MAX_FAILSAFE_PORTS, FailSafe, failsafe_ports
from engine.core.model import Action, Firewall, IngressBlock, Rule, RuleSet
from engine.errors import FieldError, LimitError
from engine.kernel.abi import (
    ALL_CLASSES,
    HOST_LEN_SHIFT,
    LISTS_PER_GEN,
    NODE_ENTRIES,
    NODE_FLAG,
    NODES_PER_GEN,
    OTHER_CLASS,
    PROTO_CLASSES,
    ROOT_EMPTY,
    ROOT_HOSTS,
    ROOT_IFINDEXES,
    ROOT_TRIE,
    SEG_CLASS_INDEX,
    SEG_ROOTS,
    V4_SPACE,
    V6_SPACE,
)
from engine.kernel.abi import Action as KernelAction

VALUE_BITS = 16
VALUE_MAX = (1 << VALUE_BITS) - 1

# Limits, checked before anything is written. Map sizes in the datapath follow from these.
MAX_RULE_ID = 65535
MAX_PREFIXES = 1_048_576  # source prefixes per generation (arrays, host hash and LPM trie)
MAX_LPM_PREFIXES = 131072  # of those, what the source LPM trie can hold per generation
DEEP_V6 = 64  # an IPv6 trie walk longer than DEEP_V6 / 8 steps costs more than the host hash
MAX_RULES_PER_SOURCE = 4096  # rules in one merged list
MAX_INTERFACES = 64
MAX_SEGMENTS = 1_000_000  # segment-trie entries per generation
MAX_LISTS = 1 << 20

RuleKey = tuple[str, tuple[str, ...], int]
"""A rule's identity across edits: (object name, sorted block CIDRs, order)."""


def proto_class(ipproto: int) -> int:
    return ipproto if ipproto in PROTO_CLASSES else OTHER_CLASS


def rule_key(firewall: str, block: IngressBlock, rule: Rule) -> RuleKey:
    return (firewall, block.sorted_cidrs, rule.order)


def iter_rules(ruleset: RuleSet) -> Iterable[tuple[Firewall, int, IngressBlock, int, Rule]]:
    for fw in ruleset.firewalls:
        for bi, block in enumerate(fw.ingress):
            for ri, rule in enumerate(block.rules):
                yield fw, bi, block, ri, rule


def assign_rule_ids(
    ruleset: RuleSet, previous: Mapping[RuleKey, int] | None = None, first_new: int = 1
) -> dict[RuleKey, int]:
    """Stable ids: a rule keeps its id (and so its counters) while its key is unchanged.

    New rules take ids from first_new up (the store's high-water mark), so an id is not handed
    out again while others are free: a `delete ID` read from a stale listing cannot remove a
    newer rule that happens to have inherited it. Freed ids below come back only when the top
    of the range is used up."""
    previous = previous or {}
    keys = [
        (fw.name, b.sorted_cidrs, r.order)  # rule_key, with the CIDRs sorted once per block
        for fw in ruleset.firewalls
        for b in fw.ingress
        for r in b.rules
    ]
    ids: dict[RuleKey, int] = {}
    claimed: set[int] = set()
    missing: list[RuleKey] = []  # in rule order: fresh ids go out in that order
    for k in keys:
        # A merged mapping (a revert's old ids over the current ones) may offer one id to two
        # keys; the first keeps it and the other gets a fresh id.
        rid = previous.get(k)
        if rid is not None and rid not in claimed:
            ids[k] = rid
            claimed.add(rid)
        else:
            missing.append(k)
    if not missing:
        return ids
    # Ids freed by this very edit stay unused until the next one, so no packet of the old
    # generation counts into a new rule's fresh counter.
    used = set(ids.values()) | set(previous.values())
    start = max(1, min(first_new, MAX_RULE_ID + 1))
    fresh = (
        i for i in itertools.chain(range(start, MAX_RULE_ID + 1), range(1, start)) if i not in used
    )
    for key in missing:
        if key in ids:
            continue  # the same key twice (equal blocks): one id
        next_id = next(fresh, None)
        if next_id is None:
            raise LimitError(
                [
                    FieldError(
                        "rule set",
                        "rules",
                        len(keys),
                        f"more than {MAX_RULE_ID} rules",
                        "remove rules",
                    )
                ]
            )
        ids[key] = next_id
    return ids


@dataclass(frozen=True)
class RuleInfo:
    """Where a rule id came from, for display, counters and trace."""

    rule_id: int
    firewall: str
    interfaces: tuple[str, ...]
    cidrs: tuple[str, ...]
    rule: Rule


@dataclass(frozen=True)
class ListRule:
    """A rule as placed in a merged list: what it matches and what it decides."""

    rule_id: int
    action: Action
    ipproto: int | None  # None: any protocol
    low: int  # value range: port, or ICMP type<<8|code
    high: int
    l4: bool  # looks at ports/ICMP fields (so never matches a non-first fragment)


@dataclass(frozen=True)
class LpmEntry:
    ifindex: int
    prefix: Prefix
    list_id: int


@dataclass(frozen=True)
class SegmentEntry:
    list_id: int
    proto: int  # class: IP protocol number or OTHER_CLASS
    nonfirst: bool  # non-first fragment: no L4 header
    value: int  # prefix value in the 16-bit space
    length: int  # 0..16
    rule_id: int
    action: Action


@dataclass(frozen=True)
class CompiledTables:
    lpm: tuple[LpmEntry, ...]
    lists: Mapping[int, tuple[ListRule, ...]]
    segments: tuple[SegmentEntry, ...]
    failsafe: tuple[FailSafe, ...]
    failsafe_ports: frozenset[tuple[int, int]]
    rules: Mapping[int, RuleInfo]
    rule_ids: Mapping[RuleKey, int]
    interfaces: Mapping[str, int]  # the node interfaces some object selects
    # trie nodes the array images may use (None: NODES_PER_GEN); tests shrink it to send
    # lookups to the LPM tries
    node_budget: int | None = field(default=None, compare=False)
    # images laid out by engine.core.incremental (by position, so edits rewrite few nodes)
    fast_image: FastImages | None = field(default=None, compare=False)

    @functools.cached_property
    def fast(self) -> FastImages:
        """The array-trie images of both lookups (built on first use, then kept)."""
        if self.fast_image is not None:
            return self.fast_image
        budget = NODES_PER_GEN if self.node_budget is None else self.node_budget
        return fast_images(self, min(budget, NODES_PER_GEN))


def list_rule(rule: Rule, rule_id: int) -> ListRule:
    if rule.protocol is None:
        return ListRule(rule_id, rule.action, None, 0, VALUE_MAX, False)
    if rule.port_range is not None:
        ports = rule.port_range
        return ListRule(rule_id, rule.action, rule.protocol.ipproto, ports.low, ports.high, True)
    if rule.icmp_type is not None:
        low = rule.icmp_type << 8 | (rule.icmp_code or 0)
        high = low if rule.icmp_code is not None else rule.icmp_type << 8 | 0xFF
        return ListRule(rule_id, rule.action, rule.protocol.ipproto, low, high, True)
    return ListRule(rule_id, rule.action, rule.protocol.ipproto, 0, VALUE_MAX, False)


def range_to_prefixes(low: int, high: int, bits: int = VALUE_BITS) -> list[tuple[int, int]]:
    """Cover [low, high] with the fewest aligned prefixes: (value, prefix length)."""
    out: list[tuple[int, int]] = []
    while low <= high:
        size = low & -low if low else 1 << bits
        while size > high - low + 1:
            size >>= 1
        out.append((low, bits - size.bit_length() + 1))
        low += size
    return out


def first_match_segments(rules: list[ListRule]) -> list[tuple[int, int, ListRule]]:
    """Cut 0..65535 into maximal segments labelled by the first (lowest index) rule covering them."""
    events: dict[int, list[tuple[int, int]]] = defaultdict(list)  # point -> [(+1/-1, idx)]
    for idx, rule in enumerate(rules):
        events[rule.low].append((1, idx))
        events[rule.high + 1].append((-1, idx))
    points = sorted(events)
    active: list[int] = []
    removed: set[int] = set()
    segs: list[tuple[int, int, ListRule]] = []
    for i, point in enumerate(points):
        if point > VALUE_MAX:
            break
        for kind, idx in events[point]:
            if kind > 0:
                heapq.heappush(active, idx)
            else:
                removed.add(idx)
        while active and active[0] in removed:
            heapq.heappop(active)
        end = (points[i + 1] - 1) if i + 1 < len(points) else VALUE_MAX
        if not active:
            continue
        winner = rules[active[0]]
        if segs and segs[-1][2] is winner and segs[-1][1] == point - 1:
            segs[-1] = (segs[-1][0], end, winner)
        else:
            segs.append((point, end, winner))
    return segs


def list_segments(list_id: int, rules: tuple[ListRule, ...]) -> list[SegmentEntry]:
    return ranges_segments(list_id, class_ranges(rules))


def ranges_segments(
    list_id: int, ranges: Mapping[tuple[int, bool], list[tuple[int, int, ListRule]]]
) -> list[SegmentEntry]:
    """list_segments from a list's class_ranges (a caller that needs them too computes them once)."""
    out: list[SegmentEntry] = []
    for (cls, nonfirst), segs in ranges.items():
        for low, high, winner in segs:
            for value, length in range_to_prefixes(low, high):
                out.append(
                    SegmentEntry(
                        list_id, cls, nonfirst, value, length, winner.rule_id, winner.action
                    )
                )
    return out


def match_interfaces(patterns: Iterable[str], interfaces: Mapping[str, int]) -> list[str]:
    pats = list(patterns)
    return [name for name in interfaces if any(fnmatch.fnmatchcase(name, p) for p in pats)]


def _limit(what: str, value: int, limit: int, fix: str) -> None:
    if value > limit:
        raise LimitError(
            [FieldError("rule set", what, value, f"exceeds the limit of {limit} {what}", fix)]
        )


def compile_ruleset(
    ruleset: RuleSet,
    interfaces: Mapping[str, int],
    failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE,
    previous_ids: Mapping[RuleKey, int] | None = None,
) -> CompiledTables:
    """Turn rules plus the node's interfaces (name -> ifindex) into map images."""
    rule_ids = assign_rule_ids(ruleset, previous_ids)
    rules: dict[int, RuleInfo] = {}
    # Work per block, not per rule: a prefix records which blocks define rules at it, and every
    # prefix with the same set of (block, defining prefix length) shares one merged list.
    blocks: list[tuple[str, int, tuple[tuple[int, int, ListRule], ...]]] = []
    own: dict[tuple[int, Prefix], dict[int, int]] = defaultdict(dict)  # -> {block uid: prefix len}
    selected: dict[str, int] = {}
    for fw in ruleset.firewalls:
        names = match_interfaces(fw.interfaces, interfaces)
        ifindexes = [interfaces[name] for name in names]
        for name in names:
            selected[name] = interfaces[name]
        for bi, block in enumerate(fw.ingress):
            placed: list[tuple[int, int, ListRule]] = []
            for ri, rule in enumerate(block.rules):
                rid = rule_ids[rule_key(fw.name, block, rule)]
                rules[rid] = RuleInfo(rid, fw.name, fw.interfaces, block.source_cidrs, rule)
                placed.append((rule.order, ri, list_rule(rule, rid)))
            uid = len(blocks)
            blocks.append((fw.name, bi, tuple(placed)))
            for cidr in block.source_cidrs:
                prefix = parse_cidr(cidr)
                for ifindex in ifindexes:
                    slot = own[(ifindex, prefix)]
                    if slot.get(uid, -1) < prefix.length:
                        slot[uid] = prefix.length
    _limit("interfaces", len(selected), MAX_INTERFACES, "select fewer interfaces")
    _add_v4_roots(own)
    _limit("source prefixes", len(own), MAX_PREFIXES, "merge CIDRs into wider prefixes")

    lengths: dict[tuple[int, bool], list[int]] = defaultdict(list)
    for ifindex, prefix in own:
        lengths[(ifindex, prefix.is_v4)].append(prefix.length)
    for key in lengths:
        lengths[key] = sorted(set(lengths[key]))

    def merged_list(members: tuple[tuple[int, int], ...]) -> tuple[ListRule, ...]:
        ranked = []
        for uid, qlen in members:
            fw_name, bi, placed = blocks[uid]
            for order, ri, lr in placed:
                ranked.append(((order, -qlen, fw_name, bi, ri), lr))
        ranked.sort(key=lambda e: e[0])
        return tuple(lr for _, lr in ranked)

    by_members: dict[tuple[tuple[int, int], ...], int] = {}
    list_ids: dict[tuple[ListRule, ...], int] = {}
    lists: dict[int, tuple[ListRule, ...]] = {}
    lpm: list[LpmEntry] = []
    for (ifindex, prefix), mine in own.items():
        members = dict(mine)
        for length in lengths[(ifindex, prefix.is_v4)]:
            if length >= prefix.length:
                break
            shift = 128 - length
            outer = own.get(
                (ifindex, Prefix((prefix.value >> shift) << shift, length, prefix.is_v4))
            )
            if outer:
                for uid, qlen in outer.items():
                    if members.get(uid, -1) < qlen:
                        members[uid] = qlen
        members_key = tuple(sorted(members.items()))
        list_id = by_members.get(members_key)
        if list_id is None:
            ordered = merged_list(members_key)
            if len(ordered) > MAX_RULES_PER_SOURCE:
                _limit(
                    f"rules for source {prefix}",
                    len(ordered),
                    MAX_RULES_PER_SOURCE,
                    "use fewer rules for this source and its enclosing prefixes",
                )
            list_id = list_ids.get(ordered)
            if list_id is None:
                list_id = len(list_ids) + 1
                list_ids[ordered] = list_id
                lists[list_id] = ordered
            by_members[members_key] = list_id
        lpm.append(LpmEntry(ifindex, prefix, list_id))
    _limit("rule lists", len(lists), MAX_LISTS, "use fewer distinct rule lists")

    segments: list[SegmentEntry] = []
    for list_id, ordered in lists.items():
        segments.extend(list_segments(list_id, ordered))
    _limit("segment entries", len(segments), MAX_SEGMENTS, "use fewer distinct port ranges")
    ports = failsafe_ports(failsafe)
    _limit("fail-safe ports", len(ports), MAX_FAILSAFE_PORTS, "list fewer fail-safe ports")
    lpm.sort(key=lambda e: (e.ifindex, e.prefix.value, e.prefix.length))
    return CompiledTables(
        lpm=tuple(lpm),
        lists=lists,
        segments=tuple(segments),
        failsafe=failsafe,
        failsafe_ports=ports,
        rules=rules,
        rule_ids=rule_ids,
        interfaces=selected,
    )


def _add_v4_roots(own: dict[tuple[int, Prefix], dict[int, int]]) -> None:
    """Give IPv4 sources their own root (::ffff:0:0/96) wherever an IPv6 prefix covers that space,
    so an IPv4 packet's longest match can never land on an IPv6 prefix such as ::/0."""
    root = Prefix(MAPPED_V4_PREFIX, 96, True)
    for ifindex, prefix in list(own):
        if prefix.is_v4 or prefix.length > 96:
            continue
        shift = 128 - prefix.length
        if prefix.length == 0 or (MAPPED_V4_PREFIX >> shift) == (prefix.value >> shift):
            own.setdefault((ifindex, root), {})


# --- array-trie images ------------------------------------------------------------------------
#
# Both lookups as multibit tries with a stride of 8 bits, in one array map of 256-entry nodes
# (an array lookup is inlined by the verifier: a few ns, where a hash probe costs ~20 ns and an
# LPM trie walk over 100,000 prefixes ~120 ns). An entry is a leaf or NODE_FLAG | node index;
# a node index counts from its generation's half of the node array. Leaves are pushed down
# (controlled prefix expansion), so the walk stops at the first leaf and that leaf is the answer.
#
#   source: src_roots[gen][space][ifindex] is the root entry of the (ifindex, space) trie, space
#     0 for addresses in ::ffff:0:0/96 (walked from byte 12, at most 4 nodes) and 1 for the rest
#     (from byte 0, at most 16). Leaves: rule-list id, 0 for no match. ROOT_TRIE: this
#     (ifindex, space) did not fit, its prefixes are in the LPM trie. An address in the mapped
#     space can only match IPv4 prefixes or a /96 root (_add_v4_roots), and any other address
#     only IPv6 prefixes, so the split is exact.
#   segments: list_roots[gen][list id] holds one root entry per (protocol class, fragment flag);
#     the root node is indexed by value >> 8, its children by value & 0xff. Leaves:
#     action << 16 | rule id, 0 for no match. ROOT_TRIE: this list is in the segment LPM trie.

SEG_ACTION_CODES = {Action.ALLOW: int(KernelAction.ALLOW), Action.DENY: int(KernelAction.DENY)}


@dataclass(frozen=True)
class FastImages:
    nodes: bytes  # node_count nodes of NODE_ENTRIES little-endian u32
    node_count: int
    src_roots: Mapping[
        tuple[int, int], int
    ]  # (ifindex, space) -> root entry, ifindex < ROOT_IFINDEXES
    list_roots: Mapping[
        int, tuple[int, ...]
    ]  # list id -> SEG_ROOTS root entries, id < LISTS_PER_GEN
    lpm: tuple[LpmEntry, ...]  # what the source LPM trie must still hold
    segments: tuple[SegmentEntry, ...]  # what the segment LPM trie must still hold
    # node slot -> packed row, when laid out by position (engine.core.incremental): slots are
    # then sparse and stable across edits, and `nodes`/`node_count` are unused
    rows: Mapping[int, bytes] | None = None
    # exact-prefix hash: (ifindex, prefix value) -> list id, for roots with ROOT_HOSTS (the
    # prefix length is the root's)
    hosts: Mapping[tuple[int, int], int] = field(default_factory=dict)

    def node(self, index: int) -> memoryview:
        if self.rows is not None:
            return memoryview(self.rows[index]).cast("I")
        words = memoryview(self.nodes).cast("I")
        return words[index * NODE_ENTRIES : (index + 1) * NODE_ENTRIES]


def space_of(value: int) -> int:
    """Which source trie an address (or an IPv4/IPv6 prefix's network) belongs to."""
    return V4_SPACE if (value >> 32) == (MAPPED_V4_PREFIX >> 32) else V6_SPACE


class _NodePool:
    """Nodes of one generation, shared (and deduplicated) by every trie, within a budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.index: dict[bytes, int] = {}
        self.chunks: list[bytes] = []

    def fits(self, count: int) -> bool:
        return len(self.chunks) + count <= self.budget

    def add(self, entries: list[int]) -> int:
        raw = _pack(entries)
        idx = self.index.get(raw)
        if idx is None:
            idx = len(self.chunks)
            self.index[raw] = idx
            self.chunks.append(raw)
        return NODE_FLAG | idx


def _pack(entries: list[int]) -> bytes:
    words = array.array("I", entries)
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


def _prefix_trie(
    entries: Iterable[tuple[int, int, int]], width: int, pool: _NodePool
) -> int | None:
    """Root entry of a stride-8 trie over (value, length, leaf) prefixes of a width-bit space
    (value left-aligned in width bits, length 0..width), or None when it does not fit."""
    default = 0
    at: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
    # stop reading once past it: every key of `at` is a node of its own, and 1M scattered
    # hosts would need 1M of them
    room = pool.budget - len(pool.chunks)
    for value, length, leaf in entries:
        if length == 0:
            default = leaf
            continue
        depth = (length - 1) >> 3
        key = (depth, value >> (width - 8 * depth))
        if key not in at and len(at) >= room:
            return None
        at[key].append((length, value, leaf))
    if not at:
        return default
    needed: set[tuple[int, int]] = set()
    children: dict[tuple[int, int], list[int]] = defaultdict(list)
    for depth, path in at:
        for d in range(depth, -1, -1):
            node = (d, path >> (8 * (depth - d)))
            if node in needed:
                break
            needed.add(node)
            if d:
                children[(d - 1, node[1] >> 8)].append(node[1] & 0xFF)
        if len(needed) > room:
            return None
    if not pool.fits(len(needed)):
        return None
    leaves: dict[tuple[int, int], list[int]] = {}
    for node in sorted(needed):  # parents first: a child inherits its parent's leaf
        depth, path = node
        inherited = default if depth == 0 else leaves[(depth - 1, path >> 8)][path & 0xFF]
        row = [inherited] * NODE_ENTRIES
        for length, value, leaf in sorted(at.get(node, ()), key=lambda e: e[0]):
            first = (value >> (width - 8 * (depth + 1))) & 0xFF
            span = 1 << (8 * (depth + 1) - length)
            row[first : first + span] = [leaf] * span
        leaves[node] = row
    pointers: dict[tuple[int, int], int] = {}
    for node in sorted(needed, reverse=True):  # children first: a parent points at them
        depth, path = node
        row = leaves[node]
        for b in children.get(node, ()):
            row[b] = pointers[(depth + 1, path << 8 | b)]
        pointers[node] = pool.add(row)
    return pointers[(0, 0)]


def _segment_trie(segs: list[tuple[int, int, ListRule]], pool: _NodePool) -> int | None:
    """Root entry for one (list, class, fragment flag): value>>8 then value&0xff."""
    if not segs:
        return 0
    if len(segs) == 1 and segs[0][0] == 0 and segs[0][1] == VALUE_MAX:
        return seg_leaf(segs[0][2])
    root, children = seg_rows(segs)
    if not pool.fits(1 + len(children)):
        return None
    for block, row in children.items():
        root[block] = pool.add(row)
    return pool.add(root)


def seg_leaf(rule: ListRule) -> int:
    return SEG_ACTION_CODES[rule.action] << 16 | rule.rule_id


def seg_rows(
    segs: list[tuple[int, int, ListRule]],
) -> tuple[list[int], dict[int, list[int]]]:
    """A segment trie's root row and its second-level rows by block (value>>8): a range that
    covers whole blocks is one root entry per block, the rest fills entries of the block's row.
    The full and the incremental compiler both lay a trie out from these."""
    root = [0] * NODE_ENTRIES
    children: dict[int, list[int]] = {}
    for low, high, rule in segs:
        leaf = seg_leaf(rule)
        while low <= high:
            block = low >> 8
            end = min(high, block << 8 | 0xFF)
            if low & 0xFF == 0 and end & 0xFF == 0xFF:
                root[block] = leaf
            else:
                row = children.setdefault(block, [0] * NODE_ENTRIES)
                row[low & 0xFF : (end & 0xFF) + 1] = [leaf] * (end - low + 1)
            low = end + 1
    return root, children


def class_ranges(
    rules: tuple[ListRule, ...],
) -> dict[tuple[int, bool], list[tuple[int, int, ListRule]]]:
    """Per (protocol class, non-first fragment): disjoint value ranges and their first match."""
    out: dict[tuple[int, bool], list[tuple[int, int, ListRule]]] = {}
    for cls in ALL_CLASSES:
        for nonfirst in (False, True):
            applicable: list[ListRule] = []
            for rule in rules:
                if rule.ipproto is not None and rule.ipproto != cls:
                    continue
                if nonfirst and rule.l4:
                    continue
                if nonfirst or not rule.l4:
                    rule = ListRule(rule.rule_id, rule.action, rule.ipproto, 0, VALUE_MAX, rule.l4)
                applicable.append(rule)
                if rule.low == 0 and rule.high == VALUE_MAX:
                    break  # covers everything: later rules can never be first
            out[(cls, nonfirst)] = first_match_segments(applicable)
    return out


def fast_images(tables: CompiledTables, budget: int = NODES_PER_GEN) -> FastImages:
    """Lay out both lookups as array tries within `budget` nodes, sources that do not fit (or
    would walk deep) partly in the exact-prefix host hash; whatever is left (or has an ifindex or
    list id beyond the arrays) stays in the LPM tries, so every answer is exact. A budget of 0
    means the LPM tries alone, no host hash either."""
    pool = _NodePool(budget)
    spaces: dict[tuple[int, int], list[LpmEntry]] = defaultdict(list)
    for entry in tables.lpm:
        spaces[(entry.ifindex, space_of(entry.prefix.value))].append(entry)
    src_roots: dict[tuple[int, int], int] = {}
    lpm: list[LpmEntry] = []
    hosts: dict[tuple[int, int], int] = {}
    for (ifindex, space), entries in sorted(spaces.items()):
        if ifindex >= ROOT_IFINDEXES:
            lpm.extend(entries)
            continue
        if not budget:  # no arrays at all (tests, benchmarks): the kernel LPM tries alone
            lpm.extend(entries)
            src_roots[(ifindex, space)] = ROOT_TRIE
            continue
        deep = space == V6_SPACE and max(e.prefix.length for e in entries) > DEEP_V6
        root = None if deep else _source_trie(space, entries, pool)
        if root is not None:
            src_roots[(ifindex, space)] = root
            continue
        # Too many for the arrays, or an IPv6 walk of more than DEEP_V6 / 8 steps: the
        # prefixes of one length that hold no longer prefix go to the exact-prefix hash
        # (looked up first: a hit there is the longest match), the rest to a trie, or to the
        # LPM trie if even the rest does not fit. A deep space first tries hashing the
        # longest prefixes only (the rest then walks at most DEEP_V6 / 8 steps).
        for above in (DEEP_V6, 0) if deep else (0,):
            length, hashed, rest = host_split(entries, above)
            base = _source_trie(space, rest, pool) if rest else 0
            if base is not None:
                break
        else:
            lpm.extend(rest)
            base = ROOT_TRIE
        for e in hashed:
            hosts[(ifindex, e.prefix.value)] = e.list_id
        src_roots[(ifindex, space)] = host_root(length, base) if hashed else base
    list_roots: dict[int, tuple[int, ...]] = {}
    slow_lists: set[int] = set()
    for list_id in sorted(tables.lists):
        roots: list[int] | None = None
        if list_id < LISTS_PER_GEN:
            roots = [0] * SEG_ROOTS
            for (cls, nonfirst), segs in class_ranges(tables.lists[list_id]).items():
                seg_root = _segment_trie(segs, pool)
                if seg_root is None:
                    roots = None
                    break
                roots[SEG_CLASS_INDEX[cls] * 2 + nonfirst] = seg_root
        if roots is None:
            slow_lists.add(list_id)
            roots = [ROOT_TRIE] * SEG_ROOTS
        if list_id < LISTS_PER_GEN:
            list_roots[list_id] = tuple(roots)
    segments = tuple(s for s in tables.segments if s.list_id in slow_lists)
    _limit(
        "source prefixes beyond the arrays and the host hash",
        len(lpm),
        MAX_LPM_PREFIXES,
        "merge CIDRs into wider prefixes",
    )
    return FastImages(
        b"".join(pool.chunks),
        len(pool.chunks),
        with_empty_roots(src_roots, tables.interfaces.values()),
        list_roots,
        tuple(lpm),
        segments,
        hosts=hosts,
    )


def slow_path_note(tables: CompiledTables) -> str | None:
    """What of these tables the kernel LPM tries serve instead of the arrays, in words: those
    packets cost several times more (bench/: about +180..+220 ns against +25..+40 at 100,000
    prefixes), so an operator should know before applying."""
    fast = tables.fast
    prefixes = len(fast.lpm)
    lists = len({s.list_id for s in fast.segments})
    if not prefixes and not lists:
        return None
    parts = []
    if prefixes:
        parts.append(f"{prefixes:,} source prefix" + ("es" if prefixes != 1 else ""))
    if lists:
        parts.append(f"{lists:,} rule list" + ("s" if lists != 1 else ""))
    return (
        f"slow path: the fast arrays cannot hold {' and '.join(parts)} (they take "
        f"{NODES_PER_GEN:,} trie nodes and {LISTS_PER_GEN:,} rule lists a generation, "
        f"interfaces up to ifindex {ROOT_IFINDEXES - 1:,}); the kernel LPM tries serve them, "
        "several times slower a packet; merge CIDRs into wider prefixes or put rules in fewer "
        "lists"
    )


def _source_trie(space: int, entries: list[LpmEntry], pool: _NodePool) -> int | None:
    """The (ifindex, space) array trie of these prefixes, or None when it does not fit."""
    if space == V4_SPACE:
        low32 = (1 << 32) - 1
        v4 = ((e.prefix.value & low32, e.prefix.length - 96, e.list_id) for e in entries)
        return _prefix_trie(v4, 32, pool)
    return _prefix_trie(((e.prefix.value, e.prefix.length, e.list_id) for e in entries), 128, pool)


def host_split(
    entries: list[LpmEntry], above: int = 0
) -> tuple[int, list[LpmEntry], list[LpmEntry]]:
    """(L, the prefixes of length L that hold no longer prefix, the rest) for one (ifindex,
    space): L is the most common length longer than `above` (ties: the longer). An address in
    a hashed prefix can match no longer prefix, so the hash answers before the trie."""
    counts: dict[int, int] = defaultdict(int)
    for e in entries:
        if e.prefix.length > above:
            counts[e.prefix.length] += 1
    if not counts:
        return 0, [], list(entries)
    length = max(counts, key=lambda n: (counts[n], n))
    shift = 128 - length
    holding = {e.prefix.value >> shift for e in entries if e.prefix.length > length}
    hashed: list[LpmEntry] = []
    rest: list[LpmEntry] = []
    for e in entries:
        if e.prefix.length == length and (e.prefix.value >> shift) not in holding:
            hashed.append(e)
        else:
            rest.append(e)
    return length, hashed, rest


def host_root(length: int, base: int) -> int:
    """A root entry that sends the walk to the host hash at `length` first, then to base."""
    return ROOT_HOSTS | (length - 1) << HOST_LEN_SHIFT | base


def with_empty_roots(
    src_roots: Mapping[tuple[int, int], int], ifindexes: Iterable[int]
) -> dict[tuple[int, int], int]:
    """Every space of an interface the tables cover gets a nonzero root (ROOT_EMPTY where it
    holds no prefix), so a zero root tells the program the interface has no tables at all."""
    out = {k: v for k, v in src_roots.items() if v}
    for ifindex in ifindexes:
        if ifindex < ROOT_IFINDEXES:
            for space in (V4_SPACE, V6_SPACE):
                out.setdefault((ifindex, space), ROOT_EMPTY)
    return out
