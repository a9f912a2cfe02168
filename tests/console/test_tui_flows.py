"""The Flows view on the real Engine over the fake kernel: flows by pkts/s, `/` filters, `d`
opens the rule form pre-filled to deny the source and the form shows what it will drop, `a`
allows the port, `t` traces; the pending banner shows what the change drops now."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Input, Select, Static

from console.tui.app import InfwApp
from console.tui.screens.flows import FlowsScreen
from console.tui.screens.rule_form import RuleForm
from console.tui.screens.trace import TraceDialog
from engine.engine import Engine
from tests.console.tuikit import aio, settle
from tests.unit.test_engine_flows import flow_lab, send_tcp


def app_on(engine: Engine) -> InfwApp:
    return InfwApp(engine, stats_interval=60, events_interval=60, offer_attach=False)


@aio
async def test_flows_view_to_a_prefilled_deny_with_its_impact(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path)
    send_tcp(kernel, engine, "192.0.2.7", 443, 9)
    send_tcp(kernel, engine, "192.0.2.8", 443, 3)
    app = app_on(engine)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f")
        await settle(pilot)  # the flows come back from a worker
        screen = app.screen
        assert isinstance(screen, FlowsScreen)
        assert [f.key.source for f in screen.shown] == ["192.0.2.7", "192.0.2.8"]
        assert screen.query_one(DataTable).row_count == 2
        await pilot.press("slash", *"192.0.2.8", "enter")
        await pilot.pause()
        assert [f.key.source for f in screen.shown] == ["192.0.2.8"]
        await pilot.press("slash", *["backspace"] * 9, "enter")
        await pilot.pause()
        assert len(screen.shown) == 2
        await pilot.press("d")  # the busiest flow is under the cursor
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RuleForm)
        assert form.query_one("#f-cidrs", Input).value == "192.0.2.7/32"
        assert form.query_one("#f-interfaces", Input).value == "eth0"
        assert form.query_one("#f-action", Select).value == "Deny"
        for _ in range(40):  # the guard's dry run and preview come back in a worker
            await pilot.pause(0.05)
            if form.impact:
                break
        impact = str(form.query_one("#impact", Static).render())
        assert "newly denied: 1 flow" in impact, impact
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not isinstance(app.screen, RuleForm)
        assert any("newly denied: 1 flow" in n.message for n in app._notifications)
        assert app.status is not None and app.status.pending is not None
        send_tcp(kernel, engine, "192.0.2.7", 443, 4)
        app.refresh_stats()
        await settle(pilot)  # the counters come back from a worker
        assert "dropping" in app._pending_drops and "4 packets" in app._pending_drops


@aio
async def test_allow_port_and_trace_from_a_flow(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path)
    send_tcp(kernel, engine, "192.0.2.9", 8080, 2)
    app = app_on(engine)
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.press("f")
        await settle(pilot)  # the flows come back from a worker
        await pilot.press("a")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RuleForm)
        assert form.query_one("#f-ports", Input).value == "8080"
        assert form.query_one("#f-cidrs", Input).value == "0.0.0.0/0"
        assert form.query_one("#f-action", Select).value == "Allow"
        await pilot.press("escape")
        await pilot.press("f")
        await settle(pilot)  # the flows come back from a worker
        await pilot.press("t")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, TraceDialog)
        assert dialog.result is not None and dialog.result.reference_reason == "no match"
