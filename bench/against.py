"""This program against the one of an earlier commit, on the same tables: the difference a
change made, measured in one run.

    python -m bench.against 5acb0a0 "1 deny" "1000 cidrs"   # case keys of bench/datapath.py

Both programs run on the same pinned maps, in interleaved rounds after the XDP_PASS floor;
each row prints both costs over the floor and the median of the per-round differences with
their interquartile range. A loaded box shifts absolute figures far more than these paired
differences, which is what this is for. An earlier program that keeps its trie nodes one per
map element (up to aaa687a), or its roots one per element of three maps (up to 3e92919),
reads a copy of this build's node image and root image, refreshed per case.
"""

from __future__ import annotations

import array
import ctypes as ct
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import datapath
from bench.pins import loaded_datapath
from bench.testrun import floor_program, pinned_on_cpu, test_run
from engine.core.compiler import compile_ruleset
from engine.kernel import bpfsys, loader
from engine.kernel.abi import (
    FAILSAFE_MAX_ENTRIES,
    LIST_ROOTS_ENTRIES,
    MAP_FAILSAFE,
    MAP_HOST_REGIONS,
    MAP_LEGACY_NODES,
    MAP_LIST_ROOTS,
    MAP_NODES,
    MAP_ROOTS,
    MAP_SRC_ROOTS,
    NODES_TOTAL,
    SRC_ROOTS_ENTRIES,
    NodeImage,
    RootImage,
)
from engine.kernel.hostplan import BUCKET_BYTES, BUCKET_MAP, BUCKETS_PER_GEN
from engine.kernel.mapped import MappedArray, MappedBytes
from engine.kernel.roots import (
    BUCKETS_OFF,
    BUCKETS_SIZE,
    FAILSAFE_OFF,
    LIST_BYTES,
    LISTS_OFF,
    REGION_BYTES,
    REGIONS_OFF,
)

ROUNDS = 25
REPEAT = 200_000
SOURCES = ("infw.bpf.c", "maps.h", "parsing.h")
REPO = Path(__file__).resolve().parents[1]


def earlier_source(commit: str, into: Path) -> Path:
    for name in SOURCES:
        shown = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:bpf/{name}"],
            capture_output=True,
            check=True,
        )
        (into / name).write_bytes(shown.stdout)
    return into / SOURCES[0]


def _open_pin(pin_root: str, name: str) -> bpfsys.Map | None:
    path = os.path.join(pin_root, name)
    return bpfsys.Map.open_pinned(path) if os.path.exists(path) else None


def _copy_words(roots: memoryview, pin_root: str, name: str, offset: int, count: int) -> None:
    m = _open_pin(pin_root, name)
    if m is None:
        return
    words = MappedArray(m, count)
    try:
        with words.words.cast("B") as raw:
            raw[: count * 8] = roots[offset : offset + count * 8]
    finally:
        words.close()
        m.close()


def _copy_roots(roots: memoryview, pin_root: str) -> None:
    """This build's root image into an earlier program's per-entry maps, where it has them."""
    if not os.path.exists(os.path.join(pin_root, MAP_SRC_ROOTS)):
        return
    _copy_words(roots, pin_root, MAP_SRC_ROOTS, 0, SRC_ROOTS_ENTRIES)
    _copy_words(roots, pin_root, MAP_FAILSAFE, FAILSAFE_OFF, FAILSAFE_MAX_ENTRIES)
    for space, name in BUCKET_MAP.items():
        m = _open_pin(pin_root, name)
        if m is not None:
            buckets = MappedBytes(m, 2 * BUCKETS_PER_GEN[space], BUCKET_BYTES[space])
            at, size = BUCKETS_OFF[space], BUCKETS_SIZE[space]
            buckets.raw[:size] = roots[at : at + size]
            buckets.close()
            m.close()
    for name, offset, size, count in (
        (MAP_LIST_ROOTS, LISTS_OFF, LIST_BYTES, LIST_ROOTS_ENTRIES),
        (MAP_HOST_REGIONS, REGIONS_OFF, REGION_BYTES, SRC_ROOTS_ENTRIES),
    ):
        legacy = _open_pin(pin_root, name)
        if legacy is not None:
            keys = array.array("I", range(count)).tobytes()
            legacy.update_batch(keys, bytes(roots[offset : offset + count * size]))
            legacy.close()


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    commit, keys = argv[0], argv[1:] or ["1 allow", "1 deny"]
    cases = {c.tables: c for c in reversed(datapath._cases())}  # the first case of each key
    rulesets = datapath._rulesets()
    unknown = [k for k in keys if k not in cases]
    if unknown:
        print(f"unknown case keys {unknown}; known: {sorted(cases)}", file=sys.stderr)
        return 2
    with (
        tempfile.TemporaryDirectory() as tmp,
        pinned_on_cpu(datapath.BENCH_CPU),
        floor_program() as floor_fd,
        loaded_datapath("against") as dp,
    ):
        bpf = loader.compile_program(dp.pin_root, earlier_source(commit, Path(tmp)))
        earlier_fd = loader.load_function(bpf).fd
        legacy = _open_pin(dp.pin_root, MAP_LEGACY_NODES)
        image = MappedBytes(dp.maps[MAP_NODES], 1, ct.sizeof(NodeImage))
        roots = MappedBytes(dp.maps[MAP_ROOTS], 1, ct.sizeof(RootImage))
        every_node = array.array("I", range(NODES_TOTAL)).tobytes()
        programs = {commit: earlier_fd, "this": dp.prog_fd}
        try:
            for gen, key in enumerate(keys, start=1):
                case = cases[key]
                dp.write_tables(compile_ruleset(rulesets[key](), datapath.LO), gen)
                if legacy is not None:
                    legacy.update_batch(every_node, bytes(image.raw))
                _copy_roots(roots.raw, dp.pin_root)
                over: dict[str, list[int]] = {name: [] for name in programs}
                diffs: list[int] = []
                for fd in (floor_fd, *programs.values()):
                    test_run(fd, case.frame, 20_000)  # warm
                for _ in range(ROUNDS):
                    floor = test_run(floor_fd, case.frame, REPEAT)[1]
                    ns = {
                        name: test_run(fd, case.frame, REPEAT)[1] for name, fd in programs.items()
                    }
                    for name in programs:
                        over[name].append(ns[name] - floor)
                    diffs.append(ns["this"] - ns[commit])
                q1, _, q3 = statistics.quantiles(diffs, n=4)
                print(
                    f"{case.name}: {commit} +{statistics.median(over[commit]):.0f} ns, "
                    f"this +{statistics.median(over['this']):.0f} ns over the floor; "
                    f"this - {commit} {statistics.median(diffs):+.1f} ns "
                    f"(IQR {q1:+.1f}..{q3:+.1f})",
                    flush=True,
                )
        finally:
            image.close()
            roots.close()
            if legacy is not None:
                legacy.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
