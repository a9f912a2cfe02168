"""engine.core.frame: the parsing rules the XDP program follows, checked against scapy-built frames."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.layers.sctp import SCTP
from scapy.packet import Packet, Raw

from engine.core.classify import PacketFields
from engine.core.frame import ParsedFrame, build_frame, parse_frame

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def parse(pkt: Packet) -> ParsedFrame:
    return parse_frame(bytes(pkt))


def fields(pkt: Packet) -> PacketFields:
    parsed = parse(pkt)
    assert parsed.kind == "ip", parsed
    assert parsed.fields is not None
    return parsed.fields


# --- scapy-built frames ------------------------------------------------------------------


def test_plain_ipv4_tcp() -> None:
    parsed = parse(ETH / IP(src="192.0.2.7", dst="10.0.0.1") / TCP(sport=1234, dport=8080))
    assert parsed.kind == "ip" and parsed.family == 4 and parsed.vlan == 0
    assert parsed.sport == 1234
    assert parsed.fields == PacketFields(
        src="192.0.2.7", dst="10.0.0.1", ipproto=6, dport=8080, sport=1234
    )


@pytest.mark.parametrize(
    "l4, proto", [(UDP(sport=5, dport=53), 17), (SCTP(sport=5, dport=53), 132)]
)
def test_udp_and_sctp_ports(l4: Packet, proto: int) -> None:
    f = fields(ETH / IP(src="192.0.2.7", dst="10.0.0.1") / l4)
    assert (f.ipproto, f.dport) == (proto, 53)


def test_icmp_type_code() -> None:
    f = fields(ETH / IP(src="192.0.2.7", dst="10.0.0.1") / ICMP(type=3, code=4))
    assert (f.ipproto, f.icmp_type, f.icmp_code, f.dport) == (1, 3, 4, None)


def test_icmpv6_type_code() -> None:
    f = fields(ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest())
    assert (f.ipproto, f.icmp_type, f.icmp_code) == (58, 128, 0)
    assert f.src == "2001:db8::1"


def test_single_vlan() -> None:
    parsed = parse(ETH / Dot1Q(vlan=42) / IP(src="192.0.2.7", dst="10.0.0.1") / UDP(dport=53))
    assert parsed.kind == "ip" and parsed.vlan == 42
    assert parsed.fields is not None and parsed.fields.dport == 53


@pytest.mark.parametrize("outer", [Dot1AD, Dot1Q])
def test_double_vlan_reports_outer_vid(outer: type[Packet]) -> None:
    pkt = (
        ETH
        / outer(vlan=100)
        / Dot1Q(vlan=200)
        / IPv6(src="2001:db8::1", dst="::1")
        / TCP(dport=443)
    )
    parsed = parse(pkt)
    assert parsed.kind == "ip" and parsed.vlan == 100 and parsed.family == 6
    assert parsed.fields is not None and parsed.fields.dport == 443


def test_three_vlan_tags_are_unparsed() -> None:
    pkt = ETH / Dot1AD(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP(src="192.0.2.7") / TCP(dport=80)
    parsed = parse(pkt)
    assert parsed.kind == "unparsed" and parsed.vlan == 1


def test_ipv4_options_shift_l4() -> None:
    # 8 bytes of options (IHL 7): a parser that assumes 20 bytes would read the wrong ports.
    pkt = ETH / IP(src="192.0.2.7", dst="10.0.0.1", options=b"\x01\x01\x01\x01\x01\x01\x01\x00")
    pkt = pkt / TCP(sport=1111, dport=2222)
    assert bytes(pkt)[14] == 0x47
    parsed = parse(pkt)
    assert parsed.fields is not None and parsed.fields.dport == 2222 and parsed.sport == 1111


@pytest.mark.parametrize(
    "ext",
    [
        IPv6ExtHdrHopByHop(),
        IPv6ExtHdrRouting(),
        IPv6ExtHdrDestOpt(),
        IPv6ExtHdrFragment(offset=0, m=1),
        IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting() / IPv6ExtHdrDestOpt() / IPv6ExtHdrFragment(m=1),
        IPv6ExtHdrHopByHop(options=[])
        / IPv6ExtHdrDestOpt(autopad=0, options=Raw(b"\x01\x0c" + bytes(12))),
    ],
)
def test_ipv6_extension_headers_walked(ext: Packet) -> None:
    pkt = ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / ext / UDP(sport=7, dport=5353)
    parsed = parse(pkt)
    assert parsed.kind == "ip", parsed
    assert parsed.fields is not None
    assert (parsed.fields.ipproto, parsed.fields.dport, parsed.fields.nonfirst_fragment) == (
        17,
        5353,
        False,
    )


def test_ipv6_eight_ext_headers_ok_nine_unparsed() -> None:
    base = ETH / IPv6(src="2001:db8::1", dst="2001:db8::2")
    eight = base
    for _ in range(8):
        eight = eight / IPv6ExtHdrDestOpt()
    assert fields(eight / TCP(dport=22)).dport == 22
    assert parse(eight / IPv6ExtHdrDestOpt() / TCP(dport=22)).kind == "unparsed"


def test_ipv4_nonfirst_fragment() -> None:
    pkt = (
        ETH / IP(src="192.0.2.7", dst="10.0.0.1", proto=6, frag=185) / Raw(b"\x00\x16\x00\x50" * 4)
    )
    f = fields(pkt)
    assert f.nonfirst_fragment and f.ipproto == 6 and f.dport is None


def test_ipv4_first_fragment_has_ports() -> None:
    f = fields(ETH / IP(src="192.0.2.7", dst="10.0.0.1", flags="MF") / TCP(dport=80))
    assert not f.nonfirst_fragment and f.dport == 80


def test_ipv6_nonfirst_fragment_takes_fragment_next_header() -> None:
    pkt = ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop()
    pkt = pkt / IPv6ExtHdrFragment(offset=100, nh=17) / Raw(b"\x00" * 16)
    f = fields(pkt)
    assert f.nonfirst_fragment and f.ipproto == 17 and f.dport is None


def test_ipv6_fragment_nonfirst_no_l4_needed() -> None:
    # The fragment header ends the walk: a non-first fragment need not carry anything after it.
    pkt = ETH / IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=1, nh=6)
    assert fields(pkt).nonfirst_fragment


def test_other_protocol_has_no_port() -> None:
    f = fields(ETH / IP(src="192.0.2.7", dst="10.0.0.1", proto=47) / Raw(b"\x00"))
    assert (f.ipproto, f.dport, f.icmp_type) == (47, None, None)
    # Nothing after the header is needed for a protocol we don't read.
    assert fields(ETH / IP(src="192.0.2.7", dst="10.0.0.1", proto=50)).ipproto == 50


def test_ipv4_mapped_source_text() -> None:
    f = fields(ETH / IPv6(src="::ffff:192.0.2.1", dst="2001:db8::2") / UDP(dport=1))
    assert ipaddress.ip_address(f.src) == ipaddress.ip_address("::ffff:192.0.2.1")


def test_arp_is_non_ip() -> None:
    assert parse(ETH / ARP()).kind == "non-ip"
    assert parse(ETH / Dot1Q(vlan=9) / ARP()) == ParsedFrame(
        "non-ip", vlan=9, why="ethertype 0x0806"
    )


def test_llc_length_field_is_non_ip() -> None:
    assert parse_frame(bytes(12) + b"\x00\x40" + bytes(64)).kind == "non-ip"


TRUNCATIONS = [
    (ETH / IP(src="192.0.2.7") / TCP(dport=80), 14 + 20 + 3),  # ports cut
    (ETH / IP(src="192.0.2.7") / TCP(dport=80), 14 + 19),  # IPv4 header cut
    (ETH / IP(src="192.0.2.7", options=b"\x01" * 8) / UDP(dport=80), 14 + 24),  # options cut
    (ETH / IP(src="192.0.2.7") / ICMP(), 14 + 20 + 1),  # ICMP code missing
    (ETH / IPv6(src="::1") / TCP(dport=80), 14 + 39),  # IPv6 header cut
    (ETH / IPv6(src="::1") / IPv6ExtHdrHopByHop() / TCP(), 14 + 40 + 7),  # ext header cut
    (ETH / IPv6(src="::1") / IPv6ExtHdrFragment() / TCP(), 14 + 40 + 7),  # fragment header cut
    (ETH / IPv6(src="::1") / ICMPv6EchoRequest(), 14 + 40 + 1),
    (ETH / Dot1Q(vlan=3) / IP(src="192.0.2.7"), 14 + 3),  # VLAN tag cut
    (ETH / IP(src="192.0.2.7"), 13),  # Ethernet cut
]


@pytest.mark.parametrize("pkt, cut", TRUNCATIONS)
def test_truncated_frames_are_unparsed(pkt: Packet, cut: int) -> None:
    data = bytes(pkt)
    assert cut < len(data)
    assert parse_frame(data[:cut]).kind == "unparsed"


def test_bad_versions_and_ihl_unparsed() -> None:
    good = bytearray(bytes(ETH / IP(src="192.0.2.7") / TCP(dport=80)))
    bad_version = bytearray(good)
    bad_version[14] = 0x65
    assert parse_frame(bytes(bad_version)).kind == "unparsed"
    bad_ihl = bytearray(good)
    bad_ihl[14] = 0x44
    assert parse_frame(bytes(bad_ihl)).kind == "unparsed"
    v6 = bytearray(bytes(ETH / IPv6(src="::1") / TCP(dport=80)))
    v6[14] = 0x40
    assert parse_frame(bytes(v6)).kind == "unparsed"


# --- build_frame round trip ----------------------------------------------------------------


def test_build_frame_matches_scapy_view() -> None:
    data = build_frame(
        "192.0.2.7", "10.0.0.1", 6, dport=8080, sport=999, vlan=(10, 20), ip_options=b"\x01\x01\x01"
    )
    pkt = Ether(data)
    assert pkt[Dot1AD].vlan == 10 and pkt[Dot1Q].vlan == 20
    assert pkt[IP].ihl == 6 and pkt[TCP].dport == 8080 and pkt[TCP].sport == 999
    # Checksums are right: scapy recomputes the same bytes.
    del pkt[IP].chksum, pkt[TCP].chksum
    assert bytes(pkt) == data


def test_build_frame_ipv6_ext_and_icmpv6_checksum() -> None:
    data = build_frame(
        "2001:db8::1",
        "2001:db8::2",
        58,
        icmp_type=128,
        icmp_code=0,
        ipv6_ext=(0, 43, 60),
        payload_len=5,
    )
    pkt = Ether(data)
    assert pkt[IPv6].plen == 24 + 8 + 5
    assert isinstance(pkt[IPv6ExtHdrDestOpt].payload, ICMPv6EchoRequest)
    cksum = pkt[ICMPv6EchoRequest].cksum
    del pkt[ICMPv6EchoRequest].cksum
    assert Ether(bytes(pkt))[ICMPv6EchoRequest].cksum == cksum


def test_build_frame_rejects_mixed_families() -> None:
    with pytest.raises(ValueError):
        build_frame("192.0.2.1", "2001:db8::1", 6, dport=1)


V4 = st.ip_addresses(v=4).map(str)
V6 = st.ip_addresses(v=6).map(str)


@st.composite
def frame_specs(draw: st.DrawFn) -> dict[str, object]:
    v6 = draw(st.booleans())
    src, dst = (draw(V6), draw(V6)) if v6 else (draw(V4), draw(V4))
    proto = draw(st.sampled_from([6, 17, 132, 58 if v6 else 1, 47, 59 if v6 else 4]))
    spec: dict[str, object] = {"src": src, "dst": dst, "ipproto": proto}
    if proto in (6, 17, 132):
        spec["dport"] = draw(st.integers(0, 65535))
        spec["sport"] = draw(st.integers(0, 65535))
    if proto in (1, 58):
        spec["icmp_type"] = draw(st.integers(0, 255))
        spec["icmp_code"] = draw(st.integers(0, 255))
    spec["vlan"] = tuple(draw(st.lists(st.integers(0, 4095), max_size=2)))
    spec["payload_len"] = draw(st.integers(0, 40))
    spec["nonfirst_fragment"] = draw(st.booleans())
    if v6:
        spec["ipv6_ext"] = tuple(draw(st.lists(st.sampled_from([0, 43, 60]), max_size=5)))
    else:
        spec["ip_options"] = b"\x01" * draw(st.integers(0, 40))
    return spec


@settings(max_examples=300, deadline=None)
@given(frame_specs())
def test_build_then_parse_round_trip(spec: dict[str, object]) -> None:
    parsed = parse_frame(build_frame(**spec))  # type: ignore[arg-type]
    assert parsed.kind == "ip"
    assert parsed.fields is not None
    f = parsed.fields
    nonfirst = bool(spec["nonfirst_fragment"])
    vlan = spec["vlan"]
    assert isinstance(vlan, tuple)
    assert parsed.vlan == (vlan[0] if vlan else 0)
    assert ipaddress.ip_address(f.src) == ipaddress.ip_address(str(spec["src"]))
    assert ipaddress.ip_address(f.dst) == ipaddress.ip_address(str(spec["dst"]))
    assert f.ipproto == spec["ipproto"]
    assert f.nonfirst_fragment == nonfirst
    assert f.dport == (None if nonfirst else spec.get("dport"))
    assert parsed.sport == (None if nonfirst else spec.get("sport"))
    assert f.icmp_type == (None if nonfirst else spec.get("icmp_type"))
    assert f.icmp_code == (None if nonfirst else spec.get("icmp_code"))
    # scapy agrees on the layers we built.
    pkt = Ether(build_frame(**spec))  # type: ignore[arg-type]
    assert (IPv6 if ":" in str(spec["src"]) else IP) in pkt


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_parse_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    parsed = parse_frame(data)
    assert parsed.kind in ("ip", "non-ip", "unparsed")
    assert (parsed.fields is not None) == (parsed.kind == "ip")


@settings(max_examples=300, deadline=None)
@given(frame_specs(), st.data())
def test_parse_never_raises_on_mutated_frames(spec: dict[str, object], data: st.DataObject) -> None:
    frame = bytearray(build_frame(**spec))  # type: ignore[arg-type]
    cut = data.draw(st.integers(0, len(frame)))
    for _ in range(data.draw(st.integers(0, 4))):
        pos = data.draw(st.integers(0, len(frame) - 1))
        frame[pos] = data.draw(st.integers(0, 255))
    parsed = parse_frame(bytes(frame[:cut]))
    assert parsed.kind in ("ip", "non-ip", "unparsed")
