"""BPF_PROG_TEST_RUN timing of the engine's test-run call, and the trivial XDP_PASS floor it is
measured against.

The same harness runs the floor and the firewall, so the difference is the firewall's own cost.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from engine.kernel import bpfsys

FLOOR_SOURCE = "int floor_pass(struct xdp_md *ctx) { return XDP_PASS; }\n"


def pinned_prog_fd(path: str) -> int:
    """An fd for a program pinned in bpffs (the caller closes it)."""
    return bpfsys.obj_get(path)


def test_run(prog_fd: int, frame: bytes, repeat: int) -> tuple[int, int]:
    """Run the program `repeat` times on `frame`: (XDP action, kernel-measured ns per run).

    The engine's own test-run call (engine.bpfsys), with no ctx: the packet's ingress ifindex is
    1 (lo), and the floor and the firewall go through exactly the same path.
    """
    result = bpfsys.prog_test_run(prog_fd, frame, repeat)
    return result.retval, result.duration_ns


@dataclass(frozen=True)
class Timing:
    """Median of several test runs of one program on one frame."""

    action: int
    median_ns: float
    runs_ns: tuple[int, ...]

    @property
    def spread_ns(self) -> float:
        return float(max(self.runs_ns) - min(self.runs_ns))


def measure(prog_fd: int, frame: bytes, repeat: int, runs: int) -> Timing:
    durations: list[int] = []
    action = -1
    test_run(prog_fd, frame, min(repeat, 10_000))  # warm caches and the JIT image
    for _ in range(runs):
        action, ns = test_run(prog_fd, frame, repeat)
        durations.append(ns)
    return Timing(action, float(statistics.median(durations)), tuple(durations))


def measure_interleaved(
    subjects: dict[str, tuple[int, bytes]],
    repeat: int,
    runs: int,
    setup: Mapping[str, Callable[[], None]] | None = None,
) -> dict[str, Timing]:
    """Measure every (prog fd, frame) round-robin, so drift over the run hits all of them alike.
    setup[name], where given, runs (untimed) before each run of that subject: a config switch
    that makes two subjects of one program."""
    per: dict[str, list[int]] = {name: [] for name in subjects}
    actions: dict[str, int] = {}
    setup = setup or {}
    for fd, frame in subjects.values():
        test_run(fd, frame, min(repeat, 10_000))
    for _ in range(runs):
        for name, (fd, frame) in subjects.items():
            if name in setup:
                setup[name]()
            action, ns = test_run(fd, frame, repeat)
            per[name].append(ns)
            actions[name] = action
    return {
        name: Timing(actions[name], float(statistics.median(ds)), tuple(ds))
        for name, ds in per.items()
    }


@contextmanager
def floor_program() -> Iterator[int]:
    """The trivial XDP_PASS program, compiled by bcc like the firewall; yields its fd."""
    from bcc import BPF

    bpf = BPF(text=FLOOR_SOURCE)
    try:
        fn = bpf.load_func("floor_pass", BPF.XDP)
        yield int(fn.fd)
    finally:
        bpf.cleanup()


@contextmanager
def pinned_on_cpu(cpu: int) -> Iterator[None]:
    """Run on one CPU, so per-CPU maps and caches stay put between the floor and the subject."""
    before = os.sched_getaffinity(0)
    if cpu in before:
        os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


Probe = Callable[[], int]
