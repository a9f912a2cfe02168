"""The Engine calls the consoles use instead of engine internals: the form's dry run, reorders,
trace checks, rule files, export, the lock holder, connecting, and the engine package's names."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import engine
from engine import (
    ConnectOptions,
    Engine,
    GuardRefusal,
    RequestError,
    TraceRequest,
    ValidationError,
)
from engine.core.crd import load_yaml
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig

IFACES = {"lo": 1, "eth0": 2}


def make(tmp_path: Path) -> Engine:
    return Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(),
        session=None,
        kernel=FakeKernel(IFACES),
    )


def add(e: Engine, line: str) -> None:
    e.add_rule(line, confirm_timeout=0)


def test_check_rule_runs_the_apply_conflict_checks_and_applies_nothing(tmp_path: Path) -> None:
    e = make(tmp_path)
    add(e, "deny tcp 8000 from 192.0.2.0/24 on eth0 order 10")
    generation = e.state().generation
    with pytest.raises(ValidationError, match="order 10 is already used"):
        e.check_rule("allow tcp 9000 from 192.0.2.0/24 on eth0 order 10")
    with pytest.raises(GuardRefusal):
        e.check_rule("deny tcp 22 from 192.0.2.0/24 on eth0 order 20")
    (row,) = e.rule_rows()
    # Editing a rule onto its own order is no conflict.
    assert e.check_rule("deny tcp 8001 from 192.0.2.0/24 on eth0 order 10", row.rule_id) == []
    assert e.state().generation == generation, "a dry run stores nothing"


def test_reorder_skips_used_orders_and_stops_at_the_bounds(tmp_path: Path) -> None:
    e = make(tmp_path)
    for order in (10, 11, 12):
        add(e, f"deny tcp {8000 + order} from 192.0.2.0/24 on eth0 order {order}")
    add(e, "deny tcp 9000 from 198.51.100.0/24 on eth0 order 11")  # another block
    first = next(r for r in e.rule_rows() if r.order == 10 and "192.0.2.0/24" in r.cidrs)
    assert e.reorder_target(first.rule_id, +1) == 13
    e.reorder_rule(first.rule_id, +1, confirm_timeout=0)
    moved = next(r for r in e.rule_rows() if str(r.rule.ports) == "8010")
    assert moved.order == 13
    bottom = next(r for r in e.rule_rows() if r.order == 11 and "198.51.100.0/24" in r.cidrs)
    assert e.reorder_target(bottom.rule_id, -1) == 10
    top = next(r for r in e.rule_rows() if r.order == 11 and "192.0.2.0/24" in r.cidrs)
    e.reorder_rule(top.rule_id, -10, confirm_timeout=0)
    top = next(r for r in e.rule_rows() if str(r.rule.ports) == "8011")
    assert top.order == 1
    with pytest.raises(ValidationError, match="order stays within"):
        e.reorder_target(top.rule_id, -1)


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (TraceRequest("eth0", "192.0.2.9", "ICMP", dport=80), "--dport does not apply to ICMP"),
        (TraceRequest("eth0", "192.0.2.9", "ICMP", icmp_code=0), "--icmp-code needs"),
        (TraceRequest("eth0", "192.0.2.9", "TCP"), "needs a destination port"),
        (TraceRequest("eth0", "2001:db8::9", "ICMP", icmp_type=8), "does not travel"),
        (TraceRequest("eth0", "192.0.2.9", "UDP", 53, vlan=(1, 2, 3)), "3 VLAN tags"),
        (TraceRequest("eth0", "192.0.2.9", "UDP", 53, dst="2001:db8::1"), "IP families"),
    ],
)
def test_trace_refuses_packets_that_cannot_exist(
    tmp_path: Path, req: TraceRequest, message: str
) -> None:
    with pytest.raises(RequestError, match=message) as exc:
        make(tmp_path).trace_packet(req)
    assert exc.value.exit_code == 2


def test_trace_packet_answers_a_sound_request(tmp_path: Path) -> None:
    e = make(tmp_path)
    add(e, "deny udp 53 from 192.0.2.0/24 on eth0 order 10")
    result = e.trace_packet(TraceRequest("eth0", "192.0.2.9", "UDP", 53))
    assert (result.reference_verdict, result.kernel_verdict) == ("DENY", None)


RULES = """\
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web}
spec:
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: TCP, tcp: {ports: 8080}}
      action: Deny
