"""Engine-level safety without a kernel: expired confirmations, revert steps, no lost edits."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.errors import ConfirmExpired, StateError, ValidationError
from engine.state.config import NodeConfig
from engine.state.store import Pending

IFACES = {"lo": 1, "eth0": 2}


def make_engine(state: Path) -> Engine:
    return Engine(
        pin_root=str(state / "no-pins"),
        state_dir=str(state),
        config=NodeConfig(),
        session=None,
        interfaces=lambda: dict(IFACES),
    )


def add(engine: Engine, order: int, port: int = 8000) -> None:
    engine.add_rule(f"deny tcp {port} from 192.0.2.0/24 on eth0 order {order}", confirm_timeout=0)


def test_expired_pending_with_dead_watchdog_is_rolled_back_by_the_next_look(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10)
    add(engine, 20)
    state = engine.state()
    # As if the watchdog was SIGKILLed (or the node rebooted) before the deadline.
    engine.store.set_pending(
        Pending(state.generation, state.generation - 1, time.time() - 10, 0, "t")
    )
    assert engine.pending() is None
    after = engine.state()
    assert [r.order for r in engine.rule_rows()] == [10], "the unconfirmed rule is gone"
    assert after.summary.startswith("auto-revert")
    with pytest.raises(ConfirmExpired) as exc:
        engine.confirm()
    assert exc.value.exit_code == 5


def test_confirm_after_the_deadline_is_refused_while_the_watchdog_acts(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10)
    gen = engine.state().generation
    engine.store.set_pending(Pending(gen, gen - 1, time.time() - 0.5, 0, "t"))
    with pytest.raises(ConfirmExpired):
        engine.confirm()


def test_confirm_in_time_keeps_the_change(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10)
    gen = engine.state().generation
    engine.store.set_pending(Pending(gen, gen - 1, time.time() + 30, 0, "t"))
    assert engine.confirm() == gen
    assert engine.pending() is None
    assert [r.order for r in engine.rule_rows()] == [10]


def test_revert_twice_keeps_going_back_and_skips_mode_only_generations(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10)
    add(engine, 20)
    add(engine, 30)
    stored = engine.state()
    # A generation that changes no rules (like a mode switch) is not a step back.
    engine.store.commit(
        stored, expected_generation=stored.generation, author="t", summary="mode audit"
    )
    engine.revert()
    assert [r.order for r in engine.rule_rows()] == [10, 20]
    engine.revert()
    assert [r.order for r in engine.rule_rows()] == [10], "a second revert goes further back"
    with pytest.raises(StateError):
        engine.revert()


def _adder(state: str, base: int, count: int) -> None:
    engine = make_engine(Path(state))
    for i in range(count):
        add(engine, base + i, port=base + i)


def test_two_consoles_adding_rules_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_adder, args=(str(tmp_path), base, 8)) for base in (100, 200)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    orders = sorted(r.order for r in make_engine(tmp_path).rule_rows())
    assert orders == [*range(100, 108), *range(200, 208)]


def test_add_with_a_used_order_is_refused_not_a_silent_replace(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10, port=7001)
    with pytest.raises(ValidationError) as exc:
        engine.add_rule("allow tcp 9999 from 192.0.2.0/24 on eth0 order 10", confirm_timeout=0)
    assert "order 10 is already used" in str(exc.value)
    (row,) = engine.rule_rows()
    assert row.rule.action.value == "Deny" and str(row.rule.ports) == "7001"


def test_a_rule_cannot_widen_its_objects_interfaces(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.add_rule("deny tcp 80 from 192.0.2.0/24 on eth0 order 10 firewall a", confirm_timeout=0)
    with pytest.raises(ValidationError) as exc:
        engine.add_rule(
            "allow udp 53 from 192.0.2.0/24 on lo order 11 firewall a", confirm_timeout=0
        )
    assert "object a applies to eth0" in str(exc.value)
    # Leaving out 'on' takes the object's own interfaces.
    engine.add_rule("allow udp 53 from 192.0.2.0/24 order 11 firewall a", confirm_timeout=0)
    assert {r.interfaces for r in engine.rule_rows()} == {("eth0",)}


def test_edit_keeps_the_rule_in_its_object_with_its_id(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    engine.add_rule("deny tcp 80 from 192.0.2.0/24 on eth0 order 10 firewall a", confirm_timeout=0)
    (row,) = engine.rule_rows()
    engine.edit_rule(row.rule_id, "deny tcp 82 from 192.0.2.0/24 order 10", confirm_timeout=0)
    (after,) = engine.rule_rows()
    assert (after.firewall, after.interfaces, str(after.rule.ports)) == ("a", ("eth0",), "82")
    assert after.rule_id == row.rule_id, "same object, CIDRs and order: same id, same counters"


def test_revert_gives_old_rules_their_old_ids(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10, port=7001)
    add(engine, 20, port=7002)
    ids = {r.order: r.rule_id for r in engine.rule_rows()}
    engine.delete_rule(ids[10], confirm_timeout=0)
    engine.revert()
    assert {r.order: r.rule_id for r in engine.rule_rows()} == ids


def test_revert_after_a_mode_change_still_steps_back_not_forward(tmp_path: Path) -> None:
    engine = make_engine(tmp_path)
    add(engine, 10)
    add(engine, 20)
    add(engine, 30)
    engine.revert()  # back to [10, 20]
    stored = engine.state()
    engine.store.commit(stored, expected_generation=stored.generation, author="t", summary="mode")
    engine.revert()
    assert [r.order for r in engine.rule_rows()] == [10], "not the reverted [10, 20, 30] again"
