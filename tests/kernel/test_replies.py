"""Replies to the node's own flows, kernel against reference: random rule sets, random frames
and a random table of outbound flows (exact replies and near misses) through BPF_PROG_TEST_RUN
must get the verdict engine.core.classify gives with that table as input."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.classify import Reason, classify, lookup
from engine.core.compiler import compile_ruleset
from engine.core.flows import FlowKey
from engine.core.frame import build_frame, parse_frame
from engine.core.model import Action, Firewall, IngressBlock, Protocol, Rule, RuleSet
from engine.core.replies import ReplyFlow, ReplySettings, reply_flow
from engine.kernel import bpfsys
from engine.kernel.abi import (
    DEFAULT_FLOW_SAMPLE,
    MAP_FLOWS,
    MAP_REPLIES,
    REPLIES_MAX_ENTRIES,
    NodeCounter,
)
from engine.kernel.abi import Reason as KernelReason
from engine.kernel.flowmap import decode_records
from tests.kernel.conftest import LO_IFINDEX, PIN_BASE, kernel_skip_reason
from tests.kernel.test_differential import frames_for
from tests.unit.strategies import tricky_rulesets

pytestmark = [pytest.mark.root, pytest.mark.kernel]

XDP_DROP, XDP_PASS = 1, 2
ON = ReplySettings(enabled=True)
KERNEL_REASON = {
    Reason.FAILSAFE: KernelReason.FAILSAFE,
    Reason.RULE: KernelReason.RULE,
    Reason.NO_MATCH: KernelReason.NO_MATCH,
    Reason.REPLY: KernelReason.REPLY,
}


@pytest.fixture(scope="module")
def dp() -> Iterator[Any]:
    reason = kernel_skip_reason()
    if reason:
        pytest.skip(reason)
    from engine.kernel.datapath import Datapath

    os.makedirs(PIN_BASE, exist_ok=True)
    d = Datapath.load(os.path.join(PIN_BASE, "replies"))
    try:
        yield d
    finally:
        d.unload()


def set_table(dp: Any, flows: set[ReplyFlow], age_s: float = 0.0) -> None:
    from engine.kernel import replies

    m = dp.maps[MAP_REPLIES]
    for key in list(m.keys()):
        m.delete(key)
    replies.record(m, flows, age_s)


def near_miss(flow: ReplyFlow) -> ReplyFlow:
    """The same flow but for one field: a forged reply must not pass."""
    return dataclasses.replace(flow, remote_port=flow.remote_port ^ 1)


def verdict(dp: Any, frame: bytes) -> tuple[int, KernelReason, int]:
    action, last, _ = dp.test_run(frame, LO_IFINDEX)
    return action, KernelReason(last.reason), last.rule_id


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_kernel_agrees_with_reference_on_random_outbound_tables(
    dp: Any, data: st.DataObject
) -> None:
    ruleset = data.draw(tricky_rulesets())
    tables = compile_ruleset(ruleset, {"lo": LO_IFINDEX})
    dp.write_tables(tables, dp.generation() + 1)
    frames = data.draw(st.lists(frames_for(ruleset), min_size=1, max_size=12))
    flows: set[ReplyFlow] = set()
    for frame in frames:
        parsed = parse_frame(frame)
        flow = reply_flow(LO_IFINDEX, parsed.fields) if parsed.fields else None
        if flow is not None:
            flows.add(data.draw(st.sampled_from([flow, flow, near_miss(flow)])))
    set_table(dp, flows)
    for enabled in (True, False):
        dp.set_replies(ReplySettings(enabled=enabled))
        for frame in frames:
            parsed = parse_frame(frame)
            if parsed.kind != "ip" or parsed.fields is None:
                continue
            table = flows if enabled else None
            want = lookup(tables, LO_IFINDEX, parsed.fields, table)
            brute = classify(
                ruleset, tables.rule_ids, "lo", parsed.fields, tables.failsafe, table, LO_IFINDEX
            )
            assert (brute.action, brute.reason, brute.rule_id) == (
                want.action,
                want.reason,
                want.rule_id,
            )
            drop = want.reason is Reason.RULE and want.action is Action.DENY
            expected = (
                XDP_DROP if drop else XDP_PASS,
                KERNEL_REASON[want.reason],
                want.rule_id or 0,
            )
            assert verdict(dp, frame) == expected, f"{parsed} replies {enabled}"
    dp.set_replies(ReplySettings())


DENY_ALL = RuleSet(
    (Firewall("deny", ("lo",), (IngressBlock(("0.0.0.0/0", "::/0"), (Rule(1, Action.DENY),)),)),)
)


def udp_answer(sport: int = 53) -> bytes:
    return build_frame("192.0.2.53", "192.0.2.1", 17, dport=40000, sport=sport)


def test_a_reply_passes_until_its_timeout_and_counts(dp: Any) -> None:
    dp.write_tables(compile_ruleset(DENY_ALL, {"lo": LO_IFINDEX}), dp.generation() + 1)
    fields = parse_frame(udp_answer()).fields
    assert fields is not None
    flow = reply_flow(LO_IFINDEX, fields)
    assert flow is not None
    dp.set_replies(dataclasses.replace(ON, udp_timeout=5.0))
    try:
        set_table(dp, {flow}, age_s=1.0)
        assert verdict(dp, udp_answer())[:2] == (XDP_PASS, KernelReason.REPLY)
        assert verdict(dp, udp_answer(sport=54))[:2] == (XDP_DROP, KernelReason.RULE)
        before = dp.node_counters()[NodeCounter.REPLY_ALLOWED][0]
        result = bpfsys.prog_test_run(dp.prog_fd, udp_answer(), 3, LO_IFINDEX)  # counted
        assert result.retval == XDP_PASS
        assert dp.node_counters()[NodeCounter.REPLY_ALLOWED][0] == before + 3
        set_table(dp, {flow}, age_s=6.0)  # older than the UDP timeout
        assert verdict(dp, udp_answer())[:2] == (XDP_DROP, KernelReason.RULE)
    finally:
        dp.set_replies(ReplySettings())
    set_table(dp, {flow})
    assert verdict(dp, udp_answer())[:2] == (XDP_DROP, KernelReason.RULE)  # replies off


def test_echo_replies_match_by_id_and_an_allow_never_looks(dp: Any) -> None:
    dp.write_tables(compile_ruleset(DENY_ALL, {"lo": LO_IFINDEX}), dp.generation() + 1)
    reply = build_frame("192.0.2.9", "192.0.2.1", 1, icmp_type=0, icmp_code=0)
    fields = parse_frame(reply).fields
    assert fields is not None and fields.icmp_id == 0x1234
    flow = reply_flow(LO_IFINDEX, fields)
    assert flow is not None
    dp.set_replies(ON)
    try:
        set_table(dp, {near_miss(flow)})
        assert verdict(dp, reply)[:2] == (XDP_DROP, KernelReason.RULE)
        set_table(dp, {flow})
        assert verdict(dp, reply)[:2] == (XDP_PASS, KernelReason.REPLY)
        request = build_frame("192.0.2.9", "192.0.2.1", 1, icmp_type=8, icmp_code=0)
        assert verdict(dp, request)[:2] == (XDP_DROP, KernelReason.RULE)  # not a reply type
        allow = RuleSet(
            (
                Firewall(
                    "allow",
                    ("lo",),
                    (IngressBlock(("0.0.0.0/0",), (Rule(1, Action.ALLOW, Protocol.ICMP),)),),
                ),
            )
        )
        dp.write_tables(compile_ruleset(allow, {"lo": LO_IFINDEX}), dp.generation() + 1)
        assert verdict(dp, reply)[:2] == (XDP_PASS, KernelReason.RULE)  # allowed by its rule
    finally:
        dp.set_replies(ReplySettings())


def test_a_reload_keeps_the_setting_and_the_flows(dp: Any) -> None:
    from engine.kernel.datapath import Datapath

    fields = parse_frame(udp_answer()).fields
    assert fields is not None
    flow = reply_flow(LO_IFINDEX, fields)
    assert flow is not None
    dp.set_replies(dataclasses.replace(ON, udp_timeout=12.0))
    set_table(dp, {flow})
    try:
        with Datapath.load(dp.pin_root) as again:  # what `infw reload` does
            assert again.replies() == dataclasses.replace(ON, udp_timeout=12.0)
            assert again.reply_flows() == {flow}
            assert again.egress_fd is not None
    finally:
        dp.set_replies(ReplySettings())


def test_a_reply_is_sampled_into_flows_with_the_deny_it_got_past(dp: Any) -> None:
    tables = compile_ruleset(DENY_ALL, {"lo": LO_IFINDEX})
    dp.write_tables(tables, dp.generation() + 1)
    (rule_id,) = tables.rule_ids.values()
    fields = parse_frame(udp_answer()).fields
    assert fields is not None
    flow = reply_flow(LO_IFINDEX, fields)
    assert flow is not None
    dp.set_replies(ON)
    dp.set_flow_sample(1)
    flows_map = dp.maps[MAP_FLOWS]
    for key in list(flows_map.keys()):  # earlier tests' packets may have been sampled
        flows_map.delete(key)
    try:
        set_table(dp, {flow})
        before = dp.node_counters()[NodeCounter.REPLY_ALLOWED][0]
        forged = build_frame("192.0.2.53", "192.0.2.1", 17, dport=40001, sport=53)
        assert bpfsys.prog_test_run(dp.prog_fd, udp_answer(), 5, LO_IFINDEX).retval == XDP_PASS
        assert bpfsys.prog_test_run(dp.prog_fd, forged, 2, LO_IFINDEX).retval == XDP_DROP
        keys, values, count = dp.flow_entries()
        got = decode_records(keys, values, count, {LO_IFINDEX: "lo"}, 1, 0.0)
        reply = got[FlowKey("lo", "192.0.2.53", 17, 40000)]
        assert (reply.packets, reply.reason, reply.rule_id) == (5, Reason.REPLY, rule_id)
        assert reply.action is Action.ALLOW and reply.verdict_text() == "ALLOW (reply)"
        denied = got[FlowKey("lo", "192.0.2.53", 17, 40001)]
        assert (denied.packets, denied.reason, denied.action) == (2, Reason.RULE, Action.DENY)
        assert dp.node_counters()[NodeCounter.REPLY_ALLOWED][0] == before + 5
    finally:
        dp.set_replies(ReplySettings())
        dp.set_flow_sample(DEFAULT_FLOW_SAMPLE)


def test_a_flood_of_outbound_flows_evicts_and_counts_it(dp: Any) -> None:
    """More outbound flows than the table holds: the LRU makes room, never fails an insert, the
    node counter says how many were recorded (recorded - held = evicted), and the newest flow's
    answer still passes the Deny."""
    if dp.egress_fd is None:
        pytest.skip("this build has no tc egress recorder")
    dp.write_tables(compile_ruleset(DENY_ALL, {"lo": LO_IFINDEX}), dp.generation() + 1)
    set_table(dp, set())
    dp.set_replies(ON)
    total = REPLIES_MAX_ENTRIES + 4096
    try:
        before = dp.node_counters()[NodeCounter.REPLY_RECORDED][0]
        for i in range(total):  # the node's DNS queries, each from its own port: distinct flows
            remote, port = f"192.0.2.{53 + i // 60000}", 1024 + i % 60000
            query = build_frame("192.0.2.1", remote, 17, dport=53, sport=port)
            bpfsys.prog_test_run(dp.egress_fd, query)  # skb test run: skb->ifindex is lo
        recorded = dp.node_counters()[NodeCounter.REPLY_RECORDED][0] - before
        held = dp.replies_held()
        assert recorded == total
        assert 0 < held <= REPLIES_MAX_ENTRIES
        assert recorded - held >= total - REPLIES_MAX_ENTRIES  # what `infw replies` calls evicted
        answer = build_frame(remote, "192.0.2.1", 17, dport=port, sport=53)
        assert verdict(dp, answer)[:2] == (XDP_PASS, KernelReason.REPLY)
        forged = build_frame(remote, "192.0.2.1", 17, dport=port, sport=54)
        assert verdict(dp, forged)[:2] == (XDP_DROP, KernelReason.RULE)
    finally:
        dp.set_replies(ReplySettings())
        set_table(dp, set())
