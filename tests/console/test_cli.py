"""`infw` as a user runs it: subprocesses, --json output parsed, exit codes checked.

Every test works on its own state directory and a pin root of its own
(/sys/fs/bpf/infw-clitest-<pid>), which the fixture removes; nothing touches the host's
firewall. Tests that load the XDP program are marked root and use a namespace of their own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.checkout import ROOT
from engine.core.crd import load_file, load_yaml
from engine.core.frame import build_frame

pytestmark = pytest.mark.console

INFW = str(Path(sys.executable).with_name("infw"))
GOOD = """\
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web, labels: {team: edge}}
spec:
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
  interfaces: [IFACE]
  ingress:
  - sourceCIDRs: [192.0.2.0/24, "2001:db8::/32"]
    rules:
    - order: 10
      protocolConfig: {protocol: TCP, tcp: {ports: "8000-8080"}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 53}}
      action: Allow
  - sourceCIDRs: [198.51.100.0/24]
    rules:
    - order: 5
      protocolConfig: {protocol: ICMP, icmp: {icmpType: 8, icmpCode: 0}}
      action: Deny
    - order: 6
      action: Allow
"""
BAD = """\
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: bad}
spec:
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [010.0.0.1/8]
    rules:
    - order: 0
      protocolConfig: {protocol: TCP, tcp: {ports: "99999"}}
      action: Drop
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


def remove_pins(path: str) -> None:
    """rm -r for a bpffs directory (pins are unlinked one by one)."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        for name in os.listdir(path):
            remove_pins(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


@pytest.fixture
def pin_root() -> Iterator[str]:
    path = f"/sys/fs/bpf/infw-clitest-{os.getpid()}"
    try:
        yield path
    finally:
        remove_pins(path)


@pytest.fixture
def infw(tmp_path: Path, pin_root: str) -> Iterator[Run]:
    """Run infw against this test's own state dir and pin root; returns the CompletedProcess."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
    env["HOME"] = str(tmp_path / "home")
    env["NO_COLOR"] = "1"
    state = tmp_path / "state"
    extra: list[str] = []

    def run(
        *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [INFW, "--state-dir", str(state), "--pin-root", pin_root, *extra, *args]
        return subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            input=stdin if stdin is not None else "",
            timeout=timeout,
            env=env,
            cwd=tmp_path,
        )

    run.extra = extra  # type: ignore[attr-defined]
    try:
        yield run
    finally:
        if os.path.exists(os.path.join(pin_root, "prog")):
            run("detach", timeout=30)


