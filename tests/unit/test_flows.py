"""engine.core.flows: flow keys, scaled counts and their stated error, rates from snapshots."""

from __future__ import annotations

import math
import random

import pytest

from engine.core.classify import Decision, PacketFields, Reason
from engine.core.flows import (
    Flow,
    FlowKey,
    FlowStats,
    FlowTable,
    merge_flow,
    sampling_error,
    stats_from_samples,
    top_flows,
)
from engine.core.model import Action


def _stats(packets: int, last: float = 100.0, pps: float = 0.0, action: Action = Action.ALLOW):
    return FlowStats(packets, packets * 64, 90.0, last, action, Reason.RULE, 3, packets, 1, pps)


def test_key_keeps_only_what_the_rules_can_see() -> None:
    frag = PacketFields("192.0.2.1", 6, dport=None, nonfirst_fragment=True)
    assert FlowKey.of_packet("eth0", frag) == FlowKey(
        "eth0", "192.0.2.1", 6, None, None, None, True
    )
    # a port on a protocol without ports is not part of the flow
    gre = PacketFields("192.0.2.1", 47, dport=80)
    assert FlowKey.of_packet("eth0", gre).dport is None
    icmp = FlowKey.of_packet("eth0", PacketFields("192.0.2.1", 1, icmp_type=8, icmp_code=0))
    assert icmp.match_text() == "ICMP 8/0"
    assert icmp.packet() == PacketFields("192.0.2.1", 1, None, 8, 0, False)
    tcp = FlowKey("eth0", "2001:db8::1", 6, 443)
    assert tcp.text() == "eth0 2001:db8::1 TCP 443"
    assert tcp.to_json()["protocol"] == "TCP"


def test_scaled_counts_and_stated_error() -> None:
    decision = Decision(Action.DENY, Reason.RULE, 7)
    s = stats_from_samples(25, 25 * 100, 1.0, 2.0, decision, 64)
    assert (s.packets, s.bytes, s.samples, s.rate) == (1600, 160000, 25, 64)
    # RSE = sqrt((N-1)/(N k)): 25 samples at 1 in 64 -> about 19.8%, 95% margin about 38.8%
    assert s.error.relative_stderr == pytest.approx(math.sqrt(63 / (64 * 25)))
    assert s.error.margin_pct == pytest.approx(1.96 * 100 * math.sqrt(63 / 1600))
    assert "±39%" in s.error.text()
    assert sampling_error(1, 5).margin_pct == 0.0
    assert sampling_error(1, 5).text().startswith("exact")
    assert math.isinf(sampling_error(8, 0).relative_stderr)


def test_sampled_estimates_fall_within_the_stated_margin() -> None:
    """Simulate the kernel's 1-in-N sampling: the stated 95% margin holds about 95% of runs."""
    rng = random.Random(7)
    n, true_count, runs = 16, 4000, 400
    inside = 0
    for _ in range(runs):
        k = sum(1 for _ in range(true_count) if rng.randrange(n) == 0)
        err = sampling_error(n, k)
        estimate = n * k
        if abs(estimate - true_count) <= err.margin_pct / 100 * estimate:
            inside += 1
    assert 0.90 <= inside / runs <= 0.99


def test_table_rates_from_deltas_and_filters() -> None:
    a, b = FlowKey("eth0", "192.0.2.1", 6, 443), FlowKey("eth1", "192.0.2.2", 17, 53)
    table = FlowTable(window=600)
    table.update({a: _stats(100, last=100.0), b: _stats(10, last=100.0)}, now=100.0)
    # first sighting: the lifetime average (seen since 90.0: 10 s)
    first = {f.key: f.stats.pps for f in table}
    assert first[a] == pytest.approx(10.0)
    table.update({a: _stats(300, last=110.0), b: _stats(10, last=100.0)}, now=110.0)
    rates = {f.key: f.stats.pps for f in table}
    assert rates[a] == pytest.approx(20.0)
    assert rates[b] == 0.0
    assert [f.key for f in table.flows(now=110.0)] == [a, b]
    assert [f.key for f in table.flows(now=110.0, interface="eth1")] == [b]
    assert [f.key for f in table.flows(now=110.0, since=5)] == [a]
    assert table.flows(now=110.0, verdict=Action.DENY) == []
    assert len(table.flows(now=110.0, top=1)) == 1


def test_merge_adds_counts() -> None:
    key = FlowKey("eth0", "192.0.2.1", 6, 443)
    table: dict[FlowKey, FlowStats] = {}
    merge_flow(table, key, _stats(2, last=5.0))
    merge_flow(table, key, _stats(3, last=9.0))
    assert (table[key].packets, table[key].last_seen, table[key].samples) == (5, 9.0, 5)


def test_top_orders_by_rate_then_packets() -> None:
    k1, k2 = FlowKey("e", "192.0.2.1", 6, 1), FlowKey("e", "192.0.2.2", 6, 1)
    flows = [Flow(k1, _stats(5, pps=1.0)), Flow(k2, _stats(1, pps=2.0))]
    assert [f.key for f in top_flows(flows)] == [k2, k1]
    assert Flow(k1, _stats(5)).to_json()["margin_pct"] is None
