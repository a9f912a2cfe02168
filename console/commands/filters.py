"""The event filter (`--filter 'rule=3 proto=TCP'`, the TUI's `/`): key=value terms over drop events."""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from console.commands.usage import UsageError
from console.commands.values import protocol, rule_id, vlan
from engine import DropEvent, parse_port_range

FILTER_KEYS = ("rule", "proto", "src", "dst", "iface", "verdict", "dport", "sport", "vlan")
FILTER_EXAMPLE = "rule=3 proto=TCP src=192.0.2.0/24 iface=eth0"


def _filter_term(key: str, value: str) -> Callable[[DropEvent], bool]:
    """One key=value of an event filter; comma-separated values mean any of them."""
    values = [v for v in value.split(",") if v]
    if not values:
        raise ValueError(f"{key}= needs a value")
    if key == "rule":
        ids = {rule_id(v) for v in values}
        return lambda ev: ev.rule_id in ids
    if key == "proto":
        protos = {protocol(v).lower() if not v.isdigit() else v for v in values}
        return lambda ev: ev.protocol.lower() in protos
    if key in ("src", "dst"):
        nets = [ipaddress.ip_network(v, strict=False) for v in values]

        def addr_in(ev: DropEvent) -> bool:
            addr = ipaddress.ip_address(getattr(ev, key))
            return any(addr.version == n.version and addr in n for n in nets)

        return addr_in
    if key == "iface":
        return lambda ev: any(fnmatch.fnmatchcase(ev.interface, v) for v in values)
    if key == "verdict":
        wanted = {v.upper().replace("-", " ").replace("_", " ") for v in values}
        bad = wanted - {"DENY", "WOULD DENY"}
        if bad:
            raise ValueError(f"verdict {', '.join(sorted(bad))} is not deny or would-deny")
        return lambda ev: ev.verdict in wanted
    if key in ("dport", "sport"):
        ranges = [parse_port_range(v) for v in values]
        return lambda ev: (
            (port := getattr(ev, key)) is not None and any(r.contains(port) for r in ranges)
        )
    if key == "vlan":
        vlans = {vlan(v) for v in values}
        return lambda ev: ev.vlan in vlans
    raise ValueError(f"unknown key {key!r}; keys are {', '.join(FILTER_KEYS)}")


@dataclass(frozen=True)
class EventFilter:
    """A display filter over drop events: every term must hold (`rule=3 proto=TCP`)."""

    text: str = ""
    terms: tuple[Callable[[DropEvent], bool], ...] = ()

    @classmethod
    def parse(cls, text: str) -> EventFilter:
        terms = []
        for word in text.split():
            key, sep, value = word.partition("=")
            try:
                if not sep:
                    raise ValueError(f"{word!r} is not key=value")
                terms.append(_filter_term(key.lower(), value))
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise UsageError(
                    f"bad event filter: {exc}",
                    f"write key=value terms, e.g. --filter '{FILTER_EXAMPLE}'",
                ) from None
        return cls(text, tuple(terms))

    def __call__(self, event: DropEvent) -> bool:
        return all(term(event) for term in self.terms)
