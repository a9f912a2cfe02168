"""The lab end to end: namespaces, veths, addresses, traffic processes, teardown after a crash."""

from __future__ import annotations

import collections
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from engine.lab.traffic import LabSafetyError
from engine.lab.world import (
    LAB_PIN_ROOT,
    NODE_NS,
    STATE_DIR,
    LabInfo,
    in_namespace,
    lab_client,
    lab_down,
    lab_status,
    lab_up,
    send_packets,
    stop_traffic,
    thread_in_namespace,
)
from tests.support import lab_namespaces, traffic_pids, wait_for

ROOT_REASON = "needs root: network namespaces, veth pairs and raw sockets"
_ROOT_MARKS = (
    pytest.mark.root,
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason=ROOT_REASON),
)


def needs_root(test: Callable[..., None]) -> Callable[..., None]:
    for mark in _ROOT_MARKS:
        test = mark(test)
    return test


PROJECT = Path(__file__).resolve().parents[2]


def _assert_gone() -> None:
    assert lab_namespaces() == []
    assert traffic_pids() == []
    assert not STATE_DIR.exists()
    assert not Path(LAB_PIN_ROOT).exists()


@pytest.fixture
def clean_lab() -> Iterator[None]:
    """Each test starts without a lab and leaves none behind, pass or fail."""
    try:
        lab_down()
        yield
    finally:
        lab_down()


def _ping(ns: str, addr: str) -> bool:
    """Real ping from a namespace; retried briefly (a new IPv6 address may still settle)."""
    argv = ["ip", "netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1", addr]
    for _ in range(3):
        if subprocess.run(argv, capture_output=True, timeout=10).returncode == 0:
            return True
        time.sleep(0.5)
    return False


def _rx_packets(ns: str, ifname: str) -> int:
    from pyroute2 import IPRoute

    with IPRoute(netns=ns, flags=0) as ipr:
        link = ipr.get_links(ipr.link_lookup(ifname=ifname)[0])[0]
        return int(link.get("IFLA_STATS64")["rx_packets"])


class _Capture:
    """Counts frames arriving on a node interface, by (ethertype, ipproto, dport/icmp type)."""

    def __init__(self, ifname: str) -> None:
        with in_namespace(NODE_NS):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
            self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self.counts: collections.Counter[tuple[str, int, int]] = collections.Counter()

    def collect(
        self, expected: int, timeout: float = 3.0
    ) -> collections.Counter[tuple[str, int, int]]:
        deadline = time.monotonic() + timeout
        while sum(self.counts.values()) < expected and time.monotonic() < deadline:
            try:
                frame, addr = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            self.counts[_describe(frame)] += 1
        self.sock.close()
        return self.counts


def _describe(frame: bytes) -> tuple[str, int, int]:
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == 0x0800:
        proto, l4 = frame[23], frame[14 + (frame[14] & 0x0F) * 4 :]
        family = "ip4"
    elif ethertype == 0x86DD:
        proto, l4 = frame[20], frame[54:]
        family = "ip6"
    else:
        return (hex(ethertype), 0, 0)
    if proto in (6, 17, 132):
        return (family, proto, struct.unpack("!H", l4[2:4])[0])
    return (family, proto, l4[0])


