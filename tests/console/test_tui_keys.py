"""infw-tui on a FakeNode (the real Engine over the fake kernel, a frozen clock, scripted
traffic; no root): Pilot drives the keys, the tests look at the screen and at the engine's
state (the store, the kernel's attachments), not at a fake's bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.coordinate import Coordinate
from textual.widgets import Button, DataTable, Input, SelectionList, Static

from console.tui.screens.dialogs import ConfirmDialog, ExportScreen, HelpScreen
from console.tui.screens.history import HistoryScreen
from console.tui.screens.interfaces import AttachScreen, InterfacesScreen
from console.tui.screens.rule_form import (
    FormValues,
    RuleForm,
    build_line,
    check_values,
    field_for_path,
)
from console.tui.screens.trace import TraceDialog
from console.tui.widgets.events_pane import EventLog, EventPane
from console.tui.widgets.header import DisconnectedBanner, PendingBanner, StatusHeader
from console.tui.widgets.rules import RulesTable
from tests.console.tuikit import (
    add_rule_form,
    aio,
    fill_form,
    make_app,
    press,
    settle,
    text_of,
    tick,
    wait_until,
)

pytestmark = pytest.mark.console


def row_keys(table: DataTable[object]) -> list[str]:
    return [
        str(table.coordinate_to_cell_key(Coordinate(i, 0)).row_key.value)
        for i in range(table.row_count)
    ]


def cell(table: DataTable[object], key: str, column: str) -> str:
    value = table.get_cell(key, column)
    return getattr(value, "plain", str(value))


@aio
async def test_start_shows_header_rules_and_events() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await tick(pilot, node)
        await pilot.pause()
        header = text_of(app.query_one(StatusHeader))
        assert "lab-node" in header and "ENFORCE" in header and "gen 2" in header
        assert "infw-n1 native" in header and "FOREIGN" in header
        table = app.query_one(RulesTable)
        assert table.row_count == 8
        actions = {cell(table, k, "action") for k in table.rows_by_key}
        assert actions == {"DENY", "ALLOW"}
        pane = app.query_one(EventPane)
        assert len(pane.events) > 0
        assert len(app.query_one(EventLog).lines) == len(pane.events)
        assert "kernel-suppressed" in text_of(app.query_one("#events-title", Static))
        assert not app.query_one(PendingBanner).has_class("-shown")


@aio
async def test_counters_update_in_place_and_cursor_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)  # the start's reading is in the table
        table = app.query_one(RulesTable)
        table.move_cursor(row=3)
        key = table.selected_key()
        assert key is not None
        before = cell(table, key, "packets")
        rebuilt: list[bool] = []
        original_clear = table.clear

        def counting_clear(*args: Any, **kwargs: Any) -> Any:
            rebuilt.append(True)
            return original_clear(*args, **kwargs)

        monkeypatch.setattr(table, "clear", counting_clear)
        for _ in range(3):
            await tick(pilot, node)
            await pilot.pause()
        assert rebuilt == []
        assert table.selected_key() == key
        assert table.cursor_row == 3
        assert cell(table, key, "packets") != before
        assert cell(table, key, "hit") == "●"
        assert cell(table, key, "last") == "0s ago"
        # A rule nobody hits has no mark and no last hit.
        idle = next(k for k, r in table.rows_by_key.items() if r.packets == 0)
        assert cell(table, idle, "hit").strip() == ""
        assert cell(table, idle, "last") == "-"


@aio
async def test_sorting_by_key_and_column() -> None:
    app, node = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await tick(pilot, node)
        table = app.query_one(RulesTable)
        table.move_cursor(row=2)
        key = table.selected_key()
        assert table.sort_column == "order"
        await press(pilot, "s")
        assert table.sort_column == "firewall"
        table.set_sort("packets")
        await pilot.pause()
        ordered = row_keys(table)
        packets = [table.rows_by_key[str(k)].packets for k in ordered]
        assert packets == sorted(packets, reverse=True)
        assert table.selected_key() == key  # the cursor follows its rule, not its position
        await press(pilot, "S")
        ordered = row_keys(table)
        assert [table.rows_by_key[str(k)].packets for k in ordered] == sorted(packets)
        assert "packets▲" in str(
            table.columns[next(c for c in table.columns if c.value == "packets")].label
        )


@aio
async def test_filter_rules_then_clear() -> None:
    app, _node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "slash")
        bar = app.query_one("#filter", Input)
        assert bar.has_class("-shown") and bar.has_focus
        await press(pilot, *"udp")
        table = app.query_one(RulesTable)
        assert table.row_count == 1
        assert "filter 'udp'" in text_of(app.query_one("#rules-title", Static))
        await press(pilot, "enter")
        assert not bar.has_class("-shown")
        assert table.row_count == 1 and table.has_focus
        await press(pilot, "slash", "escape")
        assert table.row_count == 8


@aio
async def test_filter_events_when_event_pane_focused() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await tick(pilot, node)
        log = app.query_one(EventLog)
        log.focus()
        await press(pilot, "slash", *"icmp")
        pane = app.query_one(EventPane)
        assert pane.filter_text == "icmp"
        icmp = [e for e in pane.events if "icmp" in e.protocol.lower()]
        assert 0 < len(log.lines) == len(icmp)
        assert app.query_one(RulesTable).row_count == 8  # the table is not filtered


@aio
async def test_pause_stops_following() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await tick(pilot, node)
        log = app.query_one(EventLog)
        shown = len(log.lines)
        await press(pilot, "p")
        pane = app.query_one(EventPane)
        assert pane.paused
        await tick(pilot, node)
        await pilot.pause()
        assert len(log.lines) == shown
        assert pane.unseen > 0
        assert "PAUSED" in text_of(app.query_one("#events-title", Static))
        await press(pilot, "p")
        await pilot.pause()
        assert not pane.paused and len(log.lines) == len(pane.events) > shown


@aio
async def test_add_rule_invalid_port_shows_inline_error() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        form = await add_rule_form(
            pilot, {"cidrs": "203.0.113.0/24", "order": "15", "protocol": "TCP"}
        )
        await fill_form(pilot, {"ports": "99999"})
        error = form.query_one("#e-ports", Static)
        assert error.has_class("-shown")
        assert "65535" in text_of(error)
        assert not form.query_one("#e-order", Static).has_class("-shown")
        form.query_one("#apply", Button).press()
        await pilot.pause()
        assert app.screen is form  # not applied, still open
        assert not node.called("add_rule") and node.engine.state().generation == 2


@aio
async def test_untouched_empty_fields_stay_quiet_until_submit() -> None:
    app, _node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        form = await add_rule_form(pilot)
        assert not form.query_one("#e-cidrs", Static).has_class("-shown")
        await press(pilot, "ctrl+s")
        await pilot.pause()
        assert form.query_one("#e-cidrs", Static).has_class("-shown")
        # interfaces and order come pre-filled (the attached ones, a free order ahead of the rest)
        assert not form.query_one("#e-order", Static).has_class("-shown")
        assert form.query_one("#f-order", Input).value == "5"
        assert form.query_one("#f-interfaces", Input).value == "infw-n1, infw-n2"


@aio
async def test_add_rule_applies_pending_then_confirm() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        assert app.check_action("confirm", ()) is False
        assert app.check_action("revert", ()) is False
        assert "c" not in app.screen.active_bindings
        await add_rule_form(
            pilot, {"cidrs": "203.0.113.0/24", "order": "15", "protocol": "TCP", "ports": "8443"}
        )
        await press(pilot, "enter")
        await pilot.pause()
        assert not isinstance(app.screen, RuleForm)
        (added,) = node.called("add_rule")
        assert added[2]["confirm_timeout"] == 60.0
        pending = node.engine.pending()
        assert pending is not None and pending.generation == 3
        banner = app.query_one(PendingBanner)
        assert banner.has_class("-shown")
        assert "PENDING CONFIRM gen 3 — 60s left — c confirm" in text_of(banner)
        assert "r revert" in text_of(banner)
        assert app.check_action("confirm", ()) is True
        assert "c" in app.screen.active_bindings and "r" in app.screen.active_bindings
        node.clock.advance(18)
        app.poll_events()
        await settle(pilot)
        await pilot.pause()
        assert "42s left" in text_of(banner)
        assert app.query_one(RulesTable).row_count == 9
        await press(pilot, "c")
        await pilot.pause()
        assert node.calls[-1][0] == "confirm"
        assert node.engine.pending() is None and node.engine.state().generation == 3
        assert not banner.has_class("-shown")
        assert "c" not in app.screen.active_bindings


@aio
async def test_revert_key_drops_pending_change() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        node.other_console().add_rule("deny tcp 8443 from 203.0.113.0/24 on infw-n1 order 15")
        app.refresh_all()
        await settle(pilot)
        await pilot.pause()
        assert app.query_one(RulesTable).row_count == 9
        await press(pilot, "r")
        await pilot.pause()
        assert node.calls[-1][0] == "revert"
        assert node.engine.pending() is None and node.engine.state().ruleset.rule_count() == 8
        assert app.query_one(RulesTable).row_count == 8
        assert not app.query_one(PendingBanner).has_class("-shown")


@aio
async def test_guard_refusal_next_to_field_and_force() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        form = await add_rule_form(
            pilot, {"cidrs": "0.0.0.0/0", "order": "5", "protocol": "TCP", "ports": "1-1024"}
        )
        await press(pilot, "enter")
        await pilot.pause()
        assert app.screen is form
        error = form.query_one("#e-ports", Static)
        assert (
            error.has_class("-shown")
            and "refused" in text_of(error)
            and "fail-safe" in text_of(error)
        )
        force = form.query_one("#force", Button)
        assert force.has_class("-shown")
        force.press()
        await settle(pilot)  # the forced add is an engine call; the form closes on its answer
        assert not isinstance(app.screen, RuleForm)
        assert node.calls[-1][0] == "add_rule" and node.calls[-1][2]["force"] is True
        assert node.engine.state().ruleset.rule_count() == 9  # forced past the guard, pending
        assert node.engine.pending() is not None


def same(row: Any) -> tuple[str, tuple[str, ...], str]:
    return row.firewall, row.cidrs, row.match


@aio
async def test_edit_delete_and_reorder_selected_rule() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.query_one(RulesTable)
        table.move_cursor(row=0)
        row = table.selected_rule()
        assert row is not None
        await press(pilot, "e")
        form = app.screen
        assert isinstance(form, RuleForm) and form.row == row
        assert form.query_one("#f-order", Input).value == str(row.order)
        await press(pilot, "escape")
        await press(pilot, "plus")
        await pilot.pause()
        assert node.calls[-1][:2] == ("reorder_rule", (row.rule_id, 1))
        # the rule's id is the store's for its (object, sources, order): a move gives a new one
        (moved,) = [r for r in table.all_rows if (r.firewall, r.cidrs, r.match) == same(row)]
        assert moved.order == row.order + 1
        assert table.selected_rule() == moved  # the cursor follows the rule it moved
        await press(pilot, "c")
        await press(pilot, "d")
        assert isinstance(app.screen, ConfirmDialog)
        await press(pilot, "y")
        await pilot.pause()
        assert not [r for r in table.all_rows if (r.firewall, r.cidrs, r.match) == same(row)]
        assert not [r for r in node.engine.rule_rows() if r.rule_id == moved.rule_id]


@aio
async def test_mode_switch_asks_first() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "m")
        assert isinstance(app.screen, ConfirmDialog)
        await press(pilot, "n")
        assert node.engine.status().mode == "enforce"
        await press(pilot, "m", "y")
        await pilot.pause()
        assert node.engine.status().mode == "audit"
        assert "AUDIT" in text_of(app.query_one(StatusHeader))


@aio
async def test_trace_dialog_shows_both_verdicts_and_disagreement() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "t")
        dialog = app.screen
        assert isinstance(dialog, TraceDialog)
        dialog.query_one("#t-src", Input).value = "192.0.2.5"
        dialog.query_one("#t-dport", Input).value = "8080"
        dialog.action_trace()
        await settle(pilot)  # the trace is an engine call
        out = text_of(dialog.query_one("#trace-result", Static))
        assert "kernel" in out and "reference" in out and "DENY by rule 1" in out and "agree" in out
        node.disagree()
        dialog.action_trace()
        await settle(pilot)
        assert "DISAGREE" in text_of(dialog.query_one("#trace-result", Static))


@aio
async def test_history_export_interfaces_and_help() -> None:
    app, _node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "h")
        assert isinstance(app.screen, HistoryScreen)
        assert app.screen.query_one(DataTable).row_count == 2
        await press(pilot, "escape", "i")
        assert isinstance(app.screen, InterfacesScreen)
        names = [str(k.value) for k in app.screen.query_one(DataTable).rows]
        assert "ext0" in names and "infw-n1" in names
        await press(pilot, "escape", "y")
        assert isinstance(app.screen, ExportScreen)
        assert "IngressNodeFirewall" in app.screen.yaml_text
        await press(pilot, "escape", "question_mark")
        assert isinstance(app.screen, HelpScreen)
        keys = [k for k, _ in app.screen.keys]
        for key in ("a", "e", "d", "c", "r", "m", "t", "i", "h", "y", "/", "p", "?", "q", "ctrl+p"):
            assert any(key in k.split(" / ") or k == key for k in keys), key
        await press(pilot, "escape")
        assert app.screen is app.screen_stack[0]


@aio
async def test_export_saves_file(tmp_path: Path) -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "y")
        screen = app.screen
        assert isinstance(screen, ExportScreen)
        target = tmp_path / "rules.yaml"
        screen.query_one("#path", Input).value = str(target)
        await press(pilot, "ctrl+s")
        assert target.read_text() == node.engine.export_yaml()


@aio
async def test_history_revert() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "h", "r", "y")
        await pilot.pause()
        assert node.calls[-1][0] == "revert"  # nothing pending: back to generation 1
        assert node.engine.state().ruleset.rule_count() == 0
        assert app.screen.query_one(DataTable).row_count == 3


@aio
async def test_quit_says_the_firewall_keeps_running() -> None:
    app, _node = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(pilot, "q")
    assert (
        app.return_value
        == "infw-tui closed; the firewall keeps running (8 rules on infw-n1, infw-n2)"
    )


@aio
async def test_read_only_hides_edit_keys() -> None:
    app, _node = make_app(read_only=True)
    async with app.run_test(size=(120, 36)) as pilot:
        active = app.screen.active_bindings
        for key in ("a", "e", "d", "m", "c", "r"):
            assert key not in active, key
        await press(pilot, "a")
        assert app.screen is app.screen_stack[0]
        assert "READ-ONLY" in text_of(app.query_one(StatusHeader))


@aio
async def test_disconnected_marker_when_stats_fail() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        node.disconnect()  # the pins are gone: the program runs on, out of reach
        app.refresh_stats()
        await settle(pilot)
        await pilot.pause()
        banner = app.query_one(DisconnectedBanner)
        assert banner.has_class("-shown") and "DISCONNECTED from kernel state" in text_of(banner)
        node.reconnect()
        app.refresh_stats()
        await settle(pilot)
        assert not banner.has_class("-shown")


@aio
async def test_command_palette_lists_actions() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "infw: Add rule" in titles and "infw: Trace a packet" in titles
        assert "infw: Confirm pending change" not in titles
        node.other_console().add_rule("deny tcp 8443 from 203.0.113.0/24 on infw-n1 order 15")
        app.refresh_status()
        await settle(pilot)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "infw: Confirm pending change" in titles


@aio
async def test_attach_screen_when_nothing_is_loaded() -> None:
    app, node = make_app(loaded=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)  # the status reply opens the attach screen
        screen = app.screen
        assert isinstance(screen, AttachScreen)
        screen.query_one(SelectionList).select("infw-n1")
        screen.query_one("#attach", Button).press()
        await app.workers.wait_for_complete()
        assert await wait_until(pilot, lambda: app.screen is app.screen_stack[0])
        await settle(pilot)  # the refresh the attach starts
        assert app.screen is app.screen_stack[0]
        assert node.calls[-1][:2] == ("attach", (["infw-n1"],))
        assert node.kernel.xdp["infw-n1"][0] in node.kernel.ours()
        assert "infw-n1" in text_of(app.query_one(StatusHeader))


@aio
async def test_80x24_every_screen_opens() -> None:
    app, node = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await tick(pilot, node)
        table = app.query_one(RulesTable)
        shown = {str(c.value) for c in table.columns}
        assert {"id", "order", "cidrs", "action", "packets"} <= shown
        assert "firewall" not in shown  # collapsed at 80 columns
        for key in ("a", "t", "h", "i", "y", "question_mark", "m"):
            await press(pilot, key)
            await pilot.pause()
            assert app.screen is not app.screen_stack[0], key
            await press(pilot, "escape")
            await pilot.pause()
        assert app.screen is app.screen_stack[0]


def test_form_line_building_and_paths() -> None:
    values = FormValues(
        cidrs="192.0.2.0/24 198.51.100.0/24",
        interfaces="eth0",
        order="10",
        protocol="TCP",
        ports="80",
    )
    assert build_line(values) == "deny tcp 80 from 192.0.2.0/24,198.51.100.0/24 on eth0 order 10"
    _, errors = check_values(FormValues(cidrs="10.0.0.1", interfaces="eth0", order="1"))
    assert "cidrs" in errors
    _, errors = check_values(FormValues(cidrs="::/0", interfaces="eth0", order="x"))
    assert "order" in errors
    assert field_for_path("spec.ingress[0].rules[0].protocolConfig.tcp.ports") == "ports"
    assert field_for_path("spec.ingress[0].rules[0].protocolConfig.icmp.icmpCode") == "icmp_code"
    assert field_for_path("spec.ingress[0].sourceCIDRs[1]") == "cidrs"
    assert field_for_path("metadata.name") == "firewall"
