"""Lab traffic: a bounded process that sends a steady TCP/UDP/ICMP mix from a lab client namespace.

Run as ``python -m engine.lab.traffic --ns infw-c1 --target 192.0.2.1 --target 2001:db8:1::1``;
``engine.lab.world`` starts one per client. Standard library only, so it starts fast. The packet
primitives here are also what ``engine.lab.world.send_packets`` uses for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import random
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from engine.kernel.netns import NETNS_DIR, setns_fd
from engine.kernel.netns import current_inode as current_netns_inode

# The lab's namespaces; nothing else is ever entered or cleaned up by the lab.
LAB_NS_RE = re.compile(r"^infw-(node|c[0-9]{1,2})$")

# Documentation ranges only (RFC 5737, RFC 3849): lab traffic can never leave for a real network.
LAB_NETWORKS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)

TCP_PORTS = (22, 80, 443, 8080, 9000)
UDP_PORTS = (53, *range(5000, 5011))
DEFAULT_RATE = 20.0
DEFAULT_DURATION = 4 * 3600.0
MAX_RATE = 10_000.0
READY_LINE = "labtraffic ready"

ICMP_ECHO_REQUEST = 8
ICMPV6_ECHO_REQUEST = 128
PROTOCOLS = ("tcp", "udp", "sctp", "icmp", "icmpv6")


class LabSafetyError(ValueError):
    """A namespace or destination outside the lab was asked for; nothing was sent."""


def check_lab_namespace(name: str) -> None:
    if not LAB_NS_RE.match(name):
        raise LabSafetyError(
            f"{name!r} is not a lab namespace (expected infw-node or infw-cN); "
            "lab traffic is only ever sent inside the lab"
        )


def check_lab_address(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(addr)
    if not any(ip.version == net.version and ip in net for net in LAB_NETWORKS):
        ranges = ", ".join(str(n) for n in LAB_NETWORKS)
        raise LabSafetyError(f"{addr} is outside the lab's documentation ranges ({ranges})")
    return ip


def enter_namespace(name: str) -> int:
    """Move the calling thread into lab namespace `name`; returns the namespace inode."""
    check_lab_namespace(name)
    before = current_netns_inode()
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        inode = os.fstat(fd).st_ino
        if inode == before:
            raise LabSafetyError(f"{name} is the namespace this process started in, not the lab's")
        setns_fd(fd)
    finally:
        os.close(fd)
    if current_netns_inode() != inode:
        raise LabSafetyError(f"entering {name} failed: still in the starting namespace")
    return inode


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C = _crc32c_table()


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def icmp_echo(icmp_type: int, code: int, ident: int, seq: int, v6: bool) -> bytes:
    """An ICMP(v6) message; the kernel fills in the ICMPv6 checksum itself."""
    payload = b"infw-lab"
    header = struct.pack("!BBHHH", icmp_type, code, 0, ident & 0xFFFF, seq & 0xFFFF)
    if v6:
        return header + payload
    csum = _checksum(header + payload)
    return struct.pack("!BBHHH", icmp_type, code, csum, ident & 0xFFFF, seq & 0xFFFF) + payload


def sctp_init(sport: int, dport: int, tag: int) -> bytes:
    """An SCTP packet with one INIT chunk (common header with CRC32c)."""
    chunk = struct.pack("!BBHIIHHI", 1, 0, 20, tag, 65535, 1, 1, tag)
    header = struct.pack("!HHII", sport, dport, 0, 0)
    crc = _crc32c(header + chunk)
    return struct.pack("!HHI", sport, dport, 0) + struct.pack("<I", crc) + chunk


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> socket.AddressFamily:
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def tcp_syn(dst: str, dport: int, src: str | None = None, sport: int | None = None) -> None:
    """Send exactly one SYN: a non-blocking connect, closed at once (SYN_SENT closes silently)."""
    ip = check_lab_address(dst)
    with socket.socket(_family(ip), socket.SOCK_STREAM) as sock:
        sock.setblocking(False)
        if src is not None or sport is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((src or "", sport or 0))
        with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
            sock.connect((str(ip), dport))


@dataclass
class Sender:
    """Long-lived datagram/raw sockets of one namespace, created where the caller stands."""

    udp4: socket.socket | None = None
    udp6: socket.socket | None = None
    icmp4: socket.socket | None = None
    icmp6: socket.socket | None = None
    sctp4: socket.socket | None = None
    sctp6: socket.socket | None = None

    @classmethod
    def open(cls, src: str | None = None) -> Sender:
        """Open every socket now, so they belong to the calling thread's current namespace."""
        sender = cls(
            udp4=socket.socket(socket.AF_INET, socket.SOCK_DGRAM),
            udp6=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM),
            icmp4=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
            icmp6=socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
            sctp4=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_SCTP),
            sctp6=socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_SCTP),
        )
        for sock in sender._sockets():
            sock.setblocking(False)
            # Replies are never read except by drain(); keep their buffer small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if src is not None:
            src_ip = check_lab_address(src)
            for sock in sender._sockets():
                if sock.family == _family(src_ip):
                    sock.bind((str(src_ip), 0))
        return sender

    def _sockets(self) -> Iterator[socket.socket]:
        for sock in (self.udp4, self.udp6, self.icmp4, self.icmp6, self.sctp4, self.sctp6):
            if sock is not None:
                yield sock

    def udp(self, dst: str, dport: int, payload: bytes = b"infw-lab") -> None:
        ip = check_lab_address(dst)
        sock = self.udp6 if ip.version == 6 else self.udp4
        assert sock is not None
        sock.sendto(payload, (str(ip), dport))

    def icmp(self, dst: str, icmp_type: int | None = None, code: int = 0, seq: int = 0) -> None:
        ip = check_lab_address(dst)
        v6 = ip.version == 6
        if icmp_type is None:
            icmp_type = ICMPV6_ECHO_REQUEST if v6 else ICMP_ECHO_REQUEST
        sock = self.icmp6 if v6 else self.icmp4
        assert sock is not None
        sock.sendto(icmp_echo(icmp_type, code, os.getpid(), seq, v6), (str(ip), 0))

    def sctp(self, dst: str, dport: int, sport: int = 40000) -> None:
        ip = check_lab_address(dst)
        sock = self.sctp6 if ip.version == 6 else self.sctp4
        assert sock is not None
        sock.sendto(sctp_init(sport, dport, random.getrandbits(32) or 1), (str(ip), 0))

    def drain(self) -> None:
        for sock in self._sockets():
            with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
                while sock.recv(4096):
                    pass

    def close(self) -> None:
        for sock in self._sockets():
            sock.close()


