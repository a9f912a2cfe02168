"""Small modal screens: yes/no confirmation, YAML export, help."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea


class ConfirmDialog(ModalScreen[bool]):
    """Ask before something that changes what the firewall does."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, yes: str = "Yes", *, danger: bool = False) -> None:
        super().__init__()
        self.title_text, self.body, self.yes, self.danger = title, body, yes, danger

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, classes="title")
            yield Static(self.body)
            with Horizontal():
                yield Button(
                    f"{self.yes} (y)", variant="error" if self.danger else "primary", id="yes"
                )
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class QuitDialog(ModalScreen[str | None]):
    """Quitting while a change waits for its confirmation: quit anyway, confirm and quit, stay.

    Dismisses with "quit", "confirm" (confirm, then quit) or None (stay); the countdown runs."""

    BINDINGS = [
        Binding("y", "choose('quit')", "Quit anyway"),
        Binding("c", "choose('confirm')", "Confirm and quit"),
        Binding("n,escape", "choose('')", "Stay"),
    ]

    def __init__(
        self, generation: int, remaining: Callable[[], float], *, can_confirm: bool = True
    ) -> None:
        super().__init__()
        self.generation = generation
        self.remaining = remaining
        self.can_confirm = can_confirm

    def body_text(self) -> str:
        left = max(0, int(self.remaining() + 0.999))
        when = f"reverts in {left}s" if left else "is being reverted now"
        return (
            f"Generation {self.generation} is pending and {when} unless confirmed — "
            "quit anyway? [y/N]\n\nThe firewall keeps running either way."
        )

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Quit infw-tui with a change pending?", classes="title")
            yield Static(self.body_text(), id="quit-body")
            with Horizontal():
                yield Button("Quit anyway (y)", variant="error", id="quit")
                if self.can_confirm:
                    yield Button("Confirm and quit (c)", variant="primary", id="confirm")
                yield Button("Stay (n)", id="stay")

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        self.query_one("#quit-body", Static).update(self.body_text())

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.action_choose(event.button.id if event.button.id != "stay" else "")

    def action_choose(self, choice: str | None) -> None:
        if choice == "confirm" and not self.can_confirm:
            return
        self.dismiss(choice or None)


class ExportScreen(ModalScreen[None]):
    """The rules as IngressNodeFirewall YAML, the same schema the operator takes; save to a file."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+s", "save", "Save"),
    ]

    def __init__(self, yaml_text: str, default_path: str = "infw-rules.yaml") -> None:
        super().__init__()
        self.yaml_text = yaml_text
        self.default_path = default_path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "Export: IngressNodeFirewall YAML (round-trips with 'infw apply -f')",
                classes="title",
            )
            yield TextArea(self.yaml_text, read_only=True, show_line_numbers=True, id="yaml")
            with Horizontal():
                yield Label("Save to")
                yield Input(self.default_path, compact=True, id="path")
                yield Button("Save (ctrl+s)", id="save", compact=True)
            yield Static(id="save-status")

    @on(Button.Pressed, "#save")
    @on(Input.Submitted, "#path")
    def action_save(self) -> None:
        path = os.path.expanduser(self.query_one("#path", Input).value.strip())
        status = self.query_one("#save-status", Static)
        if not path:
            status.update(Text("✗ give a file name", style="bold red"))
            return
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(self.yaml_text)
        except OSError as exc:
            status.update(Text(f"✗ cannot write {path}: {exc.strerror}", style="bold red"))
            return
        status.update(
            Text(
                f"✓ saved {len(self.yaml_text)} bytes to {os.path.abspath(path)}",
                style="bold green",
            )
        )
        self.notify(f"exported rules to {path}")

    def action_close(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key, what it does, and the fail-safe list that is always allowed."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(
        self, keys: Sequence[tuple[str, str]], failsafe: Sequence[str], notes: Sequence[str] = ()
    ) -> None:
        super().__init__()
        self.keys, self.failsafe, self.notes = keys, failsafe, notes

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, padding=(0, 2, 0, 0))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, text in self.keys:
            table.add_row(key, text)
        with VerticalScroll():
            yield Static(Text("infw-tui keys", style="bold"))
            yield Static(table)
            yield Static(
                Text("\nAlways allowed (fail-safe, checked before any rule):", style="bold")
            )
            yield Static("\n".join(f"  {fs}" for fs in self.failsafe) or "  (none configured)")
            for note in self.notes:
                yield Static(note)
            yield Static(Text("\nesc closes this help", style="dim"))

    def action_close(self) -> None:
        self.dismiss(None)
