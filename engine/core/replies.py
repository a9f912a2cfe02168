"""Replies to the node's own connections (opt-in, node-local): which inbound packet answers
which outbound flow. The kernel keys its table the same way (bpf/infw.bpf.c reply_key_of);
the reference classifier takes a set of these keys as the table of known outbound flows.

A reply must match exactly, source port included: a forged "reply" opens nothing the node did
not itself ask for. TCP flows start only with the node's SYN; UDP with any datagram; ICMP with
an echo request (the reply carries its id).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.core.cidr import parse_address
from engine.kernel.abi import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST,
)

if TYPE_CHECKING:  # classify imports this module for its reply step
    from engine.core.classify import PacketFields

IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
# conntrack's defaults (nf_conntrack_tcp_timeout_established, nf_conntrack_udp_timeout,
# nf_conntrack_icmp_timeout): how long after the node's last packet of a flow a reply passes
DEFAULT_TCP_TIMEOUT = 432000.0
DEFAULT_UDP_TIMEOUT = 30.0
DEFAULT_ICMP_TIMEOUT = 30.0
_ECHO = {
    IPPROTO_ICMP: (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY),
    IPPROTO_ICMPV6: (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY),
}


@dataclass(frozen=True)
class ReplySettings:
    enabled: bool = False
    tcp_timeout: float = DEFAULT_TCP_TIMEOUT
    udp_timeout: float = DEFAULT_UDP_TIMEOUT
    icmp_timeout: float = DEFAULT_ICMP_TIMEOUT


@dataclass(frozen=True)
class ReplyFlow:
    """A reply as it will arrive on ifindex: remote is its source, local its destination
    (128-bit, IPv4 mapped); TCP/UDP ports; ICMP echo: remote_port is the echo id."""

    ifindex: int
    family: int
    ipproto: int
    remote: int
    local: int
    remote_port: int
    local_port: int = 0


def _flow(ifindex: int, pkt: PacketFields, outbound: bool) -> ReplyFlow | None:
    if pkt.nonfirst_fragment:
        return None
    src, _ = parse_address(pkt.src)
    dst, _ = parse_address(pkt.dst)
    remote, local = (dst, src) if outbound else (src, dst)
    # the header's family, not the address's: an IPv6 packet from ::ffff:a.b.c.d answers no
    # IPv4 flow
    family = 6 if ":" in pkt.src else 4
    if pkt.ipproto in (IPPROTO_TCP, IPPROTO_UDP):
        if pkt.sport is None or pkt.dport is None:
            return None
        rport, lport = (pkt.dport, pkt.sport) if outbound else (pkt.sport, pkt.dport)
        return ReplyFlow(ifindex, family, pkt.ipproto, remote, local, rport, lport)
    if pkt.ipproto in _ECHO:
        want = _ECHO[pkt.ipproto][0 if outbound else 1]
        if pkt.icmp_type != want or pkt.icmp_code != 0 or pkt.icmp_id is None:
            return None
        return ReplyFlow(ifindex, family, pkt.ipproto, remote, local, pkt.icmp_id)
    return None


def reply_flow(ifindex: int, pkt: PacketFields) -> ReplyFlow | None:
    """The key an inbound packet would match as a reply; None if it cannot be one."""
    return _flow(ifindex, pkt, outbound=False)


def expected_reply(ifindex: int, pkt: PacketFields, tcp_open: bool = True) -> ReplyFlow | None:
    """The reply an outbound packet of the node on ifindex makes the table expect; None for
    a packet that starts nothing (a TCP segment other than the SYN, pass tcp_open=False)."""
    if pkt.ipproto == IPPROTO_TCP and not tcp_open:
        return None
    return _flow(ifindex, pkt, outbound=True)
