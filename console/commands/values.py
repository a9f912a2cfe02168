"""argparse value types: each turns one word into a checked value or says what is wrong."""

from __future__ import annotations

import argparse
import ipaddress

from engine import Protocol, split_listen

PROTOCOLS = tuple(p.value for p in Protocol)
MODES = ("enforce", "audit")
ATTACH_MODES = ("auto", "native", "generic")
LAB_ACTIONS = ("up", "down", "status")
MAX_CONFIRM_TIMEOUT = 86400.0


def port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a number 1-65535")
    return int(text)


def byte(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 255:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number 0-255")
    return int(text)


def vlan(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 4095:
        raise argparse.ArgumentTypeError(f"VLAN id {text!r} is not a number 0-4095")
    return int(text)


def address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IPv4 or IPv6 address (e.g. 192.0.2.7 or 2001:db8::7)"
        ) from None


def protocol(text: str) -> str:
    try:
        return Protocol.parse(text).value
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"protocol {text!r} is not one of {', '.join(PROTOCOLS)}"
        ) from None


def rule_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"rule id {text!r} is not a positive number (see 'rules')")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= MAX_CONFIRM_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r} must be within 0..{MAX_CONFIRM_TIMEOUT:g} seconds"
        )
    return value


def interval(text: str) -> float:
    value = seconds(text)
    if value < 0.1:
        raise argparse.ArgumentTypeError(f"interval {text!r} must be at least 0.1 s")
    return value


def count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return int(text)


def sample_rate(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(
            f"sample rate {text!r} is not a number (N: 1 in N packets; 1 every packet, 0 off)"
        )
    return int(text)


def listen(text: str) -> str:
    try:
        split_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--listen {text!r}: {exc}") from None
    return text