@pytest.mark.parametrize("index", [1, 2, 3])
def test_address_plan_uses_documentation_ranges_only(index: int) -> None:
    import ipaddress

    client = lab_client(index)
    for addr in (client.v4, client.node_v4):
        assert ipaddress.ip_address(addr) in ipaddress.ip_network(client.v4_net)
    for addr in (client.v6, client.node_v6):
        assert ipaddress.ip_address(addr) in ipaddress.ip_network(client.v6_net)
    assert ipaddress.IPv6Network(client.v6_net).subnet_of(ipaddress.IPv6Network("2001:db8::/32"))
    assert all(len(name) <= 15 for name in (client.ifname_node, client.ifname_client, client.ns))
    assert client["ns"] == client.ns == f"infw-c{index}"


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_up_builds_the_lab_and_ping_works_both_families() -> None:
    if shutil.which("ping") is None or shutil.which("ip") is None:
        pytest.skip("needs the ping and ip commands")
    started = time.monotonic()
    info = lab_up(traffic=False)
    took = time.monotonic() - started
    assert info.up, info.problems
    assert took < 10, f"lab_up took {took:.1f}s"
    assert lab_namespaces() == ["infw-c1", "infw-c2", "infw-node"]
    assert info.node_ns == NODE_NS
    assert info.node_interfaces == ("infw-n1", "infw-n2")
    assert [c.ns for c in info.clients] == ["infw-c1", "infw-c2"]
    assert info.traffic_pids == ()
    from pyroute2 import IPRoute

    for client in info.clients:
        with IPRoute(netns=client.ns, flags=0) as ipr:
            idx = ipr.link_lookup(ifname=client.ifname_client)[0]
            addrs = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx)}
        assert {client.v4, client.v6} <= addrs
        with IPRoute(netns=NODE_NS, flags=0) as ipr:
            idx = ipr.link_lookup(ifname=client.ifname_node)[0]
            addrs = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx)}
        assert {client.node_v4, client.node_v6} <= addrs
        for addr in (client.node_v4, client.node_v6):
            assert _ping(client.ns, addr), f"{client.ns} cannot ping {addr}"
    # Nothing of the lab leaks into the host namespace.
    with IPRoute() as ipr:
        host_links = {link.get("ifname") for link in ipr.get_links()}
    assert not {"infw-n1", "infw-n2", "infw-c1e", "infw-c2e"} & host_links


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_traffic_runs_at_its_rate_and_is_bounded() -> None:
    info = lab_up(rate=50.0, traffic=True, duration=3.0)
    assert len(info.traffic_pids) == 2
    assert set(info.traffic_pids) == set(traffic_pids())
    before = {c.ifname_node: _rx_packets(NODE_NS, c.ifname_node) for c in info.clients}
    time.sleep(1.0)
    for client in info.clients:
        got = _rx_packets(NODE_NS, client.ifname_node) - before[client.ifname_node]
        assert 25 <= got <= 80, f"{client.ifname_node}: {got} packets in 1s at 50/s"
    # Bounded: both processes exit on their own once their 3 s are over.
    assert wait_for(lambda: not traffic_pids(), timeout=8.0), traffic_pids()
    assert lab_status().traffic_pids == ()
    log = (STATE_DIR / "traffic-infw-c1.log").read_text()
    assert "labtraffic exit (deadline" in log


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_traffic_mix_and_sigterm() -> None:
    capture_ready = lab_up(traffic=False)
    assert capture_ready.up
    capture = _Capture("infw-n1")
    info = lab_up(rate=100.0, traffic=True)
    counts = capture.collect(expected=120, timeout=4.0)
    kinds = {(family, proto) for family, proto, _ in counts}
    assert {("ip4", 6), ("ip4", 17), ("ip4", 1), ("ip6", 6), ("ip6", 17), ("ip6", 58)} <= kinds, (
        counts
    )
    tcp_ports = {port for family, proto, port in counts if proto == 6}
    assert tcp_ports == {22, 80, 443, 8080, 9000}
    udp_ports = {port for family, proto, port in counts if proto == 17}
    assert 53 in udp_ports and udp_ports - {53} <= set(range(5000, 5011))
    # Only lab traffic, and no ARP/ND: neighbours are static.
    assert all(family in ("ip4", "ip6") for family, _, _ in counts), counts
    started = time.monotonic()
    stopped = stop_traffic()
    assert len(stopped) == 2 and time.monotonic() - started < 2.0
    assert traffic_pids() == []
    assert "labtraffic exit (signal)" in (STATE_DIR / "traffic-infw-c1.log").read_text()
    assert set(info.traffic_pids).isdisjoint(traffic_pids())


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_up_twice_is_idempotent_and_repairs() -> None:
    from pyroute2 import IPRoute

    first = lab_up(rate=20.0)

    def ifindexes() -> dict[str, int]:
        with IPRoute(netns=NODE_NS, flags=0) as ipr:
            return {link.get("ifname"): link["index"] for link in ipr.get_links()}

    def addr_count(ns: str) -> int:
        with IPRoute(netns=ns, flags=0) as ipr:
            return len(ipr.get_addr())

    links, addrs = ifindexes(), addr_count(NODE_NS)
    second = lab_up(rate=20.0)
    assert second == first
    assert ifindexes() == links and addr_count(NODE_NS) == addrs
    assert sorted(traffic_pids()) == sorted(first.traffic_pids)

    # Break it: drop a veth, an address, a traffic process; lab_up puts them back.
    with IPRoute(netns=NODE_NS, flags=0) as ipr:
        ipr.link("del", index=ipr.link_lookup(ifname="infw-n2")[0])
    c1 = lab_client(1)
    with IPRoute(netns=c1.ns, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=c1.ifname_client)[0]
        ipr.addr("del", index=idx, address=c1.v6, prefixlen=64)
    victim = first.traffic_pids[0]
    os.kill(victim, 9)
    assert wait_for(lambda: victim not in traffic_pids(), 3.0)
    broken = lab_status()
    assert not broken.up
    assert any("infw-n2" in p for p in broken.problems)
    assert any(c1.v6 in p for p in broken.problems)
    repaired = lab_up(rate=20.0)
    assert repaired.up, repaired.problems
    assert len(repaired.traffic_pids) == 2 and victim not in repaired.traffic_pids
    assert _ping(c1.ns, c1.node_v6)
    # A different rate restarts the traffic rather than adding a second process.
    faster = lab_up(rate=40.0)
    assert len(faster.traffic_pids) == 2
    assert set(faster.traffic_pids).isdisjoint(repaired.traffic_pids)


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_down_removes_everything() -> None:
    lab_up(rate=20.0)
    Path(LAB_PIN_ROOT).mkdir(exist_ok=True)  # stands in for the lab firewall's pins
    started = time.monotonic()
    removed = lab_down()
    took = time.monotonic() - started
    assert took < 5, f"lab_down took {took:.1f}s"
    assert sum(r.startswith("traffic process") for r in removed) == 2
    assert {"namespace infw-node", "namespace infw-c1", "namespace infw-c2"} <= set(removed)
    assert f"pins {LAB_PIN_ROOT}" in removed
    _assert_gone()
    assert not lab_status().up
    assert lab_down() == []


