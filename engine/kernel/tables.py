"""The rule tables in the kernel and their atomic switch: two generations live side by side,
the inactive one is emptied and filled, then config.active_gen flips in one write."""

from __future__ import annotations

import array
import ctypes as ct
import struct
import time
from collections.abc import Iterable, Mapping, Sequence

from engine.core.compiler import CompiledTables, FastImages, LpmEntry, SegmentEntry
from engine.core.incremental import gc_paused
from engine.core.model import Action as RuleAction
from engine.errors import DatapathError
from engine.kernel.abi import (
    GEN_BIT,
    MAP_HOSTS,
    MAP_LEGACY_NODES,
    MAP_NODES,
    MAP_SEG,
    MAP_SRC,
    NODES_PER_GEN,
    ROOT_HOSTS,
    ROOT_IFINDEXES,
    SEG_KEY_FIXED_BITS,
    SRC_KEY_FIXED_BITS,
    SRC_ROOTS_ENTRIES,
    Action,
    Node,
    NodeImage,
)
from engine.kernel.bpfsys import Map
from engine.kernel.configmap import ConfigMap
from engine.kernel.failsafe import FailsafePorts, wanted_failsafe
from engine.kernel.hostplan import (
    BUCKET_BYTES,
    HOST_REGION,
    HostPlan,
    plan_hosts,
    region_masks,
)
from engine.kernel.mapped import MappedBytes, nonzero_words, write_words
from engine.kernel.roots import Roots

# After the generation switch, packets already past their config read finish their lookups
# within microseconds; wait this long before deleting or overwriting the old generation under
# them. The wait is not on the writer's path: the old generation stays until the next write
# (or reclaim()), which waits out whatever is left of this since the last switch.
GRACE_S = 0.002

_SRC_KEY = struct.Struct("<IB3xI16s")
_SEG_KEY = struct.Struct("<IIBB2s")
_HOST_KEY = struct.Struct("<I16s")
_SEG_VAL = struct.Struct("<II")
_U32 = struct.Struct("<I")
NODE_BYTES = ct.sizeof(Node)

_ACTIONS = {RuleAction.ALLOW: Action.ALLOW, RuleAction.DENY: Action.DENY}


