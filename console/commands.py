"""The one command table behind both the CLI (`infw COMMAND`) and the REPL (`infw> COMMAND`).

Each command is a name, its arguments (with what completes them in the REPL), examples for
`--help`, and a handler that calls the Engine and prints through render. No firewall logic
lives here: every decision is the engine's.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from console import render
from engine.core.model import Protocol
from engine.errors import InfwError, PrivilegeError
from engine.views import DropEvent

if TYPE_CHECKING:
    from engine.core.model import RuleSet
    from engine.engine import Engine

PROTOCOLS = tuple(p.value for p in Protocol)
MODES = ("enforce", "audit")
ATTACH_MODES = ("auto", "native", "generic")
LAB_ACTIONS = ("up", "down", "status")
MAX_CONFIRM_TIMEOUT = 86400.0
LAB_RULES = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "examples", "lab.yaml"))
LAB_ATTACH = "infw-n*"

EXIT_CODES = (
    (0, "ok"),
    (1, "error (the message says what failed and how to fix it)"),
    (2, "usage or validation error: nothing was changed"),
    (3, "refused by the safety guard (see --force where the refusal allows it)"),
    (4, "missing privileges (root: CAP_BPF and CAP_NET_ADMIN)"),
    (5, "a pending confirmation expired and the change was reverted"),
)


class UsageError(InfwError):
    """The command line itself is wrong (unknown option, bad value): nothing was done."""

    exit_code = 2


class ParserExit(Exception):
    """argparse wanted to exit (after --help); the REPL must survive it."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ArgParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting and prints help to a chosen stream."""

    out: TextIO | None = None

    def error(self, message: str) -> NoReturn:
        if self.prog:
            usage = f"see '{self.prog} --help' for usage and examples"
        else:
            usage = "type 'help' for the list of commands"
        unknown = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1), list(COMMANDS), n=2)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise UsageError(f"unknown command {unknown.group(1)!r}", hint + usage)
        where = self.prog.removeprefix("infw").strip()
        raise UsageError(f"{where}: {message}" if where else message, usage)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            (self.out or sys.stderr).write(message)
        raise ParserExit(status)

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self.out or sys.stdout).write(message)


# ------------------------------------------------------------------ argument types


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number 1-65535")
    return int(text)


def _byte(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number 0-255")
    return int(text)


def _vlan(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 4095:
        raise argparse.ArgumentTypeError(f"VLAN id {text!r} is not a number 0-4095")
    return int(text)


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 or IPv6 address (e.g. 192.0.2.7 or 2001:db8::7)"
        ) from None


def _protocol(text: str) -> str:
    try:
        return Protocol.parse(text).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"protocol {text!r} is not one of {', '.join(PROTOCOLS)}"
        ) from None


def _rule_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"rule id {text!r} is not a positive number (see 'rules')")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_CONFIRM_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be within 0..{MAX_CONFIRM_TIMEOUT:g} seconds"
        )
    return value


def _interval(text: str) -> float:
    value = _seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"interval {text!r} must be at least 0.1 s")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def _listen(text: str) -> str:
    from engine.state.config import split_listen

    try:
        split_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: {exc}") from None
    return text


# ------------------------------------------------------------------ event filter


FILTER_KEYS = ("rule", "proto", "src", "dst", "iface", "verdict", "dport", "sport", "vlan")
FILTER_EXAMPLE = "rule=3 proto=TCP src=192.0.2.0/24 iface=eth0"


def _filter_term(key: str, value: str) -> Callable[[DropEvent], bool]:
    """One key=value of an event filter; comma-separated values mean any of them."""
    values = [v for v in value.split(",") if v]
    if not values:
        raise ValueError(f"{key}= needs a value")
    if key == "rule":
        ids = {_rule_id(v) for v in values}
        return lambda ev: ev.rule_id in ids
    if key == "proto":
        protos = {_protocol(v).lower() if not v.isdigit() else v for v in values}
        return lambda ev: ev.protocol.lower() in protos
    if key in ("src", "dst"):
        nets = [ipaddress.ip_network(v, strict=False) for v in values]

        def addr_in(ev: DropEvent) -> bool:
            addr = ipaddress.ip_address(getattr(ev, key))
            return any(addr.version == n.version and addr in n for n in nets)

        return addr_in
    if key == "iface":
        return lambda ev: any(fnmatch.fnmatchcase(ev.interface, v) for v in values)
    if key == "verdict":
        wanted = {v.upper().replace("-", " ").replace("_", " ") for v in values}
        bad = wanted - {"DENY", "WOULD DENY"}
        if bad:
            raise ValueError(f"verdict {', '.join(sorted(bad))} is not deny or would-deny")
        return lambda ev: ev.verdict in wanted
    if key in ("dport", "sport"):
        from engine.core.crd import parse_port_range

        ranges = [parse_port_range(v) for v in values]
        return lambda ev: (
            (port := getattr(ev, key)) is not None and any(r.contains(port) for r in ranges)
        )
    if key == "vlan":
        vlans = {_vlan(v) for v in values}
        return lambda ev: ev.vlan in vlans
    raise ValueError(f"unknown key {key!r}; keys are {', '.join(FILTER_KEYS)}")


