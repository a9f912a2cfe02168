"""The fail-safe list: traffic that always passes, checked before any rule (DESIGN §4)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.model import PortRange, Protocol


@dataclass(frozen=True)
class FailSafe:
    protocol: Protocol
    ports: PortRange
    purpose: str

    def __str__(self) -> str:
        return f"{self.ports}/{self.protocol.value.lower()} ({self.purpose})"


DEFAULT_FAILSAFE: tuple[FailSafe, ...] = (
    FailSafe(Protocol.TCP, PortRange(22, 22), "SSH"),
    FailSafe(Protocol.UDP, PortRange(68, 68), "DHCP"),
    FailSafe(Protocol.TCP, PortRange(6443, 6443), "kube-apiserver"),
    FailSafe(Protocol.TCP, PortRange(2379, 2380), "etcd"),
    FailSafe(Protocol.TCP, PortRange(10250, 10250), "kubelet"),
    FailSafe(Protocol.TCP, PortRange(10257, 10257), "kube-controller-manager"),
    FailSafe(Protocol.TCP, PortRange(10259, 10259), "kube-scheduler"),
)

# The operator's own fixed list (pkg/failsaferules): its webhook refuses a TCP/UDP rule that is
# not Allow and whose port or inclusive range covers one of these. 22/tcp is not on it (removed
# there so users can restrict SSH); infw keeps SSH fail-safe by default, configurable.
OPERATOR_FAILSAFE: tuple[FailSafe, ...] = tuple(
    fs for fs in DEFAULT_FAILSAFE if (fs.protocol, fs.ports) != (Protocol.TCP, PortRange(22, 22))
)

# Where the node's list is changed: named in refusals so a user knows how to restrict SSH here.
FAILSAFE_CONFIG_HINT = "the 'failsafe' list in /etc/infw/config.yaml"

MAX_FAILSAFE_PORTS = 1024


def failsafe_ports(entries: tuple[FailSafe, ...]) -> frozenset[tuple[int, int]]:
    """Expand entries into (ipproto, port) pairs, the form the datapath hash holds."""
    return frozenset(
        (fs.protocol.ipproto, port)
        for fs in entries
        for port in range(fs.ports.low, fs.ports.high + 1)
    )


def failsafe_for(entries: tuple[FailSafe, ...], ipproto: int, port: int) -> FailSafe | None:
    for fs in entries:
        if fs.protocol.ipproto == ipproto and fs.ports.contains(port):
            return fs
    return None