_CRASH_MIDWAY = """
import os, signal
from engine.lab.world import lab_up

def progress(text):
    if text.startswith("starting traffic in infw-c2"):
        os.kill(os.getpid(), signal.SIGKILL)   # die half-way: c1 has traffic, c2 not yet

lab_up(rate=20.0, progress=progress)
"""

_CRASH_AFTER_UP = """
import os, signal
from engine.lab.world import lab_up
lab_up(rate=20.0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_starter(code: str) -> int:
    env = dict(os.environ, PYTHONPATH=str(PROJECT))
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT, timeout=60)
    return proc.returncode


@needs_root
@pytest.mark.usefixtures("clean_lab")
@pytest.mark.parametrize("code", [_CRASH_MIDWAY, _CRASH_AFTER_UP], ids=["midway", "after-up"])
@pytest.mark.parametrize("lose_state", [False, True], ids=["pidfiles", "no-pidfiles"])
def test_down_after_a_crash_cleans_up(code: str, lose_state: bool) -> None:
    assert _run_starter(code) == -9
    assert lab_namespaces(), "the crashed starter should have left namespaces behind"
    assert traffic_pids(), "and traffic processes that outlived it"
    if lose_state:
        shutil.rmtree(STATE_DIR)  # the pid files are gone too: down must find them by scanning
    removed = lab_down()
    assert any(r.startswith("traffic process") for r in removed)
    _assert_gone()


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_in_namespace_is_per_thread_and_send_packets_arrive() -> None:
    lab_up(traffic=False)
    host_ino = os.stat("/proc/thread-self/ns/net").st_ino
    seen_in_thread: list[bool] = []
    with in_namespace(NODE_NS):
        assert thread_in_namespace(NODE_NS)
        assert socket.if_nametoindex("infw-n1") > 0
        other = threading.Thread(target=lambda: seen_in_thread.append(thread_in_namespace(NODE_NS)))
        other.start()
        other.join()
    assert seen_in_thread == [True]  # threads started inside inherit the namespace
    assert os.stat("/proc/thread-self/ns/net").st_ino == host_ino
    with pytest.raises(OSError):
        socket.if_nametoindex("infw-n1")

    c1, c2 = lab_client(1), lab_client(2)
    capture = _Capture("infw-n1")
    sent = [
        send_packets(c1.ns, c1.node_v4, "udp", dport=5005, count=5),
        send_packets(c1.ns, c1.node_v4, "tcp", dport=8080, count=3),
        send_packets(c1.ns, c1.node_v6, "tcp", dport=9000, count=2, sport=41000),
        send_packets(c1.ns, c1.node_v6, "icmp", count=4),
        send_packets(c1.ns, c1.node_v4, "icmp", count=2, icmp=(13, 0)),
        send_packets(c1.ns, c1.node_v4, "sctp", dport=3868, count=1),
    ]
    counts = capture.collect(expected=sum(sent))
    assert counts == {
        ("ip4", 17, 5005): 5,
        ("ip4", 6, 8080): 3,
        ("ip6", 6, 9000): 2,
        ("ip6", 58, 128): 4,
        ("ip4", 1, 13): 2,
        ("ip4", 132, 3868): 1,
    }
    capture = _Capture("infw-n2")
    send_packets(c2.ns, c2.node_v4, "icmp", count=3, src=c2.v4)
    assert capture.collect(expected=3) == {("ip4", 1, 8): 3}

    # Never anywhere but the lab.
    with pytest.raises(LabSafetyError):
        send_packets(c1.ns, "8.8.8.8", "udp", dport=53)
    with pytest.raises(LabSafetyError):
        send_packets("infwprobe0", c1.node_v4, "udp", dport=53)


@needs_root
def test_status_reports_what_is_missing(clean_lab: None) -> None:
    info = lab_status()
    assert isinstance(info, LabInfo)
    assert not info.up and info.clients == () and info.traffic_pids == ()
    assert "namespace infw-node is missing" in info.problems


@needs_root
@pytest.mark.usefixtures("clean_lab")
def test_down_removes_stray_lab_veths_and_nothing_else() -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        # A half-built lab in the host namespace, and a look-alike that is not the lab's.
        ipr.link("add", ifname="infw-n3", kind="veth", peer={"ifname": "infw-c3e"})
        ipr.link("add", ifname="infw-keep0", kind="veth", peer={"ifname": "infw-keep1"})
        try:
            removed = lab_down()
            assert removed == ["veth infw-c3e"] or removed == ["veth infw-n3"]
            assert not ipr.link_lookup(ifname="infw-n3") and not ipr.link_lookup(ifname="infw-c3e")
            assert ipr.link_lookup(ifname="infw-keep0") and ipr.link_lookup(ifname="infw-keep1")
        finally:
            for name in ("infw-keep0", "infw-n3"):
                for index in ipr.link_lookup(ifname=name):
                    ipr.link("del", index=index)
