"""Flows: who is hitting the node, as the kernel's sampled flow table records it (pure data).

A flow is what the rules can tell apart (interface, source, protocol, destination port or ICMP
type/code, non-first-fragment flag), so classifying a flow under any rule set gives the
verdict of every packet in it. The XDP program samples 1 in N packets; counts here are the
samples scaled by N, and `sampling_error` says how far off such an estimate can be.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.core.classify import ICMP_PROTOS, L4_PORT_PROTOS, Decision, PacketFields, Reason
from engine.core.model import PROTOCOL_BY_NUMBER, Action

# 95% two-sided normal quantile: the margin stated next to a sampled count.
Z95 = 1.96


def protocol_name(ipproto: int) -> str:
    proto = PROTOCOL_BY_NUMBER.get(ipproto)
    return proto.value if proto is not None else f"proto {ipproto}"


@dataclass(frozen=True, order=True)
class FlowKey:
    """What the rules can distinguish about a packet: every packet of a flow decides alike."""

    interface: str
    source: str
    ipproto: int
    dport: int | None = None  # TCP/UDP/SCTP first fragments
    icmp_type: int | None = None  # ICMP/ICMPv6 first fragments
    icmp_code: int | None = None
    nonfirst_fragment: bool = False

    @classmethod
    def of_packet(cls, interface: str, pkt: PacketFields) -> FlowKey:
        nonfirst = pkt.nonfirst_fragment
        ports = not nonfirst and pkt.ipproto in L4_PORT_PROTOS
        icmp = not nonfirst and pkt.ipproto in ICMP_PROTOS
        return cls(
            interface,
            pkt.src,
            pkt.ipproto,
            pkt.dport if ports else None,
            pkt.icmp_type if icmp else None,
            pkt.icmp_code if icmp else None,
            nonfirst,
        )

    def packet(self) -> PacketFields:
        """The fields the classifier needs: one packet stands for the whole flow."""
        return PacketFields(
            self.source,
            self.ipproto,
            self.dport,
            self.icmp_type,
            self.icmp_code,
            self.nonfirst_fragment,
        )

    def match_text(self) -> str:
        """'TCP 443', 'ICMP 8/0', 'UDP fragment', 'proto 47'."""
        name = protocol_name(self.ipproto)
        if self.nonfirst_fragment:
            return f"{name} fragment"
        if self.dport is not None:
            return f"{name} {self.dport}"
        if self.icmp_type is not None:
            return f"{name} {self.icmp_type}/{self.icmp_code or 0}"
        return name

    def text(self) -> str:
        return f"{self.interface} {self.source} {self.match_text()}"

    def to_json(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "source": self.source,
            "protocol": protocol_name(self.ipproto),
            "ipproto": self.ipproto,
            "dport": self.dport,
            "icmp_type": self.icmp_type,
            "icmp_code": self.icmp_code,
            "nonfirst_fragment": self.nonfirst_fragment,
        }


@dataclass(frozen=True)
class SamplingError:
    """How far a count estimated from 1-in-N samples can be from the true count.

    With each packet sampled independently with probability 1/N, k samples estimate N*k
    packets with relative standard error sqrt((N-1)/(N*k)) (binomial), about 1/sqrt(k).
    """

    rate: int  # N: one packet in N is sampled
    samples: int  # k

    @property
    def relative_stderr(self) -> float:
        if self.rate <= 1:
            return 0.0
        if self.samples <= 0:
            return math.inf
        return math.sqrt((self.rate - 1) / (self.rate * self.samples))

    @property
    def margin_pct(self) -> float:
        """Half-width of the 95% interval, in percent of the estimate."""
        return 100.0 * Z95 * self.relative_stderr

    def text(self) -> str:
        if self.rate <= 1:
            return "exact (every packet counted)"
        if self.samples <= 0:
            return f"no samples (1 in {self.rate})"
        return f"±{self.margin_pct:.0f}% (95%, 1 in {self.rate} sampled)"


def sampling_error(rate: int, samples: int) -> SamplingError:
    return SamplingError(max(1, rate), samples)


@dataclass(frozen=True)
class FlowStats:
    """One flow as counted. packets and bytes are estimates (samples x sample rate)."""

    packets: int
    bytes: int
    first_seen: float  # wall clock seconds
    last_seen: float
    action: Action  # what the rules decided (audit mode passes a Deny but it stays Deny)
    reason: Reason
    rule_id: int | None = None
    samples: int = 0  # packets actually sampled; packets == samples * rate
    rate: int = 1  # the sample rate N the samples were taken at
    pps: float = 0.0  # packets per second, over the last interval the table saw

    @property
    def error(self) -> SamplingError:
        return sampling_error(self.rate, self.samples)

    def verdict_text(self) -> str:
        if self.reason is Reason.FAILSAFE:
            return "ALLOW (fail-safe)"
        if self.reason is Reason.NO_MATCH:
            return "ALLOW (no match)"
        if self.reason is Reason.REPLY:
            return "ALLOW (reply)"  # its rule denies it; it answers a flow the node opened
        return self.action.value.upper()


def stats_from_samples(
    samples: int,
    sampled_bytes: int,
    first_seen: float,
    last_seen: float,
    decision: Decision,
    rate: int,
) -> FlowStats:
    """Scale sampled counts by the sample rate N (the unbiased estimate of the true count)."""
    n = max(1, rate)
    return FlowStats(
        samples * n,
        sampled_bytes * n,
        first_seen,
        last_seen,
        decision.action,
        decision.reason,
        decision.rule_id,
        samples,
        n,
    )


@dataclass(frozen=True)
class Flow:
    key: FlowKey
    stats: FlowStats

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            **self.key.to_json(),
            "packets": s.packets,
            "bytes": s.bytes,
            "pps": round(s.pps, 3),
            "first_seen": s.first_seen,
            "last_seen": s.last_seen,
            "verdict": s.action.value,
            "reason": s.reason.value,
            "rule_id": s.rule_id,
            "samples": s.samples,
            "sample_rate": s.rate,
            "margin_pct": None if s.rate <= 1 else round(s.error.margin_pct, 1),
        }


def _lifetime_pps(stats: FlowStats, now: float, window: float) -> float:
    """A first sighting has no interval: spread its packets over how long it has been seen,
    at least one second and at most the window."""
    span = min(max(now - stats.first_seen, 1.0), max(window, 1.0))
    return stats.packets / span


@dataclass
class FlowTable:
    """The flows of one node, refreshed from kernel snapshots; rates come from the deltas.

    `update` takes the whole table the kernel holds now. A flow whose packet count grew gets
    its rate from the growth since the previous snapshot; a flow seen for the first time gets
    its lifetime average.
    """

    window: float = 600.0  # seconds a flow stays of interest after its last packet
    _flows: dict[FlowKey, FlowStats] = field(default_factory=dict)
    _seen_at: float | None = None

    def update(self, snapshot: Mapping[FlowKey, FlowStats], now: float) -> None:
        previous, then = self._flows, self._seen_at
        fresh: dict[FlowKey, FlowStats] = {}
        for key, stats in snapshot.items():
            old = previous.get(key)
            if old is not None and then is not None and now > then:
                grown = max(0, stats.packets - old.packets)
                pps = grown / (now - then)
            else:
                pps = _lifetime_pps(stats, now, self.window)
            if now - stats.last_seen > self.window:
                pps = 0.0
            fresh[key] = replace(stats, pps=pps)
        self._flows, self._seen_at = fresh, now

    def __len__(self) -> int:
        return len(self._flows)

    def __iter__(self) -> Iterator[Flow]:
        return (Flow(k, s) for k, s in self._flows.items())

    def flows(
        self,
        *,
        now: float,
        since: float | None = None,
        interface: str | None = None,
        verdict: Action | None = None,
        top: int | None = None,
    ) -> list[Flow]:
        """Flows seen in the last `since` seconds (default: the window), busiest first."""
        horizon = now - (self.window if since is None else since)
        out = [
            f
            for f in self
            if f.stats.last_seen >= horizon
            and (interface is None or f.key.interface == interface)
            and (verdict is None or f.stats.action is verdict)
        ]
        return top_flows(out, top)


def top_flows(flows: Iterable[Flow], top: int | None = None) -> list[Flow]:
    ranked = sorted(flows, key=lambda f: (-f.stats.pps, -f.stats.packets, f.key))
    return ranked if top is None else ranked[: max(0, top)]


def merge_flow(into: dict[FlowKey, FlowStats], key: FlowKey, stats: FlowStats) -> None:
    """Add one flow's counts to a table (the same flow counted on several CPUs or frames)."""
    old = into.get(key)
    if old is None:
        into[key] = stats
        return
    into[key] = replace(
        old if old.last_seen >= stats.last_seen else stats,
        packets=old.packets + stats.packets,
        bytes=old.bytes + stats.bytes,
        samples=old.samples + stats.samples,
        first_seen=min(old.first_seen, stats.first_seen),
        last_seen=max(old.last_seen, stats.last_seen),
        pps=old.pps + stats.pps,
    )