"""


def test_rule_files_validate_apply_and_export_round_trip(tmp_path: Path) -> None:
    e = make(tmp_path)
    path = tmp_path / "web.yaml"
    path.write_text(RULES)
    ruleset, warnings = e.validate_file(str(path))
    assert ruleset.rule_count() == 1 and warnings == [] and e.rule_rows() == []
    e.apply_file(str(path), confirm_timeout=0)
    assert e.history(1)[0].summary == "apply web.yaml"
    e.apply_file("-", io.StringIO(RULES.replace("8080", "8081")), confirm_timeout=0)
    assert e.history(1)[0].summary == "apply stdin"
    as_json = json.loads(e.export(as_json=True))
    assert as_json["kind"] == "List" and as_json["items"][0]["metadata"]["name"] == "web"
    again = load_yaml(e.export(), "export")
    assert again.semantic_key() == e.ruleset().semantic_key()


def test_lock_holder_names_the_console_holding_the_store_lock(tmp_path: Path) -> None:
    e = make(tmp_path)
    assert e.lock_holder() is None
    code = (
        "import sys, time; from engine.state.store import Store\n"
        "with Store(sys.argv[1]).lock():\n"
        "    print('held', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, e.state_dir], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert e.lock_holder() == proc.pid
    finally:
        proc.kill()
        proc.wait()
    assert e.lock_holder() is None


def test_lock_holder_is_the_real_holder_when_the_lock_file_names_a_stale_pid(
    tmp_path: Path,
) -> None:
    e = make(tmp_path)
    lock = Path(e.state_dir) / "lock"
    lock.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    code = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.pwrite(fd, b'1\\n', 0)  # a holder that could not write its own pid\n"
        "print('held', flush=True); time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        assert e.store.lock_path == lock
        assert e.lock_holder() == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_connect_opens_the_firewall_the_options_name(tmp_path: Path) -> None:
    kernel = FakeKernel(IFACES)
    e = Engine.connect(
        ConnectOptions(str(tmp_path / "pins"), str(tmp_path / "state"), netns="blue"),
        kernel=kernel,
    )
    assert (e.pin_root, e.state_dir, kernel.netns) == (
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        "blue",
    )
    assert not e.is_lab()
    lab = Engine.connect(ConnectOptions(lab=True, read_only=True), kernel=FakeKernel(IFACES))
    assert lab.is_lab() and lab.read_only


def test_every_exported_name_loads_and_import_engine_stays_light() -> None:
    for name in engine.__all__:
        assert getattr(engine, name) is not None
    # The type checkers' list (the TYPE_CHECKING block) is the runtime list.
    tree = ast.parse(Path(engine.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If))
    typed = sorted(
        a.name for imp in block.body if isinstance(imp, ast.ImportFrom) for a in imp.names
    )
    assert typed == sorted(engine.__all__)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, engine; print(sorted(m for m in ('bcc', 'pyroute2') if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"


def test_too_late_is_told_by_the_generations_kind_not_its_wording(tmp_path: Path) -> None:
    from engine import ConfirmExpired, StateError
    from engine.state.store import ChangeKind

    e = make(tmp_path)
    add(e, "deny tcp 8000 from 192.0.2.0/24 on eth0 order 10")
    stored = e.state()
    e.store.commit(
        stored, expected_generation=stored.generation, author="t", summary="auto-revert-ish"
    )
    with pytest.raises(StateError) as exc:
        e.confirm()
    assert not isinstance(exc.value, ConfirmExpired), "a summary's wording decides nothing"
    stored = e.state()
    e.store.commit(
        stored,
        expected_generation=stored.generation,
        author="t",
        summary="put back",
        kind=ChangeKind.AUTO_REVERT,
    )
    assert e.history(1)[0].summary == "put back"
    with pytest.raises(ConfirmExpired):
        e.confirm()


def test_the_cli_loads_without_the_kernel_or_exporter_libraries() -> None:
    # every `infw` command pays its imports: bcc, pyroute2 and prometheus_client load only in
    # the commands that use them (the metrics address check lives in engine.state.config)
    probe = (
        "import sys, console.cli; "
        "print(sorted(m for m in ('bcc', 'pyroute2', 'prometheus_client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
