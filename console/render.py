"""Text and JSON forms of the engine's views, shared by the CLI and the REPL.

Colour is added only next to words that already carry the meaning (DENY is red *and* says DENY),
and only when the stream is a terminal that has not asked for NO_COLOR.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

from console.format import ago, clock, human_bytes, timestamp
from engine import (
    ApplyResult,
    DropEvent,
    HistoryView,
    InfwError,
    RepliesView,
    RuleRow,
    StatsSnapshot,
    Status,
    TraceResult,
    ValidationError,
    printable,
)

RED, GREEN, YELLOW, BOLD, DIM, RESET = (
    "\x1b[31m",
    "\x1b[32m",
    "\x1b[33m",
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[0m",
)


def wants_color(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


class Style:
    """Wraps words in ANSI colour when enabled; the words alone must already say everything."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def paint(self, text: str, color: str) -> str:
        return f"{color}{text}{RESET}" if self.enabled and text else text

    def verdict(self, text: str) -> str:
        upper = text.upper()
        if "DENY" in upper:
            return self.paint(text, YELLOW if "WOULD" in upper else RED)
        if "ALLOW" in upper:
            return self.paint(text, GREEN)
        return text


PLAIN = Style(False)


# ------------------------------------------------------------------ small formatters


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    right: Iterable[int] = (),
    style: Style = PLAIN,
    paint: dict[int, str] | None = None,
) -> str:
    """A plain aligned table; `right` are the column indexes aligned right (numbers).

    `paint` maps a column index to "verdict" so those cells get colour after alignment
    (colour codes would otherwise upset the widths).
    """
    body = [list(r) for r in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    right_set = set(right)
    paint = paint or {}

    def line(cells: Sequence[str], colour: bool) -> str:
        out = []
        for i, cell in enumerate(cells):
            padded = cell.rjust(widths[i]) if i in right_set else cell.ljust(widths[i])
            if colour and paint.get(i) == "verdict":
                padded = padded.replace(cell, style.verdict(cell), 1)
            out.append(padded)
        return "  ".join(out).rstrip()

    lines = [style.paint(line(headers, False), BOLD)]
    lines += [line(row, True) for row in body]
    return "\n".join(lines)


# ------------------------------------------------------------------ JSON shapes


def stats_json(snap: StatsSnapshot) -> dict[str, Any]:
    return {
        "time": snap.time,
        "generation": snap.generation,
        "totals": snap.totals.to_json(),
        "rules": [r.to_json() for r in snap.rules],
    }


def _json_value(value: object) -> object:
    return value if isinstance(value, str | int | float | bool | None) else repr(value)


JSON_ERRORS = 1000  # machines get more than the 20 a terminal shows, but not a million


def error_json(exc: InfwError) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": exc.message.splitlines()[0].rstrip(":") if exc.message else str(exc),
        "fix": exc.fix,
        "exitCode": exc.exit_code,
    }
    if isinstance(exc, ValidationError):
        out["fields"] = [
            {
                "document": e.document,
                "path": e.path,
                "value": _json_value(e.value),
                "problem": e.problem,
                "fix": e.fix,
            }
            for e in exc.errors[:JSON_ERRORS]
        ]
        if len(exc.errors) > JSON_ERRORS:
            out["moreFields"] = len(exc.errors) - JSON_ERRORS
    return {"error": out}


# ------------------------------------------------------------------ errors


def error_lines(exc: InfwError, prog: str = "infw") -> list[str]:
    """'infw: error: <message> — <fix>', then one line per bad field or per reason."""
    # A message listing several reasons (the guard's, a file's errors) keeps its list under
    # the first line; a ValidationError's list is already capped by its lines().
    head, *rest = exc.lines()
    if rest:
        head = head.rstrip(":")
    fix = exc.fix or ("correct the fields listed below" if isinstance(exc, ValidationError) else "")
    first = f"{prog}: error: {head} — {fix}" if fix else f"{prog}: error: {head}"
    return [printable(line) for line in (first, *rest)]  # file names, values, pids' commands


