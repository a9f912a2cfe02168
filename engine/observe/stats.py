"""Turn successive per-rule counter readings into rates and last-hit times."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine.core.compiler import RuleKey, iter_rules, rule_key
from engine.core.model import RuleSet
from engine.views import RuleRow


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


def build_rule_rows(
    ruleset: RuleSet,
    rule_ids: Mapping[RuleKey, int],
    counters: Mapping[int, tuple[int, int]],
    rates: Mapping[int, tuple[float, float | None]],
) -> list[RuleRow]:
    """The rule table: every rule with its id, counters, rate and last hit, by order."""
    rows: list[RuleRow] = []
    for fw, _, block, _, rule in iter_rules(ruleset):
        rid = rule_ids.get(rule_key(fw.name, block, rule), 0)
        packets, nbytes = counters.get(rid, (0, 0))
        rate, last = rates.get(rid, (0.0, None))
        rows.append(
            RuleRow(
                rid,
                fw.name,
                rule.order,
                fw.interfaces,
                block.source_cidrs,
                rule,
                packets,
                nbytes,
                rate,
                last,
            )
        )
    rows.sort(key=lambda r: (r.order, r.firewall, r.rule_id))
    return rows
