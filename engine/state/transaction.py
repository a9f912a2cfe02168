"""The parts of an edit transaction that are not the Engine's state: why a pending change is
rolled back (typed, recorded as the generation's kind), and holding signals while the store,
the kernel and the watchdog move together."""

from __future__ import annotations

import contextlib
import enum
import signal
import threading
from collections.abc import Iterator

from engine.state.store import ChangeKind


class Rollback(enum.Enum):
    """Why a pending change is put back: the history summary and the generation's kind."""

    NOT_CONFIRMED = ("auto-revert: not confirmed in time", ChangeKind.AUTO_REVERT)
    WATCHDOG_GONE = ("auto-revert: not confirmed, watchdog gone", ChangeKind.AUTO_REVERT)
    WATCHDOG_HUNG = ("auto-revert: not confirmed, watchdog hung", ChangeKind.AUTO_REVERT)
    RESTORED_UNCONFIRMED = ("auto-revert: restored unconfirmed", ChangeKind.AUTO_REVERT)
    BY_OPERATOR = ("reverted by operator", ChangeKind.ROLLBACK)

    def __init__(self, summary: str, kind: ChangeKind) -> None:
        self.summary = summary
        self.kind = kind


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP (SSH gone) over the store-kernel-watchdog sequence, so
    it finishes or undoes itself before the signal acts. Only the main thread can block them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
