"""infw-tui: the live console. Rules with counters, drop events, edits, all through engine.Engine.

The app holds no firewall logic; it renders the engine's views and calls the engine's methods,
so anything done here can be done from the REPL or the CLI the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Input

from console.format import human_count
from console.tui import keys
from console.tui.calls import EngineClient, call_engine, error_line, shutting_down
from console.tui.engine_thread import EngineThread
from console.tui.facade import EngineLike, EventSourceLike
from console.tui.screens.dialogs import ConfirmDialog, ExportScreen, HelpScreen, QuitDialog
from console.tui.screens.flows import (
    FlowChoice,
    FlowsScreen,
    allow_port_values,
    deny_source_values,
    flow_trace_fields,
)
from console.tui.screens.history import HistoryScreen
from console.tui.screens.interfaces import AttachScreen, InterfacesScreen
from console.tui.screens.rule_form import FormValues, RuleForm, free_order
from console.tui.screens.trace import TRACE_PROTOCOLS, TraceDialog, TracePacket
from console.tui.widgets.busy import BusyLine
from console.tui.widgets.cells import rule_summary
from console.tui.widgets.events_pane import EventLog, EventPane
from console.tui.widgets.footer import KeyFooter
from console.tui.widgets.header import DisconnectedBanner, FittedStatic, PendingBanner, StatusHeader
from console.tui.widgets.rules import HIT_MARK, RulesTable
from engine import (
    ApplyResult,
    DropEvent,
    FirewallUnreachable,
    InfwError,
    RuleRow,
    StatsSnapshot,
    Status,
)

T = TypeVar("T")

EDIT_ACTIONS = frozenset({"add", "edit", "delete", "reorder", "mode", "confirm", "revert"})
NEEDS_RULE = frozenset({"edit", "delete", "reorder"})
NEEDS_PENDING = frozenset({"confirm", "revert"})
BACKLOG_S = 10.0  # drops from before the console opened that are still worth showing


@dataclass(frozen=True)
class StatsReading:
    """One counters reading from the worker: the snapshot, and what the pending change (if
    any) drops now, measured in the same worker (no engine call on the event loop)."""

    snapshot: StatsSnapshot
    drops: str = ""


class FilterInput(Input):
    """The `/` bar; esc clears the filter and closes it."""

    BINDINGS = [Binding("escape", "cancel_filter", "Clear filter", show=False)]

    def action_cancel_filter(self) -> None:
        app = self.app
        if isinstance(app, InfwApp):
            app.close_filter(clear=True)


class InfwApp(EngineClient, App[str]):
    """The live console over one engine (in tests, the real Engine over the fake kernel)."""

    TITLE = "infw"
    ENABLE_COMMAND_PALETTE = True
    CSS_PATH = "infw.tcss"  # every style of the console, in one file
    BINDINGS = keys.BINDINGS

    def __init__(
        self,
        engine: EngineLike,
        *,
        clock: Callable[[], float] = time.time,
        read_only: bool | None = None,
        stats_interval: float = 1.0,
        events_interval: float = 0.1,
        offer_attach: bool = True,
        events_per_second: int = 200,
    ) -> None:
        super().__init__()
        self.engine_thread = EngineThread(engine)
        self.engine: EngineLike = self.engine_thread
        self.clock = clock
        self.read_only = bool(engine.read_only if read_only is None else read_only)
        self.stats_interval = stats_interval
        self.events_interval = events_interval
        self.offer_attach = offer_attach
        self.events_per_second = events_per_second
        self.status: Status | None = None
        self.snapshot: StatsSnapshot | None = None
        self.disconnected: str | None = None
        self.event_source: EventSourceLike | None = None
        self._events_error: str | None = None
        self._last_events_try = 0.0
        self._events_opened = 0.0
        self._first_poll = False
        self._sampled_base = 0
        self._last_stats = float("-inf")
        self._pending_gen: int | None = None
        self._banner_state: tuple[int | None, int, str] = (None, -1, "")
        self._pending_drops = ""  # what the pending change drops now, from its counters
        self._filter_target = "rules"
        self._expected_pending_end: int | None = None
        # Refreshes in flight: a tick while one waits starts no second one (no pile-up
        # behind an engine that is slow or waiting for the state lock).
        self._fetching: set[str] = set()
        self._changing: str | None = None  # the change on its way to the engine, if any
        self._again: set[str] = set()
        self._after_stats: list[Callable[[], None]] = []  # once the next counters are shown

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status-header")
        yield PendingBanner(id="pending-banner")
        yield DisconnectedBanner(id="disconnected")
        yield BusyLine(getattr(self.engine_thread.wrapped, "lock_holder", None), id="busy")
        yield FittedStatic(id="rules-title")
        yield RulesTable(self.clock, id="rules")
        yield EventPane(id="events")
        yield FilterInput(placeholder="filter…", id="filter")
        yield KeyFooter()

    @property
    def table(self) -> RulesTable:
        return self.query_one(RulesTable)

    @property
    def event_pane(self) -> EventPane:
        return self.query_one(EventPane)

    def on_mount(self) -> None:
        self.table.focus()
        self.refresh_status(first=True)
        self.refresh_stats()
        self.set_interval(self.stats_interval, self.tick, name="stats")
        self.set_interval(self.events_interval, self.poll_events, name="events")

    async def on_unmount(self) -> None:
        self.engine_thread.close()

    def _attach_done(self, attached: bool | None) -> None:
        if attached:
            self.notify("the firewall is loaded and attached", title="attached")
        self.refresh_all()

    # ------------------------------------------------------------------ refresh

    def tick(self) -> None:
        self.refresh_status()
        self.refresh_stats()
        if self.event_source is None and self.clock() - self._last_events_try >= 3.0:
            self.open_events()
        self.check_other_reader()

    def fetch(self, what: str, label: str, fn: Callable[[], T], done: Callable[[T], None]) -> None:
        """One refresh in a worker. Asked again while one is on its way (an edit's refresh
        while a tick's waits), it runs once more when that one lands, whose answer may predate
        the edit and is dropped: never a pile-up, never a stale table after a change."""
        if what in self._fetching:
            self._again.add(what)
            return
        self._fetching.add(what)

        def arrived(value: T) -> None:
            self._fetching.discard(what)
            if what in self._again:
                self._again.discard(what)
                self.fetch(what, label, fn, done)
                return
            done(value)

        def failed(exc: InfwError | OSError) -> None:
            self._fetching.discard(what)
            self._again.discard(what)
            self._set_disconnected(exc)
            if what == "events":
                self.event_source = None

        call_engine(self, label, fn, arrived, failed)

    def check_other_reader(self) -> None:
        """Another console reading the same drop events splits them with this one: say so."""
        source = self.event_source
        if source is None:
            self.event_pane.set_shared_with(None)
            return

        def ask() -> int | None:
            try:
                return source.other_reader()
            except (InfwError, OSError):
                return None

        self.fetch(
            "reader", "checking for other event readers", ask, self.event_pane.set_shared_with
        )

    def refresh_all(self) -> None:
        self.refresh_status()
        self.refresh_stats()
        if self.event_source is None:
            self.open_events()

    def refresh_status(self, *, first: bool = False) -> None:
        self.fetch(
            "status",
            "reading the status",
            self.engine.status,
            partial(self.show_status, first=first),
        )

    def show_status(self, status: Status, *, first: bool = False) -> None:
        previous = self.status
        self.status = status
        self.query_one(StatusHeader).show(status)
        pending_gen = status.pending.generation if status.pending else None
        expired = (
            previous is not None
            and self._pending_gen is not None
            and pending_gen is None
            and self._expected_pending_end != self._pending_gen
        )
        if expired:
            self.notify(
                f"generation {self._pending_gen} was not confirmed in time: the previous rules are back "
                f"(now generation {status.generation})",
                title="reverted by the watchdog",
                severity="warning",
                timeout=15,
            )
        if pending_gen != self._pending_gen:
            self._pending_gen = pending_gen
            self._expected_pending_end = None
            self.refresh_bindings()
        self.update_banner()
        if first:
            self.open_events()
            if not status.loaded and not self.read_only and self.offer_attach:
                self.push_screen(AttachScreen(self.engine), self._attach_done)

    def update_banner(self) -> None:
        status = self.status
        pending = status.pending if status else None
        left = int(pending.remaining(self.clock()) + 0.999) if pending else -1
        drops = self._pending_drops if pending else ""
        state = (pending.generation if pending else None, left, drops)
        if state == self._banner_state:
            return
        self._banner_state = state
        self.query_one(PendingBanner).show(state[0], max(left, 0), self.read_only, drops)

    def refresh_stats(self) -> None:
        self.fetch("stats", "reading the counters", self._read_stats, self.show_stats)

    def _read_stats(self) -> StatsReading | tuple[FirewallUnreachable, tuple[RuleRow, ...]]:
        """The counters and what a pending change drops now; with nothing loaded, the stored
        rules and the reason (worker thread)."""
        try:
            snapshot = self.engine.stats()
        except FirewallUnreachable as exc:
            return exc, tuple(self.engine.rule_rows())
        try:
            drops = self.engine.pending_drops(snapshot)  # None: nothing is pending
        except (InfwError, OSError):
            drops = None
        return StatsReading(snapshot, drops.text() if drops is not None else "")

    def show_stats(
        self, reading: StatsReading | tuple[FirewallUnreachable, tuple[RuleRow, ...]]
    ) -> None:
        if isinstance(reading, tuple):
            # Nothing loaded: the stored rules, with the reason where counters would be.
            unreachable, rows = reading
            self._set_disconnected(unreachable)
            self.table.show(rows, live=False)
            self._render_rules_title()
            return
        snapshot = reading.snapshot
        if self.disconnected is not None:
            self.disconnected = None
            self.query_one(DisconnectedBanner).show(None)
        self.snapshot = snapshot
        # A reading soon after the last one (refresh_all after an edit) has counters over a
        # fraction of a second: it brings new and removed rules, not rates or hit marks.
        now = self.clock()
        live = now - self._last_stats >= min(0.5, self.stats_interval / 2)
        if live:
            self._last_stats = now
        self.table.show(snapshot.rules, live=live)
        self._render_rules_title()
        self._pending_drops = reading.drops
        self.update_banner()
        totals = snapshot.totals
        self.event_pane.set_counts(totals.events_suppressed, totals.events_lost, self._sampled())
        after, self._after_stats = self._after_stats, []
        for then in after:
            then()

    def _set_disconnected(self, exc: Exception) -> None:
        text = exc.message if isinstance(exc, InfwError) else str(exc)
        self.disconnected = text
        self.query_one(DisconnectedBanner).show(text)

    def _render_rules_title(self) -> None:
        self.query_one("#rules-title", FittedStatic).set_variants(self._rules_title_variants)

    def _rules_title_variants(self) -> list[Text]:
        """The line above the table, most detailed first (narrow terminals drop the extras).

        When the width leaves columns out, the line says so (and that a wider terminal shows
        them), so a missing bytes or last-hit column is never a silent loss."""
        snap = self.snapshot
        table = self.table
        total = len(table.all_rows)
        shown = len(table.rows_by_key)
        hidden = table.hidden_columns
        n = len(hidden)
        plural = "s" if n != 1 else ""
        hints = {
            "long": f"{n} column{plural} hidden ({', '.join(hidden)}) — widen the terminal",
            "medium": f"{n} column{plural} hidden — widen the terminal",
            "short": f"{n} col{plural} hidden: widen",
        }

        def build(*, extras: bool, legend: bool, sort_word: bool, hint: str = "") -> Text:
            title = Text()
            title.append(f" Rules {shown}" + (f"/{total}" if shown != total else ""), style="bold")
            arrow = "▼" if table.sort_reverse else "▲"
            title.append(f"  {'sort ' if sort_word else ''}{table.sort_column}{arrow}")
            if table.filter_text:
                title.append(f"  filter '{table.filter_text}'", style="bold cyan")
            if snap is not None:
                t = snap.totals
                title.append("  │ allowed ", style="dim")
                title.append(human_count(t.allowed[0]), style="green")
                title.append(" · denied ", style="dim")
                title.append(human_count(t.denied[0]), style="red")
                if t.would_deny[0]:
                    title.append(" · would-deny ", style="dim")
                    title.append(human_count(t.would_deny[0]), style="yellow")
                if extras:
                    title.append(" · fail-safe ", style="dim")
                    title.append(human_count(t.failsafe[0]))
                    title.append(" · no-match ", style="dim")
                    title.append(human_count(t.no_match[0]))
                    if t.unparsed[0]:
                        title.append(" · unparsed ", style="dim")
                        title.append(human_count(t.unparsed[0]))
            if legend:
                title.append("  ")
                title.append(HIT_MARK, style="bold yellow")
                title.append(" hit now", style="dim")
            if n and hint:
                title.append(f"  │ {hints[hint]}", style="dim italic")
            return title

        return [
            build(extras=True, legend=True, sort_word=True, hint="long"),
            build(extras=True, legend=True, sort_word=True, hint="medium"),
            build(extras=True, legend=False, sort_word=True, hint="medium"),
            build(extras=False, legend=True, sort_word=True, hint="medium"),
            build(extras=False, legend=False, sort_word=True, hint="medium"),
            build(extras=False, legend=True, sort_word=True, hint="short"),
            build(extras=False, legend=False, sort_word=False, hint="short"),
        ]

    @on(RulesTable.ColumnsChanged)
    def _columns_changed(self) -> None:
        if not shutting_down(self):  # a resize's message landing as the app closes
            self._render_rules_title()

    def open_events(self) -> None:
        self._last_events_try = self.clock()
        status = self.status
        if status is not None and not status.loaded:
            return
        if "open-events" in self._fetching:
            return
        self._fetching.add("open-events")

        def opened(source: EventSourceLike) -> None:
            self._fetching.discard("open-events")
            self.event_source = source
            self._events_error = None
            self._events_opened = self.clock()
            self._first_poll = True
            self.check_other_reader()

        def failed(exc: InfwError | OSError) -> None:
            self._fetching.discard("open-events")
            self.event_source = None
            self._events_error = exc.message if isinstance(exc, InfwError) else str(exc)

        call_engine(
            self,
            "opening the drop events",
            partial(self.engine.open_events, self.events_per_second),
            opened,
            failed,
        )

    def poll_events(self) -> None:
        self.update_banner()  # the countdown runs on the clock, whatever the engine does
        source = self.event_source
        if source is None:
            return
        self.fetch(
            "events", "reading drop events", partial(source.poll, timeout_ms=0), self.show_events
        )

    def show_events(self, fresh: list[DropEvent]) -> None:
        source = self.event_source
        if source is None:
            return
        if self._first_poll:
            # The ring buffer may hold minutes of drops from before the console opened, read over
            # a few polls: show the last seconds of them, and count as sampled only what is
            # skipped once the console has caught up.
            recent = [ev for ev in fresh if ev.time >= self._events_opened - BACKLOG_S]
            self._first_poll = len(recent) < len(fresh) or not fresh
            fresh = recent
            self._sampled_base = source.buffer.counts.sampled_out
        pane = self.event_pane
        pane.add(fresh)
        if fresh or not pane.paused:
            pane.set_counts(pane.counts[0], pane.counts[1], self._sampled())

    def _sampled(self) -> int:
        source = self.event_source
        return source.buffer.counts.sampled_out - self._sampled_base if source else 0

    # ------------------------------------------------------------------ key availability

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in EDIT_ACTIONS and self.read_only:
            return False
        if action in NEEDS_PENDING:
            return self.status is not None and self.status.pending is not None
        if action in NEEDS_RULE:
            tables = self.screen_stack[0].query(RulesTable) if self.screen_stack else None
            return True if tables and tables.first().selected_rule() is not None else None
        return True

    @on(RulesTable.RowHighlighted)
    def _row_moved(self) -> None:
        if not shutting_down(self):  # the cursor's message landing as the app closes
            self.refresh_bindings()

    # ------------------------------------------------------------------ helpers

    def report(self, exc: InfwError | OSError, title: str | None = None) -> None:
        if isinstance(exc, InfwError):
            message, fix = exc.message, exc.fix
        else:
            message, _, fix = error_line(exc).partition(" — ")
        self.notify(fix or " ", title=title or message, severity="error", timeout=10)

    def change(
        self,
        what: str,
        fn: Callable[[], T],
        done: Callable[[T], None],
        failed: Callable[[InfwError | OSError], None] | None = None,
    ) -> None:
        """One change at a time, in a worker: a second key while one waits (say, for the state
        lock) says what it waits for instead of queueing a change the operator can't see."""
        if self._changing is not None:
            self.notify(f"still {self._changing}: wait for it to finish", severity="warning")
            return
        self._changing = what

        def finished(value: T) -> None:
            self._changing = None
            done(value)

        def refused(exc: InfwError | OSError) -> None:
            self._changing = None
            (failed or self.report)(exc)

        call_engine(self, what, fn, finished, refused)

    def confirm_timeout(self) -> float:
        return float(getattr(self.engine.config, "confirm_timeout", 60.0))

    def applied(self, result: ApplyResult | None, what: str = "applied") -> None:
        if result is None:
            return
        if result.pending is not None:
            left = result.pending.remaining(self.clock())
            self.notify(
                f"press c within {left:.0f}s to keep it, r to revert now",
                title=f"{what}: generation {result.generation} PENDING CONFIRM",
                severity="warning",
                timeout=8,
            )
        else:
            self.notify(f"generation {result.generation}, {result.rule_count} rules", title=what)
        for warning in result.warnings:
            self.notify(warning, title="warning", severity="warning", timeout=10)
        self.refresh_all()

    def default_interfaces(self) -> str:
        status = self.status
        if status is None:
            return ""
        names = [v.name for v in status.interfaces if v.ours]
        return ", ".join(names)

    # ------------------------------------------------------------------ actions

    def action_add(self) -> None:
        form = RuleForm(
            self.engine,
            initial=FormValues(
                interfaces=self.default_interfaces(),
                order=str(free_order(r.order for r in self.table.all_rows)),
            ),
            confirm_timeout=self.confirm_timeout(),
            other_rule_ids={r.rule_id for r in self.table.all_rows},
        )
        before = {r.rule_id for r in self.table.all_rows}

        def done(result: ApplyResult | None) -> None:
            self.applied(result, "rule added")
            if result is not None:  # put the cursor on the new rule, to watch it take hits
                self._after_stats.append(partial(self._select_new_rule, before))

        self.push_screen(form, done)

    def _select_new_rule(self, before: set[int]) -> None:
        fresh = [r.rule_id for r in self.table.all_rows if r.rule_id not in before]
        if fresh:
            self.table.select_rule_id(min(fresh))

    def action_edit(self) -> None:
        row = self.table.selected_rule()
        if row is None:
            return
        form = RuleForm(
            self.engine,
            row=row,
            confirm_timeout=self.confirm_timeout(),
            other_rule_ids={r.rule_id for r in self.table.all_rows if r.rule_id != row.rule_id},
        )
        self.push_screen(form, partial(self.applied, what=f"rule {row.rule_id} edited"))

    def action_delete(self) -> None:
        row = self.table.selected_rule()
        if row is None:
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            self.change(
                f"deleting rule {row.rule_id}",
                partial(
                    self.engine.delete_rule, row.rule_id, confirm_timeout=self.confirm_timeout()
                ),
                partial(self.applied, what=f"rule {row.rule_id} deleted"),
            )

        self.push_screen(
            ConfirmDialog(
                f"Delete rule {row.rule_id}?",
                f"{rule_summary(row)}\n\nApplied commit-confirmed: it comes back unless you confirm.",
                "Delete",
                danger=True,
            ),
            done,
        )

    def action_reorder(self, delta: int) -> None:
        row = self.table.selected_rule()
        if row is None:
            return
        engine = self.engine
        timeout = self.confirm_timeout()

        def move() -> tuple[int, ApplyResult]:
            # The engine picks the order (past every order the block uses, within bounds).
            order = engine.reorder_target(row.rule_id, delta)
            return order, engine.reorder_rule(row.rule_id, delta, confirm_timeout=timeout)

        def moved(done: tuple[int, ApplyResult]) -> None:
            order, result = done
            self.applied(result, f"rule {row.rule_id} now order {order}")
            self._after_stats.append(partial(self._select_moved, row, order))

        self.change(f"moving rule {row.rule_id}", move, moved)

    def _select_moved(self, row: RuleRow, order: int) -> None:
        """The cursor follows a moved rule: found by its block and new order, since the store
        names a rule by (object, sources, order) and so gives a moved rule a new id."""
        for r in self.table.all_rows:
            if r.firewall == row.firewall and set(r.cidrs) == set(row.cidrs) and r.order == order:
                self.table.select_rule_id(r.rule_id)
                return

    def action_confirm(self) -> None:
        def kept(generation: int) -> None:
            self.notify(f"generation {generation} is kept", title="confirmed")
            self.refresh_all()

        self._expected_pending_end = self._pending_gen
        self.change("confirming", self.engine.confirm, kept)

    def action_revert(self) -> None:
        def reverted(result: ApplyResult) -> None:
            self.notify(
                f"back to the previous rules (generation {result.generation})", title="reverted"
            )
            self.refresh_all()

        self._expected_pending_end = self._pending_gen
        self.change("reverting", self.engine.revert, reverted)

    def action_mode(self) -> None:
        current = self.status.mode if self.status else "enforce"
        target = "audit" if current == "enforce" else "enforce"
        body = (
            "AUDIT: nothing is dropped any more. Deny verdicts are only counted and shown as WOULD DENY."
            if target == "audit"
            else "ENFORCE: Deny rules drop packets again, from now on."
        )

        def done(yes: bool | None) -> None:
            if not yes:
                return

            def switched(_: str) -> None:
                self.notify(f"mode is now {target.upper()}", title="mode switched")
                self.refresh_all()

            self.change(f"switching to {target}", partial(self.engine.set_mode, target), switched)

        self.push_screen(
            ConfirmDialog(f"Switch to {target.upper()}?", body, f"Switch to {target}"), done
        )

    def action_trace(self) -> None:
        def listed(interfaces: dict[str, int]) -> None:
            # ours first: a foreign program's interface is no default for tracing infw's rules
            views = self.status.interfaces if self.status else ()
            attached = [v.name for v in views if v.ours] or [v.name for v in views]
            self.push_screen(
                TraceDialog(self.engine, sorted(interfaces), attached[0] if attached else None)
            )

        call_engine(self, "listing interfaces", self.engine.interfaces, listed, self.report)

    def action_flows(self) -> None:
        """k9s-style view switch: the Flows view, back with f; on a flow, d/a open the rule
        form pre-filled and t traces it."""
        self.push_screen(FlowsScreen(self.engine, self.clock), self._flow_chosen)

    def _flow_chosen(self, choice: FlowChoice | None) -> None:
        if choice is None:
            return
        flow = choice.flow
        if choice.kind == "trace":
            proto, dport, icmp_type, icmp_code = flow_trace_fields(flow)
            if proto not in TRACE_PROTOCOLS:
                self.notify(f"{flow.key.match_text()} can't be traced here", severity="warning")
                return
            names = sorted(self.engine.interfaces())
            packet = TracePacket(flow.key.source, proto, dport, icmp_type, icmp_code)
            self.push_screen(TraceDialog(self.engine, names, flow.key.interface, packet))
            return
        if self.read_only:
            self.notify("this console is read-only", severity="warning")
            return
        order = str(free_order(r.order for r in self.table.all_rows))
        make = deny_source_values if choice.kind == "deny" else allow_port_values
        form = RuleForm(
            self.engine,
            initial=make(flow, order),
            confirm_timeout=self.confirm_timeout(),
            other_rule_ids={r.rule_id for r in self.table.all_rows},
        )
        self.push_screen(form, partial(self.applied, what="rule added from a flow"))

    def action_interfaces(self) -> None:
        self.push_screen(
            InterfacesScreen(self.engine, self.read_only), lambda _: self.refresh_all()
        )

    def action_history(self) -> None:
        self.push_screen(
            HistoryScreen(self.engine, self.clock, self.read_only), lambda _: self.refresh_all()
        )

    def action_export(self) -> None:
        def exported(text: str) -> None:
            self.push_screen(ExportScreen(text))

        call_engine(self, "exporting the rules", self.engine.export_yaml, exported, self.report)

    def action_help(self) -> None:
        failsafe = (
            self.status.failsafe
            if self.status
            else tuple(str(f) for f in self.engine.config.failsafe)
        )
        notes = []
        if self.read_only:
            notes.append("\nThis console is read-only: edit keys are off.")
        self.push_screen(HelpScreen(keys.HELP, failsafe, notes))

    def action_sort(self) -> None:
        self.table.cycle_sort()
        self._render_rules_title()

    def action_sort_reverse(self) -> None:
        table = self.table
        table.set_sort(table.sort_column, not table.sort_reverse)
        self._render_rules_title()

    def action_pause(self) -> None:
        paused = self.event_pane.toggle_pause()
        self.notify(
            "drop events paused (p resumes)" if paused else "following drop events", timeout=2
        )

    def action_filter(self) -> None:
        focused = self.focused
        self._filter_target = "events" if isinstance(focused, EventLog) else "rules"
        bar = self.query_one(FilterInput)
        current = (
            self.event_pane.filter_text
            if self._filter_target == "events"
            else self.table.filter_text
        )
        bar.placeholder = f"filter {'drop events' if self._filter_target == 'events' else 'rules'} (enter keeps, esc clears)"
        bar.value = current
        bar.set_class(True, "-shown")
        bar.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self) -> None:
        self.close_filter(clear=False)

    def apply_filter(self, text: str) -> None:
        if self._filter_target == "events":
            self.event_pane.set_filter(text)
        else:
            self.table.set_filter(text)
            self._render_rules_title()

    def close_filter(self, *, clear: bool) -> None:
        bar = self.query_one(FilterInput)
        if clear:
            bar.value = ""
            self.apply_filter("")
        bar.set_class(False, "-shown")
        if self._filter_target == "events":
            self.query_one(EventLog).focus()
        else:
            self.table.focus()

    def quit_message(self, confirmed: int | None = None) -> str:
        """What the shell shows once the console is gone: the firewall keeps running, and a
        change still pending (it reverts unless confirmed) on a line of its own."""
        status = self.status
        if status is None:
            return "infw-tui closed; the firewall (if loaded) keeps running"
        if not status.loaded:
            return f"infw-tui closed; no firewall is loaded here ({status.rule_count} rules stored)"
        ifaces = ", ".join(v.name for v in status.interfaces if v.ours) or "no interfaces"
        text = (
            f"infw-tui closed; the firewall keeps running ({status.rule_count} rules on {ifaces})"
        )
        if confirmed is not None:
            text += f"\ngeneration {confirmed} is confirmed"
        if status.pending is not None:
            left = status.pending.remaining(self.clock())
            text += (
                f"\nwarning: generation {status.pending.generation} is still pending: it reverts in "
                f"{left:.0f}s unless you run 'infw confirm'"
            )
        return text

    def action_quit_console(self) -> None:
        """q: quit; with a change of ours pending, ask first (quit anyway, confirm and quit)."""
        if isinstance(self.screen, QuitDialog):
            return
        # The last status (at most a refresh old): q answers even while the engine is busy.
        status = self.status
        pending = status.pending if status is not None else None
        if pending is None or self.read_only:
            self.exit(self.quit_message())
            return

        def done(choice: str | None) -> None:
            if choice == "quit":
                self.exit(self.quit_message())
            elif choice == "confirm":

                def confirmed(generation: int) -> None:
                    self.fetch(
                        "status",
                        "reading the status",
                        self.engine.status,
                        lambda status: self._quit_confirmed(status, generation),
                    )

                def failed(exc: InfwError | OSError) -> None:
                    self.report(exc, title="could not confirm: the console stays open")
                    self.refresh_all()

                self._expected_pending_end = self._pending_gen
                self.change("confirming", self.engine.confirm, confirmed, failed)

        self.push_screen(
            QuitDialog(pending.generation, lambda: pending.remaining(self.clock())), done
        )

    def _quit_confirmed(self, status: Status, generation: int) -> None:
        self.show_status(status)
        self.exit(self.quit_message(confirmed=generation))

    async def action_quit(self) -> None:
        """ctrl+q quits the same way q does (it asks while a change is pending)."""
        self.action_quit_console()

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for key in keys.PALETTE:
            if self.check_action(key.name, ()):
                yield SystemCommand(
                    f"infw: {key.palette}", key.palette_help, partial(self.run_action, key.action)
                )
