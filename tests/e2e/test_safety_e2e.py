"""Safety end to end on the lab, with real packets: commit-confirmed survives a SIGKILLed console
(the watchdog puts the old rules back in time) and keeps a confirmed change; two writers in
separate processes don't lose each other's rules; restore() rebuilds a firewall whose pins were
removed.

Each test loads its own firewall (pin root /sys/fs/bpf/infw-e2e-<pid>-N, state in tmp_path) on
the lab's node interfaces and removes it afterwards (conftest.LabFirewall).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from engine.core.crd import load_yaml
from engine.errors import StateError
from engine.kernel.abi import NodeCounter
from engine.lab.world import LabInfo, send_packets
from engine.state.watchdog import ARM_GRACE
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.e2e]

PORT = 6001
OLD = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: safety}
spec:
  interfaces: ["infw-n*"]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 6001}}
      action: Allow
"""
# The new set denies what the old one allowed, with a rule of its own (its own id and counter).
NEW = OLD.replace(
    "    - order: 20\n",
    "    - order: 10\n"
    "      protocolConfig: {protocol: UDP, udp: {ports: 6001}}\n"
    "      action: Deny\n"
    "    - order: 20\n",
)


def packets(eng: Any, rule_id: int) -> int:
    return int(eng.datapath().rule_counters().get(rule_id, (0, 0))[0])


def node_packets(eng: Any, counter: NodeCounter) -> int:
    return int(eng.datapath().node_counters()[counter][0])


