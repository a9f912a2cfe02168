"""What `status` finds wrong between the kernel, the store and the watchdog, each with the one
command that repairs it (issue #15: nothing reports a firewall as fine when it is not)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.core.compiler import CompiledTables
from engine.kernel.abi import NodeCounter
from engine.kernel.seam import Orphan
from engine.state.store import Pending
from engine.views import InterfaceView, Problem


def watchdog_problem(
    pending: Pending, pid: int, state: str, now: float, grace: float
) -> tuple[str, Problem | None]:
    """The pending change's watchdog (pid, in state alive/stopped/gone) as status shows it,
    and a problem when it cannot act."""
    text = f"{state} pid {pid}" if state != "gone" else "gone"
    if state == "alive":
        return text, None
    if pid == 0 and now < pending.deadline:
        return "starting", None  # the apply that armed it is still running
    when = time.strftime("%H:%M:%S", time.localtime(pending.deadline + grace))
    return text, Problem(
        "watchdog",
        f"the watchdog of pending generation {pending.generation} is "
        f"{'stopped' if state == 'stopped' else 'dead'}: it will not revert at the deadline",
        f"the first infw command after {when} (deadline + {grace:.0f}s) reverts it, and so "
        "does `infw agent`; `infw revert` drops it now, `infw confirm` keeps it",
    )


def orphan_problems(orphans: Sequence[Orphan]) -> list[Problem]:
    return [
        Problem(
            "orphaned",
            f"infw program {o.prog_id} filters {', '.join(o.interfaces)} but its pins are gone: "
            "no change reaches it through the pin root",
            f"infw attach {' '.join(o.interfaces)} (pins it again, keeping its rules and counters)",
        )
        for o in orphans
    ]


def drift_problems(kernel_gen: int, store_gen: int, pending: Pending | None) -> list[Problem]:
    if kernel_gen == store_gen:
        return []
    if pending is not None and kernel_gen == store_gen + 1:
        return [
            Problem(
                "drift",
                f"the kernel was reverted (generation {kernel_gen}) but the store still holds "
                f"unconfirmed generation {store_gen}",
                "make the state dir writable (free space, remount rw); the next infw command "
                "records the revert",
            )
        ]
    return [
        Problem(
            "drift",
            f"the kernel runs generation {kernel_gen}, the store holds generation {store_gen}",
            "infw restore (writes the stored rules to the kernel)",
        )
    ]


def unfiltered_problems(
    dp: Any, tables: CompiledTables, named: Sequence[str], views: Sequence[InterfaceView]
) -> list[Problem]:
    """Interfaces the objects name that run without our program, or without their tables
    (an interface that left and came back, or was recreated, has a new ifindex or none)."""
    ours = {v.name for v in views if v.ours}
    wanted = {entry.ifindex for entry in tables.lpm}
    have = dp.table_ifindexes()
    out: list[Problem] = []
    for name in named:
        index = next((v.ifindex for v in views if v.name == name), None)
        if name not in ours:
            why = "runs no infw program"
        elif index is not None and index in wanted and index not in have:
            why = "runs infw's program without its tables"
        else:
            continue
        out.append(
            Problem(
                "unfiltered",
                f"{name} is named by the rules but UNFILTERED: it {why}",
                "infw restore (or run `infw agent`, which follows interfaces)",
            )
        )
    return out


def unconfigured_text(dp: Any, views: Sequence[InterfaceView]) -> str:
    """What the kernel passed on interfaces it has the program on but no tables for (counted as
    unconfigured, never as no match), and which of ours are like that now."""
    have = dp.table_ifindexes()
    bare = [v.name for v in views if v.ours and v.ifindex not in have]
    packets = int(dp.node_counters().get(NodeCounter.UNCONFIGURED, (0, 0))[0])
    if not bare and not packets:
        return ""
    now = f"now without tables: {', '.join(bare)}" if bare else "every interface has tables now"
    return f"{packets} packets passed unfiltered (no tables for their interface); {now}"
