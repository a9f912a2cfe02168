"""infw-tui at different widths, the refresh path's economy, and first-poll event backlog.

On a FakeNode: the real Engine over the fake kernel (no root).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rich.text import Text
from textual.coordinate import Coordinate
from textual.pilot import Pilot
from textual.widgets import Static
from textual.widgets._footer import FooterKey
from textual.widgets.data_table import ColumnKey

from console.tui.app import InfwApp
from console.tui.screens.rule_form import RuleForm, free_order
from console.tui.widgets.events_pane import EventPane
from console.tui.widgets.footer import KeyFooter
from console.tui.widgets.header import StatusHeader, first_fitting, header_variants
from console.tui.widgets.rules import MATCH_WIDTH, RulesTable
from engine.views import DropEvent
from tests.console.fakenode import LAB_LINES, Client
from tests.console.tuikit import aio, make_app, make_node, press, settle, tick, wait_until

pytestmark = pytest.mark.console


def line_of(widget: Static) -> str:
    rendered = widget.render()
    return rendered.plain if isinstance(rendered, Text) else str(rendered)


def footer_keys(app: InfwApp) -> list[str]:
    keys = app.query_one(KeyFooter).query(FooterKey)
    return [k.key for k in keys if k.key != "ctrl+p"]


async def shown_footer_keys(pilot: Pilot[Any], ready: Callable[[list[str]], bool]) -> list[str]:
    """The footer's keys once ready(keys) holds and they are laid out. The footer composes its
    keys after a refresh of its own; one pause() does not wait for that on a loaded machine
    (it takes a starved CPU for idle), and the keys were read as []."""
    app = pilot.app
    assert isinstance(app, InfwApp)
    await settle(pilot)

    def shown() -> bool:
        keys = app.query_one(KeyFooter).query(FooterKey)
        return ready(footer_keys(app)) and all(k.region.width for k in keys)

    assert await wait_until(pilot, shown), f"the footer shows {footer_keys(app)}"
    return footer_keys(app)


def many_rules(n: int) -> list[str]:
    return [
        f"{'deny' if i % 3 == 0 else 'allow'} tcp {1000 + i} from 10.{i // 250}.{i % 250}.0/24 "
        f"on infw-n* order {10 + i}"
        for i in range(n)
    ]


# ---------------------------------------------------------------------- header


@pytest.mark.parametrize("width", [80, 120, 160])
@aio
async def test_header_fits_and_reads_cleanly(width: int) -> None:
    app, node = make_app()
    async with app.run_test(size=(width, 24)) as pilot:
        await tick(pilot, node)
        await pilot.pause()
        text = line_of(app.query_one(StatusHeader))
        assert len(text) <= width, text
        assert "…" not in text  # a variant that fits, not one cut off
        assert "lab-node" in text and "ENFORCE" in text and "gen 2" in text
        assert "native," not in text and "native ," not in text
        if width >= 120:
            assert "ext0 generic FOREIGN · infw-n1 native · infw-n2 native" in text
        else:
            assert "FOREIGN" in text


def test_header_variants_shrink_in_order() -> None:
    status = make_node().engine.status()
    variants = header_variants(status)
    widths = [v.cell_len for v in variants]
    assert widths == sorted(widths, reverse=True)
    assert first_fitting(variants, widths[0]) is variants[0]
    assert first_fitting(variants, widths[0] - 1) is not variants[0]
    narrowest = first_fitting(variants, 10)  # nothing fits: the shortest, cut with an ellipsis
    assert narrowest is variants[-1] and narrowest.overflow == "ellipsis"


# ---------------------------------------------------------------------- footer


@aio
async def test_footer_at_80_keeps_the_important_keys_and_fits() -> None:
    app, node = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        important = {"a", "e", "d", "slash", "question_mark", "q"}
        keys = await shown_footer_keys(pilot, lambda keys: important <= set(keys))
        footer = app.query_one(KeyFooter)
        assert footer.compact
        assert "y" not in keys  # YAML export makes room; ? lists it
        used = sum(k.region.width for k in footer.query(FooterKey))
        assert used <= 80
        # a pending change puts confirm and revert in front of the rest
        node.other_console().add_rule("deny tcp 8443 from 203.0.113.0/24 on infw-n1 order 15")
        app.refresh_all()
        await shown_footer_keys(pilot, lambda keys: {"c", "r", "q"} <= set(keys))


@aio
async def test_footer_at_160_shows_every_key() -> None:
    app, _node = make_app()
    async with app.run_test(size=(160, 48)) as pilot:
        every = {"a", "e", "d", "slash", "t", "i", "h", "m", "p", "s", "y", "question_mark", "q"}
        keys = await shown_footer_keys(pilot, lambda keys: every <= set(keys))
        assert not app.query_one(KeyFooter).compact
        assert keys[-1] == "q"


# ---------------------------------------------------------------------- form defaults


@aio
async def test_icmp_type_and_code_fit_the_ports_column_at_120() -> None:
    """'type 8 code 0' (the lab's echo rule) is wider than the ports/ICMP column: the cell
    writes it as the event pane does, and '/' finds the rule by what the cell shows."""
    app, _node = make_app(
        rules=(*LAB_LINES, "deny icmp type 255 code 255 from 203.0.113.0/24 on infw-n1 order 90")
    )
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.query_one(RulesTable)
        cells = {
            (r.protocol, r.match): str(table.get_cell(k, "match"))
            for k, r in table.rows_by_key.items()
            if r.protocol.startswith("ICMP")
        }
        assert cells == {
            ("ICMP", "type 8 code 0"): "type 8/0",
            ("ICMPv6", "type 128 code 0"): "type 128/0",
            ("ICMP", "type 255 code 255"): "255/255",  # 'type 255/255' would not fit either
        }
        assert all(len(text) <= MATCH_WIDTH for text in cells.values())
        await press(pilot, "slash", *"255/255", "enter")
        assert [r.match for r in table.rows_by_key.values()] == ["type 255 code 255"]


@aio
async def test_the_widest_port_range_shows_whole_at_120() -> None:
    """'65535-65535' is the widest port match there is: the column holds all of it."""
    app, _node = make_app(
        rules=(*LAB_LINES, "deny tcp 10000-20000 from 203.0.113.0/24 on infw-n1 order 90")
    )
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.query_one(RulesTable)
        cells = [
            str(table.get_cell(k, "match"))
            for k, r in table.rows_by_key.items()
            if r.match == "10000-20000"
        ]
        assert cells == ["10000-20000"]
        # the column is laid out at a fixed width: DataTable cuts a longer cell when it draws
        assert table.columns[ColumnKey("match")].width >= len("65535-65535")


def test_free_order_goes_ahead_of_the_existing_rules() -> None:
    assert free_order([10, 20, 30]) == 5
    assert free_order([100]) == 95
    assert free_order([3, 10]) == 1
    assert free_order([1, 2, 3]) == 4
    assert free_order([]) == 10


@aio
async def test_new_rule_is_selected_after_add() -> None:
    app, _node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await press(pilot, "a")
        await pilot.pause()
        form = app.screen
        assert isinstance(form, RuleForm)
        await press(pilot, *"203.0.113.0/24", "enter")
        await pilot.pause()
        assert not isinstance(app.screen, RuleForm)
        row = app.table.selected_rule()
        assert row is not None and row.cidrs == ("203.0.113.0/24",) and row.order == 5


# ---------------------------------------------------------------------- refresh economy


@aio
async def test_only_changed_cells_are_written(monkeypatch: pytest.MonkeyPatch) -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await tick(pilot, node)
        await pilot.pause()
        table = app.query_one(RulesTable)
        writes: list[tuple[str, str]] = []
        original = table.update_cell

        def counting(row_key: Any, column_key: Any, value: Any, **kw: Any) -> None:
            writes.append((str(row_key), str(column_key)))
            original(row_key, column_key, value, **kw)

        monkeypatch.setattr(table, "update_cell", counting)
        # the clock moves but no packet arrives: nothing but ages may change
        node.clock.advance(0.2)
        app.refresh_stats()
        await settle(pilot)
        await pilot.pause()
        assert writes == []
        await tick(pilot, node)
        await pilot.pause()
        idle = {k for k, r in table.rows_by_key.items() if r.packets == 0}
        assert writes and not any(k in idle for k, _ in writes)
        assert {c for _, c in writes} <= {"hit", "packets", "bytes", "rate", "last"}


@aio
async def test_off_screen_rows_are_written_when_scrolled_into_view() -> None:
    # clients hit the first rules and the last ones (off screen until scrolled to)
    hitting = [
        Client("infw-n1", f"10.{i // 250}.{i % 250}.0/24", "TCP", 3, dport=1000 + i)
        for i in (*range(5), *range(990, 1000))
    ]
    app, node = make_app(rules=many_rules(1000), clients=hitting)
    async with app.run_test(size=(120, 36)) as pilot:
        await tick(pilot, node)
        await pilot.pause()
        table = app.query_one(RulesTable)
        writes: list[str] = []
        original = table.update_cell

        def counting(row_key: Any, column_key: Any, value: Any, **kw: Any) -> None:
            writes.append(str(row_key))
            original(row_key, column_key, value, **kw)

        table.update_cell = counting  # type: ignore[method-assign]
        await tick(pilot, node)
        await pilot.pause()
        assert 0 < len(set(writes)) < 200  # the rows near the viewport, not all 1,000
        last_key = table.coordinate_to_cell_key(Coordinate(table.row_count - 1, 0)).row_key.value
        assert last_key is not None
        row = table.rows_by_key[str(last_key)]
        table.move_cursor(row=table.row_count - 1, animate=False)
        await pilot.pause()
        cell = table.get_cell(str(last_key), "packets")
        assert getattr(cell, "plain", str(cell)) == f"{row.packets:,}"


@aio
async def test_reading_right_after_an_edit_keeps_rates_and_hits() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await tick(pilot, node)
        await tick(pilot, node)
        await pilot.pause()
        table = app.query_one(RulesTable)
        hits_before = table.hit_keys
        assert hits_before
        node.other_console().add_rule("deny tcp 8443 from 203.0.113.0/24 on infw-n1 order 15")
        node.clock.advance(0.1)  # a fraction of a second later
        app.refresh_all()
        await settle(pilot)
        await pilot.pause()
        assert table.row_count == 9
        assert table.hit_keys == hits_before
        key = next(iter(hits_before))
        cell = table.get_cell(key, "rate")
        assert getattr(cell, "plain", str(cell)) not in ("0", "")


# ---------------------------------------------------------------------- events


@aio
async def test_first_poll_skips_old_backlog_and_does_not_count_it() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        pane = app.query_one(EventPane)
        source = app.event_source
        assert source is not None
        now = node.clock()

        def event(when: float, src: str) -> DropEvent:
            return DropEvent(
                when, "infw-n1", 1, "DENY", "TCP", src, "192.0.2.1", 4000, 80, None, None, 0, 74
            )

        old = [event(now - 600 + i, "192.0.2.9") for i in range(5)]
        recent = event(now - 1, "192.0.2.10")
        app._first_poll = True  # as right after opening
        source.buffer.counts.sampled_out += 7  # the backlog overflowed the console's budget
        original = source.poll
        source.poll = lambda timeout_ms=100: [*old, recent]  # type: ignore[method-assign]
        app.poll_events()
        await settle(pilot)
        assert app._first_poll  # the backlog may go on in the next poll
        source.poll = lambda timeout_ms=100: [event(now, "192.0.2.11")]  # type: ignore[method-assign]
        app.poll_events()
        await settle(pilot)
        assert not app._first_poll  # caught up
        source.poll = original
        await pilot.pause()
        assert [ev.src for ev in list(pane.events)[-2:]] == ["192.0.2.10", "192.0.2.11"]
        assert not any(ev.src == "192.0.2.9" for ev in pane.events)
        assert pane.counts[2] == 0
        source.buffer.counts.sampled_out += 3  # sampling after catching up is counted
        app.poll_events()
        await settle(pilot)
        assert pane.counts[2] == 3
