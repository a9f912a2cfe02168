"""engine.core.capture and replay: captures written by scapy (pcap, pcapng; Ethernet, SLL,
SLL2, raw IP) read back as the frames the XDP program sees, decided by the reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import wrpcap, wrpcapng

from engine.core.capture import CaptureError, read_capture
from engine.core.classify import Reason
from engine.core.compiler import assign_rule_ids
from engine.core.flows import FlowKey
from engine.core.frame import parse_frame
from engine.core.model import Action, Firewall, IngressBlock, PortRange, Protocol, Rule, RuleSet
from engine.core.replay import KernelAnswer, replay

SRC, DST = "192.0.2.7", "192.0.2.1"
RULES = RuleSet(
    (
        Firewall(
            "fw",
            ("eth0",),
            (
                IngressBlock(
                    ("192.0.2.0/24", "2001:db8::/32"),
                    (
                        Rule(10, Action.DENY, Protocol.TCP, PortRange(443, 443)),
                        Rule(20, Action.ALLOW, Protocol.ICMP, icmp_type=8),
                        Rule(30, Action.DENY, Protocol.UDP),
                    ),
                ),
            ),
        ),
    )
)
IDS = assign_rule_ids(RULES)


def mixed_frames() -> list[Ether]:
    """The frame kinds the issue names: VLAN, IPv6 extension headers, fragments, ICMP."""
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    return [
        eth / IP(src=SRC, dst=DST) / TCP(dport=443),
        eth / Dot1Q(vlan=5) / IP(src=SRC, dst=DST) / TCP(dport=443),
        eth / Dot1Q(vlan=5) / Dot1Q(vlan=6) / IP(src=SRC, dst=DST) / UDP(dport=53),
        eth / IP(src=SRC, dst=DST) / ICMP(type=8),
        eth / IP(src=SRC, dst=DST, frag=185) / Raw(b"x" * 20),  # non-first fragment
        eth
        / IPv6(src="2001:db8::7", dst="2001:db8::1")
        / IPv6ExtHdrHopByHop()
        / IPv6ExtHdrDestOpt()
        / TCP(dport=443),
        eth
        / IPv6(src="2001:db8::7", dst="2001:db8::1")
        / IPv6ExtHdrFragment(offset=10, nh=17)
        / Raw(b"y" * 16),
        eth / IP(src=SRC, dst=DST) / TCP(dport=22),  # fail-safe
    ]


def truncated() -> bytes:
    return bytes(Ether() / IP(src=SRC, dst=DST) / TCP(dport=443))[:36]  # cut in the ports


def test_pcap_ethernet_frames_come_back_byte_for_byte(tmp_path: Path) -> None:
    frames = mixed_frames()
    path = tmp_path / "eth.pcap"
    wrpcap(str(path), [*frames, Ether(truncated())])
    got = list(read_capture(str(path)))
    assert [f.data for f in got[:-1]] == [bytes(p) for p in frames]
    assert got[-1].data == truncated()
    assert [f.index for f in got] == list(range(1, len(frames) + 2))
    assert parse_frame(got[-1].data).kind == "unparsed"


def test_pcapng_keeps_interface_names(tmp_path: Path) -> None:
    pkt = Ether() / IP(src=SRC, dst=DST) / TCP(dport=443)
    pkt.sniffed_on = "eth0"
    path = tmp_path / "named.pcapng"
    wrpcapng(str(path), [pkt])
    (frame,) = read_capture(str(path))
    assert frame.interface == "eth0"
    assert frame.data == bytes(pkt)


@pytest.mark.parametrize("cooked", [CookedLinux, CookedLinuxV2])
def test_cooked_captures_become_ethernet(tmp_path: Path, cooked: type) -> None:
    inner = IP(src=SRC, dst=DST) / TCP(dport=443)
    out = cooked(pkttype=4, proto=0x0800) / IP(src=DST, dst=SRC) / TCP(dport=9)
    path = tmp_path / "cooked.pcap"
    wrpcap(str(path), [cooked(proto=0x0800) / inner, out])
    first, second = read_capture(str(path))
    parsed = parse_frame(first.data)
    assert parsed.fields is not None and parsed.fields.dport == 443
    assert first.data[14:] == bytes(inner) and not first.outgoing
    assert second.outgoing  # the capturing host sent it: no ingress filter sees it


def test_raw_ip_capture(tmp_path: Path) -> None:
    path = tmp_path / "raw.pcap"
    wrpcap(str(path), [IPv6(src="2001:db8::7", dst="2001:db8::1") / UDP(dport=53)], linktype=101)
    (frame,) = read_capture(str(path))
    assert parse_frame(frame.data).fields.ipproto == 17  # type: ignore[union-attr]


def test_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="no such capture"):
        list(read_capture(str(tmp_path / "missing.pcap")))
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all")
    with pytest.raises(CaptureError, match="not a pcap"):
        list(read_capture(str(junk)))
    other = tmp_path / "wifi.pcap"
    wrpcap(str(other), [Raw(b"\x00" * 30)], linktype=105)  # 802.11
    with pytest.raises(CaptureError, match="link type 105"):
        list(read_capture(str(other)))


def _reference_answer(audit: bool = False):
    """A stand-in kernel that answers as the reference does (so agreement is testable)."""

    def run(data: bytes, ifindex: int) -> KernelAnswer:
        report = replay([_frame(data)], RULES, IDS, interface="eth0", ifindexes={"eth0": ifindex})
        (label,) = report.rows
        row = report.rows[label]
        rule = int(label.split()[1]) if label.startswith("rule") else None
        reason = "rule" if rule else label
        return KernelAnswer(row.verdict == "Deny" and not audit, reason, rule)

    return run


def _frame(data: bytes):
    from engine.core.capture import CaptureFrame

    return CaptureFrame(1, 0.0, data, 1)


def test_replay_summarises_per_rule_and_collects_flows(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pcap"
    frames = mixed_frames()
    cut = Ether(truncated())
    for i, pkt in enumerate([*frames, cut]):
        pkt.time = 1000.0 + i
    wrpcap(str(path), [*frames, cut])
    report = replay(
        read_capture(str(path)),
        RULES,
        IDS,
        interface="eth0",
        ifindexes={"eth0": 2},
        kernel=_reference_answer(),
        path=str(path),
    )
    deny443, icmp, udp = (IDS[("fw", ("192.0.2.0/24", "2001:db8::/32"), o)] for o in (10, 20, 30))
    rows = {k: v.frames for k, v in report.rows.items()}
    assert rows == {
        f"rule {deny443}": 3,  # plain, VLAN, IPv6 behind two extension headers
        f"rule {udp}": 2,  # double-tagged UDP; the IPv6 UDP fragment (a protocol-only rule)
        f"rule {icmp}": 1,
        "no match": 1,  # the IPv4 fragment of protocol 0: no rule for it
        "fail-safe": 1,
        "unparsed": 1,
    }
    assert report.agree and report.kernel_ran
    key = FlowKey("eth0", SRC, 6, 443)
    assert report.flows[key].packets == 2 and report.flows[key].action is Action.DENY
    assert report.flows[key].pps == pytest.approx(2 / 8)  # frames over the capture's 8 s
    assert "kernel == reference on every frame" in report.summary()


def test_replay_reports_every_frame_where_the_kernel_differs(tmp_path: Path) -> None:
    path = tmp_path / "one.pcap"
    wrpcap(str(path), mixed_frames()[:2])

    def wrong(data: bytes, ifindex: int) -> KernelAnswer:
        return KernelAnswer(False, Reason.NO_MATCH.value, None)

    report = replay(
        read_capture(str(path)), RULES, IDS, interface="eth0", ifindexes={"eth0": 2}, kernel=wrong
    )
    assert [m.index for m in report.mismatches] == [1, 2]
    assert "reference DENY" in report.mismatches[0].text()
    assert report.to_json()["agree"] is False


def test_audit_mode_passes_a_deny_and_still_agrees(tmp_path: Path) -> None:
    path = tmp_path / "a.pcap"
    wrpcap(str(path), mixed_frames()[:1])
    report = replay(
        read_capture(str(path)),
        RULES,
        IDS,
        interface="eth0",
        ifindexes={"eth0": 2},
        kernel=_reference_answer(audit=True),
        audit=True,
    )
    assert report.agree
