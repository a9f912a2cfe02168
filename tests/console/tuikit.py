"""Shared helpers for the TUI tests: run Pilot coroutines, and an app on the fake engine."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from console.tui.app import InfwApp
from console.tui.fake import FakeEngine


def aio(test: Callable[..., Coroutine[object, object, None]]) -> Callable[..., None]:
    """Run an async Pilot test without an asyncio pytest plugin (the venv has none)."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def make_app(interval: float = 60, **kwargs: Any) -> tuple[InfwApp, FakeEngine]:
    """The app on a FakeEngine with long timer intervals: tests drive refreshes themselves."""
    fake = FakeEngine(**kwargs)
    app = InfwApp(fake, clock=fake.clock, stats_interval=interval, events_interval=interval)
    return app, fake
