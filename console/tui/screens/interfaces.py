"""Interfaces: where the program is attached, in which XDP mode, and foreign programs; attach/detach."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Label, Select, SelectionList, Static
from textual.worker import get_current_worker

from console.tui.calls import EngineClient, call_engine, error_line
from console.tui.facade import EngineLike
from console.tui.screens.dialogs import ConfirmDialog
from console.tui.widgets.listing import Column, ListingTable
from engine import GuardRefusal, InfwError, InterfaceView, printable

ATTACH_MODES = ("auto", "native", "generic")


def program_text(view: InterfaceView | None) -> Text:
    if view is None or view.mode == "none":
        return Text("-", style="dim")
    if view.ours:
        return Text(f"infw (prog {view.prog_id})", style="green")
    return Text(f"FOREIGN (prog {view.prog_id})", style="bold magenta")


def error_text(exc: InfwError | OSError) -> Text:
    return Text(f"✗ {error_line(exc)}", style="bold red")


INTERFACE_COLUMNS = (
    Column("interface", "name", 16),
    Column("ifindex", "ifindex", 7),
    Column("XDP mode", "mode", 9),
    Column("program", "program"),
)


class AttachRunner:
    """Runs engine.attach in a thread (it may compile for seconds) and reports progress."""

    def __init__(self, screen: Screen[Any], status: Static) -> None:
        self.screen = screen
        self.status = status

    def progress(self, text: str) -> None:
        self.screen.app.call_from_thread(self.status.update, Text(f"… {text}", style="italic"))


class InterfacesScreen(EngineClient, ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,i", "close", "Close"),
        Binding("a", "attach", "Attach"),
        Binding("d", "detach", "Detach"),
        Binding("f", "force_attach", "Force attach (replace foreign)"),
    ]

    def __init__(self, engine: EngineLike, read_only: bool = False) -> None:
        super().__init__()
        self.engine = engine
        self.read_only = read_only
        self.views: dict[str, InterfaceView] = {}

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "Interfaces of this node and what XDP program sits on them", classes="title"
            )
            with Horizontal():
                yield Label("Attach mode")
                yield Select(
                    [(m, m) for m in ATTACH_MODES],
                    value="auto",
                    allow_blank=False,
                    compact=True,
                    id="if-mode",
                )
            yield ListingTable(INTERFACE_COLUMNS, id="if-table")
            yield Static(id="if-status")
            yield Footer()

    def on_mount(self) -> None:
        self.reload()
        self.query_one(DataTable).focus()

    def reload(self) -> None:
        table = self.query_one(DataTable)
        selected = table.cursor_row
        table.clear()
        try:
            names = self.engine.interfaces()
            self.views = {v.name: v for v in self.engine.status().interfaces}
        except InfwError as exc:
            self.query_one("#if-status", Static).update(error_text(exc))
            return
        for name, ifindex in sorted(names.items(), key=lambda kv: kv[1]):
            view = self.views.get(name)
            mode = view.mode if view else "none"
            table.add_row(printable(name), str(ifindex), mode, program_text(view), key=name)
        if table.row_count:
            table.move_cursor(row=min(selected, table.row_count - 1))

    def selected(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("attach", "detach", "force_attach") and self.read_only:
            return False
        if action == "force_attach":
            name = self.selected() if self.is_mounted else None
            view = self.views.get(name or "")
            return view is not None and not view.ours
        return True

    @on(DataTable.RowHighlighted)
    def _moved(self) -> None:
        self.refresh_bindings()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_attach(self, force: bool = False) -> None:
        name = self.selected()
        if name is None:
            return
        mode = str(self.query_one("#if-mode", Select).value)
        self.run_attach(name, mode, force)

    def action_force_attach(self) -> None:
        name = self.selected()
        if name is None:
            return
        view = self.views.get(name)

        def done(yes: bool | None) -> None:
            if yes:
                self.action_attach(force=True)

        self.app.push_screen(
            ConfirmDialog(
                f"Replace the foreign XDP program on {name}?",
                f"Program {view.prog_id if view else '?'} on {name} is not infw's. Replacing it removes "
                "whatever it does (another firewall, a load balancer...).",
                "Replace it",
                danger=True,
            ),
            done,
        )

    @work(thread=True, exclusive=True, group="attach")
    def run_attach(self, name: str, mode: str, force: bool) -> None:
        status = self.query_one("#if-status", Static)
        runner = AttachRunner(self, status)
        runner.progress(f"attaching to {name} ({mode})")
        try:
            self.engine.attach([name], mode=mode, force=force, progress=runner.progress)
        except GuardRefusal as exc:
            hint = " — press f to force" if exc.refusable else ""
            self.app.call_from_thread(
                status.update, Text(f"✗ refused: {exc.message}{hint}", style="bold red")
            )
            return
        except InfwError as exc:
            self.app.call_from_thread(status.update, error_text(exc))
            return
        if not get_current_worker().is_cancelled:
            self.app.call_from_thread(
                status.update, Text(f"✓ attached to {name}", style="bold green")
            )
            self.app.call_from_thread(self.reload)

    def action_detach(self) -> None:
        name = self.selected()
        if name is None:
            return
        view = self.views.get(name)
        if view is None or not view.ours:
            self.query_one("#if-status", Static).update(
                Text(f"infw is not attached to {name}", style="yellow")
            )
            return

        def done(yes: bool | None) -> None:
            if not yes:
                return
            call_engine(
                self,
                f"detaching from {name}",
                partial(self.engine.detach, [name]),
                detached,
                lambda exc: self.query_one("#if-status", Static).update(error_text(exc)),
            )

        def detached(names: list[str]) -> None:
            self.query_one("#if-status", Static).update(
                Text(
                    f"✓ detached from {', '.join(names) or name}: its traffic is no longer filtered",
                    style="bold",
                )
            )
            self.reload()

        self.app.push_screen(
            ConfirmDialog(
                f"Detach from {name}?",
                f"Traffic on {name} will no longer be filtered.",
                "Detach",
                danger=True,
            ),
            done,
        )


class AttachScreen(ModalScreen[bool]):
    """Shown at start when no firewall is loaded: choose interfaces to protect, or just look."""

    BINDINGS = [Binding("escape", "skip", "Continue without attaching")]

    def __init__(self, engine: EngineLike, on_done: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.on_done = on_done
        self.refusal: GuardRefusal | None = None

    def compose(self) -> ComposeResult:
        try:
            names = sorted(self.engine.interfaces())
        except InfwError:
            names = []
        with Vertical():
            yield Static("No infw firewall is loaded on this node", classes="title")
            yield Static(
                "Choose the interfaces to protect. infw compiles its XDP program once (a few seconds), "
                "attaches it and enforces the stored rules (none yet: everything passes until you add rules)."
            )
            yield SelectionList[str](
                *[(printable(n), n) for n in names if n != "lo"], id="attach-list"
            )
            with Horizontal():
                yield Label("XDP mode")
                yield Select(
                    [(m, m) for m in ATTACH_MODES],
                    value="auto",
                    allow_blank=False,
                    compact=True,
                    id="attach-mode",
                )
            with Horizontal():
                yield Button("Attach", variant="primary", id="attach")
                yield Button("Force attach", variant="error", id="force", disabled=True)
                yield Button("Continue without attaching (esc)", id="skip")
            yield Static(id="attach-status")

    @on(Button.Pressed, "#skip")
    def action_skip(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#attach")
    def _attach_pressed(self) -> None:
        self._start(force=False)

    @on(Button.Pressed, "#force")
    def _force_pressed(self) -> None:
        self._start(force=True)

    def _start(self, force: bool) -> None:
        chosen = list(self.query_one(SelectionList).selected)
        status = self.query_one("#attach-status", Static)
        if not chosen:
            status.update(Text("✗ select at least one interface (space toggles)", style="bold red"))
            return
        mode = str(self.query_one("#attach-mode", Select).value)
        self.run_attach([str(c) for c in chosen], mode, force)

    @work(thread=True, exclusive=True, group="attach")
    def run_attach(self, names: list[str], mode: str, force: bool) -> None:
        status = self.query_one("#attach-status", Static)
        runner = AttachRunner(self, status)
        try:
            self.engine.attach(names, mode=mode, force=force, progress=runner.progress)
        except GuardRefusal as exc:
            self.app.call_from_thread(status.update, error_text(exc))
            self.app.call_from_thread(
                setattr, self.query_one("#force", Button), "disabled", not exc.refusable
            )
            return
        except InfwError as exc:
            self.app.call_from_thread(status.update, error_text(exc))
            return
        self.app.call_from_thread(self.dismiss, True)
