"""Shared fixtures for kernel tests: one compiled firewall per session under a private pin root,
and network namespaces with veth pairs. Everything is removed in teardown."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from engine.core.compiler import CompiledTables, compile_ruleset
from engine.core.crd import load_yaml

PIN_BASE = f"/sys/fs/bpf/infw-test-{os.getpid()}"
LO_IFINDEX = 1  # BPF_PROG_TEST_RUN's default ingress device is loopback

RULES_YAML = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web}
spec:
  interfaces: [lo]
  ingress:
  - sourceCIDRs: [192.0.2.0/24, "2001:db8::/32"]
    rules:
    - order: 10
      protocolConfig: {protocol: TCP, tcp: {ports: "8000-8080"}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 53}}
      action: Allow
    - order: 30
      protocolConfig: {protocol: UDP, udp: {ports: "1-65535"}}
      action: Deny
    - order: 40
      protocolConfig: {protocol: TCP, tcp: {ports: 22}}
      action: Deny
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 5
      protocolConfig: {protocol: ICMP, icmp: {icmpType: 8}}
      action: Allow
"""


def kernel_skip_reason() -> str | None:
    """Why kernel tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN) to load BPF programs"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return (
            "bcc is missing: apt-get install python3-bpfcc and create the venv with "
            "--system-site-packages (make bootstrap)"
        )
    from engine.kernel.loader import headers_problem

    problem = headers_problem()
    if problem:
        return f"{problem}: run `make bootstrap`"
    return None


@pytest.fixture(scope="session", autouse=True)
def kernel_ready() -> Iterator[None]:
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)
    os.makedirs(PIN_BASE, exist_ok=True)
    try:
        yield
    finally:
        shutil.rmtree(PIN_BASE, ignore_errors=True)


def compile_rules(
    yaml_text: str = RULES_YAML, interfaces: dict[str, int] | None = None
) -> CompiledTables:
    return compile_ruleset(load_yaml(yaml_text), interfaces or {"lo": LO_IFINDEX})


@pytest.fixture(scope="session")
def tables() -> CompiledTables:
    return compile_rules()


@pytest.fixture(scope="session")
def pin_root(kernel_ready: None) -> str:
    return os.path.join(PIN_BASE, "dp")


@pytest.fixture(scope="session")
def datapath(pin_root: str, tables: CompiledTables) -> Iterator[object]:
    """The firewall compiled once for the session, loaded with the standard rule set."""
    from engine.kernel.datapath import Datapath

    dp = Datapath.load(pin_root)
    try:
        dp.write_tables(tables, 1)
        yield dp
    finally:
        dp.unload()


@dataclass(frozen=True)
class VethNs:
    """A namespace holding one end of a veth pair (the other end is in the namespace too)."""

    name: str
    inner: str
    outer: str


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def veth_ns() -> Iterator[VethNs]:
    """A fresh namespace infw<pid>t with a veth pair inside it; removed in teardown."""
    name = f"infw{os.getpid()}t"
    ns = VethNs(name, "infwa0", "infwb0")
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", name)
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "add", ns.inner, "type", "veth", "peer", "name", ns.outer)
        _ip("-n", name, "link", "set", ns.inner, "up")
        _ip("-n", name, "link", "set", ns.outer, "up")
        yield ns
    finally:
        _ip("netns", "del", name)


@contextlib.contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block with this thread in namespace name (netlink and ifindexes follow it)."""
    from pyroute2 import netns

    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        netns.setns(name)
        yield
    finally:
        netns.setns(original)  # a file descriptor: back to where this thread was
        os.close(original)
