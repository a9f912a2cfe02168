"""Engine calls off the event loop: each runs in a Textual thread worker and comes back as a
message (Harlequin's `@work(thread=True)` + `post_message`), so a slow engine, or a store lock
held by another console for seconds, never freezes the screen: it keeps drawing, keys answer,
and the busy line (console.tui.widgets.busy) says what the console waits for.

The calls themselves still reach the engine through its one thread (engine_thread); only the
waiting moves off the loop.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any, TypeVar

from textual.dom import DOMNode
from textual.message import Message
from textual.worker import Worker, WorkerState

from engine import InfwError

T = TypeVar("T")
GROUP = "engine"

# When each running engine call started (monotonic), for the busy line's "for 4s".
_STARTED: weakref.WeakKeyDictionary[Worker[Any], float] = weakref.WeakKeyDictionary()


class EngineReply(Message):
    """An engine call finished: run `callback(value)` on the event loop of whoever asked."""

    def __init__(self, callback: Callable[[Any], None], value: Any) -> None:
        super().__init__()
        self.callback = callback
        self.value = value


class EngineClient:
    """Mixin for the app and its screens: they receive the replies of the calls they start."""

    def on_engine_reply(self, message: EngineReply) -> None:
        message.stop()
        # A reply landing while the app shuts down would update widgets already gone.
        if shutting_down(getattr(self, "app", None)):
            return
        if not getattr(self, "is_attached", True):
            return  # a screen closed meanwhile
        message.callback(message.value)


def shutting_down(app: object) -> bool:
    """The app is closing (or gone): a message that lands now would meet widgets and screens
    already removed, so its handler does nothing."""
    if any(getattr(app, flag, False) for flag in ("_exit", "_closing", "_closed")):
        return True
    return not getattr(app, "screen_stack", True)


def error_line(exc: InfwError | OSError) -> str:
    """An engine call's failure in one line: the message and its fix."""
    if isinstance(exc, InfwError):
        return exc.message + (f" — {exc.fix}" if exc.fix else "")
    return f"{exc.strerror or exc} — see the engine's log, then retry"


def call_engine(
    owner: DOMNode,
    what: str,
    fn: Callable[[], T],
    done: Callable[[T], None],
    failed: Callable[[InfwError | OSError], None],
) -> Worker[None]:
    """Run fn() in a worker thread; then done(result) or failed(error) on owner's event loop.

    `what` names the wait on the busy line ("deleting rule 3"). An error other than InfwError or
    OSError is a bug: the worker raises it and Textual stops the app with its traceback, as it
    would have on the event loop. A reply to a screen closed meanwhile is dropped."""

    def work() -> None:
        try:
            value = fn()
        except CancelledError:
            return  # the engine thread was shut down: the app is closing
        except (InfwError, OSError) as exc:
            owner.post_message(EngineReply(failed, exc))
            return
        owner.post_message(EngineReply(done, value))

    worker = owner.run_worker(work, name=what, group=GROUP, thread=True)
    _STARTED[worker] = time.monotonic()
    return worker


def waiting(owner: DOMNode) -> list[tuple[str, float]]:
    """The engine calls still running in owner's app, oldest first: (what, seconds so far)."""
    now = time.monotonic()
    running = [
        (what, now - _STARTED[w])
        for w in owner.app.workers
        if w.group == GROUP
        and w.state in (WorkerState.PENDING, WorkerState.RUNNING)
        and w in _STARTED
        and (what := w.name)
    ]
    return sorted(running, key=lambda item: -item[1])
