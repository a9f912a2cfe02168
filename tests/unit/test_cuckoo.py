"""The cuckoo placement of exact prefixes (engine/kernel/cuckoo.py) and where a generation's
hosts go (engine/kernel/hostplan.py). The kernel side is tests/kernel/test_differential.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.cidr import parse_cidr
from engine.kernel import cuckoo, hostplan
from engine.kernel.abi import HOST_SLOTS, V4_SPACE, V6_SPACE, Host4Bucket, Host6Bucket


def v4_key(addr: str) -> tuple[int, int]:
    return cuckoo.words(parse_cidr(f"{addr}/32").value)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)), max_size=400))
def test_every_key_is_found_in_one_of_its_two_buckets(keys: set[tuple[int, int]]) -> None:
    ordered = sorted(keys)
    region = cuckoo.place(ordered, cuckoo.region_buckets(len(ordered)))
    assert region is not None
    assert sorted(k for k in region.slots if k >= 0) == list(range(len(ordered)))
    for i, (hi, lo) in enumerate(ordered):
        assert cuckoo.lookup(region, ordered, hi, lo) == i
        at = region.slots.index(i) // HOST_SLOTS
        assert at in cuckoo.candidates(hi, lo, region.seed, region.buckets)
    rng = random.Random(len(ordered))
    for _ in range(50):
        other = (rng.getrandbits(64), rng.getrandbits(64))
        if other not in keys:
            assert cuckoo.lookup(region, ordered, *other) is None


def test_more_keys_than_slots_cannot_be_placed() -> None:
    keys = [(0, i) for i in range(2 * HOST_SLOTS + 1)]
    assert cuckoo.place(keys, 2) is None


def test_bucket_images_have_the_kernel_layout() -> None:
    keys = [v4_key(f"192.0.2.{i}") for i in range(1, 40)]
    region = cuckoo.place(keys, cuckoo.region_buckets(len(keys)))
    assert region is not None
    raw = cuckoo.image4(region, keys, list(range(100, 100 + len(keys))))
    assert len(raw) == region.buckets * cuckoo.HOST4_BUCKET_BYTES
    for at, key in enumerate(region.slots):
        bucket = Host4Bucket.from_buffer_copy(raw, (at // HOST_SLOTS) * cuckoo.HOST4_BUCKET_BYTES)
        i = at % HOST_SLOTS
        if key < 0:
            assert (bucket.addr[i], bucket.list_id[i]) == (0, 0)
        else:
            # the address as the program reads bytes 12..15 of the mapped address
            assert bucket.addr[i].to_bytes(4, "little") == bytes([192, 0, 2, key + 1])
            assert bucket.list_id[i] == 100 + key

    v6 = [cuckoo.words(parse_cidr(f"2001:db8::{i:x}/128").value) for i in range(1, 30)]
    region6 = cuckoo.place(v6, cuckoo.region_buckets(len(v6)))
    assert region6 is not None
    raw6 = cuckoo.image6(region6, v6, list(range(7, 7 + len(v6))))
    for at, key in enumerate(region6.slots):
        bucket6 = Host6Bucket.from_buffer_copy(raw6, (at // HOST_SLOTS) * cuckoo.HOST6_BUCKET_BYTES)
        i = at % HOST_SLOTS
        got = (bucket6.hi[i], bucket6.lo[i], bucket6.list_id[i])
        assert got == ((*v6[key], 7 + key) if key >= 0 else (0, 0, 0))


def hosts_of(*cidrs: str, ifindex: int = 1) -> dict[tuple[int, int], int]:
    return {(ifindex, parse_cidr(c).value): i + 1 for i, c in enumerate(cidrs)}


def test_plan_gives_each_interface_and_space_its_own_region_in_its_half() -> None:
    hosts = hosts_of("192.0.2.1/32", "192.0.2.2/32", "2001:db8::1/128") | hosts_of(
        "198.51.100.1/32", ifindex=7
    )
    plan = hostplan.plan_hosts(hosts, 1, cuckoo_maps=True)
    assert not plan.hashed
    assert set(plan.regions) == {(1, V4_SPACE), (1, V6_SPACE), (7, V4_SPACE)}
    v4_bases = sorted(base for (_, space), (base, _, _) in plan.regions.items() if space == 0)
    assert v4_bases[0] == hostplan.BUCKETS_PER_GEN[V4_SPACE]  # generation 1's half
    assert v4_bases[1] > v4_bases[0]  # regions do not overlap
    assert plan.buckets_used == {V4_SPACE: 2, V6_SPACE: 1}


@pytest.mark.parametrize("maps", [True, False], ids=["no room", "older program"])
def test_plan_keeps_in_the_hash_what_has_no_region(
    maps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hostplan, "BUCKETS_PER_GEN", {V4_SPACE: 1, V6_SPACE: 0})
    hosts = hosts_of(*(f"192.0.2.{i}/32" for i in range(1, 10)), "2001:db8::1/128")
    plan = hostplan.plan_hosts(hosts, 0, cuckoo_maps=maps)
    assert plan.hashed == hosts  # 9 IPv4 hosts need 3 buckets, IPv6 has none
    assert all(n == 0 for _, n, _ in plan.regions.values())


@pytest.mark.parametrize(
    ("cidr", "length"), [("192.0.2.7/32", 128), ("192.0.2.0/24", 120), ("2001:db8::/64", 64)]
)
def test_region_masks_keep_the_roots_prefix_length(cidr: str, length: int) -> None:
    from engine.core.compiler import host_root

    prefix = parse_cidr(cidr)
    hi_mask, lo_mask = hostplan.region_masks(host_root(length, 0))
    hi, lo = cuckoo.words(prefix.value | ((1 << (128 - length)) - 1))  # host bits all set
    assert (hi & hi_mask, lo & lo_mask) == cuckoo.words(prefix.value)
    assert bin(hi_mask).count("1") + bin(lo_mask).count("1") == length