def ids_by_order(eng: Any) -> dict[int, int]:
    return {row.order: row.rule_id for row in eng.rule_rows()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def until_counted(eng: Any, rule_id: int, at_least: int, timeout: float = 2.0) -> int:
    wait_for(lambda: packets(eng, rule_id) >= at_least, timeout)
    time.sleep(0.1)  # and nothing more arrives
    return packets(eng, rule_id)


def load_old(lab_firewall: Any) -> Any:
    """An engine in this process with OLD applied and attached to the lab's node interfaces."""
    eng = lab_firewall.engine()
    lab_firewall.node(eng.attach, ["infw-n*"])
    lab_firewall.node(eng.apply, load_yaml(OLD), confirm_timeout=0)
    return eng


# ------------------------------------------------------------------- 5. SIGKILL while pending

_APPLY_PENDING_AND_DIE = """
from engine.core.crd import load_yaml
eng = engine()
result = eng.apply(load_yaml(sys.argv[1]), confirm_timeout=float(sys.argv[2]))
pending = eng.store.get_pending()
print(json.dumps({"generation": result.generation, "previous": result.previous_generation,
                  "deadline": result.pending.deadline, "watchdog": pending.watchdog_pid}),
      flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_unconfirmed_apply_reverts_after_the_console_is_killed(
    fresh_lab: LabInfo, lab_firewall: Any
) -> None:
    c1 = fresh_lab.clients[0]
    eng = load_old(lab_firewall)
    allow_id = ids_by_order(eng)[20]
    old_generation = eng.state().generation
    assert send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=3) == 3
    assert until_counted(eng, allow_id, 3) == 3  # the old set allows

    timeout = 3.0
    code, out, err = lab_firewall.script(_APPLY_PENDING_AND_DIE, NEW, str(timeout))
    assert code == -signal.SIGKILL, err
    applied = json.loads(out.strip().splitlines()[-1])
    deadline, watchdog = applied["deadline"], applied["watchdog"]
    assert applied["previous"] == old_generation
    assert alive(watchdog), "the watchdog must outlive the killed console"

    # Before the deadline: the new rule decides, the packets are dropped.
    deny_id = ids_by_order(eng)[10]
    assert deny_id != allow_id
    denied_before = node_packets(eng, NodeCounter.DENY)
    sent = send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=5)
    assert until_counted(eng, deny_id, sent) == sent
    assert packets(eng, allow_id) == 3
    assert node_packets(eng, NodeCounter.DENY) - denied_before == sent
    assert eng.pending() is not None
    assert time.time() < deadline, "too slow to see the pending rules in force"

    # Probe until a packet is allowed again: the old rule's counter moves.
    reverted_at = None
    probes_before_deadline_allowed = 0
    while time.time() < deadline + 2.0:
        before = packets(eng, allow_id)

        def allowed_again(before: int = before) -> bool:
            return packets(eng, allow_id) > before

        sent_at = time.time()
        send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=1)
        if wait_for(allowed_again, 0.05, step=0.01):
            if sent_at < deadline - 0.2:
                probes_before_deadline_allowed += 1
            reverted_at = time.time()
            break
    assert reverted_at is not None, "the previous rule set did not come back"
    assert probes_before_deadline_allowed == 0, "reverted long before the deadline"
    assert reverted_at <= deadline + 1.0, (
        f"reverted {reverted_at - deadline:.2f}s after the deadline"
    )
    print(f"reverted {reverted_at - deadline:+.2f}s from the deadline")

    assert wait_for(lambda: eng.pending() is None, 2.0)
    assert eng.ruleset() == load_yaml(OLD)
    state = eng.state()
    assert state.generation == applied["generation"] + 1
    assert eng.datapath().generation() == state.generation
    top = eng.history(3)
    assert top[0].generation == state.generation and top[0].current
    assert "auto-revert" in top[0].summary and f"back to {old_generation}" in top[0].summary
    assert top[1].generation == applied["generation"]
    assert wait_for(lambda: not alive(watchdog), 3.0), "the watchdog should exit after reverting"
    # The new rule's counter stops: everything goes to the old rule again.
    deny_now = packets(eng, deny_id)
    allow_now = packets(eng, allow_id)
    send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=4)
    assert until_counted(eng, allow_id, allow_now + 4) == allow_now + 4
    assert packets(eng, deny_id) == deny_now


# ------------------------------------------------------------------- 6. confirm keeps it


def test_confirmed_apply_stays(fresh_lab: LabInfo, lab_firewall: Any) -> None:
    c1 = fresh_lab.clients[0]
    eng = load_old(lab_firewall)
    started = time.time()
    result = lab_firewall.node(eng.apply, load_yaml(NEW), confirm_timeout=3)
    assert result.pending is not None and result.pending.deadline <= started + 3.5
    watchdog = eng.store.get_pending().watchdog_pid
    assert alive(watchdog)
    assert eng.confirm() == result.generation
    assert eng.pending() is None
    time.sleep(max(0.0, started + 5.0 - time.time()))  # well past the deadline

    assert eng.pending() is None
    assert eng.ruleset() == load_yaml(NEW)
    assert eng.state().generation == result.generation
    assert eng.datapath().generation() == result.generation
    assert not any("auto-revert" in h.summary for h in eng.history())
    deny_id = ids_by_order(eng)[10]
    denied = node_packets(eng, NodeCounter.DENY)
    sent = send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=6)
    assert until_counted(eng, deny_id, sent) == sent
    assert node_packets(eng, NodeCounter.DENY) - denied == sent
    # The watchdog leaves without acting. Confirmed before it first saw the marker, it only
    # learns that it is not needed when its arming grace runs out.
    assert wait_for(lambda: not alive(watchdog), max(0.0, started + ARM_GRACE + 2 - time.time()))
    assert eng.ruleset() == load_yaml(NEW) and eng.state().generation == result.generation


# ------------------------------------------------------------------- 7. concurrent writers

_WRITER = """
from engine.errors import StateError
lines = json.loads(sys.argv[1])
go = sys.argv[2]
eng = engine()
eng.ruleset()
while not os.path.exists(go):
    time.sleep(0.001)
retries = 0
for line in lines:
    for attempt in range(200):
        generation = eng.state().generation
        try:
            eng.add_rule(line, expected_generation=generation, confirm_timeout=0)
            break
        except StateError:
            retries += 1   # someone else got there first: reload and retry
    else:
        raise SystemExit(f"gave up on {line!r}")
print(json.dumps({"retries": retries}))
"""


def test_concurrent_writers_do_not_lose_updates(
    fresh_lab: LabInfo, lab_firewall: Any, tmp_path: Any
) -> None:
    c1 = fresh_lab.clients[0]
    eng = load_old(lab_firewall)
    start_generation = eng.state().generation
    per_writer = 6
    lines = {
        w: [
            f"deny udp {7000 + 100 * w + i} from 192.0.2.0/24 on 'infw-n*' "
            f"order {100 * w + i} firewall shared"
            for i in range(per_writer)
        ]
        for w in (1, 2)
    }
    go = str(tmp_path / "go")
    writers = [lab_firewall.spawn(_WRITER, json.dumps(lines[w]), go) for w in (1, 2)]
    time.sleep(1.0)  # both have imported the engine and read the rules
    open(go, "w").close()
    outputs = []
    for proc in writers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))

    ruleset = eng.ruleset()
    shared = [fw for fw in ruleset.firewalls if fw.name == "shared"]
    assert len(shared) == 1
    orders = sorted(rule.order for block in shared[0].ingress for rule in block.rules)
    assert orders == sorted(100 * w + i for w in (1, 2) for i in range(per_writer))
    assert any(fw.name == "safety" for fw in ruleset.firewalls)  # the first rules are kept too
    state = eng.state()
    assert state.generation == start_generation + 2 * per_writer
    assert eng.datapath().generation() == state.generation  # the kernel has the last write
    # The kernel enforces both writers' rules.
    ids = ids_by_order(eng)
    for w in (1, 2):
        rid = ids[100 * w + per_writer - 1]
        sent = send_packets(
            c1.ns, c1.node_v4, "udp", dport=7000 + 100 * w + per_writer - 1, count=2
        )
        assert until_counted(eng, rid, sent) == sent
    # And a stale edit is refused outright, leaving the rules as they are.
    with pytest.raises(StateError, match="changed under you"):
        lab_firewall.node(
            eng.add_rule,
            lines[1][0].replace("order 100", "order 300"),
            expected_generation=start_generation,
            confirm_timeout=0,
        )
    assert eng.ruleset() == ruleset and eng.state().generation == state.generation
    print("retries per writer:", [o["retries"] for o in outputs])


# ------------------------------------------------------------------- 8. restore


def test_restore_rebuilds_the_firewall_after_its_pins_are_gone(
    fresh_lab: LabInfo, lab_firewall: Any
) -> None:
    from engine.kernel.datapath import scan_attached

    c1 = fresh_lab.clients[0]
    eng = lab_firewall.engine()
    lab_firewall.node(eng.attach, ["infw-n*"])
    lab_firewall.node(eng.apply, load_yaml(NEW), confirm_timeout=0)
    ids = ids_by_order(eng)
    sent = send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=3)
    assert until_counted(eng, ids[10], sent) == sent
    before = lab_firewall.node(eng.status)
    attached_before = sorted((v.name, v.mode) for v in before.interfaces if v.ours)
    assert [name for name, _ in attached_before] == ["infw-n1", "infw-n2"]

    assert sorted(lab_firewall.node(eng.detach)) == ["infw-n1", "infw-n2"]  # unload
    assert not os.path.exists(lab_firewall.pin_root)
    assert lab_firewall.node(scan_attached) == []

    again = lab_firewall.engine()  # as at boot: a new process with only the stored state
    status = lab_firewall.node(again.restore)
    assert status.loaded
    assert sorted((v.name, v.mode) for v in status.interfaces if v.ours) == attached_before
    assert all(v.ours for v in status.interfaces)
    assert again.ruleset() == load_yaml(NEW)
    assert ids_by_order(again) == ids
    assert status.generation == again.state().generation
    assert again.datapath().generation() == again.state().generation

    denied, allowed_other = (
        send_packets(c1.ns, c1.node_v4, "udp", dport=PORT, count=4),
        send_packets(c1.ns, c1.node_v4, "udp", dport=PORT + 1, count=2),
    )
    assert until_counted(again, ids[10], denied) == denied  # fresh maps: counted from zero
    assert node_packets(again, NodeCounter.DENY) == denied
    assert wait_for(lambda: node_packets(again, NodeCounter.NO_MATCH) >= allowed_other, 1.0)

    # Restoring a running firewall rewrites its tables and keeps its counters.
    status = lab_firewall.node(again.restore)
    assert sorted((v.name, v.mode) for v in status.interfaces if v.ours) == attached_before
    assert packets(again, ids[10]) == denied