def data(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write(tmp_path: Path, name: str, text: str, iface: str = "lo") -> str:
    path = tmp_path / name
    path.write_text(text.replace("IFACE", iface))
    return str(path)


def snapshot(state: Path) -> dict[str, bytes]:
    """Every file of a state directory (the lock file only says who held it last)."""
    return {
        str(p.relative_to(state)): p.read_bytes()
        for p in sorted(state.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


@pytest.fixture(scope="module")
def applied_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state directory holding GOOD as generation 1, made once and copied by each test."""
    base = tmp_path_factory.mktemp("applied")
    rules = write(base, "good.yaml", GOOD)
    proc = subprocess.run(
        [
            INFW,
            "--state-dir",
            str(base / "state"),
            "--pin-root",
            f"/sys/fs/bpf/infw-clitest-{os.getpid()}",
            "apply",
            rules,
            "--confirm-timeout",
            "0",
            "--no-attach",  # the host's lo: never attach in these tests
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"},
    )
    assert proc.returncode == 0, proc.stderr
    return base / "state"


# ------------------------------------------------------------------ help


def test_help_teaches_by_example() -> None:
    out = subprocess.run([INFW, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    text = out.stdout
    assert "examples" in text and "exit codes" in text
    for command in (
        "status",
        "rules",
        "add",
        "edit",
        "delete",
        "validate",
        "apply",
        "export",
        "confirm",
        "revert",
        "history",
        "mode",
        "attach",
        "detach",
        "stats",
        "events",
        "trace",
        "metrics",
        "restore",
        "lab",
    ):
        assert f"  infw {command}" in text, command
    for code in range(6):
        assert f"  {code}  " in text
    sub = subprocess.run([INFW, "apply", "--help"], capture_output=True, text=True, timeout=30)
    assert sub.returncode == 0
    assert "infw apply rules.yaml --confirm-timeout 0" in sub.stdout
    events = subprocess.run([INFW, "events", "--help"], capture_output=True, text=True, timeout=30)
    assert "rule=3 proto=TCP src=192.0.2.0/24 iface=eth0" in events.stdout


def test_help_command_matches_dash_dash_help(infw: Run) -> None:
    assert infw("help", "trace").stdout.strip() == infw("trace", "--help").stdout.strip()


# ------------------------------------------------------------------ validate


def test_validate_good_file(infw: Run, tmp_path: Path) -> None:
    got = data(infw("validate", write(tmp_path, "good.yaml", GOOD), "--json"))
    assert got["valid"] is True and got["objects"] == 1 and got["rules"] == 4
    assert data(infw("status", "--json"))["generation"] == 0  # validate applies nothing


def test_validate_warns_about_missing_interfaces(infw: Run, tmp_path: Path) -> None:
    got = data(infw("validate", write(tmp_path, "good.yaml", GOOD, iface="nosuch0"), "--json"))
    assert any("nosuch0" in w for w in got["warnings"])


def test_validate_bad_file_names_every_field(infw: Run, tmp_path: Path) -> None:
    proc = infw("validate", write(tmp_path, "bad.yaml", BAD))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("infw: error: invalid input, nothing applied (4 errors) — ")
    for field in (
        "spec.ingress[0].sourceCIDRs[0]",
        "spec.ingress[0].rules[0].order",
        "spec.ingress[0].rules[0].action",
        "spec.ingress[0].rules[0].protocolConfig.tcp.ports",
    ):
        assert any(field in line for line in lines), field
    assert "010.0.0.1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_validate_json_error_is_machine_readable(infw: Run, tmp_path: Path) -> None:
    proc = infw("validate", "--json", write(tmp_path, "bad.yaml", BAD))
    assert proc.returncode == 2
    err = json.loads(proc.stdout)["error"]
    assert err["exitCode"] == 2 and err["type"] == "ValidationError"
    assert {f["path"] for f in err["fields"]} >= {"spec.ingress[0].rules[0].order"}


def test_validate_refused_by_the_guard_exits_3(infw: Run, tmp_path: Path) -> None:
    rules = GOOD.replace('ports: "8000-8080"', 'ports: "20-30"')
    proc = infw("validate", write(tmp_path, "ssh.yaml", rules))
    assert proc.returncode == 3
    assert (
        proc.stderr.startswith("infw: error: ")
        and "22/tcp" in proc.stderr
        and "--force" in proc.stderr
    )


# ------------------------------------------------------------------ apply / export / history


def test_export_round_trips(infw: Run, tmp_path: Path) -> None:
    path = write(tmp_path, "good.yaml", GOOD)
    applied = data(infw("apply", path, "--confirm-timeout", "0", "--no-attach", "--json"))
    assert applied["generation"] == 1 and applied["rule_count"] == 4 and applied["pending"] is None
    exported = infw("export")
    assert exported.returncode == 0
    assert load_yaml(exported.stdout).semantic_key() == load_file(path).semantic_key()
    assert "team: edge" in exported.stdout and "nodeSelector" in exported.stdout
    # The JSON form is a v1 List, which apply takes back unchanged in meaning.
    assert infw("export", "--json", "-o", str(tmp_path / "out.json")).returncode == 0
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc["kind"] == "List" and len(doc["items"]) == 1
    again = data(
        infw("apply", str(tmp_path / "out.json"), "--confirm-timeout", "0", "--no-attach", "--json")
    )
    assert load_yaml(infw("export").stdout).semantic_key() == load_file(path).semantic_key()
    assert again["generation"] in (1, 2)  # an unchanged rule set may or may not make a generation


def test_apply_from_stdin_and_history(infw: Run, tmp_path: Path) -> None:
    proc = infw(
        "apply", "-", "--confirm-timeout", "0", "--no-attach", stdin=GOOD.replace("IFACE", "lo")
    )
    assert proc.returncode == 0, proc.stderr
    assert "applied generation 1" in proc.stdout
    assert "pending" not in proc.stdout  # nothing is loaded, so there is nothing to confirm
    hist = data(infw("history", "--json"))
    assert hist[0]["generation"] == 1 and hist[0]["current"] is True


def test_add_edit_delete_rules(infw: Run) -> None:
    res = data(
        infw(
            "add",
            "--confirm-timeout",
            "0",
            "--json",
            "deny",
            "tcp",
            "9000",
            "from",
            "192.0.2.0/24",
            "on",
            "lo",
            "order",
            "10",
        )
    )
    assert res["generation"] == 1
    rows = data(infw("rules", "--json"))
    assert [(r["order"], r["protocol"], r["match"]) for r in rows] == [(10, "TCP", "9000")]
    rid = str(rows[0]["id"])
    assert (
        infw(
            "edit",
            rid,
            "allow",
            "udp",
            "53",
            "from",
            "192.0.2.0/24",
            "on",
            "lo",
            "order",
            "10",
            "--confirm-timeout",
            "0",
        ).returncode
        == 0
    )
    assert data(infw("rules", "--json"))[0]["protocol"] == "UDP"
    assert infw("delete", rid, "--confirm-timeout", "0").returncode == 0
    assert data(infw("rules", "--json")) == []


def test_script_on_stdin_runs_repl_lines() -> None:
    proc = subprocess.run(
        [INFW, "--state-dir", "/nonexistent-but-unused"],
        input="help\nexit\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and "commands:" in proc.stdout


# ------------------------------------------------------------------ bad input everywhere


BAD_INPUT: list[tuple[tuple[str, ...], int, str]] = [
    (("stauts",), 2, "unknown command 'stauts'"),
    (("status", "--bogus"), 2, "unrecognized arguments: --bogus"),
    (("rules", "extra"), 2, "unrecognized arguments: extra"),
    (("add",), 2, "the following arguments are required: RULE"),
    (("add", "deny", "tcp", "99999", "from", "192.0.2.0/24", "on", "lo", "order", "1"), 2, "ports"),
    (
        ("add", "deny", "tcp", "80", "from", "10.0.0.1", "on", "lo", "order", "1"),
        2,
        "prefix length",
    ),
    (("add", "deny", "tcp", "80", "from", "192.0.2.0/24", "on", "lo"), 2, "order"),
    (("add", "deny", "tcp", "22", "from", "192.0.2.0/24", "on", "lo", "order", "1"), 3, "22/tcp"),
    (
        (
            "add",
            "--confirm-timeout",
            "-1",
            "deny",
            "from",
            "192.0.2.0/24",
            "on",
            "lo",
            "order",
            "1",
        ),
        2,
        "--confirm-timeout",
    ),
    (("edit", "abc", "deny", "from", "192.0.2.0/24", "order", "1"), 2, "rule id 'abc'"),
    (("edit", "999", "deny", "from", "192.0.2.0/24", "order", "1"), 1, "no rule with id 999"),
    (("delete",), 2, "required: ID"),
    (("delete", "0"), 2, "rule id '0'"),
    (("delete", "999"), 1, "no rule with id 999"),
    (("validate",), 2, "required: FILE"),
    (("validate", "/nonexistent/rules.yaml"), 2, "cannot read file"),
    (("apply", "/nonexistent/rules.yaml"), 2, "cannot read file"),
    (("apply", "BAD"), 2, "spec.ingress[0].rules[0].order"),
    (("apply", "GOOD", "--confirm-timeout", "soon"), 2, "not a number of seconds"),
    (("export", "-o", "/nonexistent/dir/out.yaml"), 1, "cannot write /nonexistent/dir/out.yaml"),
    (("confirm",), 1, "nothing is pending"),
    (("revert",), 1, "no earlier generation"),
    (("history", "--limit", "-3"), 2, "--limit"),
    (("mode", "sideways"), 2, "invalid choice: 'sideways'"),
    (("attach",), 2, "required: IFACE"),
    (("attach", "eth0", "--mode", "turbo"), 2, "invalid choice: 'turbo'"),
    (("stats", "--watch", "fast"), 2, "not a number of seconds"),
    (("events", "--filter", "color=red"), 2, "unknown key 'color'"),
    (("events", "--filter", "src=not-a-net"), 2, "bad event filter"),
    (("trace", "--iface", "lo"), 2, "required: --src, --proto"),
    (
        ("trace", "--iface", "lo", "--src", "999.1.1.1", "--proto", "TCP"),
        2,
        "not an IPv4 or IPv6 address",
    ),
    (("trace", "--iface", "lo", "--src", "192.0.2.1", "--proto", "GRE"), 2, "protocol 'GRE'"),
    (
        ("trace", "--iface", "lo", "--src", "192.0.2.1", "--proto", "ICMP", "--dport", "80"),
        2,
        "--dport does not apply to ICMP",
    ),
    (
        ("trace", "--iface", "lo", "--src", "192.0.2.1", "--proto", "TCP", "--dport", "70000"),
        2,
        "port '70000'",
    ),
    (
        ("trace", "--iface", "lo", "--src", "192.0.2.1", "--proto", "ICMP", "--icmp-code", "0"),
        2,
        "--icmp-code needs --icmp-type",
    ),
    (
        ("trace", "--iface", "nosuch0", "--src", "192.0.2.1", "--proto", "TCP", "--dport", "80"),
        1,
        "no interface 'nosuch0'",
    ),
    (("metrics", "--listen", "nowhere"), 2, "--listen 'nowhere'"),
    (("metrics", "--listen", "127.0.0.1:99999"), 2, "port '99999'"),
    (("lab", "sideways"), 2, "invalid choice: 'sideways'"),
    (("restore", "--no-attach"), 1, "no stored state to restore"),
    (("help", "nosuch"), 2, "no command 'nosuch'"),
]


@pytest.mark.parametrize(
    ("argv", "code", "message"), BAD_INPUT, ids=[" ".join(a) for a, _, _ in BAD_INPUT]
)
def test_bad_input_gives_the_documented_exit_code_and_changes_nothing(
    infw: Run, tmp_path: Path, applied_state: Path, argv: tuple[str, ...], code: int, message: str
) -> None:
    state = tmp_path / "state"
    shutil.copytree(applied_state, state)
    paths = {"BAD": write(tmp_path, "bad.yaml", BAD), "GOOD": write(tmp_path, "good.yaml", GOOD)}
    argv = tuple(paths.get(a, a) for a in argv)
    before = snapshot(state)
    assert before, "the template state is empty"
    proc = infw(*argv)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert proc.stderr.startswith("infw: error: "), proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert " — " in proc.stderr.splitlines()[0]  # every error says how to fix it
    assert snapshot(state) == before


def test_verbose_adds_a_traceback(infw: Run) -> None:
    proc = infw("-v", "delete", "999")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_read_only_refuses_changes_with_exit_4(infw: Run) -> None:
    proc = infw("--read-only", "add", "deny", "from", "192.0.2.0/24", "on", "lo", "order", "1")
    assert proc.returncode == 4
    assert "read-only" in proc.stderr
    assert data(infw("--read-only", "status", "--json"))["read_only"] is True


def test_global_options_work_after_the_command(infw: Run, tmp_path: Path) -> None:
    assert data(infw("status", "--json"))["generation"] == 0
    assert json.loads(infw("status", "--json", "-v").stdout)["loaded"] is False


def test_missing_namespace_says_how_to_fix_it(infw: Run) -> None:
    proc = infw("--netns", "infw-clitest-nosuch", "status")
    assert proc.returncode == 1
    assert "network namespace 'infw-clitest-nosuch' does not exist" in proc.stderr


def test_closed_pipe_is_not_an_error(infw: Run, tmp_path: Path) -> None:
    assert (
        infw(
            "apply", write(tmp_path, "good.yaml", GOOD), "--confirm-timeout", "0", "--no-attach"
        ).returncode
        == 0
    )
    cmd = (
        f"{INFW} --state-dir {tmp_path / 'state'} --pin-root /sys/fs/bpf/infw-clitest-{os.getpid()} "
        "help | head -c 10 >/dev/null; echo ${PIPESTATUS[0]}"
    )
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == "0" and "Traceback" not in out.stderr


# ------------------------------------------------------------------ with the kernel (root)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: loads and attaches the XDP program in a namespace of its own")


@pytest.fixture
def netns_infw(infw: Run) -> Iterator[tuple[Run, str]]:
    """infw inside a fresh namespace holding a veth pair (infw-ct0 <-> infw-ct1), both up."""
    require_root()
    ns = f"infw-clitest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(
            ["ip", "-n", ns, "link", "add", "infw-ct0", "type", "veth", "peer", "name", "infw-ct1"],
            check=True,
        )
        for dev in ("infw-ct0", "infw-ct1", "lo"):
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        infw.extra.extend(["--netns", ns])  # type: ignore[attr-defined]
        yield infw, ns
    finally:
        if os.path.exists(f"/sys/fs/bpf/infw-clitest-{os.getpid()}/prog"):
            infw("detach", timeout=30)
        subprocess.run(["ip", "netns", "del", ns], check=False)


@pytest.mark.root
def test_attach_apply_trace_and_events(netns_infw: tuple[Run, str], tmp_path: Path) -> None:
    infw, ns = netns_infw
    proc = infw("attach", "infw-ct0", "--mode", "generic", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "compiling" in proc.stderr  # progress was shown
    assert "attached to infw-ct0" in proc.stdout
    assert data(infw("status", "--json"))["loaded"] is True
    assert (
        infw(
            "apply", write(tmp_path, "good.yaml", GOOD, iface="infw-ct0"), "--confirm-timeout", "0"
        ).returncode
        == 0
    )
    denied = data(
        infw(
            "trace",
            "--json",
            "--iface",
            "infw-ct0",
            "--src",
            "192.0.2.7",
            "--proto",
            "TCP",
            "--dport",
            "8080",
        )
    )
    assert denied["kernel_verdict"] == "DENY" and denied["reference_verdict"] == "DENY"
    assert denied["agree"] is True and denied["kernel_rule_id"] == denied["reference_rule_id"]
    allowed = data(
        infw(
            "trace",
            "--json",
            "--iface",
            "infw-ct0",
            "--src",
            "192.0.2.7",
            "--proto",
            "UDP",
            "--dport",
            "53",
        )
    )
    assert allowed["kernel_verdict"] == "ALLOW" and allowed["agree"] is True
    failsafe = infw(
        "trace", "--iface", "infw-ct0", "--src", "2001:db8::7", "--proto", "TCP", "--dport", "22"
    )
    assert failsafe.returncode == 0 and "fail-safe" in failsafe.stdout
    # Traced packets are marked: they decide like real ones but count nothing and log nothing.
    assert data(infw("stats", "--json"))["totals"]["denied"][0] == 0
    assert not infw("events", "--json").stdout.strip()
    # A real frame from the veth peer is dropped, counted and reported.
    frame = build_frame("192.0.2.7", "192.0.2.1", 6, dport=8080)
    send = (
        "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
        "s.bind(('infw-ct1', 0)); s.send(bytes.fromhex(sys.argv[1]))"
    )
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", send, frame.hex()], check=True)
    events = infw("events", "--json", "--filter", "proto=TCP dport=8080")
    lines = [json.loads(line) for line in events.stdout.splitlines()]
    assert (
        lines and lines[0]["rule_id"] == denied["kernel_rule_id"] and lines[0]["src"] == "192.0.2.7"
    )
    stats = data(infw("stats", "--json"))
    assert stats["totals"]["denied"][0] == 1


@pytest.mark.root
def test_apply_without_timeout_is_pending_until_confirmed(
    netns_infw: tuple[Run, str], tmp_path: Path
) -> None:
    infw, _ = netns_infw
    assert infw("attach", "infw-ct0", "--mode", "generic", timeout=120).returncode == 0
    proc = infw("apply", write(tmp_path, "good.yaml", GOOD, iface="infw-ct0"))
    assert proc.returncode == 0, proc.stderr
    # The hint repeats the options that chose this firewall, so it reaches the same one.
    assert re.search(
        r"pending: run 'infw --netns \S+ --pin-root \S+ --state-dir \S+ confirm' within",
        proc.stdout,
    )
    assert "or it reverts" in proc.stdout
    pending = data(infw("status", "--json"))["pending"]
    assert pending is not None and 0 < pending["deadline"] - time.time() <= 60
    assert data(infw("confirm", "--json"))["confirmed"] == pending["generation"]
    assert data(infw("status", "--json"))["pending"] is None


@pytest.mark.root
def test_events_follow_stops_cleanly(
    netns_infw: tuple[Run, str], tmp_path: Path, pin_root: str
) -> None:
    infw, ns = netns_infw
    assert infw("attach", "infw-ct0", "--mode", "generic", timeout=120).returncode == 0
    cmd = [
        INFW,
        "--state-dir",
        str(tmp_path / "state"),
        "--pin-root",
        pin_root,
        "--netns",
        ns,
        "events",
        "--follow",
        "--json",
    ]
    follower = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=10)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert "Traceback" not in err


@pytest.mark.root
def test_unknown_interface_on_attach(netns_infw: tuple[Run, str]) -> None:
    infw, _ = netns_infw
    proc = infw("attach", "nosuch0")
    assert proc.returncode == 1 and "no interface here matches nosuch0" in proc.stderr


def test_attach_without_root_says_which_privilege(infw: Run) -> None:
    if os.geteuid() == 0:
        pytest.skip("checks the message a non-root user gets")
    proc = infw("attach", "lo")
    assert proc.returncode == 4 and "CAP_BPF" in proc.stderr


def test_no_leftovers() -> None:
    leftover = (
        [n for n in os.listdir("/sys/fs/bpf") if n.startswith("infw-clitest-")]
        if os.path.isdir("/sys/fs/bpf")
        else []
    )
    assert not [n for n in leftover if n.endswith(str(os.getpid()))]
    assert (
        shutil.which("ip") is None
        or f"infw-clitest-{os.getpid()}"
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


def test_stats_without_a_loaded_firewall_fails_with_the_reason(infw: Run) -> None:
    """Unreachable is never healthy: no zeros with exit 0."""
    proc = infw("stats")
    assert proc.returncode == 1
    assert "firewall unreachable: no firewall is loaded" in proc.stderr
    assert "allowed" not in proc.stdout
    rules = infw("rules")
    assert rules.returncode == 0 and "stored rules, no counters" in rules.stderr


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """infw as an unprivileged user (setpriv drops root), with this checkout's code."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become an unprivileged user")
    cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": "/tmp", "PYTHONPATH": str(ROOT)}
    code = "import sys; from console.cli import main; sys.exit(main())"
    return subprocess.run(
        [*cmd, sys.executable, "-c", code, *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("command", [["status"], ["--read-only", "rules"], ["events"]])
def test_lab_without_root_is_exit_4_naming_the_capability(command: list[str]) -> None:
    proc = as_nobody("--lab", *command)
    assert proc.returncode == 4, proc.stderr
    assert "--lab needs root" in proc.stderr and "CAP_SYS_ADMIN" in proc.stderr
    assert "note:" not in proc.stderr  # one clear error, not a fallback first


def test_pins_a_user_may_not_read_are_a_privilege_error_not_not_loaded() -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="infw-clitest-pins-", dir="/tmp"))  # reachable by nobody
    try:
        base.chmod(0o755)
        pins = base / "pins"
        pins.mkdir(mode=0o700)
        (pins / "prog").write_text("")
        proc = as_nobody("--pin-root", str(pins), "--state-dir", str(base / "st"), "stats")
    finally:
        shutil.rmtree(base)
    assert proc.returncode == 4, proc.stderr
    assert "cannot read the pins" in proc.stderr and "CAP_BPF" in proc.stderr
