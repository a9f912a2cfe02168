"""The TUI never waits on the engine: another console holds the state lock for 15 s while this
one deletes a rule, and the screen keeps drawing, keys keep answering, and the busy line says
what it waits for and who holds the lock (the real Engine over the fake kernel; no root)."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
from textual.widgets import Static

from console.tui.app import InfwApp
from console.tui.screens.dialogs import ConfirmDialog, HelpScreen
from console.tui.widgets.busy import BusyLine
from console.tui.widgets.rules import RulesTable
from engine.engine import Engine
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig
from engine.state.store import Store
from tests.console.tuikit import aio, settle

pytestmark = pytest.mark.console

IFACES = {"lo": 1, "eth0": 2}
HOLD_S = 15.0


def held_lock(state_dir: str, hold: float, taken: threading.Event) -> threading.Thread:
    """Another console's long change: the store lock, from another thread, for `hold` seconds."""

    def hold_it() -> None:
        with Store(state_dir).lock():
            taken.set()
            time.sleep(hold)

    thread = threading.Thread(target=hold_it, daemon=True)
    thread.start()
    return thread


@aio
async def test_screen_stays_live_while_another_console_holds_the_lock(tmp_path: Path) -> None:
    engine = Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(),
        session=None,
        kernel=FakeKernel(IFACES),
    )
    engine.add_rule("deny tcp 8080 from 192.0.2.0/24 on eth0 order 10", confirm_timeout=0)
    engine.add_rule("deny udp 53 from 198.51.100.0/24 on eth0 order 20", confirm_timeout=0)
    engine.attach(["eth0"])
    app = InfwApp(engine, stats_interval=0.5, events_interval=0.1, offer_attach=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.query_one(RulesTable)
        assert len(table.all_rows) == 2
        table.move_cursor(row=0)
        doomed = table.selected_rule()
        assert doomed is not None

        # The event loop's heartbeat: a frozen screen shows as a long gap between beats.
        beats: list[float] = []
        app.set_interval(0.05, lambda: beats.append(time.monotonic()))

        taken = threading.Event()
        holder = held_lock(engine.state_dir, HOLD_S, taken)
        assert taken.wait(5)
        started = time.monotonic()
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")  # the delete now waits for the lock (the store gives up at 10 s)

        busy = app.query_one(BusyLine)
        seen: list[str] = []
        helped = sorted_ = False
        while time.monotonic() - started < 8.0:
            await pilot.pause(0.25)
            if busy.has_class("-shown"):
                seen.append(busy.text)
            if not helped and time.monotonic() - started > 2.0:
                await pilot.press("question_mark")  # keys answer while the delete waits
                assert isinstance(app.screen, HelpScreen)
                await pilot.press("escape")
                assert not isinstance(app.screen, HelpScreen)
                helped = True
            if not sorted_ and time.monotonic() - started > 3.0:
                column = table.sort_column
                await pilot.press("s")
                assert table.sort_column != column
                sorted_ = True
        assert helped and sorted_

        gaps = [b - a for a, b in itertools.pairwise(beats)]
        # Far below the 10 s a waiting call took on the event loop; loose enough for a busy box.
        assert beats and max(gaps) < 3.0, f"the event loop stalled for {max(gaps):.1f}s"
        assert seen, "the busy line never showed"
        assert all(f"deleting rule {doomed.rule_id}" in text for text in seen)
        assert any("the state lock is held by pid" in text for text in seen)
        assert len(set(seen)) > 3, "the busy line did not move (spinner, seconds)"

        # A second change while the first waits is refused on the spot, with the reason.
        table.move_cursor(row=1)
        await pilot.press("d", "y")
        assert any("still deleting rule" in n.message for n in app._notifications)

        # The store gives up at 10 s: the refusal says who holds the lock; the rule stays.
        await settle(pilot)
        await pilot.pause(0.3)  # the busy line looks again every 0.1 s
        assert any(n.severity == "error" for n in app._notifications)
        assert not busy.has_class("-shown")
        assert doomed.rule_id in {r.rule_id for r in table.all_rows}
        title = app.query_one("#rules-title", Static)
        assert "Rules 2" in str(title.render())
        holder.join(HOLD_S)

        # The lock is free again: the same delete goes through.
        table.select_rule_id(doomed.rule_id)
        await pilot.press("d", "y")
        await settle(pilot)
        assert doomed.rule_id not in {r.rule_id for r in table.all_rows}
