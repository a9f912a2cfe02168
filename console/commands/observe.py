"""Commands that watch the firewall: rules (with counters), stats, events, trace, metrics."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from typing import Any

from console import render
from console.commands.context import Context
from console.commands.filters import EventFilter
from console.commands.flows import trace_pcap
from console.commands.usage import UsageError
from engine import DropEvent, FirewallUnreachable, PrivilegeError, TraceRequest, is_loopback


def cmd_rules(ctx: Context, args: argparse.Namespace) -> int:
    engine = ctx.engine  # connecting can fail on its own (exit 4 for --lab without root)
    try:
        rows = list(engine.stats().rules)
    except (PrivilegeError, FirewallUnreachable) as exc:
        # The rules are readable from the store; only the kernel counters need the kernel.
        ctx.note(f"note: stored rules, no counters ({exc.message})")
        rows = engine.rule_rows()
    ctx.emit([r.to_json() for r in rows], lambda: render.rules_text(rows, ctx.style))
    return 0


def cmd_stats(ctx: Context, args: argparse.Namespace) -> int:
    engine = ctx.engine
    clear = args.watch is not None and not ctx.json and render.wants_color(ctx.out)
    shown = 0
    try:
        while True:
            snap = engine.stats()
            if clear:
                ctx.out.write("\x1b[H\x1b[2J")
            elif shown and not ctx.json:
                ctx.out.write("\n")
            ctx.emit(render.stats_json(snap), render.stats_text(snap, ctx.style))
            shown += 1
            if args.watch is None or (args.count is not None and shown >= args.count):
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def _drain(source: Any, rounds: int = 10) -> Iterator[DropEvent]:
    """What the ring buffer holds now: poll until a round comes back empty."""
    for _ in range(rounds):
        batch = source.poll(100)
        if not batch:
            return
        yield from batch


FOLLOW_BACKLOG_S = 10.0


def _stream(source: Any) -> Iterator[DropEvent]:
    while True:
        yield from source.poll(200)


def cmd_events(ctx: Context, args: argparse.Namespace) -> int:
    keep = EventFilter.parse(" ".join(args.filter or ()))
    source = ctx.engine.open_events(max_per_second=args.rate)
    other = getattr(source, "other_reader", lambda: None)()
    if other:
        ctx.note(
            f"another console (pid {other}) is also reading drop events; "
            "each of you sees only part of them"
        )
    shown = 0
    stale = 0
    style = ctx.style
    # Following means "from now on": what waited unread in the ring buffer (possibly from
    # earlier rule sets, whose rule ids may mean other rules now) is skipped and counted.
    since = time.time() - FOLLOW_BACKLOG_S if args.follow else 0.0
    try:
        for ev in _stream(source) if args.follow else _drain(source):
            if ev.time < since:
                stale += 1
                if stale == 1:
                    ctx.note(f"skipping drop events older than {FOLLOW_BACKLOG_S:.0f}s")
                continue
            if not keep(ev):
                continue
            ctx.emit(ev.to_json(), render.event_text(ev, style))
            shown += 1
            if args.count is not None and shown >= args.count:
                break
    except KeyboardInterrupt:
        pass
    sampled = source.buffer.counts.sampled_out
    if not args.follow and shown == 0 and not ctx.json:
        ctx.note("no drop events right now (use --follow to wait for them)")
    if sampled:
        ctx.note(
            f"{sampled} events were not shown: more than {args.rate}/s arrived (--rate raises it)"
        )
    return 0


def _trace_packet_text(args: argparse.Namespace) -> str:
    text = f"{args.proto} from {args.src}" + (f" to {args.dst}" if args.dst else "")
    if args.dport is not None:
        text += f" port {args.dport}"
    elif args.icmp_type is not None:
        text += f" type {args.icmp_type}" + (
            "" if args.icmp_code is None else f" code {args.icmp_code}"
        )
    if args.vlan:
        text += " vlan " + ".".join(str(v) for v in args.vlan)
    if args.fragment:
        text += " (non-first fragment)"
    return text


def cmd_trace(ctx: Context, args: argparse.Namespace) -> int:
    if args.pcap:
        return trace_pcap(ctx, args)
    missing = [
        flag
        for flag, value in (("--iface", args.iface), ("--src", args.src), ("--proto", args.proto))
        if value is None
    ]
    if missing:
        raise UsageError(
            f"required: {', '.join(missing)} (or --pcap FILE)",
            "describe the packet (--iface, --src, --proto ...) or give --pcap FILE",
        )
    # The engine refuses a packet that cannot exist (RequestError, exit 2) before tracing it.
    tr = ctx.engine.trace_packet(
        TraceRequest(
            args.iface,
            args.src,
            args.proto,
            args.dport,
            args.icmp_type,
            args.icmp_code,
            dst=args.dst,
            vlan=tuple(args.vlan or ()),
            fragment=args.fragment,
            sport=args.sport,
            reply=args.reply,
        )
    )
    ctx.emit(tr.to_json(), lambda: render.trace_text(tr, _trace_packet_text(args), ctx.style))
    if not tr.agree:
        ctx.note(
            f"infw: MISMATCH: the kernel program says {tr.kernel_verdict} (rule {tr.kernel_rule_id}, "
            f"{tr.kernel_reason}) but the reference classifier says {tr.reference_verdict} "
            f"(rule {tr.reference_rule_id}, {tr.reference_reason}) — this is a bug: please report it "
            f"with this command and '{ctx.prefix}export'"
        )
        return 1
    return 0


def cmd_metrics(ctx: Context, args: argparse.Namespace) -> int:
    engine = ctx.engine
    listen = args.listen or engine.config.metrics_listen
    server = engine.serve_metrics(listen, allow_public=args.listen is not None)
    if not is_loopback(listen):
        ctx.note(
            f"warning: metrics on {listen} are readable by anyone who can reach this node "
            "(rule ids, interfaces, counters)"
        )
    ctx.emit(
        {"listen": listen, "url": server.url},
        f"serving Prometheus metrics on {server.url} (Ctrl-C stops)",
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.shutdown()
