"""infw-tui on the real Engine over the lab: lab rules shown, counters moving, a form edit applied.

Needs root (BPF, namespaces). The lab is brought up when missing and taken down again only if
this module brought it up; the rule the test adds is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from console.tui.app import InfwApp
from console.tui.screens.rule_form import RuleForm
from console.tui.widgets.header import PendingBanner
from console.tui.widgets.rules import RulesTable
from tests.console.tuikit import add_rule_form, press, wait_until

pytestmark = [pytest.mark.root, pytest.mark.console, pytest.mark.e2e]

if os.geteuid() != 0:
    pytest.skip(
        "needs root: loads XDP programs and builds network namespaces", allow_module_level=True
    )
if (
    importlib.util.find_spec("engine.kernel.datapath") is None
    or importlib.util.find_spec("engine.lab.world") is None
):
    pytest.skip(
        "engine.kernel.datapath / engine.lab.world are not there yet", allow_module_level=True
    )

TEST_RULE_CIDR = "203.0.113.0/24"
TEST_RULE_PORT = "7777"


def _setns(fd: int) -> None:
    from engine.kernel.netns import setns_fd

    setns_fd(fd)  # back to the test's network namespace


@pytest.fixture(scope="module")
def lab_engine() -> Iterator[Any]:
    """The lab's Engine; the Engine moves this thread into the lab's node namespace, so the
    fixture moves it back afterwards."""
    from console.tui.main import open_lab
    from engine.lab import world as lab

    was_up = lab.lab_status().up
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        engine = open_lab(read_only=False, progress=lambda _: None)
        try:
            yield engine
        finally:
            _remove_test_rule(engine)
    finally:
        _setns(home)
        os.close(home)
        if not was_up:
            lab.lab_down()


def _remove_test_rule(engine: Any) -> None:
    if engine.pending() is not None:
        engine.revert()
    for row in engine.rule_rows():
        if TEST_RULE_CIDR in row.cidrs and str(row.rule.ports) == TEST_RULE_PORT:
            engine.delete_rule(row.rule_id, confirm_timeout=0)


async def _until(pilot: Pilot[Any], check: Any, timeout: float, what: str) -> None:
    if not await wait_until(pilot, check, timeout):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def test_lab_rules_counters_and_a_confirmed_edit(lab_engine: Any) -> None:
    expected = lab_engine.ruleset().rule_count()
    app = InfwApp(lab_engine, offer_attach=False, stats_interval=0.5)

    async def scenario() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            table = app.query_one(RulesTable)
            await _until(pilot, lambda: table.row_count == expected, 5, "the lab rules")
            matches = {(r.action, r.match) for r in table.all_rows}
            assert ("Deny", "8080") in matches and ("Allow", "80") in matches

            def total() -> int:
                return sum(r.packets for r in table.all_rows)

            before = total()
            await _until(pilot, lambda: total() > before, 15, "counters to move under lab traffic")
            await _until(pilot, lambda: bool(table.hit_keys), 5, "a rule marked as hit")

            form = await add_rule_form(
                pilot,
                {"protocol": "TCP", "cidrs": TEST_RULE_CIDR, "order": "7", "ports": TEST_RULE_PORT},
            )
            assert form.errors == {}
            await press(pilot, "enter")
            await _until(
                pilot, lambda: not isinstance(app.screen, RuleForm), 10, "the form to apply"
            )
            await _until(
                pilot,
                lambda: app.query_one(PendingBanner).has_class("-shown"),
                5,
                "the pending banner",
            )
            assert app.status is not None and app.status.pending is not None
            assert any(TEST_RULE_CIDR in r.cidrs for r in table.all_rows)

            await press(pilot, "c")
            await pilot.pause()
            assert app.engine.pending() is None  # type: ignore[attr-defined]
            assert not app.query_one(PendingBanner).has_class("-shown")
            assert any(TEST_RULE_CIDR in r.cidrs for r in table.all_rows)
            await press(pilot, "q")
        assert app.return_value is not None and "the firewall keeps running" in app.return_value

    asyncio.run(scenario())
