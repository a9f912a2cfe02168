"""The kernel's flows map: sampled packets land in it with their verdict and rule, counts
scale to what was sent within the stated sampling error, traced frames count nothing, and the
table survives a reload (BPF_PROG_TEST_RUN with plain frames: the program takes them as real)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from engine.core.classify import Reason
from engine.core.compiler import CompiledTables
from engine.core.flows import FlowKey, FlowStats
from engine.core.model import Action
from engine.kernel import bpfsys
from engine.kernel.abi import DEFAULT_FLOW_SAMPLE
from engine.kernel.flowmap import decode_records
from tests.kernel.conftest import LO_IFINDEX

pytestmark = [pytest.mark.root, pytest.mark.kernel]

ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
DST = "192.0.2.1"


@pytest.fixture
def dp(datapath: Any, tables: CompiledTables) -> Iterator[Any]:
    datapath.set_flow_sample(1)
    yield datapath
    datapath.set_flow_sample(DEFAULT_FLOW_SAMPLE)
    datapath.write_tables(tables, datapath.generation() + 1)


def flows(dp: Any) -> dict[FlowKey, FlowStats]:
    keys, values, count = dp.flow_entries()
    rate = int(dp.config().flow_sample)
    return decode_records(keys, values, count, {LO_IFINDEX: "lo"}, rate, 0.0)


def send(dp: Any, frame: bytes, repeat: int = 1) -> int:
    return bpfsys.prog_test_run(dp.prog_fd, frame, repeat, LO_IFINDEX).retval


def rule_id(tables: CompiledTables, order: int) -> int:
    return next(r.rule_id for r in tables.rules.values() if r.rule.order == order)


def test_every_verdict_is_recorded_with_its_rule(dp: Any, tables: CompiledTables) -> None:
    send(dp, bytes(ETH / IP(src="192.0.2.31", dst=DST) / TCP(dport=8000)), 7)
    send(dp, bytes(ETH / IP(src="192.0.2.31", dst=DST) / UDP(dport=53)), 3)
    send(dp, bytes(ETH / IP(src="192.0.2.31", dst=DST) / TCP(dport=22)), 2)  # fail-safe
    send(dp, bytes(ETH / IP(src="192.0.2.31", dst=DST) / ICMP(type=8)), 1)
    send(dp, bytes(ETH / IPv6(src="2001:db8::31", dst="2001:db8::1") / TCP(dport=443)), 4)
    got = flows(dp)
    deny = got[FlowKey("lo", "192.0.2.31", 6, 8000)]
    assert (deny.packets, deny.action, deny.rule_id) == (7, Action.DENY, rule_id(tables, 10))
    assert deny.bytes == 7 * len(ETH / IP() / TCP())
    allow = got[FlowKey("lo", "192.0.2.31", 17, 53)]
    assert (allow.packets, allow.action, allow.rule_id) == (3, Action.ALLOW, rule_id(tables, 20))
    assert got[FlowKey("lo", "192.0.2.31", 6, 22)].reason is Reason.FAILSAFE
    ping = got[FlowKey("lo", "192.0.2.31", 1, None, 8, 0)]
    assert ping.rule_id == rule_id(tables, 5)
    v6 = got[FlowKey("lo", "2001:db8::31", 6, 443)]
    assert (v6.packets, v6.reason) == (4, Reason.NO_MATCH)


def test_sampled_counts_agree_with_what_was_sent(dp: Any) -> None:
    dp.set_flow_sample(8)
    sent = 16000
    send(dp, bytes(ETH / IP(src="192.0.2.32", dst=DST) / UDP(dport=5000)), sent)
    s = flows(dp)[FlowKey("lo", "192.0.2.32", 17, 5000)]
    assert s.rate == 8 and s.packets == 8 * s.samples
    # the stated 95% margin, widened to 3 sigma so the test fails only for a real bias
    assert abs(s.packets - sent) <= s.error.margin_pct / 1.96 * 3 / 100 * s.packets


def test_interleaved_flows_on_one_counter_are_each_sampled_fairly(dp: Any) -> None:
    """Four flows taking turns on the same path (so on the same counter, whose value decides
    the sample): none of them is favoured by where it falls in the turn."""
    dp.set_flow_sample(8)
    sources = [f"192.0.2.{40 + i}" for i in range(4)]
    frames = [bytes(ETH / IP(src=s, dst=DST) / UDP(dport=5002)) for s in sources]
    rounds = 2000
    for _ in range(rounds):
        for frame in frames:
            send(dp, frame)
    got = flows(dp)
    for source in sources:
        s = got[FlowKey("lo", source, 17, 5002)]
        assert abs(s.packets - rounds) <= s.error.margin_pct / 1.96 * 3 / 100 * s.packets, (
            source,
            s.packets,
        )


def test_sampling_off_and_traced_frames_record_nothing(dp: Any) -> None:
    dp.set_flow_sample(0)
    send(dp, bytes(ETH / IP(src="192.0.2.33", dst=DST) / UDP(dport=5001)), 50)
    dp.set_flow_sample(1)
    dp.test_run(bytes(ETH / IP(src="192.0.2.34", dst=DST) / UDP(dport=5001)), LO_IFINDEX)
    got = flows(dp)
    assert FlowKey("lo", "192.0.2.33", 17, 5001) not in got
    assert FlowKey("lo", "192.0.2.34", 17, 5001) not in got


def test_flows_survive_a_reload(dp: Any, pin_root: str) -> None:
    from engine.kernel.datapath import Datapath

    send(dp, bytes(ETH / IP(src="192.0.2.35", dst=DST) / UDP(dport=5002)), 5)
    again = Datapath.load(pin_root)
    try:
        assert flows(again)[FlowKey("lo", "192.0.2.35", 17, 5002)].packets == 5
        assert int(again.config().flow_sample) == 1, "the rate is kept too"
    finally:
        again.close()


def test_an_older_builds_flow_gap_pin_survives_a_reload_and_goes_with_unload() -> None:
    """Builds before the counter-hash sampling pinned a per-CPU countdown, flow_gap: a reload
    onto such pins works (the old program may run on until the switch, so the pin stays) and
    an unload removes it with the rest."""
    import os

    from engine.kernel.datapath import Datapath
    from tests.kernel.conftest import PIN_BASE

    root = os.path.join(PIN_BASE, "retired")
    dp = Datapath.load(root)
    leftover = os.path.join(root, "flow_gap")
    try:
        fd = bpfsys.obj_get(os.path.join(root, "config"))  # any object stands in for the old map
        bpfsys.obj_pin(fd, leftover)
        os.close(fd)
        dp.close()
        dp = Datapath.load(root)
        assert os.path.exists(leftover)
    finally:
        dp.unload()
    assert not os.path.exists(leftover) and not os.path.exists(root)
