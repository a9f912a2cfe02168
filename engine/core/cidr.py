"""CIDR parsing (netaddr) and the 16-byte IPv4-mapped address space the datapath keys on."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable
from typing import NamedTuple

import netaddr

MAPPED_V4_PREFIX = 0xFFFF << 32  # ::ffff:0:0/96


class CidrError(ValueError):
    """A CIDR is malformed; the message says what it should look like."""


# A dotted quad as every parser here reads it alike (four ASCII decimal octets up to 255, no
# leading zeros): the fast path for the common case; anything else goes to netaddr or ipaddress,
# whose answers for these strings are the same numbers. Big rule files hold 100,000 CIDRs,
# parsed at admission and again by the compiler (in a fresh CLI process, from the store).
_V4_LENGTHS = {str(n): n for n in range(33)}  # "0".."32", no leading zeros


def _quad(addr: str) -> int | None:
    # inet_pton(AF_INET) takes exactly that form (glibc refuses leading zeros and anything but
    # four octets) in a fraction of a regex match and four int() calls
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, addr), "big")
    except (OSError, ValueError):  # not a quad; non-ASCII text fails to encode (ValueError)
        return None


class Prefix(NamedTuple):
    """A prefix in the 128-bit space; IPv4 prefixes live at ::ffff:0:0/96 + their length.

    A named tuple, not a dataclass: compilers key dicts by (ifindex, prefix) for every one of
    100,000 CIDRs, and a tuple hashes and compares in C (a frozen dataclass's generated
    __hash__ and __init__ were a third of a full compile). Compares and orders as before (by
    value, length, is_v4)."""

    value: int  # network address as a 128-bit integer
    length: int  # 0..128
    is_v4: bool

    def contains_addr(self, addr: int, addr_is_v4: bool) -> bool:
        # An IPv6 prefix never matches an IPv4 source, even ::/0 (the operator keeps families apart).
        if self.is_v4 != addr_is_v4:
            return False
        shift = 128 - self.length
        return (addr >> shift) == (self.value >> shift)

    def encloses(self, other: Prefix) -> bool:
        """True when every address of other is in self (same family)."""
        if self.is_v4 != other.is_v4 or self.length > other.length:
            return False
        shift = 128 - self.length
        return (other.value >> shift) == (self.value >> shift)

    def addr_bytes(self) -> bytes:
        return self.value.to_bytes(16, "big")

    def __str__(self) -> str:
        if self.is_v4:  # dotted quad by hand: netaddr's formatting dominates big files
            v = self.value
            return f"{v >> 24 & 255}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}/{self.length - 96}"
        return f"{netaddr.IPAddress(self.value, 6)}/{self.length}"


# parse_cidr's answers by text: the compiler and the parity notes parse what admission read, and
# admission puts its own answers in (remember_cidr), so 100,000 CIDRs are parsed once.
_PARSED: dict[str, Prefix] = {}
PARSED_MAX = 1 << 18


def parse_cidr(text: str) -> Prefix:
    """Parse 'a.b.c.d/n' or 'x::/n' strictly: host bits set is an error naming the network."""
    hit = _PARSED.get(text)
    if hit is not None:
        return hit
    prefix = _parse_cidr(text)
    remember_cidr(text, prefix)
    return prefix


def parse_cidrs(texts: Iterable[str]) -> list[Prefix]:
    """parse_cidr of each, with the dotted-quad fast path inline: a fresh CLI process parses
    the 100,000 CIDRs it read from the store here, and the calls were most of the cost."""
    get, pton, af_inet, lengths = _PARSED.get, socket.inet_pton, socket.AF_INET, _V4_LENGTHS
    out: list[Prefix] = []
    for text in texts:
        hit = get(text)
        if hit is None:
            addr, _, length = text.partition("/") if type(text) is str else ("", "", "")
            plen = lengths.get(length)
            try:
                quad = int.from_bytes(pton(af_inet, addr), "big") if plen is not None else None
            except (OSError, ValueError):
                quad = None
            if quad is not None and plen is not None and not quad & ((1 << (32 - plen)) - 1):
                hit = Prefix(MAPPED_V4_PREFIX | quad, plen + 96, True)
            else:  # anything else, and every error, as parse_cidr says it
                hit = _parse_cidr(text)
            remember_cidr(text, hit)
        out.append(hit)
    return out


def remember_cidr(text: str, prefix: Prefix) -> None:
    """Record parse_cidr(text) == prefix (the caller knows it: text is str(prefix))."""
    if len(_PARSED) >= PARSED_MAX:
        _PARSED.clear()
    _PARSED[text] = prefix


def forget_parsed_cidrs() -> None:
    _PARSED.clear()


def _parse_cidr(text: str) -> Prefix:
    raw = str(text).strip()
    if "/" not in raw:
        raise CidrError("a CIDR needs a prefix length, e.g. 192.0.2.0/24 or 2001:db8::/32")
    addr, _, length = raw.partition("/")
    plen = _V4_LENGTHS.get(length)
    quad = _quad(addr) if plen is not None else None
    # host bits set: netaddr words the error below
    if quad is not None and plen is not None and not quad & ((1 << (32 - plen)) - 1):
        return Prefix(MAPPED_V4_PREFIX | quad, plen + 96, True)
    try:
        net = netaddr.IPNetwork(raw)
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise CidrError(f"not a CIDR ({exc})") from exc
    if net.version == 4 and raw.split("/")[0].count(".") != 3:
        raise CidrError("write all four octets of an IPv4 address, e.g. 10.0.0.0/8")
    # Work on the integers: each netaddr address object costs microseconds, and big rule files
    # hold 100,000 CIDRs.
    value, plen = net.value, net.prefixlen
    width = 32 if net.version == 4 else 128
    if value & ((1 << (width - plen)) - 1):
        raise CidrError(f"host bits are set; did you mean {net.cidr}?")
    if net.version == 6 and plen >= 96 and (value >> 32) == 0xFFFF:
        v4 = netaddr.IPNetwork(f"{netaddr.IPAddress(value & 0xFFFFFFFF, 4)}/{plen - 96}")
        raise CidrError(f"IPv4-mapped IPv6 prefix; write it as IPv4: {v4}")
    if net.version == 4:
        return Prefix(MAPPED_V4_PREFIX | value, plen + 96, True)
    return Prefix(value, plen, False)


# Cached: an impact preview decides every flow twice (current and proposed rules), and the
# netaddr parse is most of a decision's cost.
@functools.lru_cache(maxsize=65536)
def parse_address(text: str) -> tuple[int, bool]:
    """An address as (128-bit mapped value, is_v4). IPv4-mapped IPv6 addresses count as IPv4."""
    try:
        ip = netaddr.IPAddress(str(text).strip())
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise CidrError(f"not an IP address ({exc})") from exc
    if ip.version == 4:
        return MAPPED_V4_PREFIX | int(ip), True
    value = int(ip)
    return value, (value >> 32) == 0xFFFF


def address_text(value: int, is_v4: bool) -> str:
    if is_v4:
        return str(netaddr.IPAddress(value & 0xFFFFFFFF, 4))
    return str(netaddr.IPAddress(value, 6))


class OperatorCidr(NamedTuple):
    """A sourceCIDR as the operator's webhook reads it (Go net.ParseCIDR), and what it means here.
    (A named tuple: admission makes one per CIDR, 100,000 in a big file.)"""

    prefix: Prefix
    host_bits: bool  # '1.1.1.1/24': admitted by Go, keyed on its network by both datapaths
    mapped: bool  # '::ffff:1.2.3.0/120': admitted by Go, an IPv4 prefix here


def parse_operator_cidr(text: object) -> OperatorCidr:
    """Admit exactly what Go's net.ParseCIDR admits: 'addr/len', no spaces or zones, no
    leading-zero IPv4 octets, a decimal length within the family's bits (leading zeros allowed
    there, as Go's dtoi reads them); host bits may be set."""
    if not isinstance(text, str):
        raise CidrError("a CIDR is a string, e.g. 192.0.2.0/24 or 2001:db8::/32")
    addr, slash, length = text.partition("/")
    if slash and length.isascii() and length.isdigit():
        quad = _quad(addr)
        if quad is not None:  # a plain dotted quad: nothing below could refuse it but its length
            return _operator_v4(quad, int(length))
    if not slash:
        raise CidrError("a CIDR needs a prefix length, e.g. 192.0.2.0/24 or 2001:db8::/32")
    if any(ch.isspace() for ch in text) or "%" in addr:
        raise CidrError("no spaces or zone (%...) in a CIDR: the operator's parser refuses them")
    if not (length.isascii() and length.isdigit()):
        raise CidrError("the prefix length is a decimal number, e.g. /24")
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError as exc:
        raise CidrError(f"not an IP address ({exc})") from exc
    if ip.version == 4:
        return _operator_v4(int(ip), int(length))
    plen = int(length)
    if plen > 128:
        raise CidrError(f"prefix length {plen} is more than the 128 bits of the address")
    value = int(ip)
    host = bool(value & ((1 << (128 - plen)) - 1))
    value &= ~((1 << (128 - plen)) - 1)
    if plen >= 96 and (value >> 32) == 0xFFFF:
        return OperatorCidr(Prefix(MAPPED_V4_PREFIX | (value & 0xFFFFFFFF), plen, True), host, True)
    return OperatorCidr(Prefix(value, plen, False), host, False)


def _operator_v4(value: int, plen: int) -> OperatorCidr:
    if plen > 32:
        raise CidrError(f"prefix length {plen} is more than the 32 bits of the address")
    host = bool(value & ((1 << (32 - plen)) - 1))
    value &= ~((1 << (32 - plen)) - 1)
    return OperatorCidr(Prefix(MAPPED_V4_PREFIX | value, plen + 96, True), host, False)


def operator_text(text: str, parsed: OperatorCidr) -> str:
    """An admitted CIDR's normal form, str(parsed.prefix), without formatting it when text is
    that already: an IPv4 CIDR the operator admits with no host bits is a canonical dotted quad
    (neither parser takes leading zeros there), so only a leading zero in its length differs."""
    if parsed.prefix.is_v4 and not parsed.host_bits and not parsed.mapped:
        length = text[text.rindex("/") + 1 :]
        if length[:1] != "0" or length == "0":
            return text
    return str(parsed.prefix)
