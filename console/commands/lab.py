"""The lab command: namespaces, traffic and, unless told otherwise, the lab's firewall attached."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from console.commands.context import Context

if TYPE_CHECKING:
    from engine import LabInfo


def _lab_text(info: LabInfo) -> str:
    lines = [f"lab is {'up' if info.up else 'DOWN'}: node namespace {info.node_ns}"]
    for c in info.clients:
        lines.append(
            f"  client {c.ns}: {c.v4} {c.v6} -> node {c.ifname_node} {c.node_v4} {c.node_v6}"
        )
    if info.traffic_pids:
        lines.append(f"  traffic: {len(info.traffic_pids)} sender processes")
    lines += [f"  problem: {p}" for p in info.problems]
    return "\n".join(lines)


def cmd_lab(ctx: Context, args: argparse.Namespace) -> int:
    # The lab's namespaces, veths and traffic are not the firewall: no Engine builds them.
    from engine import lab_down, lab_status, lab_up

    if args.action == "status":
        info = lab_status()
        ctx.emit(info.as_dict(), lambda: _lab_text(info))
        return 0 if info.up else 1
    if args.action == "down":
        with ctx.progress() as progress:
            removed = lab_down(progress=progress)
        ctx.emit({"removed": removed}, "lab removed" if removed else "no lab to remove")
        return 0
    with ctx.progress() as progress:
        info = lab_up(
            rate=args.rate, traffic=not args.no_traffic, clients=args.clients, progress=progress
        )
        attached: list[str] = []
        if info.up and not args.no_firewall:
            attached = _start_lab_firewall(ctx, progress)
    data = {**info.as_dict(), "attached": attached}
    ctx.emit(
        data,
        lambda: (
            _lab_text(info)
            + (
                f"\nfirewall on {', '.join(attached)} in {info.node_ns}; "
                "look at it with 'infw --lab' or 'infw-tui --lab'"
                if attached
                else ""
            )
        ),
    )
    return 0 if info.up else 1


def _start_lab_firewall(ctx: Context, progress: Callable[[str], None]) -> list[str]:
    """What infw-tui --lab does too (Engine.start_lab_firewall): the example rules, attached."""
    if ctx.in_repl and not ctx.engine.is_lab():
        # Entering the lab's namespace would move this whole REPL; it only attaches when it is
        # the lab's console already.
        ctx.note("note: this REPL is not the lab's: start 'infw --lab' to attach the lab firewall")
        return []
    engine = ctx.engine if ctx.in_repl or ctx.connect_lab is None else ctx.connect_lab()
    return engine.start_lab_firewall(progress)
