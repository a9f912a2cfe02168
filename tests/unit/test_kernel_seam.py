"""The real Engine over the one fake kernel (engine.kernel.fake): attach, apply, packets,
counters, events, traces and the watchdog, without root."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from engine.core.frame import build_frame
from engine.engine import Engine
from engine.errors import GuardRefusal, InfwError, PrivilegeError
from engine.kernel.abi import NodeCounter
from engine.kernel.fake import FakeKernel
from engine.kernel.seam import XDP_DROP, XDP_PASS
from engine.state.config import NodeConfig

IFACES = {"lo": 1, "eth0": 2, "eth1": 3}
DENY_8080 = "deny tcp 8080 from 192.0.2.0/24 on eth0 order 10"


def make(tmp_path: Path, kernel: FakeKernel | None = None) -> tuple[Engine, FakeKernel]:
    kernel = kernel or FakeKernel(IFACES)
    engine = Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(),
        session=None,
        kernel=kernel,
    )
    return engine, kernel


def tcp(src: str, port: int) -> bytes:
    return build_frame(src, "192.0.2.1", 6, dport=port)


def test_attach_loads_once_and_packets_follow_the_applied_rules(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.add_rule(DENY_8080, confirm_timeout=0)  # stored only: nothing is loaded yet
    assert not engine.loaded()
    engine.attach(["eth0"])
    assert kernel.loads == 1 and engine.loaded()
    dp = kernel.pinned[engine.pin_root]
    assert dp.send(tcp("192.0.2.9", 8080), "eth0") == XDP_DROP
    assert dp.send(tcp("192.0.2.9", 80), "eth0") == XDP_PASS
    assert dp.send(tcp("192.0.2.9", 8080), "eth1") == XDP_PASS, "eth1 runs no firewall"
    stats = engine.stats()
    (row,) = stats.rules
    assert row.packets == 1
    assert stats.totals.denied[0] == 1 and stats.totals.no_match[0] == 1
    # A second console attaches to the running firewall: no second compile.
    again, _ = make(tmp_path, kernel)
    again.attach(["eth0"])
    assert kernel.loads == 1


def test_drop_events_come_through_the_engines_event_source(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0"])
    engine.add_rule(DENY_8080, confirm_timeout=0)
    source = engine.open_events()
    kernel.pinned[engine.pin_root].send(tcp("192.0.2.9", 8080), "eth0")
    (event,) = source.poll()
    assert (event.interface, event.src, event.dport, event.verdict) == (
        "eth0",
        "192.0.2.9",
        8080,
        "DENY",
    )


def test_audit_mode_passes_what_enforce_drops(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0"])
    engine.add_rule(DENY_8080, confirm_timeout=0)
    engine.set_mode("audit")
    dp = kernel.pinned[engine.pin_root]
    assert dp.send(tcp("192.0.2.9", 8080), "eth0") == XDP_PASS
    assert dp.node_counters()[NodeCounter.WOULD_DENY][0] == 1


def test_trace_asks_the_fake_program_and_agrees_with_the_reference(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0"])
    engine.add_rule(DENY_8080, confirm_timeout=0)
    result = engine.trace("eth0", "192.0.2.9", "TCP", 8080)
    assert (result.kernel_verdict, result.reference_verdict, result.agree) == ("DENY", "DENY", True)
    assert engine.trace("eth0", "192.0.2.9", "TCP", 22).kernel_reason == "fail-safe"
    assert kernel.pinned[engine.pin_root].rule_counters() == {}, "a trace counts nothing"


def test_a_foreign_program_is_refused_without_force(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    kernel.add_foreign("eth1")
    with pytest.raises(GuardRefusal):
        engine.attach(["eth1"])
    assert kernel.xdp["eth1"] == (7, "native")


def test_without_privileges_attach_says_which(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, FakeKernel(IFACES, privileged=False))
    with pytest.raises(PrivilegeError):
        engine.attach(["eth0"])


def test_an_unconfirmed_apply_is_reverted_by_its_watchdog(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0"])
    result = engine.add_rule(DENY_8080, confirm_timeout=30)
    assert result.pending is not None
    dp = kernel.pinned[engine.pin_root]
    assert dp.send(tcp("192.0.2.9", 8080), "eth0") == XDP_DROP
    assert kernel.watchdog.run_due(engine.rollback_pending) == [], "not due yet"
    assert kernel.watchdog.run_due(engine.rollback_pending, time.time() + 31) == [result.generation]
    assert engine.pending() is None and engine.rule_rows() == []
    assert dp.send(tcp("192.0.2.9", 8080), "eth0") == XDP_PASS, "the kernel is back too"


def test_a_watchdog_that_does_not_start_leaves_nothing_applied(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0"])
    kernel.watchdog.fail_to_start = True
    with pytest.raises(InfwError):
        engine.add_rule(DENY_8080, confirm_timeout=30)
    assert engine.rule_rows() == [] and engine.pending() is None
    assert kernel.pinned[engine.pin_root].send(tcp("192.0.2.9", 8080), "eth0") == XDP_PASS


def test_detach_everywhere_unpins(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0", "eth1"])
    assert sorted(engine.detach()) == ["eth0", "eth1"]
    assert not engine.loaded() and kernel.xdp == {}
