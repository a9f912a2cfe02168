"""Throwaway network namespaces for the benchmarks: a sender and a receiver joined by one veth pair.

Every name starts with infw-bench, addresses come from the documentation ranges, and
`VethWorld.down` removes everything it made (called from `finally` by every user).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass

from engine.kernel import netns
from engine.kernel.netns import NETNS_DIR

BENCH_NS_RE = re.compile(r"^infw-bench[-a-z0-9]*$")

# build_frame's fixed MACs, so its frames are addressed to the receiver as-is.
TX_MAC = "02:00:00:00:00:01"
RX_MAC = "02:00:00:00:00:02"


def run(
    cmd: Sequence[str],
    *,
    ns: str | None = None,
    check: bool = True,
    input_text: str | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command, inside namespace `ns` when given; raise with its stderr on failure."""
    full = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, input=input_text, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _check_name(name: str) -> None:
    if not BENCH_NS_RE.match(name):
        raise ValueError(f"{name!r} is not a benchmark namespace (infw-bench*)")


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Move this thread into namespace `ns` and back: sockets, links and XDP attaches made
    meanwhile belong to `ns`."""
    _check_name(ns)
    with netns.inside(ns):
        yield


@dataclass
class VethWorld:
    """Sender namespace --veth--> receiver namespace, IPv4 and IPv6 from documentation ranges."""

    tag: str  # distinguishes parallel worlds: infw-bench-<tag>-tx / -rx
    tx_ns: str = ""
    rx_ns: str = ""
    tx_if: str = ""
    rx_if: str = ""
    tx_addr: str = "192.0.2.10"
    rx_addr: str = "192.0.2.1"
    tx_addr6: str = "2001:db8:b::10"
    rx_addr6: str = "2001:db8:b::1"

    def __post_init__(self) -> None:
        self.tx_ns = f"infw-bench-{self.tag}-tx"
        self.rx_ns = f"infw-bench-{self.tag}-rx"
        _check_name(self.tx_ns)
        _check_name(self.rx_ns)
        # Interface names live inside the namespaces, so short fixed names are fine.
        self.tx_if = "ibtx0"
        self.rx_if = "ibrx0"

    def up(self) -> VethWorld:
        self.down()
        try:
            for ns in (self.tx_ns, self.rx_ns):
                run(["ip", "netns", "add", ns])
                run(["ip", "link", "set", "lo", "up"], ns=ns)
            # Created inside the sender namespace and the peer moved across, so no link ever
            # appears in the host's namespace.
            run(
                [
                    "ip",
                    "link",
                    "add",
                    self.tx_if,
                    "address",
                    TX_MAC,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    self.rx_if,
                    "address",
                    RX_MAC,
                    "netns",
                    self.rx_ns,
                ],
                ns=self.tx_ns,
            )
            for ns, ifname, a4, a6 in (
                (self.tx_ns, self.tx_if, self.tx_addr, self.tx_addr6),
                (self.rx_ns, self.rx_if, self.rx_addr, self.rx_addr6),
            ):
                run(["ip", "addr", "add", f"{a4}/24", "dev", ifname], ns=ns)
                run(["ip", "-6", "addr", "add", f"{a6}/64", "dev", ifname, "nodad"], ns=ns)
                run(["ip", "link", "set", ifname, "up"], ns=ns)
            run(
                [
                    "ip",
                    "neigh",
                    "replace",
                    self.rx_addr,
                    "lladdr",
                    RX_MAC,
                    "dev",
                    self.tx_if,
                    "nud",
                    "permanent",
                ],
                ns=self.tx_ns,
            )
            run(
                [
                    "ip",
                    "neigh",
                    "replace",
                    self.rx_addr6,
                    "lladdr",
                    RX_MAC,
                    "dev",
                    self.tx_if,
                    "nud",
                    "permanent",
                ],
                ns=self.tx_ns,
            )
            run(
                [
                    "ip",
                    "neigh",
                    "replace",
                    self.tx_addr,
                    "lladdr",
                    TX_MAC,
                    "dev",
                    self.rx_if,
                    "nud",
                    "permanent",
                ],
                ns=self.rx_ns,
            )
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in (self.tx_ns, self.rx_ns):
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                    # Only processes inside our own namespace: nothing else is touched.
                    with suppress(ProcessLookupError):
                        os.kill(int(pid), 9)
                run(["ip", "netns", "del", ns], check=False)

    def rx_ifindex_here(self) -> int:
        """The receiver's ifindex; call it from `inside(self.rx_ns)`."""
        return socket.if_nametoindex(self.rx_if)


def leftover_namespaces() -> list[str]:
    if not os.path.isdir(NETNS_DIR):
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if BENCH_NS_RE.match(n))
