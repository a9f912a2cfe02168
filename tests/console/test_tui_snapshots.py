"""Snapshots of infw-tui on a FakeNode (the real Engine over the fake kernel, a frozen clock and
scripted traffic: every frame is the same each run) at 80x24 and 160x48.

Regenerate after an intended UI change with:
    .venv/bin/python -m pytest tests/console/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from console.tui.app import InfwApp
from tests.console.fakenode import FakeNode
from tests.console.tuikit import add_rule_form, press, settle, wait_until
from tests.console.tuikit import make_app as _make_app

pytestmark = pytest.mark.console


def make_app(**kwargs: Any) -> tuple[InfwApp, FakeNode]:
    return _make_app(interval=3600, **kwargs)


SnapCompare = Callable[..., bool]


def steady_cursors(screen: Any) -> None:
    """A blinking cursor is drawn or not by the wall clock: the picture must not depend on it."""
    for field in screen.query(Input):
        field.cursor_blink = False


def running(
    node: FakeNode, app: InfwApp, then: Callable[[Pilot[Any]], Awaitable[None]] | None = None
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Two seconds of scripted traffic, refreshed the way the timers would."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)  # the start's own reading, at the start's clock
        for _ in range(2):
            node.advance(1.0)
            app.refresh_status()
            await settle(pilot)
            app.refresh_stats()
            await settle(pilot)
            app.poll_events()
            await settle(pilot)
            await pilot.pause()
        if then is not None:
            await then(pilot)

    return run_before


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_main_view(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    app, node = make_app()
    assert snap_compare(app, terminal_size=size, run_before=running(node, app))


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_pending_confirm_banner(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    app, node = make_app()

    async def pending(pilot: Pilot[Any]) -> None:
        node.other_console().add_rule("deny tcp 8443 from 203.0.113.0/24 on infw-n1 order 15")
        node.clock.advance(18)
        app.refresh_all()
        await settle(pilot)
        app.poll_events()
        await settle(pilot)
        await pilot.pause()

    assert snap_compare(app, terminal_size=size, run_before=running(node, app, pending))


def test_add_rule_form_with_inline_error(snap_compare: SnapCompare) -> None:
    app, node = make_app()

    async def form(pilot: Pilot[Any]) -> None:
        screen = await add_rule_form(
            pilot, {"protocol": "TCP", "cidrs": "203.0.113.0/24", "order": "15", "ports": "99999"}
        )
        steady_cursors(screen)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=running(node, app, form))


def test_add_rule_form_with_parity_warnings(snap_compare: SnapCompare) -> None:
    """The engine's dry run of the rule: its impact and the warnings the CLI prints (#10)."""
    app, node = make_app()

    async def form(pilot: Pilot[Any]) -> None:
        screen = await add_rule_form(
            pilot, {"protocol": "TCP", "cidrs": "198.51.100.7/24", "order": "150", "ports": "80-90"}
        )
        await wait_until(pilot, lambda: bool(screen.warnings) and screen._guard_wanted is None)
        assert len(screen.warnings) == 3, screen.warnings
        steady_cursors(screen)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 36), run_before=running(node, app, form))


def test_trace_dialog(snap_compare: SnapCompare) -> None:
    app, node = make_app()

    async def trace(pilot: Pilot[Any]) -> None:
        await press(pilot, "t")
        app.screen.query_one("#t-src", Input).value = "192.0.2.5"
        app.screen.query_one("#t-dport", Input).value = "8080"
        await press(pilot, "enter")
        steady_cursors(app.screen)
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=running(node, app, trace))
