"""Where a generation's exact prefixes go: each (ifindex, space) of the compiled host table gets
a cuckoo region in host4 or host6 (engine/kernel/cuckoo.py) while the generation's half has
room and the placement succeeds; what is left stays in the hosts hash. The program reads
host_regions at the (generation, space, ifindex) root index to know which."""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from engine.core.compiler import space_of
from engine.kernel import cuckoo
from engine.kernel.abi import (
    HOST4_BUCKETS_PER_GEN,
    HOST6_BUCKETS_PER_GEN,
    HOST_LEN_MASK,
    HOST_LEN_SHIFT,
    MAP_HOST4,
    MAP_HOST6,
    V4_SPACE,
    V6_SPACE,
)

HOST_REGION = struct.Struct("<QQIIII")  # struct host_region: masks, base, buckets, seed, pad
BUCKETS_PER_GEN = {V4_SPACE: HOST4_BUCKETS_PER_GEN, V6_SPACE: HOST6_BUCKETS_PER_GEN}
# per space: the bucket map, a bucket's size, and how a region's buckets are laid out
BUCKET_MAP = {V4_SPACE: MAP_HOST4, V6_SPACE: MAP_HOST6}
BUCKET_BYTES = {V4_SPACE: cuckoo.HOST4_BUCKET_BYTES, V6_SPACE: cuckoo.HOST6_BUCKET_BYTES}
BUCKET_IMAGE = {V4_SPACE: cuckoo.image4, V6_SPACE: cuckoo.image6}


@dataclass
class HostPlan:
    """regions: (ifindex, space) -> (absolute base bucket, buckets, seed), buckets 0 for the
    hash; images: space -> [(absolute base bucket, bucket bytes)]; hashed: what the hosts hash
    holds, keyed like FastImages.hosts."""

    regions: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)
    images: dict[int, list[tuple[int, bytes]]] = field(default_factory=lambda: defaultdict(list))
    hashed: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def buckets_used(self) -> dict[int, int]:
        used: dict[int, int] = defaultdict(int)
        for (_, space), (_, buckets, _) in self.regions.items():
            used[space] += buckets
        return {space: n for space, n in used.items() if n}


def region_masks(root: int) -> tuple[int, int]:
    """The masks of a ROOT_HOSTS root's prefix length, as the two address words the program
    reads (what it ANDs the source with before hashing it)."""
    length = ((root & HOST_LEN_MASK) >> HOST_LEN_SHIFT) + 1
    return cuckoo.words(((1 << length) - 1) << (128 - length))


def plan_hosts(hosts: Mapping[tuple[int, int], int], gen: int, cuckoo_maps: bool) -> HostPlan:
    """Place hosts (FastImages.hosts) for generation gen. Without the cuckoo maps (pins of an
    older build) everything stays in the hash."""
    plan = HostPlan()
    groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for ifindex, value in hosts:
        groups[(ifindex, space_of(value))].append((ifindex, value))
    free = dict(BUCKETS_PER_GEN) if cuckoo_maps else {}
    for (ifindex, space), members in sorted(groups.items()):
        buckets = cuckoo.region_buckets(len(members))
        region = None
        if buckets <= free.get(space, 0):
            keys = [cuckoo.words(value) for _, value in members]
            region = cuckoo.place(keys, buckets)
        if region is None:
            plan.hashed.update((m, hosts[m]) for m in members)
            plan.regions[(ifindex, space)] = (0, 0, 0)
            continue
        base = gen * BUCKETS_PER_GEN[space] + BUCKETS_PER_GEN[space] - free[space]
        free[space] -= buckets
        list_ids = [hosts[m] for m in members]
        plan.images[space].append((base, BUCKET_IMAGE[space](region, keys, list_ids)))
        plan.regions[(ifindex, space)] = (base, buckets, region.seed)
    return plan
