"""The busy line: what the console is waiting for from the engine, with a spinner and the
seconds so far, and who holds the state lock when that is the wait. Hidden while calls are quick."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.widgets import Static

from console.tui.calls import waiting

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
SLOW_S = 0.5  # a call shorter than this never flashes the line
HOLDER_EVERY_S = 1.0  # how often to ask who holds the state lock while waiting


class BusyLine(Static):
    def __init__(
        self, lock_holder: Callable[[], int | None] | None = None, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._lock_holder = lock_holder
        self._holder: int | None = None
        self._holder_asked = float("-inf")
        self.text = ""

    def on_mount(self) -> None:
        self.set_interval(0.1, self.tick, name="busy")

    def holder(self) -> int | None:
        """The store lock's holder, asked at most once a second (a non-blocking flock probe
        that does not go through the engine's thread, which is the one waiting)."""
        now = time.monotonic()
        if self._lock_holder is not None and now - self._holder_asked >= HOLDER_EVERY_S:
            self._holder_asked = now
            try:
                self._holder = self._lock_holder()
            except OSError:
                self._holder = None
        return self._holder

    def tick(self) -> None:
        slow = [(what, secs) for what, secs in waiting(self) if secs >= SLOW_S]
        if not slow:
            self._holder_asked = float("-inf")
            if self.has_class("-shown"):
                self.text = ""
                self.set_class(False, "-shown")
            return
        what, secs = slow[0]
        frame = SPINNER[int(time.monotonic() * 10) % len(SPINNER)]
        text = f" {frame} {what}… {secs:.0f}s"
        if len(slow) > 1:
            text += f" (+{len(slow) - 1} more)"
        holder = self.holder()
        if holder is not None:
            who = f"pid {holder}" if holder else "another process"
            text += f" — the state lock is held by {who} (another console changing the rules)"
        else:
            text += " — the engine is busy; keys still work"
        self.text = text
        self.update(text)
        self.set_class(True, "-shown")
