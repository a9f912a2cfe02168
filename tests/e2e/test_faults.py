"""Fault injection with real packets (issue #15): the pins, the state dir, the watchdog, the
console and the interfaces fail while the firewall runs, and every case ends with packets
matching exactly one whole, correct rule set, and `status` telling the truth (exit non-zero
while something is wrong).

Each test builds a node of its own (tests/e2e/faultnode.py): its own namespaces, veth, pin
root and a small tmpfs as the state dir. Rule sets: OLD allows port 7001 and denies 7002, NEW
the reverse, so `rules_in_force()` tells old, new, none and mixed apart by packets alone.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import firewall_skip_reason
from tests.e2e.faultnode import NEW, NODE_IF, OLD, FaultNode, fault_node, process_state, sh
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.e2e]

GRACE = 3.0  # a dead or stopped watchdog is taken over this long after the deadline
ADD_NEW = [
    "add",
    *shlex.split("deny udp 7001 from 198.51.100.0/24 on infw-fa order 5 firewall fault"),
]


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultNode]:
    reason = firewall_skip_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    with fault_node(tmp_path) as built:
        yield built


def problems(status: dict) -> set[str]:
    return {p["kind"] for p in status.get("problems", [])}


def wait_past(deadline: float, extra: float = 0.0) -> None:
    time.sleep(max(0.0, deadline + extra - time.time()))


def assert_healthy(node: FaultNode, rules: str) -> dict:
    """Packets follow `rules`, status says nothing is wrong, store and kernel agree."""
    assert node.rules_in_force() == rules
    code, status = node.status()
    assert code == 0, status
    assert not status["problems"], status["problems"]
    assert status["generation"] == status["store_generation"]
    return status


# ------------------------------------------------------------------------- pins


def test_pins_removed_while_pending_the_old_rules_come_back(node: FaultNode) -> None:
    node.start_old()
    pending = node.apply_new_pending(4)
    node.remove_pins()
    wait_past(pending["deadline"])
    assert node.wait_rules("old", 2.0), "the unconfirmed rules stayed live after the deadline"
    # The program runs on with no pins: status says so, and attach takes it back without force.
    code, status = node.status()
    assert code != 0 and "orphaned" in problems(status), status
    node.ok("attach", NODE_IF)
    assert node.rules_in_force() == "old"
    node.ok(*ADD_NEW, "--confirm-timeout", "0")
    assert_healthy(node, "closed")


def test_pins_removed_status_reports_the_orphan_and_apply_reaches_the_kernel(
    node: FaultNode,
) -> None:
    node.start_old()
    node.remove_pins()
    code, status = node.status()
    assert code != 0 and "orphaned" in problems(status), status
    assert node.rules_in_force() == "old"  # the orphan keeps filtering
    # Not "stored only": the change reaches the program that filters the packets.
    node.ok("apply", node.rules_file(NEW, "new.yaml"), "--confirm-timeout", "0")
    assert_healthy(node, "new")


def test_pins_removed_detach_still_removes_the_firewall(node: FaultNode) -> None:
    node.start_old()
    node.remove_pins()
    run = node.ok("detach")
    assert NODE_IF in run.out, run.out  # not "no interface" while the orphan filters
    assert node.xdp_prog_id() is None and node.rules_in_force() == "none"


# ------------------------------------------------------------------------- state dir


@pytest.mark.parametrize("pages", [0, 1, 2, 3, 4])
def test_state_dir_almost_full_add_fails_cleanly_or_is_watched(node: FaultNode, pages: int) -> None:
    """However little space is left, `add` either fails with the kernel and the history
    untouched, or succeeds with a watchdog armed: never "failed" with the change live."""
    node.start_old()
    history = sorted(os.listdir(node.state_dir / "history"))
    node.fill_state_dir(leave_pages=pages)
    run = node.infw(*ADD_NEW, "--confirm-timeout", "10")
    if run.code != 0:
        assert node.rules_in_force() == "old", f"add failed ({run.err}), yet the change is live"
        assert not node.processes(), "no watchdog may run for a change that was refused"
        node.free_state_dir()
        assert sorted(os.listdir(node.state_dir / "history")) == history, "phantom history"
        assert_healthy(node, "old")
    else:
        assert node.rules_in_force() == "closed"  # OLD's deny and the added one
        node.free_state_dir()
        _code, status = node.status()
        assert status["pending"] and status["watchdog"].startswith("alive"), status


def test_state_dir_full_while_pending_reverts_the_kernel(node: FaultNode) -> None:
    node.start_old()
    pending = node.apply_new_pending(4)
    node.fill_state_dir()
    wait_past(pending["deadline"])
    assert node.wait_rules("old", 2.0), "a full disk kept the unconfirmed rules live"
    code, status = node.status()
    assert code not in (0, 4), status  # a problem, but not "run as root" to root
    assert problems(status) & {"drift", "store"}, status
    node.free_state_dir()
    assert wait_for(lambda: node.status()[0] == 0, 10.0), node.status()
    assert_healthy(node, "old")


def test_state_dir_read_only_while_pending_reverts_the_kernel(node: FaultNode) -> None:
    node.start_old()
    pending = node.apply_new_pending(4)
    node.state_read_only()
    try:
        wait_past(pending["deadline"])
        assert node.wait_rules("old", 2.0), "a read-only disk kept the unconfirmed rules live"
        code, status = node.status()
        assert code not in (0, 4), (code, status)
        assert problems(status) & {"drift", "store"}, status
    finally:
        node.state_read_only(False)
    assert wait_for(lambda: node.status()[0] == 0, 10.0), node.status()
    assert_healthy(node, "old")


def test_state_dir_gone_while_pending_reverts_the_kernel_from_memory(node: FaultNode) -> None:
    """The state dir vanishes (its disk unmounted) while a change is pending: an empty dir
    where the marker was is no confirmation. The watchdog reverts the kernel from what it
    holds, and records the revert once the dir is back."""
    node.start_old()
    pending = node.apply_new_pending(4)
    node.lose_state_dir()
    try:
        wait_past(pending["deadline"])
        assert node.wait_rules("old", 2.0), "a vanished state dir kept the unconfirmed rules"
        code, _status = node.status()
        assert code != 0  # the store is not the one the kernel runs: not healthy
    finally:
        node.return_state_dir()
    assert wait_for(lambda: node.status()[0] == 0, 10.0), node.status()
    status = assert_healthy(node, "old")
    assert status["store_generation"] == pending["generation"] + 1


# ------------------------------------------------------------------------- watchdog


def test_a_stopped_lock_holder_does_not_keep_the_unconfirmed_rules(node: FaultNode) -> None:
    """Something SIGSTOPped while it holds the store lock (a console mid-command, the agent
    mid-sweep): at the deadline the watchdog reverts the kernel from memory instead of waiting
    on the lock, and records the revert once the lock is free."""
    node.start_old()
    pending = node.apply_new_pending(3)
    holder = subprocess.Popen([
        sys.executable, "-c",
        "import fcntl, os, signal, sys; fd = os.open(sys.argv[1], os.O_RDWR); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.kill(os.getpid(), signal.SIGSTOP)",
        str(node.state_dir / "lock"),
    ])  # fmt: skip
    try:
        assert wait_for(lambda: process_state(holder.pid) == "T", 5.0)
        wait_past(pending["deadline"])
        assert node.wait_rules("old", 2.0), "the revert waited on a stopped lock holder"
    finally:
        holder.kill()
        holder.wait()
    assert wait_for(lambda: node.status()[0] == 0, 10.0), node.status()
    assert_healthy(node, "old")


def assert_taken_over_now(node: FaultNode, pending: dict) -> None:
    """The status that takes a change back shows the view after it, and says what it did."""
    code, status = node.status()
    assert status["reverted"] and f"generation {pending['generation']}" in status["reverted"]
    assert status["pending"] is None and status["watchdog"] == "", status
    assert code == 0 and not status["problems"], status
    # kernel and store both at the revert's generation, one past the unconfirmed one
    assert status["generation"] == status["store_generation"] == pending["generation"] + 1
    assert_healthy(node, "old")


def test_watchdog_killed_is_taken_over_after_the_grace(node: FaultNode) -> None:
    node.start_old()
    pending = node.apply_new_pending(3)
    os.kill(pending["watchdog_pid"], signal.SIGKILL)
    code, status = node.status()
    # before: not "reverts in 3s" as if all were well
    assert code != 0 and "watchdog" in problems(status), status
    assert status["pending"]["generation"] == pending["generation"]
    assert status["watchdog"] == "gone", status
    assert node.rules_in_force() == "new"  # still pending: nothing reverted early
    wait_past(pending["deadline"], GRACE + 0.5)
    assert node.rules_in_force() == "new", "a dead watchdog reverted nothing by itself"
    assert_taken_over_now(node, pending)  # the next command takes over


def test_watchdog_stopped_is_taken_over_and_removed(node: FaultNode) -> None:
    node.start_old()
    pending = node.apply_new_pending(3)
    pid = pending["watchdog_pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        code, status = node.status()
        assert code != 0 and "watchdog" in problems(status), status
        assert status["watchdog"] == f"stopped pid {pid}", status
        wait_past(pending["deadline"], GRACE + 0.5)
        assert node.rules_in_force() == "new", "a stopped watchdog reverted nothing by itself"
        assert_taken_over_now(node, pending)
        assert wait_for(lambda: process_state(pid) in (None, "Z"), 2.0), "hung watchdog left"
        # A confirm after the take-over is too late, not "being reverted" forever, and edits
        # are taken again.
        assert node.infw("confirm").code == 5
        node.ok(*ADD_NEW, "--confirm-timeout", "0")
        assert node.rules_in_force() == "closed"
    finally:
        if process_state(pid) == "T":
            os.kill(pid, signal.SIGKILL)


ELSEWHERE = f"""
---
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {{name: elsewhere}}
spec:
  nodeSelector: {{matchLabels: {{zone: b}}}}
  interfaces: [{NODE_IF}]
  ingress:
  - sourceCIDRs: [198.51.100.0/24]
    rules:
    - order: 1
      protocolConfig: {{protocol: UDP, udp: {{ports: "7001-7002"}}}}
      action: Deny