# ------------------------------------------------------------------ views as text


def _labels_text(st: Status, style: Style) -> str:
    if st.node_labels is None:
        return "node labels unknown: every object applies, whatever its nodeSelector (nodeLabels in /etc/infw/config.yaml)"
    text = ", ".join(f"{k}={v}" for k, v in sorted(st.node_labels.items())) or "none"
    if st.not_for_node:
        text += "; " + style.paint(f"not for this node: {', '.join(st.not_for_node)}", YELLOW)
    return text


def replies_text(view: RepliesView, style: Style = PLAIN) -> str:
    state = (
        style.paint("ON", GREEN) + ": a packet a rule denies passes if it answers a connection "
        "this node opened on that interface"
        if view.enabled
        else "off: replies are decided by the rules like any packet ('replies on' to change)"
    )
    rows = [
        ("replies", state),
        (
            "timeouts",
            f"TCP {view.tcp_timeout:g}s  UDP {view.udp_timeout:g}s  ICMP echo {view.icmp_timeout:g}s"
            " after the node's last packet (replies: in config.yaml)",
        ),
        (
            "flows",
            f"{view.held} of {view.capacity} held, {view.recorded} recorded, "
            f"{view.evicted} evicted (LRU)",
        ),
        ("allowed", f"{view.allowed} packets passed as replies"),
    ]
    return "\n".join(f"{k:<10} {v}" for k, v in rows)


def flow_sample_text(st: Status) -> str:
    """The kernel's flow sampling, and the config's when a load would change it."""
    n = st.flow_sample
    if n == 0:
        text = "sampling off: 'infw flows' shows nothing new"
    elif n == 1:
        text = "every packet counted (1 in 1: exact)"
    else:
        text = f"1 in {n} packets sampled, counts scaled by {n} ('flows' states the margin)"
    if st.loaded and st.flow_sample_config != n:
        text += f"; the config's flowSample {st.flow_sample_config} applies at the next load"
    return text


