"""Turn successive per-rule counter readings into rates and last-hit times."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class _RuleTrack:
    packets: int
    time: float
    rate: float = 0.0
    last_hit: float | None = None


class RateTracker:
    """Keeps the previous reading of each rule so every refresh yields pkts/s and last hit.

    A counter that goes down (ids reused after a reload) restarts its rate instead of going
    negative.
    """

    def __init__(self) -> None:
        self._tracks: dict[int, _RuleTrack] = {}

    def update(
        self, counters: Mapping[int, tuple[int, int]], now: float
    ) -> dict[int, tuple[float, float | None]]:
        out: dict[int, tuple[float, float | None]] = {}
        for rule_id, (packets, _bytes) in counters.items():
            track = self._tracks.get(rule_id)
            if track is None:
                self._tracks[rule_id] = track = _RuleTrack(packets, now)
                out[rule_id] = (0.0, None)
                continue
            elapsed = now - track.time
            delta = packets - track.packets
            if elapsed > 0:
                track.rate = max(delta, 0) / elapsed
            if delta > 0:
                track.last_hit = now
            track.packets, track.time = packets, now
            out[rule_id] = (track.rate, track.last_hit)
        for gone in set(self._tracks) - set(counters):
            del self._tracks[gone]
        return out
