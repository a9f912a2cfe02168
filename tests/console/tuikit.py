"""Shared helpers for the TUI tests: run Pilot coroutines, and an app on the fake engine."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from textual.pilot import Pilot

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


async def settle(pilot: Pilot[Any], rounds: int = 20) -> None:
    """Let the engine calls the keys started come back (they run in worker threads), and the
    calls their replies start in turn (an edit's refresh)."""
    app = pilot.app
    for _ in range(rounds):
        await pilot.pause()
        running = [w for w in app.workers if w.group == "engine" and not w.is_finished]
        if not running:
            await pilot.pause()
            return
        await app.workers.wait_for_complete(running)
    await pilot.pause()


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Press keys, then wait for the engine calls they started to come back."""
    await pilot.press(*keys)
    await settle(pilot)


async def refresh(pilot: Pilot[Any]) -> None:
    """What the timers do each tick (status, counters, drop events), waited for."""
    app = pilot.app
    assert isinstance(app, InfwApp)
    await settle(pilot)
    app.refresh_status()
    app.refresh_stats()
    await settle(pilot)
    app.poll_events()
    await settle(pilot)