@dataclass(frozen=True)
class EventFilter:
    """A display filter over drop events: every term must hold (`rule=3 proto=TCP`)."""

    text: str = ""
    terms: tuple[Callable[[DropEvent], bool], ...] = ()

    @classmethod
    def parse(cls, text: str) -> EventFilter:
        terms = []
        for word in text.split():
            key, sep, value = word.partition("=")
            try:
                if not sep:
                    raise ValueError(f"{word!r} is not key=value")
                terms.append(_filter_term(key.lower(), value))
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise UsageError(
                    f"bad event filter: {exc}",
                    f"write key=value terms, e.g. --filter '{FILTER_EXAMPLE}'",
                ) from None
        return cls(text, tuple(terms))

    def __call__(self, event: DropEvent) -> bool:
        return all(term(event) for term in self.terms)


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Arg:
    """One argparse argument plus what completes its value in the REPL.

    complete: "interfaces", "rule_ids", "protocols", "files", "yaml_files", "commands",
    "rule_line", "filter", "choices" (argparse choices) or None.
    """

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any]
    complete: str | None = None

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    @property
    def takes_value(self) -> bool:
        return self.kwargs.get("action") not in ("store_true", "store_false", "count")

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.kwargs.get("choices") or ())


def arg(*flags: str, complete: str | None = None, **kwargs: Any) -> Arg:
    return Arg(flags, kwargs, "choices" if complete is None and "choices" in kwargs else complete)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    run: Callable[[Context, argparse.Namespace], int]
    args: tuple[Arg, ...] = ()
    examples: tuple[tuple[str, str], ...] = ()  # (arguments after the command name, what it does)

    def option(self, flag: str) -> Arg | None:
        for a in self.args:
            if flag in a.flags:
                return a
        return None


