"""A fresh node's first `infw apply` drops real packets on the interface the objects name: no
`attach` first (issue #10.5). Two namespaces joined by a veth; UDP from the client to a listener
on the node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.e2e]

if os.geteuid() != 0:
    pytest.skip("needs root: creates network namespaces and attaches XDP", allow_module_level=True)
pytest.importorskip("bcc", reason="bcc (python3-bpfcc) is not installed")

INFW = str(Path(sys.executable).with_name("infw"))
RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: first}
spec:
  interfaces: ["infw-f*"]
  ingress:
  - sourceCIDRs: [198.51.100.0/24]
    rules:
    - {order: 10, action: Deny, protocolConfig: {protocol: UDP, udp: {ports: 7001}}}
"""
LISTEN = (
    "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.settimeout(3)\n"
    "try:\n print(s.recv(100).decode())\nexcept socket.timeout:\n print('TIMEOUT')"
)
SEND = (
    "import socket,sys,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "for _ in range(20): s.sendto(b'hello', ('198.51.100.1', int(sys.argv[1]))); time.sleep(0.1)"
)


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, str, str, Path]]:
    tag = os.getpid() % 100000
    ns, client = f"infw-fn{tag}", f"infw-fc{tag}"
    pin_root = f"/sys/fs/bpf/{ns}"
    try:
        sh("ip", "netns", "add", ns)
        sh("ip", "netns", "add", client)
        sh("ip", "-n", ns, "link", "add", "infw-fa", "type", "veth", "peer", "name", "infw-fb")
        sh("ip", "-n", ns, "link", "set", "infw-fb", "netns", client)
        sh("ip", "-n", ns, "addr", "add", "198.51.100.1/24", "dev", "infw-fa")
        sh("ip", "-n", client, "addr", "add", "198.51.100.2/24", "dev", "infw-fb")
        sh("ip", "-n", ns, "link", "set", "infw-fa", "up")
        sh("ip", "-n", client, "link", "set", "infw-fb", "up")
        yield ns, client, pin_root, tmp_path
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "netns", "del", client], capture_output=True)
        shutil.rmtree(pin_root, ignore_errors=True)


def received(ns: str, client: str, port: int) -> bool:
    listener = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", LISTEN, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    sh("ip", "netns", "exec", client, sys.executable, "-c", SEND, str(port))
    out, _ = listener.communicate(timeout=10)
    return "hello" in out


def test_first_apply_attaches_and_drops(node: tuple[str, str, str, Path]) -> None:
    ns, client, pin_root, tmp = node
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    assert received(ns, client, 7001), "before: the port is open"
    base = ["ip", "netns", "exec", ns, INFW, "--pin-root", pin_root, "--state-dir", str(tmp / "s")]
    proc = subprocess.run(
        [*base, "apply", str(rules), "--confirm-timeout", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert any("attaching to infw-fa" in w for w in result["warnings"]), result
    assert not received(ns, client, 7001), "after the first apply: dropped on infw-fa"
    assert received(ns, client, 7002), "other ports still pass"
    status = json.loads(
        subprocess.run([*base, "status", "--json"], capture_output=True, text=True).stdout
    )
    assert [i["name"] for i in status["interfaces"]] == ["infw-fa"]


def test_no_attach_enforces_nothing(node: tuple[str, str, str, Path]) -> None:
    ns, client, pin_root, tmp = node
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    base = ["ip", "netns", "exec", ns, INFW, "--pin-root", pin_root, "--state-dir", str(tmp / "s")]
    proc = subprocess.run(
        [*base, "apply", str(rules), "--confirm-timeout", "0", "--no-attach"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NOT ENFORCED" in proc.stderr + proc.stdout
    assert received(ns, client, 7001)
