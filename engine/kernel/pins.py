"""The firewall's objects under its pin root: what each pinned map must look like, opening
them, pinning a new program over the old one without a gap, and removing them all."""

from __future__ import annotations

import contextlib
import ctypes as ct
import os
from collections.abc import Mapping
from dataclasses import dataclass

from engine.errors import DatapathError
from engine.kernel import bpfsys
from engine.kernel.abi import (
    ALL_MAPS,
    EGRESS_PIN,
    EVENTS_RINGBUF_PAGES,
    FAILSAFE_MAX_ENTRIES,
    FLOWS_ENTRIES,
    HOST4_BUCKETS_PER_GEN,
    HOST6_BUCKETS_PER_GEN,
    HOSTS_MAX_ENTRIES,
    LEGACY_IMAGE_MAPS,
    LIST_ROOTS_ENTRIES,
    MAP_CONFIG,
    MAP_EVENTS,
    MAP_FAILSAFE,
    MAP_FLOWS,
    MAP_HOST4,
    MAP_HOST6,
    MAP_HOST_REGIONS,
    MAP_HOSTS,
    MAP_LEGACY_NODES,
    MAP_LIST_ROOTS,
    MAP_NODE_STATS,
    MAP_NODES,
    MAP_RATELIMIT,
    MAP_REPLIES,
    MAP_REPLY_CONFIG,
    MAP_ROOTS,
    MAP_RULE_STATS,
    MAP_SEG,
    MAP_SRC,
    MAP_SRC_ROOTS,
    NODE_COUNTERS,
    NODES_TOTAL,
    OPTIONAL_MAPS,
    PROG_PIN,
    REPLIES_MAX_ENTRIES,
    RULE_STATS_ENTRIES,
    SEG_MAX_ENTRIES,
    SRC_MAX_ENTRIES,
    SRC_ROOTS_ENTRIES,
    Config,
    Counter,
    FlowRecKey,
    FlowRecVal,
    Host4Bucket,
    Host6Bucket,
    HostKey,
    HostRegion,
    ListRoots,
    Node,
    NodeImage,
    RateLimit,
    ReplyConfig,
    ReplyKey,
    ReplyVal,
    RootImage,
    SegKey,
    SegVal,
    SrcKey,
)
from engine.kernel.abi import DEFAULT_PIN_ROOT as DEFAULT_PIN_ROOT
from engine.kernel.bpfsys import Map

# The exact-prefix tables of an older build: the hash alone, or with cuckoo buckets, and then
# all of them (this build has the hash and keeps the rest in table_roots).
HOST_TABLE_MAPS = frozenset({MAP_HOSTS, MAP_HOST4, MAP_HOST6})
# per image, the maps every older build has in its place (host tables aside)
LEGACY_REQUIRED = {
    MAP_NODES: frozenset({MAP_LEGACY_NODES}),
    MAP_ROOTS: frozenset({MAP_SRC_ROOTS, MAP_LIST_ROOTS, MAP_FAILSAFE}),
}

# Maps older builds pinned and this one no longer has: a reload leaves them (the old program
# may still run until the switch), an unload removes them with the rest.
RETIRED_PINS = ("last_verdict", "flow_gap")


@dataclass(frozen=True)
class MapSpec:
    key_size: int
    value_size: int
    max_entries: int


# What each pinned map must look like, from engine.kernel.abi (the events ring has no key/value).
MAP_SPECS: dict[str, MapSpec] = {
    MAP_SRC: MapSpec(ct.sizeof(SrcKey), 4, SRC_MAX_ENTRIES),
    MAP_SEG: MapSpec(ct.sizeof(SegKey), ct.sizeof(SegVal), SEG_MAX_ENTRIES),
    MAP_FAILSAFE: MapSpec(4, 4, FAILSAFE_MAX_ENTRIES),
    MAP_RULE_STATS: MapSpec(4, ct.sizeof(Counter), RULE_STATS_ENTRIES),
    MAP_NODE_STATS: MapSpec(4, ct.sizeof(Counter), NODE_COUNTERS),
    MAP_CONFIG: MapSpec(4, ct.sizeof(Config), 1),
    MAP_RATELIMIT: MapSpec(4, ct.sizeof(RateLimit), 1),
    MAP_EVENTS: MapSpec(0, 0, EVENTS_RINGBUF_PAGES * 4096),
    MAP_NODES: MapSpec(4, ct.sizeof(NodeImage), 1),
    MAP_LEGACY_NODES: MapSpec(4, ct.sizeof(Node), NODES_TOTAL),
    MAP_ROOTS: MapSpec(4, ct.sizeof(RootImage), 1),
    MAP_SRC_ROOTS: MapSpec(4, 4, SRC_ROOTS_ENTRIES),
    MAP_LIST_ROOTS: MapSpec(4, ct.sizeof(ListRoots), LIST_ROOTS_ENTRIES),
    MAP_FLOWS: MapSpec(ct.sizeof(FlowRecKey), ct.sizeof(FlowRecVal), FLOWS_ENTRIES),
    MAP_REPLIES: MapSpec(ct.sizeof(ReplyKey), ct.sizeof(ReplyVal), REPLIES_MAX_ENTRIES),
    MAP_REPLY_CONFIG: MapSpec(4, ct.sizeof(ReplyConfig), 1),
    MAP_HOSTS: MapSpec(ct.sizeof(HostKey), 4, HOSTS_MAX_ENTRIES),
    MAP_HOST_REGIONS: MapSpec(4, ct.sizeof(HostRegion), SRC_ROOTS_ENTRIES),
    MAP_HOST4: MapSpec(4, ct.sizeof(Host4Bucket), 2 * HOST4_BUCKETS_PER_GEN),
    MAP_HOST6: MapSpec(4, ct.sizeof(Host6Bucket), 2 * HOST6_BUCKETS_PER_GEN),
}


