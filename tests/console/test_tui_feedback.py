"""infw-tui telling the operator what they would otherwise miss: the guard's answer while typing,
columns a narrow terminal hides, a second console splitting the drop events, a pending change
when quitting. On a FakeNode: the real Engine over the fake kernel (no root)."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Button, Static

from console.tui import main as main_module
from console.tui.app import InfwApp
from console.tui.main import build_parser, say_goodbye
from console.tui.screens.dialogs import QuitDialog
from console.tui.screens.rule_form import RuleForm
from console.tui.widgets.cells import event_header
from console.tui.widgets.rules import RulesTable
from tests.console.fakenode import LAB_LINES, FakeNode
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


def shown_text(form: RuleForm, name: str) -> str:
    target = form.query_one("#general-error" if name == "general" else f"#e-{name}", Static)
    return text_of(target) if target.has_class("-shown") else ""


# ---------------------------------------------------------------------- guard dry run


@aio
async def test_guard_refusal_shows_under_ports_while_typing() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        form = await add_rule_form(
            pilot,
            {"cidrs": "198.51.100.0/24", "order": "5", "protocol": "TCP", "action": "Deny"},
        )
        await fill_form(pilot, {"ports": "22"})
        assert await wait_until(pilot, lambda: "22/tcp (SSH)" in shown_text(form, "ports"))
        text = shown_text(form, "ports")
        assert "guard would refuse" in text and "covers 22/tcp (SSH), which always passes" in text
        # a dry run: the engine's preview of the add, nothing applied
        assert [c[0] for c in node.calls] == ["preview_add"] * len(node.calls) != []
        assert node.engine.state().generation == 2
        assert app.screen is form

        # fixing the port takes the refusal away again
        await fill_form(pilot, {"ports": "8022"})
        assert await wait_until(pilot, lambda: shown_text(form, "ports") == "")


@aio
async def test_guard_dry_run_waits_for_a_pause_in_typing() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        form = await add_rule_form(
            pilot, {"cidrs": "198.51.100.0/24", "order": "5", "protocol": "TCP", "ports": "2"}
        )
        await fill_form(pilot, {"ports": "2222"})  # typed key by key: one check, after the last
        assert await wait_until(pilot, lambda: form.guard_line is not None)
        await pilot.pause(0.4)
        asked = [c[1][0] for c in node.called("preview_add")]
        assert len(asked) <= 2 and "2222" in asked[-1]
        assert form.guard_line and "2222" in form.guard_line


@aio
async def test_incomplete_or_invalid_form_is_not_put_to_the_guard() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await add_rule_form(pilot, {"protocol": "TCP", "ports": "22"})  # no source CIDRs yet
        await pilot.pause(0.5)
        assert node.calls == []
        await fill_form(pilot, {"cidrs": "198.51.100.0/24", "ports": "99999"})
        await pilot.pause(0.5)
        assert node.calls == []


@aio
async def test_edit_dry_run_replaces_the_edited_rule() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)
        table = app.query_one(RulesTable)
        target = next(r for r in table.all_rows if r.match == "8080")
        table.select_rule_id(target.rule_id)
        await pilot.pause()
        await press(pilot, "e")
        form = await fill_form(pilot, {"ports": "20-25"})
        assert await wait_until(pilot, lambda: "22/tcp" in shown_text(form, "ports"))
        assert node.calls[-1][:2] == ("preview_edit", (target.rule_id, form.guard_line))


@aio
async def test_refusal_about_another_rule_goes_to_the_general_line() -> None:
    # a rule forced in earlier: every change is refused for it, but it is no field of this form
    app, _node = make_app(
        rules=(*LAB_LINES, "deny tcp 22 from 192.0.2.0/24 on infw-n1 order 90 firewall old")
    )
    async with app.run_test(size=(120, 36)) as pilot:
        await settle(pilot)  # the rules are in the table: the form knows which ids are others'
        form = await add_rule_form(
            pilot, {"cidrs": "198.51.100.0/24", "order": "5", "protocol": "UDP", "ports": "53"}
        )
        assert await wait_until(pilot, lambda: "order 90" in shown_text(form, "general"))
        assert shown_text(form, "ports") == ""


# ---------------------------------------------------------------------- hidden columns


@aio
async def test_medium_width_says_which_columns_are_hidden() -> None:
    app, node = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await tick(pilot, node)
        await pilot.pause()
        title = text_of(app.query_one("#rules-title", Static))
        assert "4 columns hidden" in title and "widen the terminal" in title
        header = text_of(app.query_one("#events-header", Static))
        assert "len" in header and "hidden" in header and "widen" in header

        await pilot.resize_terminal(160, 48)
        assert await wait_until(
            pilot, lambda: "hidden" not in text_of(app.query_one("#rules-title", Static))
        )
        assert "hidden" not in text_of(app.query_one("#events-header", Static))

        await pilot.resize_terminal(80, 24)
        assert await wait_until(
            pilot, lambda: "hidden" in text_of(app.query_one("#rules-title", Static))
        )
        title = text_of(app.query_one("#rules-title", Static))
        assert "hidden" in title and len(title.rstrip()) <= 80


def test_event_header_hint_only_when_columns_are_left_out() -> None:
    assert "hidden" not in event_header(120).plain
    narrow = event_header(79).plain
    assert "len" in narrow and "hidden" in narrow and len(narrow) <= 79


# ---------------------------------------------------------------------- shared events


@aio
async def test_event_pane_says_when_another_console_reads_the_events() -> None:
    app, node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        title = app.query_one("#events-title", Static)
        assert "shared" not in text_of(title)
        node.other_reader(4242)
        app.tick()
        await settle(pilot)
        await pilot.pause()
        assert "shared with pid 4242: each console sees part of the events" in text_of(title)
        node.other_reader(None)
        app.tick()
        await settle(pilot)
        await pilot.pause()
        assert "shared" not in text_of(title)

        node.other_reader(4242)
        await pilot.resize_terminal(80, 24)
        app.tick()
        await settle(pilot)
        await pilot.pause()
        assert "shared with pid 4242" in text_of(title)


# ---------------------------------------------------------------------- quitting


async def pending_app(pilot: Pilot[Any], node: FakeNode) -> None:
    node.other_console().add_rule("deny tcp 8443 from 203.0.113.0/24 on infw-n1 order 15")
    app = pilot.app
    assert isinstance(app, InfwApp)
    app.refresh_all()
    await settle(pilot)
    await pilot.pause()


@aio
async def test_quit_with_pending_change_asks_and_stays_on_no() -> None:
    app, node = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pending_app(pilot, node)
        await press(pilot, "q")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, QuitDialog)
        body = text_of(dialog.query_one("#quit-body", Static))
        assert "Generation 3 is pending and reverts in 60s unless confirmed" in body
        assert "quit anyway? [y/N]" in body
        await press(pilot, "n")
        await pilot.pause()
        assert not isinstance(app.screen, QuitDialog)
        assert app.return_value is None
        await press(pilot, "ctrl+q")  # Textual's own quit key asks too
        await pilot.pause()
        assert isinstance(app.screen, QuitDialog)
        await press(pilot, "escape")
        await pilot.pause()
    assert app.return_value is None


@aio
async def test_quit_anyway_prints_both_lines() -> None:
    app, node = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pending_app(pilot, node)
        node.clock.advance(18)
        await press(pilot, "q")
        await pilot.pause()
        await press(pilot, "y")
        await pilot.pause()
    assert app.return_value == (
        "infw-tui closed; the firewall keeps running (9 rules on infw-n1, infw-n2)\n"
        "warning: generation 3 is still pending: it reverts in 42s unless you run 'infw confirm'"
    )
    out = io.StringIO()
    say_goodbye(app.return_value, out)
    assert out.getvalue().splitlines() == app.return_value.splitlines()
    assert not node.called("confirm") and node.engine.pending() is not None


@aio
async def test_confirm_and_quit() -> None:
    app, node = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await pending_app(pilot, node)
        await press(pilot, "q")
        await pilot.pause()
        assert isinstance(app.screen, QuitDialog)
        app.screen.query_one("#confirm", Button).press()
        await settle(pilot)  # the confirm is an engine call; the app quits on its answer
    assert node.calls[-1][0] == "confirm" and node.engine.pending() is None
    assert app.return_value == (
        "infw-tui closed; the firewall keeps running (9 rules on infw-n1, infw-n2)\n"
        "generation 3 is confirmed"
    )


@aio
async def test_read_only_console_quits_without_asking() -> None:
    app, node = make_app(read_only=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await pending_app(pilot, node)  # another console's change
        await press(pilot, "q")
        await pilot.pause()
    assert app.return_value is not None and "still pending" in app.return_value


# ---------------------------------------------------------------------- --netns


def test_netns_option_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    assert build_parser().parse_args(["--netns", "infw-node"]).netns == "infw-node"
    seen: dict[str, Any] = {}

    def fake_connect(pin_root: Any, state_dir: Any, **kwargs: Any) -> Any:
        seen.update(pin_root=pin_root, state_dir=state_dir, **kwargs)
        raise main_module.InfwError("stop here", "")

    import console.cli

    monkeypatch.setattr(console.cli, "connect", fake_connect)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("engine.kernel.netns.rejoin_host_mounts", lambda *_: None)
    code = main_module.main(["--netns", "ns1", "--pin-root", "/sys/fs/bpf/x", "--read-only"])
    assert code != 0
    assert seen == {
        "pin_root": "/sys/fs/bpf/x",
        "state_dir": None,
        "netns": "ns1",
        "read_only": True,
    }


def test_lab_with_netns_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main_module.main(["--lab", "--netns", "other"])
    assert exc.value.code == 2
    assert "--lab picks" in capsys.readouterr().err


@aio
async def test_late_dry_run_does_not_overwrite_the_apply_refusal() -> None:
    app, _node = make_app()
    async with app.run_test(size=(120, 36)) as pilot:
        form = await add_rule_form(
            pilot, {"cidrs": "0.0.0.0/0", "order": "5", "protocol": "TCP", "ports": "1-1024"}
        )
        await press(pilot, "enter")  # before the debounced dry run has started
        await pilot.pause()
        assert shown_text(form, "ports").startswith("✗ refused:")
        await pilot.pause(0.6)
        assert shown_text(form, "ports").startswith("✗ refused:")
        assert form.query_one("#force", Button).has_class("-shown")
