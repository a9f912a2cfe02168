"""Cuckoo placement of exact prefixes into the program's array buckets (host4, host6), and the
hash the program computes over them (bpf/infw.bpf.c host_list): the two agree bit for bit.

Every prefix has two candidate buckets of HOST_SLOTS slots; it sits in one of them, so the
program reads at most two array elements, both inlined, where the kernel hash map costs a jhash
and a bucket walk. Placement is a random walk: a prefix whose buckets are full evicts one and
the evicted one moves to its other bucket. At the load this module allows (MAX_LOAD) a walk
almost never fails; when it does, another seed is tried, and after the last one the caller
keeps the prefixes in the hash map, where they are just as exact.
"""

from __future__ import annotations

import array
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from engine.kernel.abi import HOST_HASH_C1, HOST_HASH_C2, HOST_HASH_C3, HOST_SLOTS

MASK64 = (1 << 64) - 1
MAX_LOAD = 0.8  # of a region's slots; 4-slot buckets with two choices fill to ~0.97
MAX_KICKS = 500  # evictions one insertion may cause before the seed is given up
SEEDS = (0, 0x5BD1E995, 0x27D4EB2F, 0x85EBCA6B)
HOST4_BUCKET_BYTES = 8 * HOST_SLOTS  # u32 addr[4], u32 list_id[4]
HOST6_BUCKET_BYTES = 20 * HOST_SLOTS  # u64 hi[4], u64 lo[4], u32 list_id[4]


def words(value: int) -> tuple[int, int]:
    """A 128-bit address (as the compiler keeps it: big-endian value) as the two u64 words the
    program reads from memory on a little-endian machine."""
    swapped = int.from_bytes(value.to_bytes(16, "big"), "little")
    return swapped & MASK64, swapped >> 64


def candidates(hi: int, lo: int, seed: int, buckets: int) -> tuple[int, int]:
    """The two buckets (relative to the region) the program probes for these words."""
    return all_candidates([(hi, lo)], seed, buckets)[0]


def all_candidates(
    keys: Sequence[tuple[int, int]], seed: int, buckets: int
) -> list[tuple[int, int]]:
    """candidates() of every key, in one comprehension (a placement hashes up to 1M keys)."""
    c1, c2, c3, m = HOST_HASH_C1, HOST_HASH_C2, HOST_HASH_C3, MASK64
    folded = [((hi * c1) & m) ^ lo ^ seed for hi, lo in keys]
    return [
        (((((f * c2) & m) >> 32) * buckets) >> 32, ((((f * c3) & m) >> 32) * buckets) >> 32)
        for f in folded
    ]


def region_buckets(count: int) -> int:
    """Buckets for `count` prefixes at no more than MAX_LOAD."""
    return max(1, math.ceil(count / (HOST_SLOTS * MAX_LOAD)))


@dataclass(frozen=True)
class Region:
    """One (generation, space, ifindex)'s placed prefixes: slot i of bucket b holds the prefix
    keys[slots[b * HOST_SLOTS + i]] (-1: free)."""

    seed: int
    buckets: int
    slots: array.array[int]


def place(keys: Sequence[tuple[int, int]], buckets: int) -> Region | None:
    """Place every (hi, lo) key in one of its two buckets, or None if no seed manages it.
    Keys are distinct; the random walk is seeded, so a placement is reproducible."""
    for seed in SEEDS:
        slots = _place(keys, buckets, seed)
        if slots is not None:
            return Region(seed, buckets, slots)
    return None


def _place(keys: Sequence[tuple[int, int]], buckets: int, seed: int) -> array.array[int] | None:
    cand = all_candidates(keys, seed, buckets)
    slots = array.array("i", [-1]) * (buckets * HOST_SLOTS)
    fill = [0] * buckets  # slots used per bucket (free slots are always the last ones)
    rng = random.Random(seed)
    for key in range(len(keys)):
        cur = key
        for _ in range(MAX_KICKS):
            b1, b2 = cand[cur]
            b = b1 if fill[b1] <= fill[b2] else b2
            if fill[b] < HOST_SLOTS:
                slots[b * HOST_SLOTS + fill[b]] = cur
                fill[b] += 1
                break
            # both full: evict a random slot of a random one; the victim tries its other bucket
            b = b1 if rng.random() < 0.5 else b2
            at = b * HOST_SLOTS + rng.randrange(HOST_SLOTS)
            cur, slots[at] = slots[at], cur
        else:
            return None
    return slots


def image4(region: Region, keys: Sequence[tuple[int, int]], list_ids: Sequence[int]) -> bytes:
    """host4 buckets of a region: the address is the low word's top half (the last four bytes
    of the IPv4-mapped address, as the program reads them)."""
    addrs = array.array("I", (keys[k][1] >> 32 if k >= 0 else 0 for k in region.slots))
    lists = array.array("I", (list_ids[k] if k >= 0 else 0 for k in region.slots))
    return _interleave(region.buckets, addrs.tobytes(), lists.tobytes())


def image6(region: Region, keys: Sequence[tuple[int, int]], list_ids: Sequence[int]) -> bytes:
    """host6 buckets of a region: hi[4], lo[4] as u64, then list_id[4] as u32."""
    his = array.array("Q", (keys[k][0] if k >= 0 else 0 for k in region.slots))
    los = array.array("Q", (keys[k][1] if k >= 0 else 0 for k in region.slots))
    lists = array.array("I", (list_ids[k] if k >= 0 else 0 for k in region.slots))
    return _interleave(region.buckets, his.tobytes(), los.tobytes(), lists.tobytes())


def _interleave(buckets: int, *fields: bytes) -> bytes:
    """Buckets from per-field columns (each field's HOST_SLOTS values of bucket b lie together
    in its column): byte j of a field's share lands at its offset in every bucket at once, by
    extended-slice assignment, not a Python loop over buckets."""
    widths = [len(f) // buckets for f in fields]
    stride = sum(widths)
    out = bytearray(buckets * stride)
    offset = 0
    for column, width in zip(fields, widths, strict=True):
        for j in range(width):
            out[offset + j :: stride] = column[j::width]
        offset += width
    return bytes(out)


def lookup(region: Region, keys: Sequence[tuple[int, int]], hi: int, lo: int) -> int | None:
    """Which key the program finds for (hi, lo): the model of probe4/probe6, for tests."""
    for b in candidates(hi, lo, region.seed, region.buckets):
        for i in range(HOST_SLOTS):
            key = region.slots[b * HOST_SLOTS + i]
            if key >= 0 and keys[key] == (hi, lo):
                return key
    return None
