"""BPF_PROG_TEST_RUN through the raw bpf() syscall, and the trivial XDP_PASS floor it is measured against.

The same harness runs the floor and the firewall, so the difference is the firewall's own cost.
"""

from __future__ import annotations

import ctypes as ct
import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_libc = ct.CDLL(None, use_errno=True)
_libc.syscall.restype = ct.c_long
SYS_BPF = 321  # x86_64
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10

FLOOR_SOURCE = "int floor_pass(struct xdp_md *ctx) { return XDP_PASS; }\n"


class _TestRunAttr(ct.Structure):
    """The `test` member of union bpf_attr (include/uapi/linux/bpf.h)."""

    _fields_ = [
        ("prog_fd", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("data_in", ct.c_uint64),
        ("data_out", ct.c_uint64),
        ("repeat", ct.c_uint32),
        ("duration", ct.c_uint32),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("ctx_in", ct.c_uint64),
        ("ctx_out", ct.c_uint64),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
        ("_pad", ct.c_uint32),
    ]


class _ObjGetAttr(ct.Structure):
    _fields_ = [
        ("pathname", ct.c_uint64),
        ("bpf_fd", ct.c_uint32),
        ("file_flags", ct.c_uint32),
        ("path_fd", ct.c_int32),
        ("_pad", ct.c_uint32),
    ]


def _bpf(cmd: int, attr: ct.Structure) -> int:
    ret = _libc.syscall(SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr))
    if ret < 0:
        err = ct.get_errno()
        raise OSError(err, f"bpf(cmd={cmd}): {os.strerror(err)}")
    return int(ret)


def pinned_prog_fd(path: str) -> int:
    """An fd for a program pinned in bpffs (the caller closes it)."""
    raw = path.encode() + b"\0"
    buf = ct.create_string_buffer(raw)
    attr = _ObjGetAttr(pathname=ct.addressof(buf))
    return _bpf(BPF_OBJ_GET, attr)


def test_run(prog_fd: int, frame: bytes, repeat: int) -> tuple[int, int]:
    """Run the program `repeat` times on `frame`: (XDP action, kernel-measured ns per run).

    No ctx is passed, so the packet's ingress ifindex is 1 (lo).
    """
    data_in = ct.create_string_buffer(frame, len(frame))
    data_out = ct.create_string_buffer(len(frame) + 256)
    attr = _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=len(frame),
        data_size_out=ct.sizeof(data_out),
        data_in=ct.addressof(data_in),
        data_out=ct.addressof(data_out),
        repeat=repeat,
    )
    _bpf(BPF_PROG_TEST_RUN, attr)
    return int(attr.retval), int(attr.duration)


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
    subjects: dict[str, tuple[int, bytes]], repeat: int, runs: int
) -> dict[str, Timing]:
    """Measure every (prog fd, frame) round-robin, so drift over the run hits all of them alike."""
    per: dict[str, list[int]] = {name: [] for name in subjects}
    actions: dict[str, int] = {}
    for fd, frame in subjects.values():
        test_run(fd, frame, min(repeat, 10_000))
    for _ in range(runs):
        for name, (fd, frame) in subjects.items():
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