@dataclass
class Context:
    """Where a command prints and how it reaches the engine; one per CLI run or REPL session."""

    connect: Callable[[], Engine]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    in_repl: bool = False
    json: bool = False
    verbose: bool = False
    parser: ArgParser | None = None
    # Connecting to the lab (for `lab up`, which attaches the lab's firewall).
    connect_lab: Callable[[], Engine] | None = None
    # The options that chose this firewall (--lab, --pin-root ...), repeated in the hints we
    # print, so 'infw confirm' reaches the same firewall as the command that suggested it.
    selector: str = ""
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.connect()
        return self._engine

    @property
    def prefix(self) -> str:
        """How the user types a command here: 'infw confirm' in a shell, 'confirm' in the REPL."""
        if self.in_repl:
            return ""
        return f"infw {self.selector} " if self.selector else "infw "

    @property
    def style(self) -> render.Style:
        return render.Style(not self.json and render.wants_color(self.out))

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        """Print `data` as JSON with --json, else the text form."""
        if self.json:
            self.out.write(json.dumps(data, default=str) + "\n")
        else:
            body = text() if callable(text) else text
            if body:
                self.out.write(body + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A remark for a human (stderr, so it never mixes with --json data)."""
        self.err.write(text + "\n")
        self.err.flush()

    def progress(self) -> render.ProgressLine:
        return render.ProgressLine(self.err, spinner=render.wants_color(self.err))


def report_error(ctx: Context, exc: BaseException) -> int:
    """Print an error the one way both consoles do; returns the exit code."""
    if isinstance(exc, InfwError):
        for line in render.error_lines(exc):
            ctx.err.write(line + "\n")
        if ctx.json:
            ctx.out.write(json.dumps(render.error_json(exc), default=str) + "\n")
        code = exc.exit_code
    else:
        ctx.err.write(
            f"infw: error: unexpected {type(exc).__name__}: {exc} — "
            f"{'see the traceback below' if ctx.verbose else 'run with -v for the traceback'}\n"
        )
        code = 1
    if ctx.verbose:
        ctx.err.write("".join(traceback.format_exception(exc)))
    ctx.err.flush()
    ctx.out.flush()
    return code


# ------------------------------------------------------------------ handlers


def _load_rules(path: str) -> RuleSet:
    from engine.core import crd

    if path == "-":
        return crd.load_yaml(sys.stdin.read(), "<stdin>")
    return crd.load_file(path)


def _write_file(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InfwError(
            f"cannot write {path}: {exc.strerror}",
            "check that the directory exists and is writable",
        ) from exc


def _edit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"confirm_timeout": args.confirm_timeout, "force": args.force}


def _applied(ctx: Context, res: Any) -> int:
    ctx.emit(res.to_json(), lambda: render.apply_text(res, f"{ctx.prefix}confirm"))
    return 0


def cmd_status(ctx: Context, args: argparse.Namespace) -> int:
    st = ctx.engine.status()
    ctx.emit(st.to_json(), lambda: render.status_text(st, ctx.style))
    return 0


def cmd_rules(ctx: Context, args: argparse.Namespace) -> int:
    try:
        rows = list(ctx.engine.stats().rules)
    except PrivilegeError as exc:
        # The rules are readable from the store; only the kernel counters need privileges.
        ctx.note(f"note: counters not shown ({exc.message})")
        rows = ctx.engine.rule_rows()
    ctx.emit([r.to_json() for r in rows], lambda: render.rules_text(rows, ctx.style))
    return 0


def cmd_add(ctx: Context, args: argparse.Namespace) -> int:
    return _applied(ctx, ctx.engine.add_rule(shlex.join(args.rule), **_edit_kwargs(args)))


def cmd_edit(ctx: Context, args: argparse.Namespace) -> int:
    return _applied(ctx, ctx.engine.edit_rule(args.id, shlex.join(args.rule), **_edit_kwargs(args)))


def cmd_delete(ctx: Context, args: argparse.Namespace) -> int:
    return _applied(ctx, ctx.engine.delete_rule(args.id, **_edit_kwargs(args)))


def cmd_validate(ctx: Context, args: argparse.Namespace) -> int:
    ruleset = _load_rules(args.file)
    _, warnings = ctx.engine.check(ruleset)
    data = {
        "valid": True,
        "file": args.file,
        "objects": len(ruleset.firewalls),
        "rules": ruleset.rule_count(),
        "warnings": list(warnings),
    }

    def text() -> str:
        lines = [
            f"valid: {args.file} ({len(ruleset.firewalls)} objects, {ruleset.rule_count()} rules); "
            "nothing was applied"
        ]
        return "\n".join(lines + [f"warning: {w}" for w in warnings])

    ctx.emit(data, text)
    return 0


def cmd_apply(ctx: Context, args: argparse.Namespace) -> int:
    ruleset = _load_rules(args.file)
    name = "stdin" if args.file == "-" else os.path.basename(args.file)
    return _applied(ctx, ctx.engine.apply(ruleset, summary=f"apply {name}", **_edit_kwargs(args)))


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.json:
        from engine.core.crd import firewall_to_dict

        ruleset = ctx.engine.ruleset()
        # A v1 List: JSON is YAML, so `infw apply` takes this file back as it is.
        doc = {
            "apiVersion": "v1",
            "kind": "List",
            "items": [firewall_to_dict(fw) for fw in ruleset.firewalls],
        }
        text = json.dumps(doc, indent=2) + "\n"
    else:
        text = ctx.engine.export_yaml()
        ruleset = None
    if args.output in (None, "-"):
        ctx.out.write(text)
        ctx.out.flush()
        if not text.strip() or not ctx.engine.ruleset().firewalls:
            ctx.note("no rules are stored: nothing to export")
        return 0
    _write_file(args.output, text)
    ruleset = ruleset or ctx.engine.ruleset()
    ctx.note(
        f"exported {len(ruleset.firewalls)} objects ({ruleset.rule_count()} rules) to {args.output}"
    )
    return 0


def cmd_confirm(ctx: Context, args: argparse.Namespace) -> int:
    generation = ctx.engine.confirm()
    ctx.emit({"confirmed": generation}, f"confirmed generation {generation}: it stays")
    return 0


def cmd_revert(ctx: Context, args: argparse.Namespace) -> int:
    return _applied(ctx, ctx.engine.revert(force=args.force))


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.engine.history(args.limit)
    ctx.emit([h.to_json() for h in items], lambda: render.history_text(items))
    return 0


def cmd_mode(ctx: Context, args: argparse.Namespace) -> int:
    if args.mode is None:
        mode = ctx.engine.status().mode
        ctx.emit({"mode": mode}, f"mode {mode}")
        return 0
    mode = ctx.engine.set_mode(args.mode)
    text = f"mode {mode}" + (
        ": nothing is dropped, denies are counted as WOULD DENY"
        if mode == "audit"
        else ": Deny rules drop packets"
    )
    ctx.emit({"mode": mode}, text)
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
    proto = Protocol.parse(args.proto)
    if args.dport is not None and not proto.has_ports:
        raise UsageError(
            f"--dport does not apply to {proto.value}", "use --dport with TCP, UDP or SCTP"
        )
    if args.icmp_type is not None and not proto.is_icmp:
        raise UsageError(
            f"--icmp-type does not apply to {proto.value}", "use --icmp-type with ICMP or ICMPv6"
        )
    if args.icmp_code is not None and args.icmp_type is None:
        raise UsageError("--icmp-code needs --icmp-type", "e.g. --icmp-type 8 --icmp-code 0")
    if proto.has_ports and args.dport is None and not args.fragment:
        raise UsageError(
            f"a {proto.value} packet needs a destination port", "add --dport N (1-65535)"
        )
    v6 = ":" in args.src
    if (proto is Protocol.ICMP and v6) or (proto is Protocol.ICMPV6 and not v6):
        other = "ICMPv6" if proto is Protocol.ICMP else "ICMP"
        raise UsageError(
            f"{proto.value} does not travel from {args.src}",
            f"use --proto {other} for this source, or a source of the other IP family",
        )
    if args.vlan and len(args.vlan) > 2:
        raise UsageError(
            f"{len(args.vlan)} VLAN tags given",
            "give at most two --vlan (802.1ad outer, then inner)",
        )
    if args.dst and (":" in args.dst) != (":" in args.src):
        raise UsageError(
            "--src and --dst are of different IP families", "give two IPv4 or two IPv6 addresses"
        )
    tr = ctx.engine.trace(
        args.iface,
        args.src,
        proto.value,
        args.dport,
        args.icmp_type,
        args.icmp_code,
        dst=args.dst,
        vlan=tuple(args.vlan or ()),
        fragment=args.fragment,
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
    from engine.observe.metrics import is_loopback, serve_metrics

    engine = ctx.engine
    listen = args.listen or engine.config.metrics_listen
    server = serve_metrics(engine, listen, allow_public=args.listen is not None)
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


def cmd_restore(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress() as progress:
        st = ctx.engine.restore(progress=progress)
    ctx.emit(st.to_json(), lambda: render.status_text(st, ctx.style))
    return 0


def cmd_reload(ctx: Context, args: argparse.Namespace) -> int:
    with ctx.progress() as progress:
        st = ctx.engine.reload(progress=progress)
    ctx.emit(st.to_json(), lambda: render.status_text(st, ctx.style))
    return 0


def _lab_text(info: Any) -> str:
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
    from engine.lab import world as lab

    if args.action == "status":
        info = lab.lab_status()
        ctx.emit(info.as_dict(), lambda: _lab_text(info))
        return 0 if info.up else 1
    if args.action == "down":
        with ctx.progress() as progress:
            removed = lab.lab_down(progress=progress)
        ctx.emit({"removed": removed}, "lab removed" if removed else "no lab to remove")
        return 0
    with ctx.progress() as progress:
        info = lab.lab_up(
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
    """What infw-tui --lab does too: a lab without a firewall gets the example rules, attached."""
    from engine.core import crd
    from engine.lab.world import LAB_PIN_ROOT

    if ctx.in_repl and getattr(ctx.engine, "pin_root", None) != LAB_PIN_ROOT:
        # Entering the lab's namespace would move this whole REPL; it only attaches when it is
        # the lab's console already.
        ctx.note("note: this REPL is not the lab's: start 'infw --lab' to attach the lab firewall")
        return []
    engine = ctx.engine if ctx.in_repl or ctx.connect_lab is None else ctx.connect_lab()
    if engine.loaded():
        return [v.name for v in engine.status().interfaces if v.ours]
    progress(f"applying {LAB_RULES}")
    engine.apply(crd.load_file(LAB_RULES), confirm_timeout=0, summary="lab rules")
    return [v.name for v in engine.attach([LAB_ATTACH], progress=progress)]


def cmd_help(ctx: Context, args: argparse.Namespace) -> int:
    ctx.out.write(help_text(ctx, args.topic) + "\n")
    return 0


def cmd_repl(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.in_repl:
        raise UsageError("already in the REPL", "type a command, 'help' for the list")
    from console.repl import run_repl

    return run_repl(ctx.engine)


# ------------------------------------------------------------------ the table itself

_EDIT_ARGS = (
    arg(
        "--confirm-timeout",
        type=_seconds,
        metavar="S",
        help="seconds until an unconfirmed change reverts (default: the config's, 60; 0: no confirm)",
    ),
    arg("--force", action="store_true", help="override a refusable guard check (never silently)"),
)
_RULE_LINE = arg(
    "rule",
    nargs="+",
    metavar="RULE",
    complete="rule_line",
    help="ACTION [PROTO [PORTS | type T [code C]]] from CIDR[,CIDR] [on IFACE] order N [firewall NAME]",
)

COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "status",
            "node, firewall, mode, generation, interfaces, pending confirmation",
            cmd_status,
            examples=(("", "what runs here"), ("--json", "the same for scripts")),
        ),
        Command(
            "rules",
            "every rule with its id, counters, rate and last hit",
            cmd_rules,
            examples=(("", "the rule table"), ("--json", "rules as JSON (ids for edit/delete)")),
        ),
        Command(
            "add",
            "add one rule (same validation as YAML; commit-confirmed)",
            cmd_add,
            (_RULE_LINE, *_EDIT_ARGS),
            examples=(
                ("deny tcp 8000-8080 from 192.0.2.0/24 on eth0 order 10", "drop a port range"),
                (
                    "allow icmp type 8 from 198.51.100.0/24 on 'ens*' order 20 firewall ping",
                    "allow pings into object 'ping'",
                ),
                (
                    "--confirm-timeout 0 deny udp 53 from 203.0.113.0/24 on eth0 order 5",
                    "apply at once, no confirmation",
                ),
            ),
        ),
        Command(
            "edit",
            "replace rule ID with a new rule line",
            cmd_edit,
            (
                arg(
                    "id",
                    type=_rule_id,
                    metavar="ID",
                    complete="rule_ids",
                    help="rule id (see 'rules')",
                ),
                _RULE_LINE,
                *_EDIT_ARGS,
            ),
            examples=(
                ("3 deny tcp 8000-9000 from 192.0.2.0/24 on eth0 order 10", "widen rule 3's ports"),
            ),
        ),
        Command(
            "delete",
            "remove rule ID",
            cmd_delete,
            (
                arg(
                    "id",
                    type=_rule_id,
                    metavar="ID",
                    complete="rule_ids",
                    help="rule id (see 'rules')",
                ),
                *_EDIT_ARGS,
            ),
            examples=(("3", "remove rule 3"),),
        ),
        Command(
            "validate",
            "check a rule file against this node's interfaces and the guard; applies nothing",
            cmd_validate,
            (
                arg(
                    "file",
                    metavar="FILE",
                    complete="yaml_files",
                    help="IngressNodeFirewall YAML ('-': stdin)",
                ),
            ),
            examples=(
                ("rules.yaml", "check before applying"),
                ("--json rules.yaml", "errors as JSON (exit 2 names each bad field)"),
            ),
        ),
        Command(
            "apply",
            "replace the rules with FILE (commit-confirmed: confirm or it reverts)",
            cmd_apply,
            (
                arg(
                    "file",
                    metavar="FILE",
                    complete="yaml_files",
                    help="IngressNodeFirewall YAML ('-': stdin)",
                ),
                *_EDIT_ARGS,
            ),
            examples=(
                ("rules.yaml", "apply, then 'confirm' within 60 s or it reverts"),
                ("rules.yaml --confirm-timeout 0", "scripts: apply without a pending confirmation"),
                ("rules.yaml --confirm-timeout 300", "five minutes to check you can still log in"),
            ),
        ),
        Command(
            "export",
            "the rules as IngressNodeFirewall YAML (round-trips through apply)",
            cmd_export,
            (
                arg(
                    "-o",
                    "--output",
                    metavar="FILE",
                    complete="files",
                    help="write to FILE instead of stdout",
                ),
            ),
            examples=(
                ("", "print YAML"),
                ("-o backup.yaml", "save a copy"),
                ("--json -o backup.json", "a JSON v1 List (apply takes it back too)"),
            ),
        ),
        Command(
            "confirm",
            "keep the pending change (stops the revert countdown)",
            cmd_confirm,
            examples=(("", "keep what you just applied"),),
        ),
        Command(
            "revert",
            "drop the pending change, or go back one generation",
            cmd_revert,
            (arg("--force", action="store_true", help="override a refusable guard check"),),
            examples=(("", "undo the last change"),),
        ),
        Command(
            "history",
            "applied generations: when, who, what",
            cmd_history,
            (
                arg(
                    "--limit",
                    type=_count,
                    default=20,
                    metavar="N",
                    help="show the last N (default 20)",
                ),
            ),
            examples=(("", "recent generations"), ("--limit 100 --json", "more, as JSON")),
        ),
        Command(
            "mode",
            "show or switch enforce/audit (audit drops nothing, counts WOULD DENY)",
            cmd_mode,
            (
                arg(
                    "mode",
                    nargs="?",
                    choices=MODES,
                    metavar="enforce|audit",
                    help="the mode to switch to",
                ),
            ),
            examples=(
                ("audit", "stop dropping, keep counting"),
                ("enforce", "drop again"),
                ("", "show it"),
            ),
        ),
        Command(
            "attach",
            "load the firewall if needed (compiles once) and attach it to interfaces",
            cmd_attach,
            (
                arg(
                    "interfaces",
                    nargs="+",
                    metavar="IFACE",
                    complete="interfaces",
                    help="interface names or globs",
                ),
                arg(
                    "--mode",
                    choices=ATTACH_MODES,
                    default="auto",
                    help="XDP mode (default auto: native if possible)",
                ),
                arg(
                    "--force",
                    action="store_true",
                    help="replace a foreign XDP program (never silently)",
                ),
            ),
            examples=(
                ("eth0", "protect eth0"),
                ("'ens*' --mode generic", "every ens* interface, generic XDP"),
            ),
        ),
        Command(
            "detach",
            "detach from interfaces; with none named, unload the firewall",
            cmd_detach,
            (
                arg(
                    "interfaces",
                    nargs="*",
                    metavar="IFACE",
                    complete="interfaces",
                    help="names or globs",
                ),
            ),
            examples=(
                ("eth1", "stop filtering eth1"),
                ("", "detach everywhere and remove the pins"),
            ),
        ),
        Command(
            "stats",
            "node totals and per-rule counters",
            cmd_stats,
            (
                arg(
                    "--watch",
                    nargs="?",
                    const=1.0,
                    type=_interval,
                    metavar="SECONDS",
                    help="refresh every SECONDS (default 1) until Ctrl-C",
                ),
                arg(
                    "--count", type=_count, metavar="N", help="with --watch: stop after N refreshes"
                ),
            ),
            examples=(
                ("", "one snapshot"),
                ("--watch", "live, every second"),
                ("--watch 5 --json", "a JSON line every 5 s"),
            ),
        ),
        Command(
            "events",
            "drop events (DENY / WOULD DENY) with rule, addresses, ports, VLAN",
            cmd_events,
            (
                arg("--follow", "-f", action="store_true", help="keep streaming until Ctrl-C"),
                arg(
                    "--filter",
                    action="append",
                    metavar="EXPR",
                    complete="filter",
                    help=f"show only matching events: {', '.join(FILTER_KEYS)} (e.g. '{FILTER_EXAMPLE}')",
                ),
                arg("--count", type=_count, metavar="N", help="stop after N events"),
                arg(
                    "--rate",
                    type=_count,
                    default=200,
                    metavar="N",
                    help="show at most N events per second, count the rest (default 200)",
                ),
            ),
            examples=(
                ("", "what the buffer holds now"),
                ("--follow", "stream until Ctrl-C"),
                (f"-f --filter '{FILTER_EXAMPLE}'", "only some"),
                ("-f --json | jq .src", "JSON lines for tools"),
            ),
        ),
        Command(
            "trace",
            "what happens to a packet: the kernel program and the reference classifier",
            cmd_trace,
            (
                arg(
                    "--iface",
                    required=True,
                    metavar="IFACE",
                    complete="interfaces",
                    help="arriving interface",
                ),
                arg("--src", required=True, type=_address, metavar="ADDR", help="source address"),
                arg(
                    "--proto",
                    required=True,
                    type=_protocol,
                    metavar="PROTO",
                    complete="protocols",
                    help=f"one of {', '.join(PROTOCOLS)}",
                ),
                arg("--dport", type=_port, metavar="N", help="destination port (TCP, UDP, SCTP)"),
                arg("--icmp-type", type=_byte, metavar="T", help="ICMP/ICMPv6 type"),
                arg("--icmp-code", type=_byte, metavar="C", help="ICMP/ICMPv6 code"),
                arg(
                    "--dst",
                    type=_address,
                    metavar="ADDR",
                    help="destination address (default a documentation one)",
                ),
                arg(
                    "--vlan",
                    type=_vlan,
                    action="append",
                    metavar="V",
                    help="802.1Q tag (twice for 802.1ad)",
                ),
                arg("--fragment", action="store_true", help="a non-first fragment (no L4 header)"),
            ),
            examples=(
                (
                    "--iface eth0 --src 192.0.2.7 --proto TCP --dport 8080",
                    "is 8080 open from there?",
                ),
                ("--iface eth0 --src 2001:db8::7 --proto ICMPv6 --icmp-type 128", "IPv6 ping"),
                (
                    "--iface eth0 --src 192.0.2.7 --proto UDP --dport 53 --vlan 100",
                    "a tagged frame",
                ),
            ),
        ),
        Command(
            "metrics",
            "serve Prometheus metrics (operator names) until Ctrl-C",
            cmd_metrics,
            (
                arg(
                    "--listen",
                    type=_listen,
                    metavar="HOST:PORT",
                    help="address to bind (default the config's, 127.0.0.1:39301)",
                ),
            ),
            examples=(
                ("", "http://127.0.0.1:39301/metrics"),
                ("--listen 0.0.0.0:39301", "reachable from the network (prints a warning)"),
            ),
        ),
        Command(
            "restore",
            "re-apply the stored rules and attachments (boot; the systemd unit runs it)",
            cmd_restore,
            examples=(("", "bring the firewall back after a reboot"),),
        ),
        Command(
            "reload",
            "compile the current bpf/ program and swap it in atomically; rules and counters stay",
            cmd_reload,
            examples=(("", "after upgrading infw: the running firewall takes the new build"),),
        ),
        Command(
            "lab",
            "a throwaway node and clients in network namespaces, with traffic and the firewall",
            cmd_lab,
            (
                arg("action", choices=LAB_ACTIONS, metavar="up|down|status", help="what to do"),
                arg(
                    "--clients",
                    type=_count,
                    default=2,
                    metavar="N",
                    help="client namespaces (1-3, default 2)",
                ),
                arg(
                    "--rate",
                    type=float,
                    default=20.0,
                    metavar="PPS",
                    help="traffic per client (default 20/s)",
                ),
                arg("--no-traffic", action="store_true", help="no steady traffic"),
                arg("--no-firewall", action="store_true", help="do not attach the firewall"),
            ),
            examples=(
                ("up", "build it, start traffic, attach the firewall with examples/lab.yaml"),
                ("status", "is it complete?"),
                ("down", "remove all of it"),
            ),
        ),
        Command(
            "help",
            "list the commands, or explain one",
            cmd_help,
            (
                arg(
                    "topic",
                    nargs="?",
                    metavar="COMMAND",
                    complete="commands",
                    help="a command name",
                ),
            ),
            examples=(("", "all commands"), ("trace", "one command, with examples")),
        ),
        Command(
            "repl",
            "the interactive console (also what plain 'infw' starts)",
            cmd_repl,
            examples=(("", "completion, history, live toolbar"),),
        ),
    )
}


# ------------------------------------------------------------------ parsers and help

DESCRIPTION = (
    "infw: an XDP ingress firewall for this node, driven by IngressNodeFirewall rules.\n"
    "Every command takes --json. Without a command, infw starts the REPL."
)


def examples_text(cmd: Command, prefix: str) -> str:
    if not cmd.examples:
        return ""
    width = max(len(f"{prefix}{cmd.name} {a}".strip()) for a, _ in cmd.examples)
    lines = ["examples:"]
    for argv, what in cmd.examples:
        line = f"{prefix}{cmd.name} {argv}".strip()
        lines.append(f"  {line.ljust(width)}   # {what}")
    return "\n".join(lines)


def exit_codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {what}" for code, what in EXIT_CODES)


def main_epilog() -> str:
    lines = ["examples (one per command; 'infw COMMAND --help' shows more):"]
    picks = [
        (f"infw {c.name} {c.examples[0][0]}".strip(), c.examples[0][1]) for c in COMMANDS.values()
    ]
    width = max(len(line) for line, _ in picks)
    lines += [f"  {line.ljust(width)}   # {what}" for line, what in picks]
    lines += [
        "",
        "a first session (the lab needs root):",
        "  infw lab up                       # namespaces, traffic, the firewall attached",
        "  infw --lab apply examples/lab.yaml --confirm-timeout 0",
        "  infw --lab stats --watch          # counters moving; Ctrl-C stops",
        "  infw --lab events --follow        # what is dropped, live",
        "  infw lab down",
        "",
        exit_codes_text(),
    ]
    return "\n".join(lines)


def add_output_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else False
    p.add_argument("--json", action="store_true", default=default, help="machine-readable output")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="more detail; a traceback with errors",
    )


def add_connection_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = p.add_argument_group("where the firewall is")
    g.add_argument(
        "--pin-root",
        default=d(None),
        metavar="DIR",
        help="bpffs directory of the firewall's pins (default /sys/fs/bpf/infw)",
    )
    g.add_argument(
        "--state-dir",
        default=d(None),
        metavar="DIR",
        help="desired state and history (default /var/lib/infw)",
    )
    g.add_argument(
        "--netns", default=d(None), metavar="NAME", help="work inside network namespace NAME"
    )
    g.add_argument(
        "--lab",
        action="store_true",
        default=d(False),
        help="the lab's firewall: its pins, state and namespace infw-node",
    )
    g.add_argument(
        "--read-only",
        action="store_true",
        default=d(False),
        help="look only: counters, rules, events; every change is refused",
    )


def build_parser(*, repl: bool = False, out: TextIO | None = None) -> ArgParser:
    """The CLI parser (global options before or after the command) or the REPL's (no connection options)."""
    prefix = "" if repl else "infw "
    fmt = argparse.RawDescriptionHelpFormatter
    parser = ArgParser(
        prog="" if repl else "infw",
        description=DESCRIPTION,
        epilog=main_epilog(),
        formatter_class=fmt,
        allow_abbrev=False,
    )
    parser.out = out
    if not repl:
        add_output_options(parser, suppress=False)
        add_connection_options(parser, suppress=False)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", parser_class=ArgParser
    )
    for cmd in COMMANDS.values():
        p = sub.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.summary,
            epilog=examples_text(cmd, prefix),
            formatter_class=fmt,
            allow_abbrev=False,
            prog=f"{prefix}{cmd.name}",
        )
        p.out = out
        for a in cmd.args:
            p.add_argument(*a.flags, **a.kwargs)
        add_output_options(p, suppress=not repl)
        if not repl:
            add_connection_options(p, suppress=True)
    return parser


