"""Issue #15 on the fake kernel (no root): the order of a change, take-over of a stopped
watchdog, status problems (orphaned, watchdog, drift, unfiltered), adoption, following
interfaces. tests/e2e/test_faults.py checks the same with real packets."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine.engine import Engine
from engine.errors import InfwError
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig

RULE = "deny tcp 8000 from 192.0.2.0/24 on eth0 order 10"


def make(tmp_path: Path, kernel: FakeKernel) -> Engine:
    engine = Engine(
        str(tmp_path / "pins"), str(tmp_path / "state"), config=NodeConfig(), session=None,
        kernel=kernel,
    )  # fmt: skip
    engine.attach(["eth0"])
    return engine


def kinds(engine: Engine) -> set[str]:
    return {p.kind for p in engine.status().problems}


def test_a_healthy_firewall_has_no_problems(tmp_path: Path) -> None:
    engine = make(tmp_path, FakeKernel())
    engine.add_rule(RULE, confirm_timeout=0)
    st = engine.status()
    assert not st.problems and st.generation == st.store_generation


def test_pins_removed_is_orphaned_and_a_write_adopts_it(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = make(tmp_path, kernel)
    kernel.remove_pins(engine.pin_root)
    engine._datapath = None
    assert "orphaned" in kinds(engine)
    result = engine.add_rule(RULE, confirm_timeout=0)
    assert not result.warnings, "not 'stored only': the orphan was adopted"
    assert kernel.open(engine.pin_root) is not None
    assert not engine.status().problems


def test_a_change_whose_watchdog_cannot_start_leaves_kernel_store_and_history(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    engine = make(tmp_path, kernel)
    before = engine.state().generation
    history = engine.store.generations()
    kernel.watchdog.fail_to_start = True
    with pytest.raises(InfwError):
        engine.add_rule(RULE, confirm_timeout=10)
    assert engine.state().generation == before
    assert engine.store.generations() == history, "no phantom history entry"
    assert engine.store.get_pending() is None
    assert kernel.open(engine.pin_root).config().generation == before  # type: ignore[union-attr]


def test_a_stopped_watchdog_is_reported_then_taken_over_after_the_grace(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = make(tmp_path, kernel)
    result = engine.add_rule(RULE, confirm_timeout=10)
    pid = engine.store.get_pending().watchdog_pid  # type: ignore[union-attr]
    kernel.watchdog.stopped.add(pid)
    assert "watchdog" in kinds(engine)
    pending = engine.store.get_pending()
    assert pending is not None
    # Past deadline + grace: the next look reverts, kernel first, and says so.
    engine.store.set_pending(
        type(pending)(pending.generation, pending.previous_generation, time.time() - 4, pid, "t")
    )
    st = engine.status()
    assert st.reverted and st.pending is None and not st.problems
    assert engine.state().ruleset.rule_count() == 0
    assert st.generation == st.store_generation == result.generation + 1
    assert kernel.watchdog.state(pid) == "gone"


def test_a_recreated_interface_is_unfiltered_until_followed(tmp_path: Path) -> None:
    kernel = FakeKernel()
    engine = make(tmp_path, kernel)
    engine.add_rule(RULE, confirm_timeout=0)
    del kernel.xdp["eth0"]
    kernel.links["eth0"] = 9  # deleted and created again: a new ifindex, no program
    assert "unfiltered" in kinds(engine)
    done = engine.follow_interfaces()
    assert any("attached to eth0" in d for d in done) and any("tables" in d for d in done)
    assert not engine.status().problems
    assert engine.follow_interfaces() == []  # nothing more to do


def test_rule_ids_are_not_reused_after_a_rule_disappears(tmp_path: Path) -> None:
    """A `delete ID` read from a stale listing must not hit another console's newer rule."""
    engine = make(tmp_path, FakeKernel())
    engine.add_rule(RULE, confirm_timeout=0)
    (first,) = [r.rule_id for r in engine.rule_rows()]
    engine.delete_rule(first, confirm_timeout=0)
    engine.add_rule(RULE.replace("8000", "9000"), confirm_timeout=0)
    (second,) = [r.rule_id for r in engine.rule_rows()]
    assert second != first
    again = Engine(engine.pin_root, engine.state_dir, config=NodeConfig(), session=None,
                   kernel=engine.kernel)  # fmt: skip
    again.delete_rule(second, confirm_timeout=0)
    again.add_rule(RULE.replace("8000", "9001"), confirm_timeout=0)
    (third,) = [r.rule_id for r in again.rule_rows()]
    assert third not in (first, second), "the high-water mark is stored, not kept in memory"


OTHER_NODE = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: elsewhere}
spec:
  nodeSelector: {matchLabels: {zone: b}}
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [198.51.100.0/24]
    rules: [{order: 1, action: Deny}]
