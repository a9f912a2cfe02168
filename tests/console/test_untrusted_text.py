"""Text from outside (authors, summaries with file names, interface names, trace input, file
names in errors) reaches the terminal escaped, in the CLI's renderers and the TUI's cells."""

from __future__ import annotations

import time

from console import render
from console.tui.screens.trace import render_trace
from console.tui.widgets.cells import event_line
from console.tui.widgets.header import interfaces_text
from engine.errors import FieldError, ValidationError
from engine.views import DropEvent, HistoryView, InterfaceView, PendingView, Status, TraceResult

EVIL = "ev\x1b[2J\x1b]0;pwned\x07il"
SHOWN = "ev\\x1b[2J\\x1b]0;pwned\\x07il"


def clean(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text


def status() -> Status:
    return Status(
        node="n1",
        loaded=True,
        pin_root="/sys/fs/bpf/infw",
        mode="enforce",
        generation=3,
        rule_count=1,
        interfaces=(InterfaceView(EVIL, 7, "native", 42, True),),
        pending=PendingView(3, 2, time.time() + 30, EVIL),
        failsafe=(),
        read_only=False,
    )


def drop_event() -> DropEvent:
    return DropEvent(
        time.time(), EVIL, 1, "DENY", "TCP", "192.0.2.1", "192.0.2.2", 1, 80, None, None, 0, 60
    )


def test_history_author_and_summary_are_escaped_in_the_cli() -> None:
    text = render.history_text([HistoryView(4, time.time(), EVIL, "apply a\nforged 9", True)])
    clean(text)
    assert SHOWN in text and "apply a\\x0aforged 9" in text
    assert len(text.strip().splitlines()) == 2  # header and one entry: no forged line


def test_status_interfaces_pending_author_events_and_trace_are_escaped() -> None:
    for text in (
        render.status_text(status()),
        render.event_text(drop_event()),
        render.trace_text(
            TraceResult(EVIL, 64, "DENY", "rule", 1, "DENY", "rule", 1, "x", True), "tcp 80"
        ),
    ):
        clean(text)
        assert SHOWN in text


def test_error_lines_escape_file_names() -> None:
    exc = ValidationError([FieldError(f"/tmp/{EVIL}.yaml", "spec", 1, "bad")])
    lines = render.error_lines(exc)
    for line in lines:
        clean(line)
    assert any(SHOWN in line for line in lines)


def test_tui_cells_escape_interface_names() -> None:
    for text in (
        event_line(drop_event(), 120).plain,
        interfaces_text(status()).plain,
        render_trace(TraceResult(EVIL, 64, "DENY", "r", 1, "DENY", "r", 1, "x", True)).plain,
    ):
        clean(text)
        assert "\\x1b" in text