def help_text(ctx: Context, topic: str | None) -> str:
    if topic is None:
        width = max(len(n) for n in COMMANDS)
        lines = ["commands:"]
        lines += [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in COMMANDS.items()]
        lines += [
            "",
            f"'{ctx.prefix}help COMMAND' (or '{ctx.prefix}COMMAND --help') explains one, with examples.",
        ]
        if ctx.in_repl:
            lines.append(
                "Tab completes commands, options, interfaces, rule ids and files; "
                "'exit', 'quit' or Ctrl-D leave (the firewall keeps running)."
            )
        else:
            lines += ["", exit_codes_text()]
        return "\n".join(lines)
    if topic not in COMMANDS:
        raise UsageError(f"no command {topic!r}", f"commands: {', '.join(COMMANDS)}")
    parser = ctx.parser or build_parser(repl=ctx.in_repl)
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and topic in choices:
            return str(choices[topic].format_help()).rstrip()
    raise UsageError(f"no help for {topic!r}")  # pragma: no cover - every command has a parser


def dispatch(ctx: Context, argv: Sequence[str]) -> int:
    """Parse one command line and run it; errors are reported, never raised."""
    ctx.json = "--json" in argv
    ctx.verbose = "-v" in argv or "--verbose" in argv
    try:
        parser = ctx.parser or build_parser(repl=ctx.in_repl, out=ctx.out)
        ctx.parser = parser
        args = parser.parse_args(list(argv))
    except ParserExit as done:
        return done.status
    except UsageError as exc:
        return report_error(ctx, exc)
    return run_parsed(ctx, args)


def run_parsed(ctx: Context, args: argparse.Namespace) -> int:
    ctx.json = bool(getattr(args, "json", False))
    ctx.verbose = bool(getattr(args, "verbose", False))
    cmd = COMMANDS[args.command]
    try:
        return cmd.run(ctx, args)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:  # anything else is reported; -v adds the traceback
        return report_error(ctx, exc)
