"""The history view: every applied generation, who applied it and why; `r` goes back one step."""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Static

from console.format import relative_time
from console.tui.calls import EngineClient, call_engine
from console.tui.facade import EngineLike
from console.tui.screens.dialogs import ConfirmDialog
from console.tui.widgets.listing import Column, ListingTable
from engine import ApplyResult, InfwError, printable

HISTORY_COLUMNS = (
    Column("gen", "gen", 5),
    Column("when", "when", 9),
    Column("author", "author", 14),
    Column("summary", "summary"),
)


class HistoryScreen(EngineClient, ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,h", "close", "Close"),
        Binding("r", "revert", "Revert one generation"),
    ]

    def __init__(
        self, engine: EngineLike, clock: Callable[[], float], read_only: bool = False
    ) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("History: applied generations (newest first)", classes="title")
            yield ListingTable(HISTORY_COLUMNS, id="history")
            yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.query_one(DataTable).focus()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        now = self.clock()
        try:
            entries = self.engine.history()
        except InfwError as exc:
            self.notify(exc.fix or "", title=exc.message, severity="error")
            return
        for h in entries:
            gen = Text(
                f"{h.generation}{' ◀' if h.current else ''}", style="bold" if h.current else ""
            )
            summary = Text(
                printable(h.summary) + ("  (current)" if h.current else ""),
                style="bold" if h.current else "",
            )
            table.add_row(
                gen, relative_time(h.time, now), printable(h.author), summary, key=str(h.generation)
            )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return not (action == "revert" and self.read_only)

    def action_close(self) -> None:
        self.dismiss(None)

    def action_revert(self) -> None:
        pending = self.engine.status().pending
        body = (
            f"Drop pending generation {pending.generation} and restore {pending.previous_generation}."
            if pending
            else "Re-apply the previous generation's rules (applied at once, as a new generation)."
        )

        def done(yes: bool | None) -> None:
            if not yes:
                return
            call_engine(self, "reverting", self.engine.revert, reverted, failed)

        def reverted(result: ApplyResult) -> None:
            self.notify(
                f"now at generation {result.generation} ({result.rule_count} rules)",
                title="reverted",
            )
            self.reload()

        def failed(exc: InfwError | OSError) -> None:
            if isinstance(exc, InfwError):
                self.notify(exc.fix or "", title=exc.message, severity="error")
            else:
                self.notify(str(exc), title="revert failed", severity="error")

        self.app.push_screen(ConfirmDialog("Revert?", body, "Revert", danger=True), done)