def prog_pinned(pin_root: str) -> bool:
    return os.path.exists(os.path.join(pin_root, PROG_PIN))


def maps_pinned(pin_root: str) -> bool:
    """Whether the maps exist already (a reload reuses them; a first load writes a config)."""
    return pinned(pin_root, MAP_CONFIG)


def pinned(pin_root: str, name: str) -> bool:
    return os.path.exists(os.path.join(pin_root, name))


def open_prog(pin_root: str, name: str = PROG_PIN) -> int | None:
    """An fd of the pinned program (or the egress program), or None if none is pinned."""
    path = os.path.join(pin_root, name)
    return bpfsys.obj_get(path) if os.path.exists(path) else None


def pin_prog(pin_root: str, fd: int, name: str = PROG_PIN) -> int:
    """Pin fd as the program (or the egress program), replacing any older pin; returns a new
    fd of it. Pinned under a temporary name and renamed over the old pin, so the path never
    vanishes."""
    path = os.path.join(pin_root, name)
    tmp_path = os.path.join(pin_root, f"{name}_new_{os.getpid()}")  # bpffs: no dots
    bpfsys.obj_pin(fd, tmp_path)
    os.rename(tmp_path, path)
    return bpfsys.obj_get(path)


def open_maps(pin_root: str) -> dict[str, Map]:
    maps: dict[str, Map] = {}
    try:
        for name in ALL_MAPS:
            path = os.path.join(pin_root, name)
            if not os.path.exists(path) and name in OPTIONAL_MAPS:
                continue  # an older build: `infw reload` adds it
            if not os.path.exists(path):
                raise DatapathError(
                    f"{path} is missing: the pins under {pin_root} are incomplete",
                    "run `infw detach` to remove them, then attach again",
                )
            maps[name] = Map.open_pinned(path)
    except BaseException:
        for m in maps.values():
            m.close()
        raise
    return maps


def check_layout(maps: Mapping[str, Map]) -> None:
    for name, spec in MAP_SPECS.items():
        if name not in maps and name in OPTIONAL_MAPS:
            continue
        info = maps[name].info
        got = MapSpec(info.key_size, info.value_size, info.max_entries)
        if got != spec:
            raise DatapathError(
                f"pinned map {name} has layout {got}, this infw expects {spec}",
                "an older infw build is loaded: run `infw detach` to unload it, then attach again",
            )


def check_existing_pins(pin_root: str) -> None:
    """bcc reuses a pinned map whatever its layout; refuse before compiling instead."""
    present = [n for n in ALL_MAPS if os.path.exists(os.path.join(pin_root, n))]
    if not present:
        return
    maps = {n: Map.open_pinned(os.path.join(pin_root, n)) for n in present}
    try:
        have = set(present)
        lacking = set(ALL_MAPS) - have - OPTIONAL_MAPS
        for image, required in LEGACY_REQUIRED.items():
            if image not in have:
                # an empty trie_nodes in place of a removed pin would turn every Deny into no
                # match, an empty table_roots every interface into an unconfigured one; an
                # older build's pins must hold all that a reload copies into the image
                lacking |= required - have if _legacy_of(image) & have else {image}
        if MAP_ROOTS in have:
            # the roots may name the hash: an empty one in place of a removed pin would miss
            # those hosts
            lacking |= {MAP_HOSTS} - have
        elif HOST_TABLE_MAPS & have - {MAP_HOSTS}:
            # an older build's host tables: its roots may name cuckoo regions too
            lacking |= (HOST_TABLE_MAPS | {MAP_HOST_REGIONS}) - have
        missing = sorted(lacking)
        if missing:
            raise DatapathError(
                f"pins under {pin_root} are incomplete (missing {', '.join(missing)})",
                "run `infw detach` to remove them, then attach again",
            )
        check_layout(maps)
    finally:
        for m in maps.values():
            m.close()


def _legacy_of(image: str) -> set[str]:
    return {name for name, into in LEGACY_IMAGE_MAPS.items() if into == image}


def retire_legacy_images(pin_root: str) -> None:
    """Unpin an older build's maps whose contents a reload has copied into this build's
    images, once no interface runs that build's program."""
    for name, image in LEGACY_IMAGE_MAPS.items():
        if pinned(pin_root, image):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(pin_root, name))


def remove_pins(pin_root: str) -> None:
    """Unpin the program and every map, then the pin root itself if nothing else is in it."""
    for name in (PROG_PIN, EGRESS_PIN, *ALL_MAPS, *RETIRED_PINS):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(pin_root, name))
    with contextlib.suppress(OSError):
        os.rmdir(pin_root)
