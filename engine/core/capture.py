"""Read a capture file (pcap or pcapng) into the Ethernet frames the XDP program would see.

scapy reads the files and decodes the Linux cooked headers (SLL and SLL2, what `tcpdump -i
any` writes); a cooked or raw-IP frame gets an Ethernet header with its protocol as the
ethertype, so the kernel and the reference parse the same bytes. scapy is imported when a
capture is read, so the rest of infw runs without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from engine.errors import InfwError

# tcpdump link types (https://www.tcpdump.org/linktypes.html)
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, no link header
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
SUPPORTED_LINKTYPES = {
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LINUX_SLL: "Linux cooked (SLL)",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux cooked v2 (SLL2)",
}
PACKET_OUTGOING = 4  # SLL packet type of a frame this host sent
PCAPNG_OUTBOUND = 2  # epb_flags direction bits
_ETH_DST = bytes.fromhex("020000000002")
_ETH_SRC = bytes.fromhex("020000000001")


class CaptureError(InfwError):
    """A capture that can't be read: says which file, what is wrong and what to do."""


@dataclass(frozen=True)
class CaptureFrame:
    index: int  # 1-based frame number, as Wireshark counts
    time: float  # epoch seconds
    data: bytes  # an Ethernet frame
    linktype: int
    interface: str | None = None  # pcapng interface name, when the capture says
    outgoing: bool = False  # sent by the capturing host: an ingress filter never sees it


def _scapy() -> Any:
    try:
        from scapy import utils
        from scapy.layers import l2
    except ImportError as exc:  # pragma: no cover - scapy ships with the dev extra
        raise CaptureError(
            f"reading captures needs scapy ({exc})", "pip install scapy (or the infw[dev] extra)"
        ) from exc
    return utils, l2


def _ethernet(ethertype: int, payload: bytes) -> bytes:
    return _ETH_DST + _ETH_SRC + ethertype.to_bytes(2, "big") + payload


def _cooked(l2: Any, linktype: int, raw: bytes) -> tuple[bytes, bool] | None:
    """Ethernet frame from a cooked capture record, and whether the host sent it."""
    cls = l2.CookedLinux if linktype == LINKTYPE_LINUX_SLL else l2.CookedLinuxV2
    hlen = len(cls())
    if len(raw) < hlen:
        return None
    hdr = cls(raw[:hlen])
    return _ethernet(int(hdr.proto), raw[hlen:]), int(hdr.pkttype) == PACKET_OUTGOING


def _raw_ip(linktype: int, raw: bytes) -> bytes | None:
    if linktype == LINKTYPE_IPV4:
        return _ethernet(0x0800, raw)
    if linktype == LINKTYPE_IPV6:
        return _ethernet(0x86DD, raw)
    if not raw:
        return None
    version = raw[0] >> 4
    return _ethernet(0x0800 if version == 4 else 0x86DD, raw)


def _records(path: str) -> Iterator[tuple[bytes, int, float, str | None, bool]]:
    """(data, linktype, time, interface name, outbound by pcapng flags) per record."""
    utils, _ = _scapy()
    try:
        reader = utils.RawPcapReader(path)
    except Exception as exc:  # scapy raises its own Scapy_Exception and plain OSErrors
        raise CaptureError(
            f"{path}: not a pcap or pcapng capture ({exc})",
            "write it with tcpdump -w or Wireshark (pcap or pcapng)",
        ) from exc
    with reader:
        ng = hasattr(reader, "interfaces")
        for data, meta in reader:
            if ng:
                stamp = (meta.tshigh << 32 | meta.tslow) / float(meta.tsresol)
                name = meta.ifname.decode("utf-8", "replace") if meta.ifname else None
                outbound = (meta.direction or 0) & 3 == PCAPNG_OUTBOUND
                yield data, int(meta.linktype), stamp, name, outbound
            else:
                frac = 1e9 if getattr(reader, "nano", False) else 1e6
                yield data, int(reader.linktype), meta.sec + meta.usec / frac, None, False


def read_capture(path: str) -> Iterator[CaptureFrame]:
    """Every frame of the capture, as Ethernet. An unsupported link type is an error."""
    if not os.path.isfile(path):
        raise CaptureError(f"{path}: no such capture file", "give the path of a .pcap or .pcapng")
    _, l2 = _scapy()
    for index, (raw, linktype, stamp, name, outbound) in enumerate(_records(path), 1):
        if linktype == LINKTYPE_ETHERNET:
            data: bytes | None = raw
        elif linktype in (LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
            cooked = _cooked(l2, linktype, raw)
            data, outbound = (
                (None, outbound) if cooked is None else (cooked[0], cooked[1] or outbound)
            )
        elif linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
            data = _raw_ip(linktype, raw)
        else:
            known = ", ".join(f"{v} ({k})" for k, v in SUPPORTED_LINKTYPES.items())
            raise CaptureError(
                f"{path}: frame {index} has link type {linktype}, which infw can't read",
                f"capture on an interface with one of: {known}",
            )
        # A record too short for its link header still counts: it reaches the program as a
        # frame too short to parse, which is what XDP would do with it.
        yield CaptureFrame(
            index, stamp, data if data is not None else raw[:0], linktype, name, outbound
        )