"""


def in_zone_a(tmp_path: Path, kernel: FakeKernel) -> Engine:
    """An engine on a node labelled zone=a, attached to eth0."""
    engine = Engine(
        str(tmp_path / "pins"), str(tmp_path / "state"), session=None, kernel=kernel,
        config=NodeConfig(node_labels={"zone": "a"}),
    )  # fmt: skip
    engine.attach(["eth0"])
    return engine


def test_a_long_lived_engine_keeps_the_kernels_tables_across_full_compiles(
    tmp_path: Path,
) -> None:
    """The console, the REPL and the agent compile again and again in one engine; a compile
    from scratch (here every one: an object for another node keeps the ids apart) must not
    empty the tables an earlier one handed to the kernel (the fake holds them by reference, a
    view of the compiler's mapping)."""
    from engine.core.crd import load_yaml
    from engine.core.frame import build_frame
    from engine.kernel.seam import XDP_DROP

    kernel = FakeKernel()
    engine = in_zone_a(tmp_path, kernel)
    engine.apply(load_yaml(OTHER_NODE), confirm_timeout=0)
    engine.add_rule(RULE, confirm_timeout=0)
    dp = kernel.pinned[engine.pin_root]
    frame = build_frame("192.0.2.9", "192.0.2.1", 6, dport=8000)
    for _ in range(3):
        engine.restore()
        assert dp.table_ifindexes() == {kernel.links["eth0"]}
        assert dp.send(frame, "eth0") == XDP_DROP
        assert not engine.status().problems


def test_an_object_for_another_node_names_no_interface_here(tmp_path: Path) -> None:
    """status must not call an interface unfiltered that only another node's object names:
    restore would not attach it, so the problem could never be repaired."""
    from engine.core.crd import load_yaml

    kernel = FakeKernel({"lo": 1, "eth0": 2, "eth1": 3})
    engine = in_zone_a(tmp_path, kernel)
    engine.apply(load_yaml(OTHER_NODE.replace("[eth0]", "[eth1]")), confirm_timeout=0)
    engine.restore()
    assert "eth1" not in kernel.xdp
    assert not engine.status().problems


def test_the_watchdog_is_given_the_node_labels_the_change_was_compiled_with(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    engine = in_zone_a(tmp_path, kernel)
    engine.add_rule(RULE, confirm_timeout=10)
    pid = engine.store.get_pending().watchdog_pid  # type: ignore[union-attr]
    assert kernel.watchdog.labels[pid] == {"zone": "a"}


def test_a_stopped_agent_is_not_reported_running(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import subprocess

    from engine import agent

    child = subprocess.Popen(["sleep", "30"])
    try:
        monkeypatch.setattr(agent, "lock_holders", lambda path: {child.pid})
        assert agent.agent_health("/sys/fs/bpf/infw-x") == (f"running pid {child.pid}", None)
        os.kill(child.pid, signal.SIGSTOP)
        assert wait_state(child.pid, "T")
        text, problem = agent.agent_health("/sys/fs/bpf/infw-x")
        assert text == f"stopped pid {child.pid}"
        assert problem is not None and f"kill -CONT {child.pid}" in problem.fix
    finally:
        child.kill()
        child.wait()
    monkeypatch.setattr(agent, "lock_holders", lambda path: set())
    assert agent.agent_health("/sys/fs/bpf/infw-x") == ("", None)


def wait_state(pid: int, want: str, timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == want:
                return True
        time.sleep(0.01)
    return False


def test_an_interface_with_the_program_but_no_tables_counts_unconfigured(tmp_path: Path) -> None:
    from engine.core.frame import build_frame
    from engine.kernel.seam import XDP_PASS

    kernel = FakeKernel()
    engine = make(tmp_path, kernel)
    engine.add_rule(RULE, confirm_timeout=0)
    engine.attach(["lo"])  # attached by hand: no object names lo, so no tables for it
    dp = kernel.pinned[engine.pin_root]
    frame = build_frame("192.0.2.9", "192.0.2.1", 6, dport=8000)
    assert dp.send(frame, "lo") == XDP_PASS  # passed: the decision for an interface with no rules
    assert dp.send(frame, "eth0") != XDP_PASS  # eth0 has its tables
    other = build_frame("198.51.100.9", "192.0.2.1", 6, dport=8000)
    assert dp.send(other, "eth0") == XDP_PASS  # eth0's miss: no match
    totals = engine.stats().totals
    assert (totals.unconfigured[0], totals.no_match[0]) == (1, 1)
    st = engine.status()
    assert "1 packets passed unfiltered" in st.unconfigured and "lo" in st.unconfigured


def test_detach_with_the_pins_gone_detaches_the_orphan(tmp_path: Path) -> None:
    """Not "nothing attached" while the orphan keeps filtering: detach takes it back first."""
    kernel = FakeKernel()
    engine = make(tmp_path, kernel)
    engine.add_rule(RULE, confirm_timeout=0)
    kernel.remove_pins(engine.pin_root)
    fresh = Engine(engine.pin_root, engine.state_dir, config=NodeConfig(), session=None,
                   kernel=kernel)  # fmt: skip
    assert fresh.detach() == ["eth0"]
    assert kernel.xdp == {} and not fresh.status().problems
