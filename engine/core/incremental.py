"""Incremental compile: an edit recompiles only the blocks, prefixes, lists and trie nodes it
touches, and says which map entries changed, so the datapath writes only those.

`IncrementalCompiler` keeps one compile's intermediate state (per-block rules, per-prefix
members and list ids, list contents, and the array tries node by node). Its tables answer the
same lookups as `compile_ruleset`'s (same lpm entries, lists, segments; list ids may be
numbered differently) but lay the array tries out by position, not by content: every trie node
has a slot of its own (source trie nodes keyed by interface, space, depth and path; segment
trie nodes by list id, root and block), so changing one prefix rewrites the few nodes on its
path and nothing moves. List ids and node slots survive edits: what is unchanged keeps its
number, what is new takes the lowest free number, in a fixed order, so an incremental update
gives exactly what `full()` gives from the same previous state (the property tests check it).

Anything unusual (interfaces or fail-safe list changed, ids handed in that are not ours, a
trie or list that does not fit the arrays, a duplicate rule key) takes the full path.
"""

from __future__ import annotations

import array
import bisect
import heapq
import sys
import weakref
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from engine.core.cidr import MAPPED_V4_PREFIX, Prefix, parse_cidrs
from engine.core.compiler import (
    DEEP_V6,
    MAX_INTERFACES,
    MAX_LISTS,
    MAX_PREFIXES,
    MAX_RULE_ID,
    MAX_RULES_PER_SOURCE,
    SEG_CLASS_INDEX,
    V4_SPACE,
    V6_SPACE,
    VALUE_MAX,
    CompiledTables,
    FastImages,
    ListRule,
    LpmEntry,
    RuleInfo,
    RuleKey,
    SegmentEntry,
    _limit,
    assign_rule_ids,
    class_ranges,
    compile_ruleset,
    list_rule,
    match_interfaces,
    ranges_segments,
    rule_key,
    seg_leaf,
    seg_rows,
    space_of,
    with_empty_roots,
)
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe, failsafe_ports
from engine.core.gcpause import gc_paused
from engine.core.model import HashedTuple, RuleSet
from engine.kernel.abi import (
    LISTS_PER_GEN,
    NODE_ENTRIES,
    NODE_FLAG,
    NODES_PER_GEN,
    ROOT_IFINDEXES,
    SEG_ROOTS,
)

BlockKey = tuple[str, int]  # (firewall name, block index)
SrcKey = tuple[int, Prefix]  # (ifindex, prefix)
TrieKey = tuple[int, int]  # (ifindex, space)
TrieNode = tuple[int, int]  # (depth, path) inside one source trie
NodeKey = tuple[object, ...]  # ("s", ifindex, space, depth, path) | ("g", list id, root, block)
Members = tuple[tuple[BlockKey, int], ...]


class _Full(Exception):
    """An update this module does not do incrementally: compile in full instead."""


@dataclass(frozen=True)
class _Block:
    source: object  # the IngressBlock, compared by identity first
    fw_interfaces: tuple[str, ...]
    ifindexes: tuple[int, ...]
    prefixes: tuple[Prefix, ...]
    keys: tuple[RuleKey, ...]
    placed: tuple[tuple[int, int, ListRule], ...]  # (order, position, rule)


def _pack(entries: Sequence[int]) -> bytes:
    words = array.array("I", entries)
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


@dataclass
class _SrcTrie:
    """One (ifindex, space) trie: prefixes placed at their stride-8 node, node structure, and
    each node's leaf-expanded row (before child pointers), kept so a path can be redone."""

    width: int
    default: int = 0
    at: dict[TrieNode, dict[tuple[int, int], int]] = field(default_factory=dict)
    kids: dict[TrieNode, set[int]] = field(default_factory=dict)
    leafrows: dict[TrieNode, list[int]] = field(default_factory=dict)

    def place(self, value: int, length: int) -> TrieNode:
        depth = (length - 1) >> 3
        return (depth, value >> (self.width - 8 * depth))

    def put(self, value: int, length: int, leaf: int, added: set[TrieNode]) -> TrieNode | None:
        """Set a prefix's leaf; returns the node it sits in (None for the default)."""
        if length == 0:
            self.default = leaf
            return None
        node = self.place(value, length)
        self.at.setdefault(node, {})[(length, value)] = leaf
        self._need(node, added)
        return node

    def drop(self, value: int, length: int, removed: set[TrieNode]) -> TrieNode | None:
        if length == 0:
            self.default = 0
            return None
        node = self.place(value, length)
        slot = self.at.get(node)
        if slot is not None:
            slot.pop((length, value), None)
            if not slot:
                del self.at[node]
        self._release(node, removed)
        return node

    def _need(self, node: TrieNode, added: set[TrieNode]) -> None:
        """Make node and its ancestors exist, linking each to its parent."""
        child: int | None = None
        while True:
            new = node not in self.kids
            if new:
                self.kids[node] = set()
                added.add(node)
            if child is not None:
                self.kids[node].add(child & 0xFF)
            depth, path = node
            if not new or depth == 0:
                return
            child, node = path, (depth - 1, path >> 8)

    def _release(self, node: TrieNode, removed: set[TrieNode]) -> None:
        while node in self.kids and not self.kids[node] and node not in self.at:
            del self.kids[node]
            self.leafrows.pop(node, None)
            removed.add(node)
            depth, path = node
            if depth == 0:
                return
            parent = (depth - 1, path >> 8)
            self.kids[parent].discard(path & 0xFF)
            node = parent

    def subtree(self, node: TrieNode) -> Iterator[TrieNode]:
        stack = [node]
        while stack:
            cur = stack.pop()
            if cur not in self.kids:
                continue
            yield cur
            depth, path = cur
            stack.extend((depth + 1, path << 8 | b) for b in self.kids[cur])

    def row(self, node: TrieNode) -> list[int]:
        """Leaf-expanded row of a node from its parent's row and its own prefixes."""
        depth, path = node
        inherited = (
            self.default if depth == 0 else self.leafrows[(depth - 1, path >> 8)][path & 0xFF]
        )
        row = [inherited] * NODE_ENTRIES
        for (length, value), leaf in sorted(self.at.get(node, {}).items()):
            first = (value >> (self.width - 8 * (depth + 1))) & 0xFF
            span = 1 << (8 * (depth + 1) - length)
            row[first : first + span] = [leaf] * span
        self.leafrows[node] = row
        return row


