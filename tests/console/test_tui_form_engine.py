"""The rule form's dry run is the engine's (the real Engine over the fake kernel, no root): the
apply's own conflict checks refuse next to the field, and the warnings the engine gives (the
operator-parity notes the CLI prints, issue #10) appear in the form before anything is applied."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Static

from console.tui.app import InfwApp
from engine.engine import Engine
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig
from tests.console.tuikit import add_rule_form, aio, dry_run_answered, fill_form

pytestmark = pytest.mark.console


def node(tmp_path: Path) -> Engine:
    engine = Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(),
        session=None,
        kernel=FakeKernel({"lo": 1, "eth0": 2}),
    )
    engine.add_rule("deny tcp 8080 from 192.0.2.0/24 on eth0 order 10", confirm_timeout=0)
    engine.attach(["eth0"])
    return engine


def console(engine: Engine) -> InfwApp:
    """The app on engine with long timers: the tests drive the form themselves."""
    return InfwApp(engine, stats_interval=60, events_interval=60, offer_attach=False)


@aio
async def test_form_shows_the_engines_parity_warnings(tmp_path: Path) -> None:
    engine = node(tmp_path)
    app = console(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await add_rule_form(pilot)
        warnings = form.query_one("#warnings", Static)
        assert not warnings.has_class("-shown")
        await fill_form(pilot, {"protocol": "TCP"})
        await fill_form(pilot, {"cidrs": "198.51.100.7/24", "order": "150", "ports": "80-90"})
        await dry_run_answered(pilot, form)
        text = str(warnings.render())
        assert warnings.has_class("-shown"), form.warnings
        assert "host bits set" in text and "198.51.100.0/24" in text
        assert "order 150" in text and "orders 1-99" in text
        assert "end port" in text
        assert text.count("warning:") == len(form.warnings) == 3
        # A clean rule clears them.
        await fill_form(pilot, {"cidrs": "198.51.100.0/24", "order": "15", "ports": "80"})
        await dry_run_answered(pilot, form)
        assert not warnings.has_class("-shown") and form.warnings == []
    assert engine.state().ruleset.rule_count() == 1  # a dry run applies nothing


@aio
async def test_form_dry_run_refuses_what_the_apply_would(tmp_path: Path) -> None:
    engine = node(tmp_path)
    app = console(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await add_rule_form(pilot)
        # Order 10 for 192.0.2.0/24 is taken: the apply would refuse to replace that rule
        # silently (the engine's conflict check, which a rebuilt rule set never ran).
        await fill_form(pilot, {"cidrs": "192.0.2.0/24", "order": "10"})
        await dry_run_answered(pilot, form)
        error = str(form.query_one("#e-order", Static).render())
        assert "order 10 is already used" in error, form.guard_notes
        assert "impact" in str(form.query_one("#impact", Static).render())
    assert engine.state().ruleset.rule_count() == 1


@aio
async def test_an_invalid_edit_takes_back_the_impact_of_the_line_before(tmp_path: Path) -> None:
    engine = node(tmp_path)
    app = console(engine)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await add_rule_form(pilot)
        await fill_form(pilot, {"protocol": "TCP"})
        await fill_form(pilot, {"cidrs": "198.51.100.0/24", "order": "15", "ports": "9999"})
        await dry_run_answered(pilot, form)
        impact = form.query_one("#impact", Static)
        assert "rules: 1 added" in str(impact.render())
        await fill_form(pilot, {"ports": "99999"})  # no rule now: the impact was the old line's
        assert str(impact.render()) == "impact: waiting for a complete rule"
        assert form.impact == ""