def traffic_mix(targets: Sequence[str]) -> list[tuple[str, str, int]]:
    """One cycle of (protocol, destination, port): TCP SYNs, UDP datagrams and echo requests."""
    mix: list[tuple[str, str, int]] = []
    for dst in targets:
        mix += [("tcp", dst, port) for port in TCP_PORTS]
        mix += [("udp", dst, 53), ("udp", dst, 5000), ("icmp", dst, 0)]
    return mix


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


def run(ns: str, targets: Sequence[str], rate: float, duration: float, seed: int | None) -> int:
    for dst in targets:
        check_lab_address(dst)
    ns_inode = enter_namespace(ns)
    stop = _Stop()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    sender = Sender.open()
    rng = random.Random(seed)
    mix = traffic_mix(targets)
    rng.shuffle(mix)
    print(f"{READY_LINE} pid={os.getpid()} ns={ns} rate={rate} duration={duration}", flush=True)
    interval = 1.0 / rate
    start = next_at = last_check = time.monotonic()
    deadline = start + duration
    sent = errors = step = 0
    try:
        while not stop.requested:
            now = time.monotonic()
            if now >= deadline:
                break
            if now - last_check >= 1.0:
                last_check = now
                sender.drain()
                # The lab was removed without us (e.g. `ip netns del`): don't linger in a dead netns.
                try:
                    if os.stat(os.path.join(NETNS_DIR, ns)).st_ino != ns_inode:
                        break
                except FileNotFoundError:
                    break
            proto, dst, port = mix[step % len(mix)]
            step += 1
            try:
                if proto == "tcp":
                    tcp_syn(dst, port)
                elif proto == "udp":
                    sender.udp(dst, rng.randint(5000, 5010) if port == 5000 else port)
                else:
                    sender.icmp(dst, seq=step)
                sent += 1
            except OSError as exc:
                errors += 1
                if errors <= 5 or errors % 1000 == 0:
                    print(f"send {proto} {dst}:{port} failed: {exc}", file=sys.stderr, flush=True)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                next_at = time.monotonic()  # fell behind (suspend, load): no burst to catch up
    finally:
        sender.close()
    reason = "signal" if stop.requested else "deadline or lab gone"
    print(f"labtraffic exit ({reason}): sent={sent} errors={errors}", flush=True)
    return 0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.lab.traffic", description=__doc__)
    parser.add_argument("--ns", required=True, help="lab client namespace to send from")
    parser.add_argument(
        "--target",
        action="append",
        required=True,
        help="node address (documentation ranges only); repeat for IPv6",
    )
    parser.add_argument("--rate", type=_positive, default=DEFAULT_RATE, help="packets per second")
    parser.add_argument(
        "--duration",
        type=_positive,
        default=DEFAULT_DURATION,
        help="seconds before exiting on its own",
    )
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        check_lab_namespace(args.ns)
        if args.rate > MAX_RATE:
            raise LabSafetyError(f"rate {args.rate} is above the lab's limit {MAX_RATE}")
        return run(args.ns, args.target, args.rate, args.duration, args.seed)
    except (LabSafetyError, OSError) as exc:
        print(f"labtraffic: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
