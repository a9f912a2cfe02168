"""The drop-event pane: a bounded, filterable tail of DropEvents that follows until told not to."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import RichLog, Static

from console.format import human_count
from console.tui.widgets.cells import event_header, event_line, event_search_text
from console.tui.widgets.header import first_fitting
from engine import DropEvent

KEEP_EVENTS = 5000  # what the pane remembers (for filters and resume)
SHOW_LINES = 1000  # what the log widget holds


class EventLog(RichLog):
    """The scrolling part; can take focus so `/` and `p` apply to it.

    It follows new lines until the operator scrolls up, and again once they scroll back down
    to the end.
    """

    BINDINGS = [
        Binding("up", "scroll_up", "Up", show=False),
        Binding("down", "scroll_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "scroll_home", "Oldest", show=False),
        Binding("end", "scroll_end", "Follow", show=False),
    ]
    follow = True

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        before = self.follow
        if new_value >= self.max_scroll_y:
            self.follow = True
        elif new_value < old_value:
            self.follow = False
        if before != self.follow and isinstance(self.parent, EventPane):
            self.parent.refresh_title()


class EventPane(Vertical):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.events: collections.deque[DropEvent] = collections.deque(maxlen=KEEP_EVENTS)
        self.paused = False
        self.filter_text = ""
        self.unseen = 0  # arrived while paused
        self.total_seen = 0
        self.counts = (0, 0, 0)  # kernel-suppressed, lost, console-sampled
        self.shared_with: int | None = None  # pid of another console reading the same events

    def compose(self) -> ComposeResult:
        yield Static(id="events-title")
        yield Static(id="events-header")
        yield EventLog(
            max_lines=SHOW_LINES, wrap=False, markup=False, highlight=False, id="event-log"
        )

    def on_mount(self) -> None:
        self._render_title()
        self._render_header()

    @property
    def log_widget(self) -> EventLog:
        return self.query_one(EventLog)

    @property
    def following(self) -> bool:
        return not self.paused and self.log_widget.follow

    def _width(self) -> int:
        return max(
            40, (self.log_widget.scrollable_content_region.width or self.size.width or 80) - 1
        )

    def _matches(self, ev: DropEvent) -> bool:
        return not self.filter_text or self.filter_text.lower() in event_search_text(ev)

    def add(self, new: Iterable[DropEvent]) -> None:
        fresh = list(new)
        if not fresh:
            return
        self.events.extend(fresh)
        self.total_seen += len(fresh)
        if self.paused:
            self.unseen += len(fresh)
            self._render_title()
            return
        self._write([ev for ev in fresh[-SHOW_LINES:] if self._matches(ev)], self.following)
        self._render_title()

    def _write(self, shown: list[DropEvent], scroll_end: bool) -> None:
        """Write the lines in one go: one render and one scroll instead of one per event."""
        if not shown:
            return
        width = self._width()
        block = Text("\n", no_wrap=True, overflow="ellipsis").join(
            event_line(ev, width) for ev in shown
        )
        self.log_widget.write(block, width=width, scroll_end=scroll_end)

    def set_counts(self, suppressed: int, lost: int, sampled: int) -> None:
        if (suppressed, lost, sampled) != self.counts:
            self.counts = (suppressed, lost, sampled)
            self._render_title()

    def set_shared_with(self, pid: int | None) -> None:
        """Another console reads the same ring buffer: each of them gets only part of it."""
        if pid != self.shared_with:
            self.shared_with = pid
            self._render_title()

    def toggle_pause(self) -> bool:
        self.paused = not self.paused
        if not self.paused:
            self.unseen = 0
            self._rewrite(scroll_end=True)
        self._render_title()
        return self.paused

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._rewrite(scroll_end=True)
        self._render_title()

    def _rewrite(self, scroll_end: bool) -> None:
        self.log_widget.clear()
        self._write([ev for ev in self.events if self._matches(ev)][-SHOW_LINES:], scroll_end)

    def on_resize(self, event: events.Resize) -> None:
        self._render_header()
        self._rewrite(scroll_end=self.following)
        self._render_title()

    def refresh_title(self) -> None:
        self._render_title()

    def _render_header(self) -> None:
        self.query_one("#events-header", Static).update(event_header(self._width()))

    def _render_title(self) -> None:
        width = self.size.width or (self.app.size.width if self.is_attached else 80)
        self.query_one("#events-title", Static).update(first_fitting(self.title_variants(), width))

    def title_variants(self) -> list[Text]:
        """The pane's status line, most detailed first (narrow panes get the short words)."""

        def build(*, short_state: bool, short_shared: bool, short_counts: bool) -> Text:
            title = Text(no_wrap=True, overflow="ellipsis")
            title.append(" Drop events ", style="bold")
            if self.paused:
                title.append(" PAUSED ", style="bold black on yellow")
                title.append(f" {self.unseen} new" + ("" if short_state else " (p resumes)"))
            elif self.is_mounted and not self.following:
                title.append(" SCROLLED ", style="bold black on yellow")
                title.append(" end follows" if short_state else " not following (end follows)")
            else:
                title.append("following", style="green")
            if self.filter_text:
                title.append(f"  filter '{self.filter_text}'", style="bold cyan")
            if self.shared_with is not None:
                title.append("  ")
                title.append(
                    f"shared with pid {self.shared_with}"
                    + (": partial" if short_shared else ": each console sees part of the events"),
                    style="bold yellow",
                )
            suppressed, lost, sampled = self.counts
            words = ("suppressed", "lost", "sampled")
            if not short_counts:
                words = ("kernel-suppressed", "lost", "console-sampled")
            title.append(f"  │ {words[0]} ")
            title.append(human_count(suppressed), style="bold" if suppressed else "")
            title.append(f" · {words[1]} ")
            title.append(human_count(lost), style="bold red" if lost else "")
            title.append(f" · {words[2]} ")
            title.append(human_count(sampled), style="bold" if sampled else "")
            return title

        return [
            build(short_state=False, short_shared=False, short_counts=False),
            build(short_state=False, short_shared=False, short_counts=True),
            build(short_state=True, short_shared=False, short_counts=True),
            build(short_state=True, short_shared=True, short_counts=True),
        ]
