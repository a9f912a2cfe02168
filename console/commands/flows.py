"""Commands about traffic: flows (who is hitting the node), diff (what a rule file would do to
that traffic), the --dry-run of every edit, and trace --pcap (a capture replayed)."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING, Any

from console import flowtext
from console.commands.context import Context

if TYPE_CHECKING:
    from engine import ImpactPreview


def cmd_flows(ctx: Context, args: argparse.Namespace) -> int:
    if args.sample is not None:
        previous = ctx.engine.set_flow_sample(args.sample)
        ctx.note(
            f"flows: sampling {'off' if args.sample == 0 else f'1 in {args.sample} packets'} "
            "from now on (the config's flowSample comes back at the next load)"
        )
        if previous not in (0, args.sample) and args.sample:
            ctx.note(
                f"flows: the samples already counted were taken at 1 in {previous} and are now "
                f"scaled by {args.sample}: counts of flows seen before now are off by "
                f"{args.sample}/{previous} for that part"
            )
    view = ctx.engine.flows(
        since=args.since, interface=args.iface, verdict=args.verdict, top=args.top
    )
    ctx.emit(view.to_json(), lambda: flowtext.flows_text(view, ctx.style))
    return 0


def preview_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The traffic options shared by diff and --dry-run."""
    out: dict[str, Any] = {"top": args.top, "since": args.since}
    if getattr(args, "pcap", None):
        out["capture"] = args.pcap
    if getattr(args, "iface", None):
        out["interface"] = args.iface
    return out


def _shown(ctx: Context, preview: ImpactPreview) -> int:
    ctx.emit(preview.to_json(), lambda: flowtext.impact_text(preview, ctx.style))
    ctx.note("dry run: nothing was applied")
    return 0


def cmd_diff(ctx: Context, args: argparse.Namespace) -> int:
    return _shown(ctx, ctx.engine.preview_file(args.file, **preview_kwargs(args)))


def dry_run(ctx: Context, args: argparse.Namespace) -> int:
    """add/edit/delete/apply --dry-run: the same change, previewed instead of applied."""
    engine, kwargs = ctx.engine, preview_kwargs(args)
    kwargs["force"] = args.force
    if args.command == "add":
        return _shown(ctx, engine.preview_add(shlex.join(args.rule), **kwargs))
    if args.command == "edit":
        return _shown(ctx, engine.preview_edit(args.id, shlex.join(args.rule), **kwargs))
    if args.command == "delete":
        return _shown(ctx, engine.preview_delete(args.id, **kwargs))
    kwargs.pop("force")
    return _shown(ctx, engine.preview_file(args.file, **kwargs))


def trace_pcap(ctx: Context, args: argparse.Namespace) -> int:
    report = ctx.engine.trace_pcap(args.pcap, args.iface)
    ctx.emit(report.to_json(), lambda: flowtext.replay_text(report, ctx.style))
    if report.mismatches:
        ctx.note(
            f"infw: MISMATCH on {len(report.mismatches)} frames: the kernel program and the "
            "reference classifier disagree — this is a bug: please report it with the capture "
            f"and '{ctx.prefix}export'"
        )
        return 1
    return 0
