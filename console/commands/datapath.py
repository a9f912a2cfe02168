"""Commands about the running datapath: status, attach, detach, restore, reload."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from dataclasses import asdict

from console import render
from console.commands.context import Context


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    st = ctx.engine.status()
    out = st.to_json()
    drops = ""
    if st.pending is not None and st.loaded:
        # what the unconfirmed change is dropping, from its Deny rules' counters (#11.3): a
        # one-shot status has no earlier read to take a rate from, so it says packets
        pending = ctx.engine.pending_drops(ctx.engine.stats())
        if pending is not None:
            out["pending_drops"] = pending.to_json()
            drops = pending.so_far()
    ctx.emit(out, lambda: render.status_text(st, ctx.style, dropping=drops))
    return 1 if st.problems else 0  # scripts and monitoring see a firewall that is not fine


def cmd_replies(ctx: Context, args: argparse.Namespace) -> int:
    view = (
        ctx.engine.replies() if args.state is None else ctx.engine.set_replies(args.state == "on")
    )
    ctx.emit(view.to_json(), lambda: render.replies_text(view, ctx.style))
    return 0


def cmd_attach(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress() as progress:
        views = ctx.engine.attach(
            args.interfaces, mode=args.mode, force=args.force, progress=progress
        )
    ctx.emit(
        [asdict(v) for v in views],
        lambda: "\n".join(f"attached to {v.name} ({v.mode} XDP, prog {v.prog_id})" for v in views),
    )
    return 0


def cmd_detach(ctx: Context, args: argparse.Namespace) -> int:
    names = ctx.engine.detach(args.interfaces or None)
    if args.interfaces:
        text = f"detached from {', '.join(names)}" if names else "no attached interface matched"
    else:
        text = (
            f"detached from {', '.join(names) or 'no interface'}; the firewall is unloaded and "
            "its pins removed (the stored rules stay: 'restore' brings it back)"
        )
    ctx.emit({"detached": names, "unloaded": not args.interfaces}, text)
    return 0


def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress() as progress:
        st = ctx.engine.restore(progress=progress, attach=not args.no_attach)
    ctx.emit(st.to_json(), lambda: render.status_text(st, ctx.style))
    return 0


def cmd_agent(ctx: Context, args: argparse.Namespace) -> int:
    """Follow the interfaces until SIGTERM or Ctrl-C (the systemd unit runs this)."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def say(text: str) -> None:
        ctx.note(f"infw agent: {text}")

    with contextlib.suppress(KeyboardInterrupt):
        ctx.engine.follow(stop, say)
    return 0


def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress() as progress:
        st = ctx.engine.reload(progress=progress)
    ctx.emit(st.to_json(), lambda: render.status_text(st, ctx.style))
    return 0
