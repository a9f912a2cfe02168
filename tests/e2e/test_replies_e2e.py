"""Replies to the node's own connections, with real packets in the lab (#16): under a catch-all
Deny with replies on, the node's DNS query to a client gets its answer and a TCP connection
from the node completes, while the same packets sent unsolicited are dropped; with replies off
the answers are dropped."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.core.crd import load_yaml
from engine.kernel.abi import NodeCounter
from engine.lab.world import LabClient, LabInfo, send_packets
from tests.support import wait_for

pytestmark = [pytest.mark.root, pytest.mark.e2e]

DNS_PORT, TCP_PORT = 5353, 8443
DENY_ALL = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: deny-all}
spec:
  interfaces: ["infw-n*"]
  ingress:
  - sourceCIDRs: [0.0.0.0/0, "::/0"]
    rules:
    - order: 100
      action: Deny
"""
# the client's servers: a UDP server answering every datagram, a TCP server greeting each peer
SERVERS = f"""
import socket, threading
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
u.bind(("0.0.0.0", {DNS_PORT}))
t = socket.socket()
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("0.0.0.0", {TCP_PORT}))
t.listen(8)
def tcp():
    while True:
        c, _ = t.accept()
        c.sendall(b"hello")
        c.close()
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    data, peer = u.recvfrom(2048)
    u.sendto(b"answer:" + data, peer)
"""


@pytest.fixture
def servers(fresh_lab: LabInfo) -> Iterator[LabClient]:
    client = fresh_lab.clients[0]
    proc = subprocess.Popen(
        ["ip", "netns", "exec", client.ns, "python3", "-c", SERVERS],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield client
    finally:
        proc.kill()
        proc.wait()


def dns_query(server: str, local_port: int = 0) -> bytes | None:
    """The node's query and the answer it gets (None: none within a second)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", local_port))
        s.settimeout(1.0)
        s.sendto(b"q", (server, DNS_PORT))
        try:
            return s.recv(2048)
        except TimeoutError:
            return None


def tcp_greeting(server: str) -> bytes | None:
    """Connect from the node; the server's greeting, or None if the connection never completes."""
    try:
        with socket.create_connection((server, TCP_PORT), timeout=1.5) as s:
            return s.recv(16)
    except OSError:
        return None


def node_count(eng: Any, counter: NodeCounter) -> int:
    return int(eng.datapath().node_counters()[counter][0])


def test_replies_under_a_catch_all_deny(
    fresh_lab: LabInfo, servers: LabClient, lab_firewall: Any
) -> None:
    client = servers
    eng = lab_firewall.engine()
    lab_firewall.node(eng.attach, [client.ifname_node], mode="generic")
    lab_firewall.node(eng.apply, load_yaml(DENY_ALL), confirm_timeout=0)

    # off (the default): the node's own answers are dropped like anything else
    assert lab_firewall.node(eng.replies).enabled is False
    assert lab_firewall.node(dns_query, client.v4) is None
    assert lab_firewall.node(tcp_greeting, client.v4) is None

    view = lab_firewall.node(eng.set_replies, True)
    assert view.enabled and lab_firewall.node(eng.status).replies
    assert lab_firewall.node(dns_query, client.v4) == b"answer:q"
    assert lab_firewall.node(tcp_greeting, client.v4) == b"hello"
    allowed = lab_firewall.node(node_count, eng, NodeCounter.REPLY_ALLOWED)
    assert allowed >= 2
    view = lab_firewall.node(eng.replies)
    assert view.held >= 2 and view.recorded >= 2 and view.evicted == 0

    # the same answers, unsolicited (to a port the node never sent from): dropped
    denied = lab_firewall.node(node_count, eng, NodeCounter.DENY)
    sent = send_packets(client.ns, client.node_v4, "udp", dport=40999, count=5, sport=DNS_PORT)
    sent += send_packets(client.ns, client.node_v4, "tcp", dport=40998, count=3)
    assert wait_for(
        lambda: lab_firewall.node(node_count, eng, NodeCounter.DENY) - denied >= sent, 3
    )
    assert lab_firewall.node(node_count, eng, NodeCounter.REPLY_ALLOWED) == allowed

    # a trace of that answer says why it passes
    traced = lab_firewall.node(
        eng.trace,
        client.ifname_node,
        client.v4,
        "UDP",
        40999,
        dst=client.node_v4,
        sport=DNS_PORT,
        reply=True,
    )
    assert traced.reference_reason == "reply" and traced.agree

    lab_firewall.node(eng.set_replies, False)
    time.sleep(0.1)
    assert lab_firewall.node(dns_query, client.v4) is None
    assert lab_firewall.node(tcp_greeting, client.v4) is None
