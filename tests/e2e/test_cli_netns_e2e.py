"""`ip netns exec NS infw …` manages that namespace's interfaces, and `infw reload` swaps the
program build in place: rules, counters and attachments survive."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.core.frame import build_frame

pytestmark = [pytest.mark.root, pytest.mark.e2e]

if os.geteuid() != 0:
    pytest.skip("needs root: creates a network namespace and attaches XDP", allow_module_level=True)
pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")

INFW = str(Path(sys.executable).with_name("infw"))
RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: nsx}
spec:
  interfaces: [infw-xa]
  ingress:
  - sourceCIDRs: [203.0.113.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: UDP, udp: {ports: 7000}}
      action: Deny
"""


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    ns = f"infw-x{os.getpid() % 100000}"
    pin_root = f"/sys/fs/bpf/{ns}"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "add", "infw-xa", "type", "veth", "peer", "name", "infw-xb")
        sh("ip", "-n", ns, "link", "set", "infw-xa", "up")
        sh("ip", "-n", ns, "link", "set", "infw-xb", "up")
        yield ns, pin_root, tmp_path
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(pin_root, ignore_errors=True)


def infw(ns: str, pin_root: str, state: Path, *args: str) -> dict:
    """Run infw the way an operator would: under `ip netns exec`, asking for JSON."""
    cmd = ["ip", "netns", "exec", ns, INFW, "--pin-root", pin_root, "--state-dir", str(state)]
    proc = subprocess.run([*cmd, *args, "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def test_ip_netns_exec_attach_apply_trace_reload_detach(netns: tuple[str, str, Path]) -> None:
    ns, pin_root, tmp = netns
    state = tmp / "state"
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)

    infw(ns, pin_root, state, "attach", "infw-xa")
    status = infw(ns, pin_root, state, "status")
    assert status["loaded"] is True
    (iface,) = status["interfaces"]
    assert iface["name"] == "infw-xa" and iface["ours"] is True
    first_prog = iface["prog_id"]
    assert os.path.exists(f"{pin_root}/prog"), "pins live in the host's bpffs"

    infw(ns, pin_root, state, "apply", str(rules), "--confirm-timeout", "0")
    trace = infw(
        ns,
        pin_root,
        state,
        "trace",
        "--iface",
        "infw-xa",
        "--src",
        "203.0.113.5",
        "--proto",
        "udp",
        "--dport",
        "7000",
    )
    assert trace["kernel_verdict"] == "DENY" and trace["agree"] is True
    rule_id = trace["kernel_rule_id"]

    def packets() -> int:
        rows = infw(ns, pin_root, state, "rules")
        rows = rows["rules"] if isinstance(rows, dict) else rows
        return next(r["packets"] for r in rows if r["id"] == rule_id)

    assert packets() == 0, "a traced packet counts nothing"
    frame = build_frame("203.0.113.5", "192.0.2.1", 17, dport=7000)
    send = (
        "import socket,sys; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); "
        "s.bind(('infw-xb', 0)); [s.send(bytes.fromhex(sys.argv[1])) for _ in range(3)]"
    )
    sh("ip", "netns", "exec", ns, sys.executable, "-c", send, frame.hex())
    before = packets()
    assert before == 3, "real frames from the veth peer are counted"

    reloaded = infw(ns, pin_root, state, "reload")
    (iface,) = reloaded["interfaces"]
    assert iface["name"] == "infw-xa" and iface["ours"] is True
    assert iface["prog_id"] != first_prog, "a new build replaced the old program"
    assert packets() == before, "counters survive a reload"
    trace = infw(
        ns,
        pin_root,
        state,
        "trace",
        "--iface",
        "infw-xa",
        "--src",
        "203.0.113.5",
        "--proto",
        "udp",
        "--dport",
        "7000",
    )
    assert trace["kernel_verdict"] == "DENY" and trace["kernel_rule_id"] == rule_id

    infw(ns, pin_root, state, "detach")
    assert not os.path.exists(f"{pin_root}/prog")


def test_relative_paths_keep_the_callers_directory(netns: tuple[str, str, Path]) -> None:
    """Rejoining the host's mounts (for the pins) used to chdir("/"): `validate rules.yaml`
    read /rules.yaml."""
    ns, pin_root, tmp = netns
    (tmp / "rules.yaml").write_text(RULES)
    cmd = ["ip", "netns", "exec", ns, INFW, "--pin-root", pin_root, "--state-dir", str(tmp)]
    proc = subprocess.run(
        [*cmd, "validate", "rules.yaml"], cwd=tmp, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cannot read" not in proc.stdout + proc.stderr
