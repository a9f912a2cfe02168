"""Reference frame parser and builder: the exact parsing rules bpf/infw.bpf.c follows.

`parse_frame` is the spec the XDP program implements; `build_frame` makes the packet that
`infw trace` runs through BPF_PROG_TEST_RUN (struct only: no scapy at runtime).

Parsing rules (every read is bounds-checked against the end of the frame; a read that would
cross it makes the frame UNPARSED, which passes and is counted):

1. Ethernet: the 14-byte header must be present.
2. VLAN: while the ethertype is 0x8100 or 0x88a8, read a 4-byte tag (TCI, next ethertype);
   at most two tags. If the ethertype after two tags is still 0x8100/0x88a8: UNPARSED.
   `vlan` is the VID (TCI & 0xfff) of the outermost tag, 0 when untagged.
3. Ethertype not 0x0800/0x86dd (ARP, LLDP, an 802.3 length...): NON-IP, passes, not counted.
4. IPv4: 20 bytes present, version 4, IHL >= 5 and all IHL*4 bytes present (options are
   skipped, never interpreted); the total-length field is not used. L4 starts at IHL*4.
   Fragment offset (frag_off & 0x1fff) != 0: a non-first fragment; no L4 read.
5. IPv6: 40 bytes present, version 6. Walk extension headers while the next header is
   hop-by-hop (0), routing (43), fragment (44) or destination options (60), at most 8 of them;
   a 9th extension header is UNPARSED. Hop-by-hop, routing and destination options span
   (hdr_ext_len + 1) * 8 bytes, all of which must be present; the fragment header is 8 bytes.
   A fragment header with offset (ntohs(frag_off) >> 3) != 0 ends the walk: a non-first
   fragment whose protocol is the fragment header's next header; no L4 read.
   Every other next header (TCP, UDP, AH, ESP, no-next-header 59...) is the protocol.
6. L4, by protocol number whatever the family: TCP (6), UDP (17), SCTP (132) need the 4 bytes
   of source and destination port, ICMP (1) and ICMPv6 (58) the 2 bytes of type and code;
   missing bytes: UNPARSED. Any other protocol: no L4 read, no port.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Literal

from engine.core.classify import PacketFields

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
VLAN_TYPES = frozenset({ETH_P_8021Q, ETH_P_8021AD})
MAX_VLAN_TAGS = 2

ETH_HLEN = 14
VLAN_HLEN = 4
IPV4_HLEN = 20
IPV6_HLEN = 40
IPV6_FRAG_HLEN = 8

IPPROTO_HOPOPTS = 0
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_DSTOPTS = 60
IPV6_EXT_HEADERS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_FRAGMENT, IPPROTO_DSTOPTS})
MAX_IPV6_EXT_HEADERS = 8

IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
PORT_PROTOS = frozenset({IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP})
ICMP_PROTOS = frozenset({IPPROTO_ICMP, IPPROTO_ICMPV6})
ICMP_HLEN = 8  # type, code, checksum and the echo id and sequence

FrameKind = Literal["ip", "non-ip", "unparsed"]

_MAC_DST = bytes.fromhex("020000000002")
_MAC_SRC = bytes.fromhex("020000000001")


@dataclass(frozen=True)
class ParsedFrame:
    """What the datapath learns from a frame. fields is set only when kind is "ip"."""

    kind: FrameKind
    fields: PacketFields | None = None
    vlan: int = 0  # outer VLAN id, 0 when untagged
    family: int = 0  # 4, 6, or 0 before the IP header was reached
    sport: int | None = None
    why: str = ""  # for UNPARSED and NON-IP: what stopped the parser


def _unparsed(why: str, vlan: int = 0, family: int = 0) -> ParsedFrame:
    return ParsedFrame("unparsed", vlan=vlan, family=family, why=why)


def parse_frame(data: bytes) -> ParsedFrame:
    """Parse a frame exactly as the XDP program does (see the module docstring)."""
    end = len(data)
    if end < ETH_HLEN:
        return _unparsed("truncated Ethernet header")
    (ethertype,) = struct.unpack_from("!H", data, 12)
    off = ETH_HLEN
    vlan = 0
    for tag in range(MAX_VLAN_TAGS):
        if ethertype not in VLAN_TYPES:
            break
        if off + VLAN_HLEN > end:
            return _unparsed("truncated VLAN tag", vlan)
        tci, ethertype = struct.unpack_from("!HH", data, off)
        if tag == 0:
            vlan = tci & 0x0FFF
        off += VLAN_HLEN
    if ethertype in VLAN_TYPES:
        return _unparsed("more than two VLAN tags", vlan)
    if ethertype == ETH_P_IP:
        return _parse_ipv4(data, off, vlan)
    if ethertype == ETH_P_IPV6:
        return _parse_ipv6(data, off, vlan)
    return ParsedFrame("non-ip", vlan=vlan, why=f"ethertype 0x{ethertype:04x}")


def _parse_ipv4(data: bytes, off: int, vlan: int) -> ParsedFrame:
    end = len(data)
    if off + IPV4_HLEN > end:
        return _unparsed("truncated IPv4 header", vlan, 4)
    ver_ihl = data[off]
    if ver_ihl >> 4 != 4:
        return _unparsed("IPv4 version is not 4", vlan, 4)
    hlen = (ver_ihl & 0x0F) * 4
    if hlen < IPV4_HLEN:
        return _unparsed("IPv4 IHL below 5", vlan, 4)
    if off + hlen > end:
        return _unparsed("truncated IPv4 options", vlan, 4)
    (frag_off,) = struct.unpack_from("!H", data, off + 6)
    ipproto = data[off + 9]
    src = str(ipaddress.IPv4Address(data[off + 12 : off + 16]))
    dst = str(ipaddress.IPv4Address(data[off + 16 : off + 20]))
    nonfirst = (frag_off & 0x1FFF) != 0
    return _parse_l4(data, off + hlen, vlan, 4, src, dst, ipproto, nonfirst)


def _parse_ipv6(data: bytes, off: int, vlan: int) -> ParsedFrame:
    end = len(data)
    if off + IPV6_HLEN > end:
        return _unparsed("truncated IPv6 header", vlan, 6)
    if data[off] >> 4 != 6:
        return _unparsed("IPv6 version is not 6", vlan, 6)
    nexthdr = data[off + 6]
    src = str(ipaddress.IPv6Address(data[off + 8 : off + 24]))
    dst = str(ipaddress.IPv6Address(data[off + 24 : off + 40]))
    off += IPV6_HLEN
    for _ in range(MAX_IPV6_EXT_HEADERS):
        if nexthdr not in IPV6_EXT_HEADERS:
            break
        if nexthdr == IPPROTO_FRAGMENT:
            if off + IPV6_FRAG_HLEN > end:
                return _unparsed("truncated IPv6 fragment header", vlan, 6)
            (frag_off,) = struct.unpack_from("!H", data, off + 2)
            nexthdr = data[off]
            if frag_off >> 3 != 0:
                return _parse_l4(data, off + IPV6_FRAG_HLEN, vlan, 6, src, dst, nexthdr, True)
            off += IPV6_FRAG_HLEN
            continue
        if off + 2 > end:
            return _unparsed("truncated IPv6 extension header", vlan, 6)
        hlen = (data[off + 1] + 1) * 8
        if off + hlen > end:
            return _unparsed("truncated IPv6 extension header", vlan, 6)
        nexthdr = data[off]
        off += hlen
    if nexthdr in IPV6_EXT_HEADERS:
        return _unparsed(f"more than {MAX_IPV6_EXT_HEADERS} IPv6 extension headers", vlan, 6)
    return _parse_l4(data, off, vlan, 6, src, dst, nexthdr, False)


def _parse_l4(
    data: bytes,
    off: int,
    vlan: int,
    family: int,
    src: str,
    dst: str,
    ipproto: int,
    nonfirst: bool,
) -> ParsedFrame:
    end = len(data)
    sport: int | None = None
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    if not nonfirst:
        if ipproto in PORT_PROTOS:
            if off + 4 > end:
                return _unparsed("truncated L4 ports", vlan, family)
            sport, dport = struct.unpack_from("!HH", data, off)
        elif ipproto in ICMP_PROTOS:
            if off + 2 > end:
                return _unparsed("truncated ICMP header", vlan, family)
            icmp_type, icmp_code = data[off], data[off + 1]
            if off + ICMP_HLEN <= end:  # a whole echo header: the id a reply is matched on
                (icmp_id,) = struct.unpack_from("!H", data, off + 4)
    fields = PacketFields(
        src=src,
        ipproto=ipproto,
        dport=dport,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        nonfirst_fragment=nonfirst,
        dst=dst,
        sport=sport,
        icmp_id=icmp_id,
    )
    return ParsedFrame("ip", fields, vlan, family, sport)


# --- building ---------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _l4_header(
    ipproto: int, sport: int, dport: int, icmp_type: int, icmp_code: int, payload_len: int
) -> tuple[bytes, int | None]:
    """The L4 header with a zero checksum, and the offset of its checksum field (if any)."""
    if ipproto == IPPROTO_TCP:
        return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0), 16
    if ipproto == IPPROTO_UDP:
        return struct.pack("!HHHH", sport, dport, 8 + payload_len, 0), 6
    if ipproto == IPPROTO_SCTP:
        # verification tag 0 and checksum 0: SCTP's CRC32c is not the internet checksum.
        return struct.pack("!HHII", sport, dport, 0, 0), None
    if ipproto in ICMP_PROTOS:
        return struct.pack("!BBHHH", icmp_type, icmp_code, 0, 0x1234, 1), 2
    return b"", None


def build_frame(
    src: str,
    dst: str,
    ipproto: int,
    dport: int | None = None,
    sport: int = 40000,
    icmp_type: int | None = None,
    icmp_code: int | None = None,
    vlan: tuple[int, ...] = (),
    payload_len: int = 0,
    nonfirst_fragment: bool = False,
    ip_options: bytes = b"",
    ipv6_ext: tuple[int, ...] = (),
) -> bytes:
    """An Ethernet frame from src to dst; the family follows src (dst must match).

    vlan lists VIDs outermost first: the innermost tag is 802.1Q (0x8100), outer ones 802.1ad
    (0x88a8); more than two tags are built (the parser must then refuse the frame).
    ip_options (IPv4) are zero-padded to a multiple of 4 bytes. ipv6_ext lists extension
    header types (0, 43, 44, 60) in order; a non-first IPv6 fragment gets a fragment header
    when ipv6_ext has none. A non-first fragment carries payload only, no L4 header.
    Checksums are filled in (IPv4 header, TCP/UDP/ICMP/ICMPv6) so the frame survives a real
    stack; SCTP's CRC32c is left 0.
    """
    src_ip = ipaddress.ip_address(src)
    dst_ip = ipaddress.ip_address(dst)
    if src_ip.version != dst_ip.version:
        raise ValueError(f"source {src} and destination {dst} are of different families")
    payload = bytes(payload_len)
    l4, csum_at = (
        (b"", None)
        if nonfirst_fragment
        else _l4_header(ipproto, sport, dport or 0, icmp_type or 0, icmp_code or 0, payload_len)
    )
    segment = l4 + payload
    if src_ip.version == 4:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!BBH", 0, ipproto, len(segment))
        # ICMPv4's checksum covers the message only, no pseudo-header.
        segment = _fill_checksum(segment, csum_at, b"" if ipproto == IPPROTO_ICMP else pseudo)
        l3 = _ipv4_header(
            src_ip.packed, dst_ip.packed, ipproto, ip_options, len(segment), nonfirst_fragment
        )
        ethertype = ETH_P_IP
    else:
        pseudo = src_ip.packed + dst_ip.packed + struct.pack("!IxxxB", len(segment), ipproto)
        segment = _fill_checksum(segment, csum_at, pseudo)
        exts = ipv6_ext
        if nonfirst_fragment and IPPROTO_FRAGMENT not in exts:
            exts = (*exts, IPPROTO_FRAGMENT)
        chain = _ipv6_ext_chain(exts, ipproto, nonfirst_fragment)
        first = exts[0] if exts else ipproto
        l3 = struct.pack("!IHBB", 6 << 28, len(chain) + len(segment), first, 64)
        l3 += src_ip.packed + dst_ip.packed + chain
        ethertype = ETH_P_IPV6
    # Innermost tag 802.1Q, outer ones 802.1ad: each TPID is the type field before its tag.
    tpids = [ETH_P_8021AD] * (len(vlan) - 1) + [ETH_P_8021Q] if vlan else []
    types = [*tpids, ethertype]
    eth = _MAC_DST + _MAC_SRC + struct.pack("!H", types[0])
    tags = b"".join(struct.pack("!HH", vid & 0x0FFF, types[i + 1]) for i, vid in enumerate(vlan))
    return eth + tags + l3 + segment


def _fill_checksum(segment: bytes, csum_at: int | None, pseudo: bytes) -> bytes:
    if csum_at is None:
        return segment
    csum = _checksum(pseudo + segment)
    return segment[:csum_at] + struct.pack("!H", csum) + segment[csum_at + 2 :]


def _ipv4_header(
    src: bytes, dst: bytes, ipproto: int, options: bytes, seg_len: int, nonfirst: bool
) -> bytes:
    if len(options) % 4:
        options += bytes(4 - len(options) % 4)
    if len(options) > 40:
        raise ValueError("IPv4 options are at most 40 bytes")
    ihl = 5 + len(options) // 4
    frag_off = 185 if nonfirst else 0  # 1480 / 8: the second fragment of a 1500-byte MTU
    header = (
        struct.pack(
            "!BBHHHBBH4s4s",
            4 << 4 | ihl,
            0,
            ihl * 4 + seg_len,
            1,
            frag_off,
            64,
            ipproto,
            0,
            src,
            dst,
        )
        + options
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:]


def _ipv6_ext_chain(exts: tuple[int, ...], ipproto: int, nonfirst: bool) -> bytes:
    chain = b""
    for i, ext in enumerate(exts):
        nxt = exts[i + 1] if i + 1 < len(exts) else ipproto
        if ext == IPPROTO_FRAGMENT:
            # offset 185 (x8 bytes) for a non-first fragment; otherwise offset 0 with M set.
            frag = (185 << 3) if nonfirst else 1
            chain += struct.pack("!BBHI", nxt, 0, frag, 0x1234)
        elif ext == IPPROTO_ROUTING:
            # type 0 routing header with segments left 0 and no addresses: 8 bytes.
            chain += struct.pack("!BBBB", nxt, 0, 0, 0) + bytes(4)
        elif ext in (IPPROTO_HOPOPTS, IPPROTO_DSTOPTS):
            # PadN option filling the 8-byte header.
            chain += struct.pack("!BBBB", nxt, 0, 1, 4) + bytes(4)
        else:
            raise ValueError(f"{ext} is not an IPv6 extension header type (0, 43, 44, 60)")
    return chain
