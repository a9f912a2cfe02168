"""Every engine call runs on one dedicated thread, never on Textual's event loop.

The engine speaks netlink through pyroute2, whose synchronous API drives an asyncio loop of its
own and refuses to run inside one that is already running (Textual's). One thread also keeps
bcc's map and ring-buffer handles to a single caller. Calls block the caller until done; they
take milliseconds, and the slow ones (attach compiles) are started from worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from engine import DropEvent

T = TypeVar("T")


class EngineThread:
    """A proxy with the engine's calls; attribute reads (config, read_only) pass straight through."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._thread_id: int | None = None
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="infw-engine", initializer=self._mark
        )

    def _mark(self) -> None:
        self._thread_id = threading.get_ident()

    def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if threading.get_ident() == self._thread_id:
            return fn(*args, **kwargs)  # an engine callback calling back in
        return self._pool.submit(fn, *args, **kwargs).result()

    @property
    def wrapped(self) -> Any:
        return self._engine

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.run(attr, *args, **kwargs)

        call.__name__ = name
        return call

    def open_events(self, max_per_second: int = 200) -> EventSourceThread:
        return EventSourceThread(self.run(self._engine.open_events, max_per_second), self)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class EventSourceThread:
    def __init__(self, source: Any, thread: EngineThread) -> None:
        self._source = source
        self._thread = thread

    @property
    def buffer(self) -> Any:
        return self._source.buffer

    def poll(self, timeout_ms: int = 100) -> list[DropEvent]:
        events: list[DropEvent] = self._thread.run(self._source.poll, timeout_ms)
        return events

    def other_reader(self) -> int | None:
        """The pid of another console reading the same drop events (they split them), or None."""
        reader = getattr(self._source, "other_reader", None)
        pid: int | None = self._thread.run(reader) if reader is not None else None
        return pid
