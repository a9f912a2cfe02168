"""Shared helpers for the TUI tests: run Pilot coroutines, and an app on a FakeNode (the real
Engine over the fake kernel, with a fake clock and scripted traffic)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, Select, Static
from textual.worker import WorkerCancelled

from console.tui.app import InfwApp
from console.tui.screens.rule_form import RuleForm
from tests.console.fakenode import FakeNode, NodeClock, frozen_time

# Set for each console test by conftest.py: where its FakeNodes live, and what undoes the frozen
# time when the test ends.
SCOPE: dict[str, Any] = {}


def aio(test: Callable[..., Coroutine[object, object, None]]) -> Callable[..., None]:
    """Run an async Pilot test without an asyncio pytest plugin (the venv has none)."""

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def make_node(**kwargs: Any) -> FakeNode:
    """A FakeNode for this test, its clock frozen until the test ends."""
    stack: contextlib.ExitStack = SCOPE["stack"]
    clock = SCOPE.get("clock")
    if clock is None:
        clock = SCOPE["clock"] = NodeClock()
        stack.enter_context(frozen_time(clock))
    SCOPE["nodes"] = SCOPE.get("nodes", 0) + 1
    base: Path = SCOPE["tmp"] / f"node{SCOPE['nodes']}"
    return FakeNode(base, clock, **kwargs)


def make_app(interval: float = 60, **kwargs: Any) -> tuple[InfwApp, FakeNode]:
    """The app on a FakeNode with long timer intervals: tests drive refreshes themselves."""
    node = make_node(**kwargs)
    app = InfwApp(node.engine, clock=node.clock, stats_interval=interval, events_interval=interval)
    return app, node


async def settle(pilot: Pilot[Any], rounds: int = 200) -> None:
    """Let the engine calls the keys started come back (they run in worker threads), and the
    calls their replies start in turn (an edit's refresh). A call may start a message or two
    after its key (Input.Submitted, a dialog's answer), so idle means idle a few times running."""
    app = pilot.app
    idle = 0
    for _ in range(rounds):
        await pilot.pause()
        running = [w for w in app.workers if w.group == "engine" and not w.is_finished]
        if running:
            idle = 0
            try:
                await app.workers.wait_for_complete(running)
            except WorkerCancelled:
                return  # the app is quitting: it cancels the engine calls still running
            continue
        idle += 1
        if idle >= 3:
            return


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Press keys on a settled app, then wait for the engine calls they started to come back."""
    await settle(pilot)
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


async def tick(pilot: Pilot[Any], node: FakeNode, seconds: float = 1.0) -> None:
    """One timer tick, seconds of node time later (its scripted traffic sent meanwhile)."""
    await settle(pilot)  # what the app asked at start answers at the clock it asked
    node.advance(seconds)
    await refresh(pilot)


def text_of(widget: Static) -> str:
    return str(widget.render())


async def wait_until(pilot: Pilot[Any], ready: Callable[[], bool], timeout: float = 15.0) -> bool:
    """Let the app run until ready() (a worker's answer, a timer's work) or timeout passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            return False
        await pilot.pause(0.05)
    return True


async def fill_form(pilot: Pilot[Any], values: dict[str, str]) -> RuleForm:
    """Fill the open rule form as an operator does: a Select is set (the form then enables the
    fields it allows), an Input is cleared and typed into key by key."""
    form = pilot.app.screen
    assert isinstance(form, RuleForm)
    for name, value in values.items():
        widget = form.query_one(f"#f-{name}")
        if isinstance(widget, Select):
            widget.value = value
            await pilot.pause()
        else:
            assert isinstance(widget, Input)
            widget.focus()
            widget.value = ""
            await press(pilot, *value)
    await pilot.pause()
    return form


async def add_rule_form(pilot: Pilot[Any], values: dict[str, str] | None = None) -> RuleForm:
    """Open the add-rule form (a) and fill in values."""
    await press(pilot, "a")
    return await fill_form(pilot, values or {})


async def dry_run_answered(pilot: Pilot[Any], form: RuleForm) -> None:
    """Wait until the guard's dry run of the form's current line came back (it runs in a
    worker after a pause in typing)."""
    answered = await wait_until(
        pilot, lambda: form.guard_line is not None and form._guard_wanted is None
    )
    assert answered, "the engine's dry run never answered"
