"""Drop events: decode ring-buffer records, and buffer them for consoles without falling behind."""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from engine.core.cidr import address_text
from engine.core.model import PROTOCOL_BY_NUMBER
from engine.kernel.abi import EVENT_FLAG_NONFIRST_FRAGMENT, Action, DropEventRecord
from engine.views import DropEvent


def monotonic_to_epoch() -> float:
    # bpf_ktime_get_ns is CLOCK_MONOTONIC; events are shown in wall time.
    return time.time() - time.monotonic()


def decode_event(
    rec: DropEventRecord, ifnames: Mapping[int, str], offset: float | None = None
) -> DropEvent:
    offset = monotonic_to_epoch() if offset is None else offset
    family_v4 = rec.family == 4
    src = int.from_bytes(bytes(rec.src), "big")
    dst = int.from_bytes(bytes(rec.dst), "big")
    proto = PROTOCOL_BY_NUMBER.get(rec.l4proto)
    fragment = bool(rec.flags & EVENT_FLAG_NONFIRST_FRAGMENT)
    icmp = proto is not None and proto.is_icmp and not fragment
    ports = proto is not None and proto.has_ports and not fragment
    return DropEvent(
        time=rec.ts_ns / 1e9 + offset,
        interface=ifnames.get(rec.ifindex, f"if{rec.ifindex}"),
        rule_id=rec.rule_id,
        verdict="WOULD DENY" if rec.verdict == Action.WOULD_DENY else "DENY",
        protocol=proto.value if proto else str(rec.l4proto),
        src=address_text(src, family_v4),
        dst=address_text(dst, family_v4),
        sport=rec.sport if ports else None,
        dport=rec.dport if ports else None,
        icmp_type=rec.icmp_type if icmp else None,
        icmp_code=rec.icmp_code if icmp else None,
        vlan=rec.vlan,
        length=rec.pkt_len,
        fragment=fragment,
    )


@dataclass
class EventCounts:
    received: int = 0  # records read from the ring buffer
    kept: int = 0  # handed to the console
    sampled_out: int = 0  # skipped by the console's own sampling under load


class EventBuffer:
    """A bounded buffer between the ring buffer and a console.

    Each second the first `max_per_second` events are kept (shown at once) and the rest are
    only counted, so a flood costs the console a counter increment per event, and memory
    stays bounded by `capacity`.
    """

    def __init__(
        self,
        max_per_second: int = 200,
        capacity: int = 5000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_second = max_per_second
        self.counts = EventCounts()
        self._clock = clock
        self._window_start = clock()
        self._in_window = 0
        # Kept events not yet drained; a console that stops draining loses the oldest.
        self._fresh: collections.deque[DropEvent] = collections.deque(maxlen=capacity)

    def add(self, event: DropEvent) -> bool:
        """Offer one event; False when it was sampled out (counted, not kept)."""
        self.counts.received += 1
        now = self._clock()
        if now - self._window_start >= 1.0:
            self._window_start = now
            self._in_window = 0
        self._in_window += 1
        if self._in_window > self.max_per_second:
            self.counts.sampled_out += 1
            return False
        self.counts.kept += 1
        self._fresh.append(event)
        return True

    def drain(self) -> list[DropEvent]:
        """Events kept since the last drain, oldest first."""
        fresh = list(self._fresh)
        self._fresh.clear()
        return fresh