def status_text(
    st: Status, style: Style = PLAIN, now: float | None = None, dropping: str = ""
) -> str:
    now = time.time() if now is None else now
    rows: list[tuple[str, str]] = []
    node = st.node + (f" (netns {st.netns})" if st.netns else "")
    rows.append(("node", node))
    if st.loaded:
        rows.append(("firewall", f"loaded, pinned at {st.pin_root}"))
    else:
        rows.append(
            (
                "firewall",
                style.paint("NOT LOADED", YELLOW)
                + f" at {st.pin_root}: rules are stored only; 'attach IFACE' enforces them",
            )
        )
    mode = st.mode.upper()
    rows.append(
        (
            "mode",
            style.paint(mode, YELLOW) + " (nothing is dropped; denies are counted as WOULD DENY)"
            if st.mode == "audit"
            else mode,
        )
    )
    rows.append(("generation", f"{st.generation}   rules {st.rule_count}"))
    rows.append(
        (
            "replies",
            "ON (replies to the node's own connections pass a Deny)" if st.replies else "off",
        )
    )
    rows.append(("flows", flow_sample_text(st)))
    if st.interfaces:
        parts = []
        for iv in st.interfaces:
            if iv.ours:
                parts.append(f"{printable(iv.name)} ({iv.mode}, prog {iv.prog_id})")
            else:
                parts.append(
                    style.paint(f"{printable(iv.name)} FOREIGN XDP prog {iv.prog_id}", RED)
                )
        rows.append(("interfaces", ", ".join(parts)))
    else:
        rows.append(("interfaces", "none attached"))
    if st.loaded:
        rows.append(
            ("agent", st.agent or "not running: no interface that appears or returns is followed")
        )
    if st.pending is not None:
        p = st.pending
        text = (
            f"PENDING generation {p.generation} reverts to {p.previous_generation} in "
            f"{p.remaining(now):.0f}s unless confirmed (applied by {printable(p.author)})"
        )
        rows.append(("confirm", style.paint(text, BOLD + YELLOW)))
        if dropping:
            rows.append(("dropping", dropping))
        if st.watchdog:
            rows.append(("watchdog", st.watchdog))
    if st.reverted:
        rows.append(("reverted", style.paint(st.reverted, BOLD + YELLOW)))
    if st.unconfigured:
        rows.append(("unconfigured", style.paint(st.unconfigured, YELLOW)))
    if st.store_generation != st.generation and st.loaded:
        rows.append(("store", f"generation {st.store_generation}"))
    for problem in st.problems:
        text = f"{problem.kind.upper()}: {problem.message}; fix: {problem.fix}"
        rows.append(("problem", style.paint(text, BOLD + RED)))
    rows.append(("fail-safe", ", ".join(st.failsafe) or "none"))
    rows.append(("labels", _labels_text(st, style)))
    if st.read_only:
        rows.append(("access", "read-only"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def rules_text(rows: Sequence[RuleRow], style: Style = PLAIN, now: float | None = None) -> str:
    if not rows:
        return "no rules (add one with: add deny tcp 8000-8080 from 192.0.2.0/24 on eth0 order 10)"
    headers = (
        "ID",
        "ORDER",
        "FIREWALL",
        "ACTION",
        "PROTO",
        "MATCH",
        "SOURCES",
        "IFACES",
        "PACKETS",
        "BYTES",
        "RATE",
        "LAST HIT",
    )
    body = [
        (
            str(r.rule_id),
            str(r.order),
            r.firewall,
            r.action.upper(),
            r.protocol,
            r.match,
            ",".join(r.cidrs),
            printable(",".join(r.interfaces)),
            str(r.packets),
            human_bytes(r.bytes),
            *_rate_cells(r, now),
        )
        for r in rows
    ]
    return table(headers, body, right=(0, 1, 8, 9, 10), style=style, paint={3: "verdict"})


def _rate_cells(r: RuleRow, now: float | None) -> tuple[str, str]:
    if r.packets and r.last_hit is None:
        return "-", "-"  # one reading only: no rate yet, and the hits predate it
    return f"{r.rate:.1f}/s", ago(r.last_hit, now)


def stats_text(snap: StatsSnapshot, style: Style = PLAIN) -> str:
    t = snap.totals
    lines = [f"generation {snap.generation} at {timestamp(snap.time)}"]
    totals = [
        ("allowed by a rule", t.allowed),
        ("denied", t.denied),
        ("would deny (audit)", t.would_deny),
        ("fail-safe passed", t.failsafe),
        ("no rule matched", t.no_match),
        ("unparsed (passed)", t.unparsed),
        ("unconfigured (passed: no tables)", t.unconfigured),
    ]
    lines.append(
        table(
            ("NODE TOTAL", "PACKETS", "BYTES"),
            ((name, str(p), human_bytes(b)) for name, (p, b) in totals),
            right=(1, 2),
            style=style,
        )
    )
    lines.append(
        f"drop events: {t.events_sent} sent, {t.events_suppressed} suppressed by the "
        f"kernel rate limit, {t.events_lost} lost (ring buffer full)"
    )
    lines.append("")
    lines.append(rules_text(snap.rules, style, snap.time))
    return "\n".join(lines)


def history_text(items: Sequence[HistoryView]) -> str:
    if not items:
        return "no history yet"
    return table(
        ("GEN", "WHEN", "BY", "CHANGE"),
        (
            (
                f"{h.generation}{' *' if h.current else ''}",
                timestamp(h.time),
                printable(h.author),
                printable(h.summary),
            )
            for h in items
        ),
        right=(0,),
    )


def apply_text(
    res: ApplyResult, confirm_cmd: str = "infw confirm", now: float | None = None
) -> str:
    now = time.time() if now is None else now
    if not res.changed:
        lines = [f"unchanged: generation {res.generation} already has these {res.rule_count} rules"]
    else:
        lines = [
            f"applied generation {res.generation} ({res.rule_count} rules, was generation "
            f"{res.previous_generation})"
        ]
    lines += [f"warning: {w}" for w in res.warnings]
    if res.pending is not None:
        left = res.pending.remaining(now)
        lines.append(
            f"pending: run '{confirm_cmd}' within {left:.0f}s or it reverts to generation "
            f"{res.pending.previous_generation}"
        )
    return "\n".join(lines)


def event_text(ev: DropEvent, style: Style = PLAIN) -> str:
    parts = [
        clock(ev.time, millis=True),
        printable(ev.interface).ljust(8),
        style.verdict(ev.verdict.ljust(10)),
        f"rule {ev.rule_id}".ljust(9),
        ev.protocol.ljust(6),
        ev.endpoint_text(),
    ]
    if ev.vlan:
        parts.append(f"vlan {ev.vlan}")
    parts.append(f"len {ev.length}")
    if ev.fragment:
        parts.append("fragment")
    return "  ".join(parts)


def trace_text(tr: TraceResult, packet: str, style: Style = PLAIN) -> str:
    def rule(rule_id: int | None) -> str:
        return f"rule {rule_id}" if rule_id else "no rule"

    lines = [f"packet     {packet} on {printable(tr.interface)} ({tr.frame_len}-byte frame)"]
    if tr.kernel_verdict is None:
        lines.append("kernel     not loaded")
    else:
        lines.append(
            f"kernel     {style.verdict(tr.kernel_verdict)}  {rule(tr.kernel_rule_id)} "
            f"({tr.kernel_reason})"
        )
    # The explanation already starts with the verdict ("DENY by rule 3 (...)").
    verdict, explained = tr.reference_verdict, tr.explanation
    if explained.upper().startswith(verdict):
        explained = explained[len(verdict) :].lstrip(": ")
    lines.append(f"reference  {style.verdict(verdict)}  {explained}")
    if tr.kernel_verdict is not None:
        lines.append(
            "result     kernel and reference agree"
            if tr.agree
            else style.paint(
                "result     MISMATCH: the kernel and the reference disagree", BOLD + RED
            )
        )
    lines += [f"note       {n}" for n in tr.notes]
    return "\n".join(lines)


# ------------------------------------------------------------------ progress


class ProgressLine:
    """Shows the step a long call is on (compiling, attaching...) with its elapsed time.

    Use as a context manager; the object is the `progress` callback the engine takes. On a
    terminal a spinner keeps the current step visibly alive; elsewhere each step is one line.
    """

    FRAMES = "|/-\\"

    def __init__(self, stream: TextIO, spinner: bool) -> None:
        self.stream = stream
        self.spinner = spinner
        self._step: str | None = None
        self._started = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ProgressLine:
        if self.spinner:
            self._thread = threading.Thread(target=self._spin, name="infw-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._finish(failed=exc[0] is not None)

    def __call__(self, step: str) -> None:
        self._finish(failed=False)
        with self._lock:
            self._step, self._started = step, time.monotonic()
            if not self.spinner:
                self.stream.write(f"infw: {step} ...\n")
                self.stream.flush()

    def _finish(self, failed: bool) -> None:
        with self._lock:
            if self._step is None:
                return
            took = time.monotonic() - self._started
            if self.spinner:
                mark = "failed" if failed else "done"
                self.stream.write(f"\r\x1b[K{self._step}: {mark} ({took:.1f}s)\n")
                self.stream.flush()
            elif took >= 1.0:
                self.stream.write(
                    f"infw: {self._step}: {'failed' if failed else 'done'} ({took:.1f}s)\n"
                )
                self.stream.flush()
            self._step = None

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self._lock:
                if self._step is None:
                    continue
                took = time.monotonic() - self._started
                self.stream.write(f"\r\x1b[K{self.FRAMES[frame % 4]} {self._step} {took:.1f}s")
                self.stream.flush()
            frame += 1