"""


def test_watchdog_revert_enforces_only_this_nodes_objects(node: FaultNode) -> None:
    """Both rule sets carry an object for other nodes (zone b) that would close both ports:
    the watchdog's revert compiles what the change did, this node's objects only."""
    node.global_args = ["--node-labels", "zone=a"]
    node.ok("attach", NODE_IF)
    node.ok("apply", node.rules_file(OLD + ELSEWHERE, "old.yaml"), "--confirm-timeout", "0")
    assert node.rules_in_force() == "old"
    new = node.rules_file(NEW + ELSEWHERE, "new.yaml")
    node.ok("apply", new, "--confirm-timeout", "3")
    assert node.rules_in_force() == "new"
    deadline = json.loads((node.state_dir / "pending.json").read_text())["deadline"]
    wait_past(deadline)
    assert node.wait_rules("old", 2.0), "the revert enforced another node's object"
    status = assert_healthy(node, "old")
    assert status["not_for_node"] == ["elsewhere"], status


def test_agent_takes_over_a_dead_watchdog_with_no_console(node: FaultNode) -> None:
    node.start_old()
    node.spawn("agent")
    pending = node.apply_new_pending(3)
    os.kill(pending["watchdog_pid"], signal.SIGKILL)
    wait_past(pending["deadline"])
    assert node.wait_rules("old", GRACE + 2.0), "nothing reverted without a console"
    assert_healthy(node, "old")


def test_console_killed_mid_apply_leaves_one_whole_rule_set(node: FaultNode) -> None:
    node.start_old()
    new = node.rules_file(NEW, "new.yaml")
    for marker in ("pending.json", "state.json"):
        before = (node.state_dir / "state.json").stat().st_mtime_ns
        proc = node.spawn("apply", new, "--confirm-timeout", "2")

        def reached(marker: str = marker, before: int = before) -> bool:
            path = node.state_dir / marker
            return path.exists() and (marker != "state.json" or path.stat().st_mtime_ns != before)

        assert wait_for(reached, 30.0, step=0.002)
        proc.kill()
        proc.communicate()
        assert node.rules_in_force() in ("old", "new")  # never a mix
        time.sleep(2 + GRACE + 0.5)
        node.status()
        assert_healthy(node, "old")


# ------------------------------------------------------------------------- interfaces


def test_interface_moved_away_and_back_is_filtered_by_the_agent(node: FaultNode) -> None:
    node.start_old()
    node.spawn("agent")
    node.move_away()
    node.ok("apply", node.rules_file(NEW, "new.yaml"), "--confirm-timeout", "0")
    node.move_back()
    assert node.wait_rules("new", 1.5), "the returning interface was not filtered"
    assert_healthy(node, "new")


def test_interface_deleted_and_recreated_is_filtered_by_the_agent(node: FaultNode) -> None:
    node.start_old()
    node.spawn("agent")
    old_index = node.ifindex()
    node.delete_link()
    node.make_link()
    assert node.ifindex() != old_index
    assert node.wait_rules("old", 1.5), "the recreated interface was not filtered"
    assert_healthy(node, "old")


def test_interface_renamed_into_the_objects_is_filtered_by_the_agent(node: FaultNode) -> None:
    node.start_old()
    node.spawn("agent")
    node.delete_link()
    sh("ip", "-n", node.ns, "link", "add", "infw-fq", "type", "veth", "peer", "name",
       "infw-fb", "netns", node.client_ns)  # fmt: skip
    sh("ip", "-n", node.client_ns, "addr", "add", "198.51.100.2/24", "dev", "infw-fb")
    sh("ip", "-n", node.client_ns, "link", "set", "infw-fb", "up")
    sh("ip", "-n", node.ns, "link", "set", "infw-fq", "name", NODE_IF)
    node.configure_node_end()
    assert node.wait_rules("old", 1.5), "the renamed interface was not filtered"


def test_an_interface_that_appears_under_an_objects_glob_is_filtered_by_the_agent(
    node: FaultNode,
) -> None:
    """apply keeps the objects' own names and globs as the attach patterns: a link created
    later that the glob covers is attached and filtered by the agent, with no console."""
    text = OLD.replace(f"interfaces: [{NODE_IF}]", 'interfaces: ["infw-f*"]')
    node.ok("apply", node.rules_file(text, "old.yaml"), "--confirm-timeout", "0")
    assert node.rules_in_force() == "old"
    node.spawn("agent")
    # a second link, its far end in the spare namespace as a second client (same subnet:
    # no reverse-path filter, so only the firewall decides)
    for conf in ("all", "default"):
        sh("ip", "netns", "exec", node.ns, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=0")
    sh("ip", "-n", node.ns, "link", "add", "infw-fz", "type", "veth", "peer", "name",
       "infw-fy", "netns", node.away_ns)  # fmt: skip
    sh("ip", "-n", node.ns, "addr", "add", "198.51.100.9/32", "dev", "infw-fz")
    sh("ip", "-n", node.ns, "link", "set", "infw-fz", "up")
    sh("ip", "-n", node.away_ns, "addr", "add", "198.51.100.10/24", "dev", "infw-fy")
    sh("ip", "-n", node.away_ns, "link", "set", "infw-fy", "up")
    via = {"client": node.away_ns, "dst": "198.51.100.9"}
    assert wait_for(lambda: node.rules_in_force(**via) == "old", 3.0), node.rules_in_force(**via)
    assert_healthy(node, "old")


def test_agent_stopped_is_reported_and_follows_again_when_continued(node: FaultNode) -> None:
    node.start_old()
    agent = node.spawn("agent")
    assert wait_for(lambda: node.status()[1]["agent"] == f"running pid {agent.pid}", 10.0)
    os.kill(agent.pid, signal.SIGSTOP)
    code, status = node.status()
    # not "running": a stopped agent follows nothing
    assert code != 0 and "agent" in problems(status), status
    assert status["agent"] == f"stopped pid {agent.pid}", status
    os.kill(agent.pid, signal.SIGCONT)
    node.move_away()
    node.move_back()
    assert node.wait_rules("old", 1.5), "the continued agent did not follow"
    assert_healthy(node, "old")


def test_agent_never_undoes_a_detach(node: FaultNode) -> None:
    node.start_old()
    node.spawn("agent")
    node.ok("detach", NODE_IF)
    time.sleep(2.5)  # two sweeps and the link events of the detach
    assert node.xdp_prog_id() is None and node.rules_in_force() == "none"
    node.ok("attach", NODE_IF)
    node.ok("detach")  # everything: unloaded, pins removed
    time.sleep(2.5)
    assert node.xdp_prog_id() is None and node.rules_in_force() == "none"


def test_interface_back_without_agent_is_reported_and_restore_repairs(node: FaultNode) -> None:
    node.start_old()
    node.move_away()
    node.ok("apply", node.rules_file(NEW, "new.yaml"), "--confirm-timeout", "0")
    node.move_back()
    code, status = node.status()
    assert code != 0 and "unfiltered" in problems(status), status
    if node.xdp_prog_id() is not None:  # still attached: infw's own, never FOREIGN
        assert all(i["ours"] for i in status["interfaces"]), status
    node.ok("restore")
    assert_healthy(node, "new")


def test_restore_attaches_where_the_objects_name_globs_resolved(node: FaultNode) -> None:
    """A node that stored rules and runs no program (a boot, a --no-attach apply): restore
    loads it and attaches to the interfaces the objects name (a glob resolved), reporting the
    name that matches nothing here."""
    text = OLD.replace(f"interfaces: [{NODE_IF}]", 'interfaces: ["infw-f*", infw-nothere]')
    node.ok("apply", node.rules_file(text, "old.yaml"), "--no-attach", "--confirm-timeout", "0")
    assert node.xdp_prog_id() is None and node.rules_in_force() == "none"
    run = node.ok("restore")
    assert "infw-nothere" in run.out + run.err, (run.out, run.err)
    assert node.xdp_prog_id() is not None
    assert_healthy(node, "old")


def test_unconfigured_interface_is_counted_not_passed_as_no_match(node: FaultNode) -> None:
    """An interface with the program but no tables (moved away and back by hand, no agent)
    is counted as unconfigured by the kernel, and status names it."""
    node.start_old()
    node.move_away()
    node.ok("apply", node.rules_file(NEW, "new.yaml"), "--confirm-timeout", "0")
    node.move_back()
    node.delivered(7001)
    stats = node.infw("stats", "--json").json()
    assert stats["totals"]["unconfigured"][0] >= 5, stats["totals"]


# ------------------------------------------------------------------------- pin root


def test_pin_root_created_by_nobody_is_refused(node: FaultNode) -> None:
    sh("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "mkdir", node.pin_root)
    os.chmod(node.pin_root, 0o777)
    run = node.infw("attach", NODE_IF)
    assert run.code != 0
    assert "chown" in run.err or "rm" in run.err, run.err
    assert node.xdp_prog_id() is None, "attached under a pin root anyone can write"
    assert not os.listdir(node.pin_root)
    assert node.rules_in_force() == "none"


def test_pin_root_is_created_root_only(node: FaultNode) -> None:
    node.start_old()
    st = os.stat(node.pin_root)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o700
    # nobody cannot remove the pins and so cannot orphan the firewall
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "rm", "-f",
         f"{node.pin_root}/prog"], capture_output=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert_healthy(node, "old")
