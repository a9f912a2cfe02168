"""Trace: run the loaded program on a frame with BPF_PROG_TEST_RUN, marked so it counts
nothing, and read its verdict back from the frame's metadata."""

from __future__ import annotations

import ctypes as ct

from engine.errors import DatapathError
from engine.kernel import bpfsys
from engine.kernel.abi import TRACE_MAGIC, TRACE_UNANSWERED, LastVerdict, TraceMeta


def trace_run(
    prog_fd: int, prog_id: int, frame: bytes, ifindex: int | None = None, repeat: int = 1
) -> tuple[int, LastVerdict, int]:
    """(xdp action, the program's own account of its verdict, mean ns per run) for frame as if
    it arrived on ifindex.

    The frame carries trace metadata (TraceMeta), so the program counts it nowhere, emits
    no event and writes its verdict into the metadata, which comes back with the frame.
    Nothing here writes a map: a trace is safe beside an apply in another process, and
    beside other traces.
    """
    meta = TraceMeta(magic=TRACE_MAGIC, xdp_action=TRACE_UNANSWERED)
    result = bpfsys.prog_test_run(prog_fd, frame, repeat, ifindex, meta=bytes(meta))
    size = ct.sizeof(TraceMeta)
    answer = TraceMeta.from_buffer_copy(result.data_out[:size].ljust(size, b"\xff"))
    if answer.magic != TRACE_MAGIC or answer.xdp_action == TRACE_UNANSWERED:
        raise DatapathError(
            f"the loaded program (id {prog_id}) is an older build that does not "
            "answer traces: it ran the packet as a real one (counted, and an event if denied)",
            "run `infw reload` to load the current build (rules and counters are kept)",
        )
    verdict = LastVerdict(
        reason=answer.reason, rule_id=answer.rule_id, xdp_action=answer.xdp_action
    )
    return result.retval, verdict, result.duration_ns
