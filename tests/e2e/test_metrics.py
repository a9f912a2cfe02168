"""The Prometheus exporter: exact operator names, per-rule series, and counters that match
real packets sent through the lab (root)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from console.cli import lab_connection
from engine.core.crd import load_yaml
from engine.engine import Engine
from engine.errors import InfwError
from engine.observe import metrics_http
from engine.observe.metrics import is_loopback, serve_metrics
from engine.state.config import NodeConfig
from engine.views import NodeTotals, PendingView, StatsSnapshot, Status

INFW = str(Path(sys.executable).with_name("infw"))
NODE_NAMES = (
    "ingressnodefirewall_node_packet_allow_total",
    "ingressnodefirewall_node_packet_allow_bytes",
    "ingressnodefirewall_node_packet_deny_total",
    "ingressnodefirewall_node_packet_deny_bytes",
)
RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: metrics}
spec:
  interfaces: ["IFACES"]
  ingress:
  - sourceCIDRs: [SOURCE]
    rules:
    - order: 10
      protocolConfig: {protocol: UDP, udp: {ports: 5999}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: UDP, udp: {ports: 5998}}
      action: Allow
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value for every sample line."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for key, v in samples(text).items():
        metric, _, rest = key.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{val}"' in rest for k, val in labels.items()):
            total += v
            found = True
    assert found, f"no sample {name} {labels} in:\n{text}"
    return total


# ------------------------------------------------------------------ exposition (no root)


class CountingEngine:
    """stats()/status() only, with chosen totals."""

    def __init__(self, base: Engine) -> None:
        self.base = base
        self.scrapes = 0

    def stats(self) -> StatsSnapshot:
        self.scrapes += 1
        rows = tuple(replace(r, packets=5, bytes=420) for r in self.base.rule_rows())
        totals = NodeTotals(
            allowed=(3, 300), denied=(5 * len(rows), 420 * len(rows)), events_suppressed=7
        )
        return StatsSnapshot(time.time(), rows, totals, 4)

    def status(self) -> Status:
        st = self.base.status()
        return replace(st, pending=PendingView(5, 4, time.time() + 30, "alice"))


@pytest.fixture
def stored_engine(tmp_path: Path) -> Engine:
    engine = Engine(
        f"/sys/fs/bpf/infw-metricstest-{os.getpid()}",
        str(tmp_path / "state"),
        config=NodeConfig(),
        interfaces=lambda: {"lo": 1, "eth0": 2},
        session=None,
    )
    engine.apply(
        load_yaml(RULES.replace("IFACES", "eth0").replace("SOURCE", "192.0.2.0/24")),
        confirm_timeout=0,
    )
    return engine


@pytest.fixture
def served(stored_engine: Engine) -> Iterator[tuple[CountingEngine, str]]:
    engine = CountingEngine(stored_engine)
    server = serve_metrics(engine, f"127.0.0.1:{free_port()}")
    try:
        yield engine, server.url
    finally:
        server.shutdown()


def test_operator_names_are_exact(served: tuple[CountingEngine, str]) -> None:
    _, url = served
    text = scrape(url)
    for name in NODE_NAMES:
        # Exactly these names, with the operator's type (gauge): no _total or _bytes_total added.
        assert re.search(rf"^{name} ", text, re.M), name
        assert f"# TYPE {name} gauge" in text
        assert f"{name}_total" not in text
    assert value(text, "ingressnodefirewall_node_packet_deny_total") == 10
    assert value(text, "ingressnodefirewall_node_packet_deny_bytes") == 840
    assert value(text, "ingressnodefirewall_node_packet_allow_total") == 3
    assert value(text, "ingressnodefirewall_node_packet_allow_bytes") == 300


def test_per_rule_series_and_state(
    served: tuple[CountingEngine, str], stored_engine: Engine
) -> None:
    _, url = served
    text = scrape(url)
    for row in stored_engine.rule_rows():
        labels = {
            "rule_id": str(row.rule_id),
            "firewall": "metrics",
            "order": str(row.order),
            "interface": "eth0",
            "action": row.action.lower(),
        }
        assert value(text, "ingressnodefirewall_rule_packets_total", **labels) == 5
        assert value(text, "ingressnodefirewall_rule_bytes_total", **labels) == 420
    assert value(text, "infw_events_suppressed_total") == 7
    assert value(text, "infw_generation") == 4
    assert value(text, "infw_pending_confirm") == 1
    assert 0 < value(text, "infw_pending_confirm_seconds") <= 30
    assert value(text, "infw_up") == 1


def test_every_scrape_reads_the_engine(served: tuple[CountingEngine, str]) -> None:
    engine, url = served
    scrape(url)
    scrape(url)
    assert engine.scrapes == 2


def test_a_failing_engine_reports_down() -> None:
    class Broken:
        def stats(self) -> Any:
            raise InfwError("no firewall is loaded", "attach first")

    server = serve_metrics(Broken(), f"127.0.0.1:{free_port()}")
    try:
        text = scrape(server.url)
    finally:
        server.shutdown()
    assert value(text, "infw_up") == 0
    assert value(text, "infw_down_reason", reason="no firewall is loaded") == 1
    assert "ingressnodefirewall_node_packet_deny_total" not in text


def test_an_engine_with_nothing_loaded_is_down_with_the_reason(stored_engine: Engine) -> None:
    """Unreachable is never healthy: no infw_up 1 with zero counters."""
    server = serve_metrics(stored_engine, f"127.0.0.1:{free_port()}")
    try:
        text = scrape(server.url)
    finally:
        server.shutdown()
    assert value(text, "infw_up") == 0
    assert re.search(
        r'^infw_down_reason\{reason="firewall unreachable: no firewall is loaded', text, re.M
    )
    assert "ingressnodefirewall_node_packet_deny_total" not in text


def raw_request(url: str, data: bytes, timeout: float = 10) -> bytes:
    host, port = url.split("//")[1].split("/")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_garbage_and_huge_headers_are_refused(served: tuple[CountingEngine, str]) -> None:
    _, url = served
    assert raw_request(url, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw_request(url, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405")
    assert raw_request(url, b"GET /etc/passwd HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    huge = b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0]))) as s:
        s.settimeout(10)
        with contextlib.suppress(OSError):  # the server may close while we still send
            s.sendall(huge)
        assert s.recv(100).startswith(b"HTTP/1.1 431")
    assert "infw_up 1.0" in scrape(url)


def test_slowloris_and_connection_floods_hold_neither_threads_nor_scrapes(
    served: tuple[CountingEngine, str],
) -> None:
    """500 connections that send half a request: threads stay bounded, each is cut off after
    the head deadline, and a scrape right after works."""
    _, url = served
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    before = threading.active_count()
    slow: list[socket.socket] = []
    try:
        for _ in range(500):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
            slow.append(s)
        time.sleep(0.5)
        assert threading.active_count() - before <= metrics_http.MAX_CONNECTIONS
        time.sleep(metrics_http.HEAD_DEADLINE_S + 1)
        for s in slow:  # every one answered (408 or 503) and closed by the server
            s.settimeout(5)
            reply = s.recv(100)
            assert reply.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")), reply
    finally:
        for s in slow:
            s.close()
    assert "infw_up 1.0" in scrape(url)


def test_non_loopback_needs_explicit_consent(stored_engine: Engine) -> None:
    assert (
        is_loopback("127.0.0.1:39301") and is_loopback("[::1]:39301") and is_loopback("localhost:1")
    )
    assert not is_loopback("0.0.0.0:39301") and not is_loopback(":39301")
    with pytest.raises(InfwError, match="--listen"):
        serve_metrics(stored_engine, f"0.0.0.0:{free_port()}")
    server = serve_metrics(stored_engine, f"0.0.0.0:{free_port()}", allow_public=True)
    server.shutdown()


def test_port_in_use_is_a_clear_error(stored_engine: Engine) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(InfwError, match="cannot listen"):
            serve_metrics(stored_engine, f"127.0.0.1:{s.getsockname()[1]}")


def test_cli_metrics_warns_for_public_addresses_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    cmd = [
        INFW,
        "--state-dir",
        str(tmp_path / "state"),
        "--pin-root",
        f"/sys/fs/bpf/infw-metricstest-{os.getpid()}",
        "metrics",
        "--listen",
        f"0.0.0.0:{port}",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        text = wait_for_metrics(f"http://127.0.0.1:{port}/metrics", proc)
        # nothing is loaded at that pin root: down, with the reason, never zeros as healthy
        assert value(text, "infw_up") == 0 and "infw_down_reason{" in text
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "warning: metrics on 0.0.0.0" in err and "Traceback" not in err
    assert f":{port}/metrics" in out


def wait_for_metrics(
    url: str, proc: subprocess.Popen[str] | None = None, timeout: float = 15
) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(url)
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"infw metrics exited: {proc.communicate()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


# ------------------------------------------------------------------ real packets through the lab


@pytest.mark.root
@pytest.mark.e2e
def test_deny_counter_matches_packets_sent(lab: Any, tmp_path: Path) -> None:
    from engine.lab.world import send_packets

    client = lab.clients[0]
    pin_root, state_dir, _ = lab_connection()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("IFACES", "infw-n*").replace("SOURCE", client.v4_net))

    def infw(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [INFW, "--lab", *args], capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    infw("attach", "infw-n*", "--mode", "generic")
    infw("apply", str(rules), "--confirm-timeout", "0")
    # The exporter reads counters from the pins; it listens in this namespace, where the test is.
    port = free_port()
    server = subprocess.Popen(
        [
            INFW,
            "--pin-root",
            pin_root,
            "--state-dir",
            state_dir,
            "metrics",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        before = wait_for_metrics(url, server)
        # Counters live in the pins and survive consoles, so compare deltas.
        deny0 = value(before, "ingressnodefirewall_node_packet_deny_total")
        allow0 = value(before, "ingressnodefirewall_node_packet_allow_total")
        rule_deny0 = value(
            before, "ingressnodefirewall_rule_packets_total", order="10", action="deny"
        )
        rule_allow0 = value(
            before, "ingressnodefirewall_rule_packets_total", order="20", action="allow"
        )
        sent_deny = send_packets(client.ns, client.node_v4, "udp", dport=5999, count=25)
        sent_allow = send_packets(client.ns, client.node_v4, "udp", dport=5998, count=7)
        time.sleep(0.5)
        after = scrape(url)
        assert value(after, "ingressnodefirewall_node_packet_deny_total") - deny0 == sent_deny
        assert value(after, "ingressnodefirewall_node_packet_allow_total") - allow0 == sent_allow
        assert value(after, "ingressnodefirewall_node_packet_deny_bytes") >= sent_deny * 42
        rule_deny = value(
            after, "ingressnodefirewall_rule_packets_total", order="10", action="deny"
        )
        rule_allow = value(
            after, "ingressnodefirewall_rule_packets_total", order="20", action="allow"
        )
        assert (rule_deny - rule_deny0, rule_allow - rule_allow0) == (sent_deny, sent_allow)
        assert value(after, "infw_loaded") == 1
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=10)
        finally:
            if server.poll() is None:
                server.kill()