class _Slots:
    """Node slots of the array map (one generation's half), by position; lowest free first."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.of: dict[NodeKey, int] = {}
        self.free: list[int] = list(range(budget))

    def release(self, key: NodeKey) -> int | None:
        slot = self.of.pop(key, None)
        if slot is not None:
            heapq.heappush(self.free, slot)
        return slot

    def allocate(self, keys: Iterable[NodeKey]) -> None:
        for key in sorted(k for k in keys if k not in self.of):
            if not self.free:
                raise _Full("array tries full")
            self.of[key] = heapq.heappop(self.free)


_ABSENT = object()


class LazyEntries(Sequence[LpmEntry]):
    """The lpm entries of one compile, built (sorted) on first use.

    Copying 100,000 prefix -> list id entries on every edit would cost more than the edit, so
    a view reads the compiler's live mapping, and the compiler records in every view still
    alive the value a key had before it changes it (`remember`): live mapping + those saved
    values = the mapping as it was when the view was made."""

    def __init__(self, live: Mapping[SrcKey, int]) -> None:
        self._live: Mapping[SrcKey, int] | None = live
        self._saved: dict[SrcKey, object] = {}
        self._len = len(live)
        self._entries: tuple[LpmEntry, ...] | None = None

    @property
    def pending(self) -> bool:
        """Not built yet, so it still follows the live mapping."""
        return self._live is not None

    def remember(self, key: SrcKey, old: object) -> None:
        if self._live is not None and key not in self._saved:
            self._saved[key] = old

    def _all(self) -> tuple[LpmEntry, ...]:
        if self._entries is None:
            assert self._live is not None
            snapshot: dict[SrcKey, object] = dict(self._live)
            for key, old in self._saved.items():
                if old is _ABSENT:
                    snapshot.pop(key, None)
                else:
                    snapshot[key] = old
            entries = [LpmEntry(i, p, lid) for (i, p), lid in snapshot.items()]  # type: ignore[arg-type]
            entries.sort(key=lambda e: (e.ifindex, e.prefix.value, e.prefix.length))
            self._entries = tuple(entries)
            self._live, self._saved = None, {}
        return self._entries

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        return self._all()[index]

    def __len__(self) -> int:
        return self._len

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())  # like the tuple it stands for


@dataclass(frozen=True)
class Delta:
    """What changed against the tables this compile started from (None: everything)."""

    rows: frozenset[int] | None  # node slots rewritten or freed
    list_roots: frozenset[int] | None
    src_roots: frozenset[TrieKey] | None


class IncrementalCompiler:
    """Compiles rule sets one after another, each from the state the last one left."""

    def __init__(self, budget: int = NODES_PER_GEN) -> None:
        self.budget = min(budget, NODES_PER_GEN)
        self._reset()
        self.last: CompiledTables | None = None
        self.last_delta: Delta | None = None
        self.full_compiles = 0

    def _reset(self) -> None:
        # Views of earlier compiles keep the mapping they read: a reset replaces it rather than
        # changing it, so they must not be told of changes to the new one (a view told that its
        # keys were absent before would lose them: the fake kernel's tables emptied).
        self._views: list[weakref.ref[LazyEntries]] = []
        self.interfaces: dict[str, int] = {}
        self.failsafe: tuple[FailSafe, ...] = ()
        self.rule_ids: dict[RuleKey, int] = {}
        self.key_count: dict[RuleKey, int] = defaultdict(int)
        self.blocks: dict[BlockKey, _Block] = {}
        self.rules: dict[int, RuleInfo] = {}
        self.own: dict[SrcKey, dict[BlockKey, int]] = {}
        self.sorted_prefixes: dict[tuple[int, bool], list[tuple[int, int]]] = defaultdict(list)
        self.lengths: dict[tuple[int, bool], dict[int, int]] = defaultdict(dict)
        self.list_of: dict[SrcKey, int] = {}
        self.lists: dict[int, tuple[ListRule, ...]] = {}
        self.list_by_content: dict[tuple[ListRule, ...], int] = {}
        self.list_users: dict[int, int] = defaultdict(int)
        self.seg_of: dict[int, list[SegmentEntry]] = {}
        # each list's class_ranges, computed once: its segments, trie plan and rows share them
        self.ranges: dict[int, dict[tuple[int, bool], list[tuple[int, int, ListRule]]]] = {}
        self.slots = _Slots(self.budget)
        self.rows: dict[int, bytes] = {}
        self.tries: dict[TrieKey, _SrcTrie] = {}
        self.src_roots: dict[TrieKey, int] = {}
        self.list_roots: dict[int, tuple[int, ...]] = {}
        self.list_nodes: dict[int, list[NodeKey]] = {}

    # --- public ------------------------------------------------------------------------------

    def compile(
        self,
        ruleset: RuleSet,
        interfaces: Mapping[str, int],
        failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE,
        previous_ids: Mapping[RuleKey, int] | None = None,
    ) -> CompiledTables:
        """Tables for ruleset; incremental from the last compile where it can be."""
        with gc_paused():
            if self.last is not None and self._can_update(interfaces, failsafe, previous_ids):
                saved = self._save()
                try:
                    return self._update(ruleset)
                except _Full:
                    self._restore(saved)
            return self.full(ruleset, interfaces, failsafe, previous_ids)

    def full(
        self,
        ruleset: RuleSet,
        interfaces: Mapping[str, int],
        failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE,
        previous_ids: Mapping[RuleKey, int] | None = None,
    ) -> CompiledTables:
        """Compile everything again, keeping list ids and node slots of what is unchanged.
        Tables that do not fit the arrays are compiled by compile_ruleset (LPM fallback)."""
        try:
            return self._full(ruleset, interfaces, failsafe, previous_ids)
        except _Full:
            self._reset()
            self.last = self.last_delta = None
            return compile_ruleset(ruleset, interfaces, failsafe, previous_ids)

    def _full(
        self,
        ruleset: RuleSet,
        interfaces: Mapping[str, int],
        failsafe: tuple[FailSafe, ...],
        previous_ids: Mapping[RuleKey, int] | None,
    ) -> CompiledTables:
        old_slots, old_lists = self.slots.of, dict(self.list_by_content)
        self._reset()
        self.full_compiles += 1
        self.interfaces = dict(interfaces)
        self.failsafe = failsafe
        self.rule_ids = assign_rule_ids(ruleset, previous_ids)
        blocks = self._blocks_of(ruleset)
        for key, blk in blocks.items():
            self._add_block(key, blk, None)
        self._index_all()
        _limit("interfaces", len(self._selected()), MAX_INTERFACES, "select fewer interfaces")
        self._v4_roots(set(), {i for i, _ in self.own})
        _limit("source prefixes", len(self.own), MAX_PREFIXES, "merge CIDRs into wider prefixes")
        self._assign_lists(self._lists_for(list(self.own)), old_lists)
        # slots of positions still in use are kept; the rest are free for new positions
        needed = self._positions()
        for pos in needed:
            if pos in old_slots:
                self.slots.of[pos] = old_slots[pos]
        taken = set(self.slots.of.values())
        self.slots.free = [s for s in range(self.budget) if s not in taken]
        self.slots.allocate(needed)
        self._build_all_rows()
        return self._emit(Delta(None, None, None))

    # --- the update path ---------------------------------------------------------------------

    def _can_update(
        self,
        interfaces: Mapping[str, int],
        failsafe: tuple[FailSafe, ...],
        previous_ids: Mapping[RuleKey, int] | None,
    ) -> bool:
        if dict(interfaces) != self.interfaces or failsafe != self.failsafe:
            return False
        if previous_ids is None:
            return False
        return previous_ids is self.rule_ids or previous_ids == self.rule_ids

    def _update(self, ruleset: RuleSet) -> CompiledTables:
        blocks = self._blocks_of(ruleset, reuse=True)
        gone = [k for k in self.blocks if k not in blocks]
        changed = [k for k, b in blocks.items() if self.blocks.get(k) is not b]
        if not gone and not changed:
            return self._emit(Delta(frozenset(), frozenset(), frozenset()))
        touched: set[SrcKey] = set()
        dropped_keys: set[RuleKey] = set()
        for key in (*gone, *changed):
            if key in self.blocks:
                dropped_keys.update(self.blocks[key].keys)
                self._remove_block(key, touched)
        self._assign_new_ids(ruleset, blocks, changed, dropped_keys)
        for key in changed:
            self._add_block(key, blocks[key], touched)
        self._v4_roots(touched)
        _limit("source prefixes", len(self.own), MAX_PREFIXES, "merge CIDRs into wider prefixes")
        affected = self._with_enclosed(touched)
        removed = [k for k in affected if k not in self.own]
        present = [k for k in affected if k in self.own]
        old_ids = {k: self.list_of.get(k) for k in affected}
        wanted = self._lists_for(present)
        for k in removed:
            self._set_list(k, None)
        new_lists, dead_lists = self._assign_lists(wanted, None, old_ids)
        # source tries: each affected prefix whose list id changed, appeared or went away
        leaf_dirty: dict[TrieKey, set[TrieNode]] = defaultdict(set)
        added: dict[TrieKey, set[TrieNode]] = defaultdict(set)
        removed_nodes: dict[TrieKey, set[TrieNode]] = defaultdict(set)
        for k in affected:
            before, after = old_ids.get(k), self.list_of.get(k)
            if before == after:
                continue
            tkey, value, length = _trie_coords(k)
            _check_positional(tkey, length)
            trie = self.tries.get(tkey)
            if trie is None:
                trie = self.tries[tkey] = _SrcTrie(32 if tkey[1] == V4_SPACE else 128)
            if after is None:
                node = trie.drop(value, length, removed_nodes[tkey])
            else:
                node = trie.put(value, length, after, added[tkey])
            if node is None:
                leaf_dirty[tkey].update(trie.kids)  # the default changed: every node inherits it
            else:
                leaf_dirty[tkey].add(node)
        # node positions: released when no longer needed, allocated when new; a position
        # needed before and after keeps its slot
        old_positions: set[NodeKey] = set()
        new_positions: set[NodeKey] = set()
        ptr_dirty: dict[TrieKey, set[TrieNode]] = defaultdict(set)
        for tkey, nodes in removed_nodes.items():
            trie = self.tries[tkey]
            for node in nodes:
                if node not in trie.kids:
                    old_positions.add(("s", *tkey, *node))
                if node[0] and (node[0] - 1, node[1] >> 8) in trie.kids:
                    ptr_dirty[tkey].add((node[0] - 1, node[1] >> 8))
        for tkey, nodes in added.items():
            trie = self.tries[tkey]
            leaf_dirty[tkey].update(nodes)
            for node in nodes:
                new_positions.add(("s", *tkey, *node))
                if node[0]:
                    ptr_dirty[tkey].add((node[0] - 1, node[1] >> 8))
        for lid in dead_lists:
            old_positions.update(self.list_nodes.pop(lid, []))
            self.list_roots.pop(lid, None)
        seg_plan = {lid: self._seg_plan(lid) for lid in new_lists}
        for plan in seg_plan.values():
            new_positions.update(plan[1])
        rows_changed: set[int] = set()
        for pos in old_positions - new_positions:
            slot = self.slots.release(pos)
            if slot is not None:
                self.rows.pop(slot, None)
                rows_changed.add(slot)
        self.slots.allocate(new_positions)
        roots_changed: set[TrieKey] = set()
        for tkey in set(leaf_dirty) | set(ptr_dirty):
            rows_changed |= self._redo_trie(tkey, leaf_dirty[tkey], ptr_dirty[tkey])
            roots_changed.add(tkey)
        for lid, plan in seg_plan.items():
            rows_changed |= self._write_seg(lid, plan)
        return self._emit(
            Delta(
                frozenset(rows_changed),
                frozenset(new_lists) | frozenset(dead_lists),
                frozenset(roots_changed),
            )
        )

    def _save(self) -> dict[str, object]:
        # an update that turns out to need the full path starts that from a clean state, so
        # only what full() reads back (slots and list numbering) must be the pre-update one
        return {"slots": dict(self.slots.of), "lists": dict(self.list_by_content)}

    def _restore(self, saved: dict[str, object]) -> None:
        self.slots.of = saved["slots"]  # type: ignore[assignment]
        self.list_by_content = saved["lists"]  # type: ignore[assignment]

    # --- blocks and rule ids -----------------------------------------------------------------

    def _blocks_of(self, ruleset: RuleSet, reuse: bool = False) -> dict[BlockKey, _Block]:
        out: dict[BlockKey, _Block] = {}
        for fw in ruleset.firewalls:
            names = match_interfaces(fw.interfaces, self.interfaces)
            ifindexes = tuple(self.interfaces[n] for n in names)
            for bi, block in enumerate(fw.ingress):
                key = (fw.name, bi)
                old = self.blocks.get(key) if reuse else None
                if (
                    old is not None
                    and old.fw_interfaces == fw.interfaces
                    and (old.source is block or old.source == block)
                ):
                    out[key] = old
                    continue
                keys = tuple(rule_key(fw.name, block, r) for r in block.rules)
                prefixes = tuple(parse_cidrs(block.source_cidrs))
                placed = tuple(
                    (r.order, ri, list_rule(r, self.rule_ids.get(keys[ri], 0)))
                    for ri, r in enumerate(block.rules)
                )
                out[key] = _Block(block, fw.interfaces, ifindexes, prefixes, keys, placed)
        return out

    def _assign_new_ids(
        self,
        ruleset: RuleSet,
        blocks: dict[BlockKey, _Block],
        changed: list[BlockKey],
        dropped_keys: set[RuleKey],
    ) -> None:
        """assign_rule_ids' rule for the changed blocks only: a key keeps its id, a new key
        takes the lowest id neither in use nor just freed."""
        previous = self.rule_ids
        new_keys: set[RuleKey] = set()
        for key in changed:
            for k in blocks[key].keys:
                if k in new_keys or self.key_count.get(k, 0):
                    raise _Full("duplicate rule key")
                new_keys.add(k)
        ids = dict(previous)
        for k in dropped_keys:
            if k not in new_keys and not self.key_count.get(k, 0):
                ids.pop(k, None)
        used = set(previous.values())
        next_id = 1
        order = {fw.name: i for i, fw in enumerate(ruleset.firewalls)}
        for key in sorted(changed, key=lambda k: (order[k[0]], k[1])):
            for k in blocks[key].keys:
                if k in ids:
                    continue
                while next_id in used:
                    next_id += 1
                ids[k] = next_id
                used.add(next_id)
        _limit("rules", max(ids.values(), default=0), MAX_RULE_ID, "remove rules")
        self.rule_ids = ids
        for key in changed:
            blk = blocks[key]
            placed = tuple(
                (order_, ri, list_rule(blk.source.rules[ri], ids[blk.keys[ri]]))  # type: ignore[attr-defined]
                for order_, ri, _ in blk.placed
            )
            blocks[key] = _Block(
                blk.source, blk.fw_interfaces, blk.ifindexes, blk.prefixes, blk.keys, placed
            )

    def _add_block(self, key: BlockKey, blk: _Block, touched: set[SrcKey] | None) -> None:
        """touched None: the full path, which indexes every prefix at once afterwards."""
        self.blocks[key] = blk
        for k in blk.keys:
            self.key_count[k] += 1
        fw_name = key[0]
        source = blk.source
        for ri, (_, _, lr) in enumerate(blk.placed):
            rule = source.rules[ri]  # type: ignore[attr-defined]
            self.rules[lr.rule_id] = RuleInfo(
                lr.rule_id,
                fw_name,
                blk.fw_interfaces,
                source.source_cidrs,  # type: ignore[attr-defined]
                rule,
            )
        own = self.own
        if touched is None:
            for ifindex in blk.ifindexes:
                for prefix in blk.prefixes:
                    slot = own.get((ifindex, prefix))
                    if slot is None:
                        own[(ifindex, prefix)] = {key: prefix.length}
                    else:
                        slot[key] = prefix.length
            return
        for prefix in blk.prefixes:
            for ifindex in blk.ifindexes:
                sk = (ifindex, prefix)
                slot = own.get(sk)
                if slot is None:
                    slot = own[sk] = {}
                    self._index_add(sk)
                slot[key] = prefix.length
                touched.add(sk)

    def _remove_block(self, key: BlockKey, touched: set[SrcKey]) -> None:
        blk = self.blocks.pop(key)
        for k in blk.keys:
            self.key_count[k] -= 1
            if self.key_count[k] <= 0:
                del self.key_count[k]
        for _, _, lr in blk.placed:
            self.rules.pop(lr.rule_id, None)
        for prefix in blk.prefixes:
            for ifindex in blk.ifindexes:
                sk = (ifindex, prefix)
                slot = self.own.get(sk)
                if slot is None:
                    continue
                slot.pop(key, None)
                touched.add(sk)
                if not slot and not _is_v4_root(prefix):
                    del self.own[sk]
                    self._index_drop(sk)

    def _selected(self) -> set[str]:
        wanted = {i for blk in self.blocks.values() for i in blk.ifindexes}
        return {n for n, i in self.interfaces.items() if i in wanted}

    # --- prefixes ----------------------------------------------------------------------------

    def _index_all(self) -> None:
        """The prefix index of every owned prefix, sorted once (the full path's _index_add)."""
        by: dict[tuple[int, bool], list[tuple[int, int]]] = defaultdict(list)
        for ifindex, p in self.own:
            by[(ifindex, p.is_v4)].append((p.value, p.length))
        for k, items in by.items():
            items.sort()
            self.sorted_prefixes[k] = items
            counts: dict[int, int] = {}
            for _, length in items:
                counts[length] = counts.get(length, 0) + 1
            self.lengths[k] = counts

    def _index_add(self, sk: SrcKey) -> None:
        ifindex, p = sk
        bisect.insort(self.sorted_prefixes[(ifindex, p.is_v4)], (p.value, p.length))
        counts = self.lengths[(ifindex, p.is_v4)]
        counts[p.length] = counts.get(p.length, 0) + 1

    def _index_drop(self, sk: SrcKey) -> None:
        ifindex, p = sk
        items = self.sorted_prefixes[(ifindex, p.is_v4)]
        i = bisect.bisect_left(items, (p.value, p.length))
        if i < len(items) and items[i] == (p.value, p.length):
            del items[i]
        counts = self.lengths[(ifindex, p.is_v4)]
        counts[p.length] -= 1
        if not counts[p.length]:
            del counts[p.length]

    def _v4_roots(self, candidates: set[SrcKey], ifindexes: set[int] | None = None) -> None:
        """compile_ruleset's _add_v4_roots, kept up to date: an interface whose IPv6 prefixes
        cover ::ffff:0:0/96 has that /96 as the IPv4 root; it goes when nothing needs it.
        Looks at the interfaces of candidates (or ifindexes), adds the roots it changes."""
        root = Prefix(MAPPED_V4_PREFIX, 96, True)
        if ifindexes is None:
            ifindexes = {i for i, _ in candidates}
        for ifindex in ifindexes:
            need = any(
                (ifindex, Prefix(MAPPED_V4_PREFIX >> (128 - n) << (128 - n) if n else 0, n, False))
                in self.own
                for n in self.lengths.get((ifindex, False), {})
                if n <= 96
            )
            sk = (ifindex, root)
            if need and sk not in self.own:
                self.own[sk] = {}
                self._index_add(sk)
                candidates.add(sk)
            elif not need and sk in self.own and not self.own[sk]:
                del self.own[sk]
                self._index_drop(sk)
                candidates.add(sk)

    def _with_enclosed(self, touched: set[SrcKey]) -> set[SrcKey]:
        """The touched prefixes and every prefix inside one (they inherit its rules)."""
        out = set(touched)
        for ifindex, p in touched:
            if p.length == 128:
                continue
            items = self.sorted_prefixes.get((ifindex, p.is_v4), [])
            lo = bisect.bisect_left(items, (p.value, p.length + 1))
            hi = bisect.bisect_left(items, (p.value + (1 << (128 - p.length)), 0))
            for value, length in items[lo:hi]:
                if length > p.length:
                    out.add((ifindex, Prefix(value, length, p.is_v4)))
        return out

    def _members(self, sk: SrcKey, shorter: Sequence[int] = ()) -> Members:
        """The blocks (and the length of their prefix) whose rules sk's list holds: its own
        and every enclosing prefix's. shorter: the lengths held for sk's interface and family,
        sorted (prefixes of the other lengths cannot enclose it)."""
        ifindex, prefix = sk
        mine = self.own[sk]
        if not shorter or shorter[0] >= prefix.length:
            return tuple(mine.items()) if len(mine) == 1 else tuple(sorted(mine.items()))
        members = dict(mine)
        for length in shorter:
            if length >= prefix.length:
                break
            shift = 128 - length
            outer = self.own.get(
                (ifindex, Prefix((prefix.value >> shift) << shift, length, prefix.is_v4))
            )
            if outer:
                for uid, qlen in outer.items():
                    if members.get(uid, -1) < qlen:
                        members[uid] = qlen
        return tuple(sorted(members.items()))

    # --- lists -------------------------------------------------------------------------------

    def _lists_for(self, keys: Iterable[SrcKey]) -> dict[tuple[ListRule, ...], list[SrcKey]]:
        """The prefixes of keys grouped by the merged rule list each must hold."""
        groups: dict[Members, list[SrcKey]] = {}
        out: dict[tuple[ListRule, ...], list[SrcKey]] = {}
        lengths: dict[tuple[int, bool], list[int]] = {}
        for sk in keys:
            fam = (sk[0], sk[1].is_v4)
            shorter = lengths.get(fam)
            if shorter is None:
                shorter = lengths[fam] = sorted(self.lengths.get(fam, ()))
            members = self._members(sk, shorter)
            group = groups.get(members)
            if group is None:
                ranked = []
                for (fw_name, bi), qlen in members:
                    for order, ri, lr in self.blocks[(fw_name, bi)].placed:
                        ranked.append(((order, -qlen, fw_name, bi, ri), lr))
                ranked.sort(key=lambda e: e[0])
                # hashed once: every prefix sharing it looks it up by content below
                merged = HashedTuple(lr for _, lr in ranked)
                if len(merged) > MAX_RULES_PER_SOURCE:
                    _limit(
                        f"rules for source {sk[1]}",
                        len(merged),
                        MAX_RULES_PER_SOURCE,
                        "use fewer rules for this source and its enclosing prefixes",
                    )
                # other members can merge to the same rules: one group per content
                group = groups[members] = out.setdefault(merged, [])
            group.append(sk)
        return out

    def _set_list(self, sk: SrcKey, lid: int | None) -> None:
        """Change a prefix's list id, telling the views of earlier compiles what it was."""
        old = self.list_of.get(sk, _ABSENT)
        if old == lid:
            return
        for ref in self._views:
            view = ref()
            if view is not None:
                view.remember(sk, old)
        if lid is None:
            del self.list_of[sk]
        else:
            self.list_of[sk] = lid

    def _assign_lists(
        self,
        wanted: dict[tuple[ListRule, ...], list[SrcKey]],
        hints: Mapping[tuple[ListRule, ...], int] | None,
        old_ids: Mapping[SrcKey, int | None] | None = None,
    ) -> tuple[set[int], set[int]]:
        """Give every prefix in wanted its list id: a content that already has an id keeps it,
        new contents take the lowest ids no kept list holds, in order of their first prefix.
        Returns (new list ids, list ids no longer used); an id can be in both."""
        for lid in (old_ids or {}).values():
            if lid is not None:
                self.list_users[lid] -= 1
        pending: dict[tuple[ListRule, ...], SrcKey] = {}
        for content, sks in wanted.items():
            lid = self.list_by_content.get(content)
            if lid is None and hints is not None:
                lid = hints.get(content)
                if lid is not None:
                    self.lists[lid] = content
                    self.list_by_content[content] = lid
            if lid is None:
                # (ifindex, prefix) orders as _src_order does: value, length decide is_v4
                pending[content] = min(sks)
                continue
            self._set_lists(sks, lid)
        dead = {lid for lid in self.lists if self.list_users.get(lid, 0) <= 0}
        for lid in dead:
            self.list_users.pop(lid, None)
            self.list_by_content.pop(self.lists.pop(lid), None)
            self.seg_of.pop(lid, None)
            self.ranges.pop(lid, None)
        fresh: set[int] = set()
        next_id = 1
        for content, _ in sorted(pending.items(), key=lambda e: _src_order(e[1])):
            while next_id in self.lists:
                next_id += 1
            self.lists[next_id] = content
            self.list_by_content[content] = next_id
            fresh.add(next_id)
        _limit("rule lists", len(self.lists), MAX_LISTS, "use fewer distinct rule lists")
        for content in pending:
            self._set_lists(wanted[content], self.list_by_content[content])
        for lid in self.lists:
            if lid >= LISTS_PER_GEN:
                raise _Full("list id beyond the list-root array")
            if lid not in self.seg_of:
                self.ranges[lid] = ranges = class_ranges(self.lists[lid])
                self.seg_of[lid] = ranges_segments(lid, ranges)
        return fresh, dead

    def _set_lists(self, sks: list[SrcKey], lid: int) -> None:
        """_set_list for every one of sks; with no earlier view to tell, in one update."""
        self.list_users[lid] += len(sks)
        if self._views:
            for sk in sks:
                self._set_list(sk, lid)
        else:
            self.list_of.update(dict.fromkeys(sks, lid))

    # --- array tries -------------------------------------------------------------------------

    def _positions(self) -> list[NodeKey]:
        """Every node position of the current tables (full path: builds the tries too)."""
        self.tries = {}
        scratch: set[TrieNode] = set()
        # grouped by trie first: each trie's prefixes then go in with no per-prefix lookups
        by_trie: dict[TrieKey, list[tuple[int, int, int]]] = defaultdict(list)
        for sk, lid in self.list_of.items():
            tkey, value, length = _trie_coords(sk)
            by_trie[tkey].append((value, length, lid))
        for tkey, entries in by_trie.items():
            trie = self.tries[tkey] = _SrcTrie(32 if tkey[1] == V4_SPACE else 128)
            _check_positional(tkey, max(length for _, length, _ in entries))
            width, at, need = trie.width, trie.at, trie._need
            for value, length, lid in entries:
                if length == 0:
                    trie.default = lid
                    continue
                depth = (length - 1) >> 3
                node = (depth, value >> (width - 8 * depth))
                slot = at.get(node)
                if slot is None:
                    at[node] = {(length, value): lid}
                    need(node, scratch)
                else:
                    slot[(length, value)] = lid
        keys: list[NodeKey] = [
            ("s", *tkey, *node) for tkey, trie in self.tries.items() for node in trie.kids
        ]
        for lid in self.lists:
            if lid >= LISTS_PER_GEN:
                raise _Full("list id beyond the list-root array")
            keys.extend(self._seg_plan(lid)[1])
        return keys

    def _build_all_rows(self) -> None:
        for tkey, trie in self.tries.items():
            self._redo_trie(tkey, set(trie.kids))
        for lid in self.lists:
            self._write_seg(lid, self._seg_plan(lid))

    def _redo_trie(
        self, tkey: TrieKey, leaf_dirty: set[TrieNode], ptr_dirty: set[TrieNode] | None = None
    ) -> set[int]:
        """Rewrite the rows of nodes whose leaves changed (and everything under them, which
        inherits), and of nodes whose child pointers changed; returns the slots written."""
        trie = self.tries[tkey]
        todo: set[TrieNode] = set()
        for node in leaf_dirty:
            if node in trie.kids and node not in todo:
                todo.update(trie.subtree(node))
        repack = {n for n in (ptr_dirty or ()) if n in trie.kids and n not in todo}
        changed: set[int] = set()
        for node in sorted(todo | repack):  # parents first: a child inherits from its parent
            row = list(trie.row(node) if node in todo else trie.leafrows[node])
            depth, path = node
            for b in trie.kids[node]:
                row[b] = NODE_FLAG | self.slots.of[("s", *tkey, depth + 1, path << 8 | b)]
            slot = self.slots.of[("s", *tkey, *node)]
            self.rows[slot] = _pack(row)
            changed.add(slot)
        root = (0, 0)
        if root in trie.kids:
            self.src_roots[tkey] = NODE_FLAG | self.slots.of[("s", *tkey, *root)]
        else:
            self.src_roots[tkey] = trie.default
        return changed

    def _seg_plan(
        self, lid: int
    ) -> tuple[list[tuple[int, list[tuple[int, int, ListRule]]]], list[NodeKey]]:
        """Per root (class, fragment flag) its segments, and the node positions they need."""
        plan: list[tuple[int, list[tuple[int, int, ListRule]]]] = []
        keys: list[NodeKey] = []
        for (cls, nonfirst), segs in self.ranges[lid].items():
            ri = SEG_CLASS_INDEX[cls] * 2 + nonfirst
            plan.append((ri, segs))
            if not segs or (len(segs) == 1 and segs[0][0] == 0 and segs[0][1] == VALUE_MAX):
                continue
            keys.append(("g", lid, ri, -1))
            blocks = set()
            for low, high, _ in segs:
                while low <= high:
                    block = low >> 8
                    end = min(high, block << 8 | 0xFF)
                    if not (low & 0xFF == 0 and end & 0xFF == 0xFF):
                        blocks.add(block)
                    low = end + 1
            keys.extend(("g", lid, ri, b) for b in sorted(blocks))
        return plan, keys

    def _write_seg(
        self,
        lid: int,
        plan: tuple[list[tuple[int, list[tuple[int, int, ListRule]]]], list[NodeKey]],
    ) -> set[int]:
        roots = [0] * SEG_ROOTS
        changed: set[int] = set()
        self.list_nodes[lid] = plan[1]
        for ri, segs in plan[0]:
            if not segs:
                continue
            if len(segs) == 1 and segs[0][0] == 0 and segs[0][1] == VALUE_MAX:
                roots[ri] = seg_leaf(segs[0][2])
                continue
            root, children = seg_rows(segs)
            for block, row in children.items():
                slot = self.slots.of[("g", lid, ri, block)]
                self.rows[slot] = _pack(row)
                changed.add(slot)
                root[block] = NODE_FLAG | slot
            slot = self.slots.of[("g", lid, ri, -1)]
            self.rows[slot] = _pack(root)
            changed.add(slot)
            roots[ri] = NODE_FLAG | slot
        self.list_roots[lid] = tuple(roots)
        return changed

    # --- output ------------------------------------------------------------------------------

    def _emit(self, delta: Delta) -> CompiledTables:
        view = LazyEntries(self.list_of)
        self._views = [r for r in self._views if (v := r()) is not None and v.pending]
        self._views.append(weakref.ref(view))
        ports = failsafe_ports(self.failsafe)
        fast = FastImages(
            nodes=b"",
            node_count=0,
            src_roots=with_empty_roots(
                self.src_roots, (self.interfaces[n] for n in self._selected())
            ),
            list_roots=dict(self.list_roots),
            lpm=(),
            segments=(),
            rows=dict(self.rows),
        )
        segments: list[SegmentEntry] = []
        for lid in sorted(self.lists):
            segments.extend(self.seg_of[lid])
        tables = CompiledTables(
            lpm=view,  # type: ignore[arg-type]
            lists=dict(self.lists),
            segments=tuple(segments),
            failsafe=self.failsafe,
            failsafe_ports=ports,
            rules=dict(self.rules),
            rule_ids=dict(self.rule_ids),
            interfaces={n: self.interfaces[n] for n in sorted(self._selected())},
            fast_image=fast,
        )
        self.last, self.last_delta = tables, delta
        return tables


def _check_positional(tkey: TrieKey, length: int) -> None:
    """What the positional layout cannot hold goes to the full compiler: an interface beyond
    the root array, or an IPv6 prefix deeper than DEEP_V6 (fast_images hashes those rather than
    walk up to 16 steps)."""
    if tkey[0] >= ROOT_IFINDEXES:
        raise _Full("interface beyond the root array")
    if tkey[1] == V6_SPACE and length > DEEP_V6:
        raise _Full("IPv6 prefix deeper than the host-hash threshold")


def _trie_coords(sk: SrcKey) -> tuple[TrieKey, int, int]:
    ifindex, prefix = sk
    space = space_of(prefix.value)
    if space == V4_SPACE and prefix.length >= 96:
        return (ifindex, V4_SPACE), prefix.value & ((1 << 32) - 1), prefix.length - 96
    return (ifindex, V6_SPACE if space == V6_SPACE else V4_SPACE), prefix.value, prefix.length


def _src_order(sk: SrcKey) -> tuple[int, int, int]:
    return (sk[0], sk[1].value, sk[1].length)


def _is_v4_root(prefix: Prefix) -> bool:
    return prefix.is_v4 and prefix.length == 96 and prefix.value == MAPPED_V4_PREFIX


def _covers_mapped(prefix: Prefix) -> bool:
    shift = 128 - prefix.length
    return prefix.length == 0 or (MAPPED_V4_PREFIX >> shift) == (prefix.value >> shift)