class GenerationTables:
    """Writes CompiledTables into the pinned maps of one firewall. Holds the mapped arrays
    (source roots, fail-safe ports) until close()."""

    def __init__(self, maps: Mapping[str, Map], config: ConfigMap) -> None:
        self._maps = maps
        self._config = config
        self.roots = Roots(maps)
        # monotonic time of this handle's last generation switch (None: not known here)
        self._switched_at: float | None = None
        # what this handle last wrote into each generation's half, when that half holds only
        # array tries laid out by position: the next write there changes only what differs.
        # Valid while config still shows our last switch (another writer clears it).
        self._written: dict[int, FastImages] = {}
        self._last_switch: tuple[int, int] | None = None
        self.last_write: str = ""  # "delta: N rows" or "full", for benchmarks and tests
        self._nodes: MappedBytes | None = None  # trie_nodes, mapped on use
        self.last_hosts: HostPlan | None = None  # where the last full write put the hosts

    def close(self) -> None:
        if self._nodes is not None:
            self._nodes.close()
            self._nodes = None
        self.roots.close()

    def src_roots(self) -> memoryview:
        """The source roots mapped into this process, one u64 word per root index."""
        return self.roots.words()

    def failsafe_ports(self) -> FailsafePorts:
        return self.roots.failsafe()

    def write(self, tables: CompiledTables, generation: int) -> None:
        """Make tables live atomically for packets: empty the inactive generation (what the
        previous write left behind), fill it (array tries, and the LPM tries for what does not
        fit), then switch config.active_gen in one write. The generation switched away from
        stays as it is until the next write or reclaim(), so the call returns right after the
        switch. On failure before the switch, the inactive generation is emptied again and the
        active one is untouched."""
        with gc_paused():
            self._write(tables, generation)

    def _write(self, tables: CompiledTables, generation: int) -> None:
        config = self._config.read()
        active = config.active_gen & 1
        inactive = active ^ 1
        fast = tables.fast
        if self._last_switch != (config.active_gen, config.generation):
            self._written.clear()  # someone else switched: our memory of the halves is stale
        before = self._written.pop(inactive, None)
        if before is not None and _positional(fast) and _positional(before):
            self._write_delta(tables, fast, before, inactive, generation)
        else:
            self._write_full(tables, fast, inactive, generation)
        if _positional(fast):
            self._written[inactive] = fast
        cfg = self._config.read()
        self._last_switch = (cfg.active_gen, cfg.generation)

    def _write_full(
        self, tables: CompiledTables, fast: FastImages, inactive: int, generation: int
    ) -> None:
        src, seg = self._maps[MAP_SRC], self._maps[MAP_SEG]
        roots = self.src_roots()
        self.last_write = "full"
        cuckoo = self._has_cuckoo()
        plan = plan_hosts(fast.hosts, inactive, cuckoo) if fast.hosts else None
        hashed = plan.hashed if plan is not None else {}
        self.last_hosts = plan
        self._empty_generation(inactive, hosts_next=bool(hashed))
        new_roots = {
            _root_index(inactive, ifindex, space): entry
            for (ifindex, space), entry in fast.src_roots.items()
        }

        src_keys, src_vals = _src_image(fast.lpm, inactive)
        seg_keys, seg_vals = _seg_image(fast.segments, inactive)
        host_keys, host_vals = _host_image(hashed, inactive)
        hosts = self._hosts_map() if hashed else None
        failsafe = self.failsafe_ports()
        old_masks = failsafe.masks()
        new_masks = wanted_failsafe(tables)
        # fail-safe ports are not generation-tagged: add new ones before the switch, drop
        # stale ones after it, so no packet ever loses a fail-safe it had or will have
        grown = {
            p: old_masks.get(p, 0) | m for p, m in new_masks.items() if m & ~old_masks.get(p, 0)
        }
        try:
            failsafe.write(grown)
            # nodes and list roots of the inactive half are unreachable until its src roots
            # point at them, and the src roots until the switch
            if fast.rows is not None:
                self._store_nodes(_row_runs(fast.rows, fast.rows.keys(), inactive))
            else:
                self._store_nodes(_node_run(fast.nodes, fast.node_count, inactive))
            self.roots.write_lists(fast.list_roots, inactive)
            seg.update_batch(seg_keys, seg_vals)
            src.update_batch(src_keys, src_vals)
            if plan is not None and plan.regions and cuckoo:
                self._write_host_regions(plan, fast, inactive)
            if hosts is not None:
                hosts.update_batch(host_keys, host_vals)
            write_words(roots, new_roots)
            self._config.write(active_gen=inactive, generation=generation)
        except BaseException:
            src.delete_batch(src_keys)
            seg.delete_batch(seg_keys)
            if hosts is not None:
                hosts.delete_batch(host_keys)
            write_words(roots, dict.fromkeys(new_roots, 0))
            failsafe.write({p: old_masks.get(p, 0) for p in grown})
            raise
        self._switched_at = time.monotonic()
        self._settle_failsafe(old_masks, grown, new_masks)

    def _has_cuckoo(self) -> bool:
        return self.roots.has_buckets()

    def _write_host_regions(self, plan: HostPlan, fast: FastImages, gen: int) -> None:
        """The cuckoo buckets of gen's half (a memcpy each through the mapping), then the
        region of every hashed root. Nothing reads either before gen's roots point at them."""
        for space, parts in plan.images.items():
            buckets = self.roots.buckets(space)
            size = BUCKET_BYTES[space]
            for base, raw in parts:
                buckets[base * size : base * size + len(raw)] = raw
        self.roots.write_regions(
            {
                _root_index(gen, *key): HOST_REGION.pack(
                    *region_masks(fast.src_roots[key]), base, n, seed, 0
                )
                for key, (base, n, seed) in plan.regions.items()
            }
        )

    def fill_host_masks(self) -> None:
        """Tables an older build wrote have hashed roots whose region holds no masks: give each
        its masks (and the hash), so this build's program keeps the root's prefix length. Runs
        before the new program sees a packet."""
        if not self.roots.has_regions():
            return
        roots = self.src_roots()
        for index in nonzero_words(roots, SRC_ROOTS_ENTRIES):
            root = roots[index]
            if not root & ROOT_HOSTS:
                continue
            raw = self.roots.region(index)
            if raw is not None and any(HOST_REGION.unpack(raw)[:2]):
                continue
            self.roots.write_regions({index: HOST_REGION.pack(*region_masks(root), 0, 0, 0, 0)})

    def _store_nodes(self, runs: Mapping[int, bytes]) -> None:
        """Whole nodes, each run at the index of its first: a memcpy through the mapping of
        trie_nodes, or one batch update of an older build's per-node map."""
        image = self._node_image()
        if image is not None:
            for first, raw in runs.items():
                image.raw[first * NODE_BYTES : first * NODE_BYTES + len(raw)] = raw
            return
        idx = array.array("I")
        for first, raw in runs.items():
            idx.extend(range(first, first + len(raw) // NODE_BYTES))
        if idx:
            self._maps[MAP_LEGACY_NODES].update_batch(idx.tobytes(), b"".join(runs.values()))

    def _node_image(self) -> MappedBytes | None:
        if self._nodes is None and MAP_NODES in self._maps:
            self._nodes = MappedBytes(self._maps[MAP_NODES], 1, ct.sizeof(NodeImage))
        return self._nodes

    def adopt_legacy_nodes(self) -> None:
        """Copy the nodes an older build wrote into its per-node map into trie_nodes, which
        this load has just created empty: the live tables' roots point at them. Runs before
        the new program sees a packet; later writes go to trie_nodes alone."""
        legacy = self._maps.get(MAP_LEGACY_NODES)
        image = self._node_image()
        if legacy is None or image is None:
            return
        keys, values, count = legacy.items()
        index = array.array("I", keys[: count * 4])
        for i, node in enumerate(index):
            image.raw[node * NODE_BYTES : (node + 1) * NODE_BYTES] = values[
                i * NODE_BYTES : (i + 1) * NODE_BYTES
            ]

    def _hosts_map(self) -> Map:
        hosts = self._maps.get(MAP_HOSTS)
        if hosts is None:
            raise DatapathError(
                "these tables need the host hash, which the loaded (older) program lacks",
                "infw reload (recompiles the program; counters and pins stay)",
            )
        return hosts

    def _settle_failsafe(
        self, old: Mapping[int, int], grown: Mapping[int, int], new: Mapping[int, int]
    ) -> None:
        # The program looks up the fail-safe port before it reads active_gen: a packet that no
        # longer finds a dropped port reads the new generation, so this needs no grace.
        current = {**old, **grown}
        self.failsafe_ports().write(
            {
                p: new.get(p, 0)
                for p in set(current) | set(new)
                if new.get(p, 0) != current.get(p, 0)
            }
        )

    def ifindexes(self) -> set[int]:
        """The interfaces (ifindexes) the active generation has tables for: one the rules name
        but missing here (it left and came back, or was recreated) is not filtered."""
        active = self._config.read().active_gen & 1
        found = {index % ROOT_IFINDEXES for index in _split_roots(self.src_roots())[active]}
        keys = _split_src(self._maps[MAP_SRC])[active]
        size = self._maps[MAP_SRC].key_size
        found.update(_U32.unpack_from(keys, i + 8)[0] for i in range(0, len(keys), size))
        return found

    def _write_delta(
        self,
        tables: CompiledTables,
        fast: FastImages,
        before: FastImages,
        inactive: int,
        generation: int,
    ) -> None:
        """The inactive half holds `before` (written by this handle, nothing in its LPM tries):
        rewrite only the rows, list roots and source roots that differ, then switch. Rows and
        list roots no longer referenced stay behind unreachable."""
        assert fast.rows is not None and before.rows is not None
        new_rows, old_rows = fast.rows, before.rows
        rows = [
            s for s, raw in new_rows.items() if (old := old_rows.get(s)) is not raw and old != raw
        ]
        lists = {i: r for i, r in fast.list_roots.items() if before.list_roots.get(i) != r}
        new_roots = {
            _root_index(inactive, ifindex, space): fast.src_roots.get((ifindex, space), 0)
            for (ifindex, space) in set(fast.src_roots) | set(before.src_roots)
            if fast.src_roots.get((ifindex, space), 0) != before.src_roots.get((ifindex, space), 0)
        }
        failsafe = self.failsafe_ports()
        old_masks = failsafe.masks()
        new_masks = wanted_failsafe(tables)
        grown = {
            p: old_masks.get(p, 0) | m for p, m in new_masks.items() if m & ~old_masks.get(p, 0)
        }
        self._wait_grace()  # the inactive half was live until the last switch
        self.last_write = f"delta: {len(rows)} rows, {len(lists)} lists, {len(new_roots)} roots"
        try:
            failsafe.write(grown)
            self._store_nodes(_row_runs(new_rows, rows, inactive))
            self.roots.write_lists(lists, inactive)
            write_words(self.src_roots(), new_roots)
            self._config.write(active_gen=inactive, generation=generation)
        except BaseException:
            # the half is neither old nor new now: the next write empties it first
            failsafe.write({p: old_masks.get(p, 0) for p in grown})
            raise
        self._switched_at = time.monotonic()
        self._settle_failsafe(old_masks, grown, new_masks)

    def reclaim(self) -> None:
        """Empty the generation the last switch left inactive (write does this first anyway):
        frees its LPM entries now rather than at the next write."""
        self._empty_generation((self._config.read().active_gen & 1) ^ 1)

    def _empty_generation(self, gen: int, hosts_next: bool = False) -> None:
        """Delete gen's LPM entries and zero its source roots (its nodes and list roots are
        unreachable without them), after the grace period since the switch away from it.

        The host hash is walked (a few ms over its 2M buckets, even empty) only when a root of
        gen points to it or the next tables fill it (hosts_next): entries no root points to are
        never looked up, and any left by a write that died are removed before the next one that
        could reach them."""
        src, seg = self._maps[MAP_SRC], self._maps[MAP_SEG]
        roots = self.src_roots()
        src_keys = _split_src(src)[gen]
        seg_keys = _split_seg(seg)[gen]
        root_idx = _split_roots(roots)[gen]
        hosts = self._maps.get(MAP_HOSTS)
        if hosts is not None and not (hosts_next or any(roots[i] & ROOT_HOSTS for i in root_idx)):
            hosts = None
        host_keys = _split_hosts(hosts)[gen] if hosts is not None else b""
        self._written.pop(gen, None)
        self._wait_grace()
        # roots first: from then on nothing of gen is reachable
        write_words(roots, dict.fromkeys(root_idx, 0))
        src.delete_batch(src_keys)
        seg.delete_batch(seg_keys)
        if hosts is not None:
            hosts.delete_batch(host_keys)

    def _wait_grace(self) -> None:
        """Sleep out what is left of GRACE_S since the last switch. A switch made through
        another handle (another process) is not timed here: assume it was just now."""
        if self._switched_at is None:
            self._switched_at = time.monotonic()
        left = self._switched_at + GRACE_S - time.monotonic()
        if left > 0:
            time.sleep(left)


def _split_src(src: Map) -> tuple[bytes, bytes]:
    """The src_lpm keys of generation 0 and of generation 1 (the gen byte follows prefixlen)."""
    keys, _, count = src.items()
    size = src.key_size
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for i in range(count):
        key = keys[i * size : (i + 1) * size]
        parts[key[4] & 1].append(key)
    return b"".join(parts[0]), b"".join(parts[1])


def _split_seg(seg: Map) -> tuple[bytes, bytes]:
    """The seg_lpm keys of generation 0 and 1 (generation 1's list ids carry GEN_BIT)."""
    keys, _, count = seg.items()
    size = seg.key_size
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for i in range(count):
        key = keys[i * size : (i + 1) * size]
        parts[1 if _U32.unpack_from(key, 4)[0] & GEN_BIT else 0].append(key)
    return b"".join(parts[0]), b"".join(parts[1])


def _split_hosts(hosts: Map) -> tuple[bytes, bytes]:
    """The host hash keys of generation 0 and 1 (the tag's low bit)."""
    keys, _, count = hosts.items()
    size = hosts.key_size
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for i in range(count):
        key = keys[i * size : (i + 1) * size]
        parts[key[0] & 1].append(key)
    return b"".join(parts[0]), b"".join(parts[1])


def _split_roots(roots: memoryview) -> tuple[list[int], list[int]]:
    """Indexes of the nonzero src_roots entries of generation 0 and of generation 1."""
    nonzero = nonzero_words(roots, SRC_ROOTS_ENTRIES)
    half = 2 * ROOT_IFINDEXES
    return [i for i in nonzero if i < half], [i for i in nonzero if i >= half]


def _list_id(list_id: int, gen: int) -> int:
    if list_id & GEN_BIT:
        raise DatapathError(f"rule list id {list_id} collides with the generation bit")
    return list_id | GEN_BIT if gen else list_id


def _root_index(gen: int, ifindex: int, space: int) -> int:
    return (gen * 2 + space) * ROOT_IFINDEXES + ifindex


def _node_run(nodes: bytes, count: int, gen: int) -> dict[int, bytes]:
    """A generation's nodes laid out from its first: one run."""
    if count > NODES_PER_GEN:
        raise DatapathError(f"{count} trie nodes exceed the {NODES_PER_GEN} of a generation")
    return {gen * NODES_PER_GEN: nodes[: count * NODE_BYTES]} if count else {}


def _positional(fast: FastImages) -> bool:
    """Array tries laid out by position (engine.core.incremental) with nothing in LPM tries."""
    return fast.rows is not None and not fast.lpm and not fast.segments and not fast.hosts


def _row_runs(rows: Mapping[int, bytes], slots: Iterable[int], gen: int) -> dict[int, bytes]:
    """The chosen slots' nodes (incremental layout: a node per slot), a run each."""
    chosen = sorted(slots)
    if chosen and chosen[-1] >= NODES_PER_GEN:
        raise DatapathError(
            f"trie node slot {chosen[-1]} beyond the {NODES_PER_GEN} of a generation"
        )
    return {gen * NODES_PER_GEN + s: rows[s] for s in chosen}


def _src_image(lpm: Sequence[LpmEntry], gen: int) -> tuple[bytes, bytes]:
    keys = b"".join(
        _SRC_KEY.pack(
            SRC_KEY_FIXED_BITS + e.prefix.length, gen, e.ifindex, e.prefix.value.to_bytes(16, "big")
        )
        for e in lpm
    )
    values = b"".join(_U32.pack(_list_id(e.list_id, gen)) for e in lpm)
    return keys, values


def _host_image(hosts: Mapping[tuple[int, int], int], gen: int) -> tuple[bytes, bytes]:
    keys = b"".join(
        _HOST_KEY.pack(ifindex << 1 | gen, value.to_bytes(16, "big")) for ifindex, value in hosts
    )
    return keys, array.array("I", hosts.values()).tobytes()


def _seg_image(segments: Sequence[SegmentEntry], gen: int) -> tuple[bytes, bytes]:
    keys = b"".join(
        _SEG_KEY.pack(
            SEG_KEY_FIXED_BITS + s.length,
            _list_id(s.list_id, gen),
            s.proto,
            int(s.nonfirst),
            s.value.to_bytes(2, "big"),
        )
        for s in segments
    )
    values = b"".join(_SEG_VAL.pack(s.rule_id, _ACTIONS[s.action]) for s in segments)
    return keys, values
