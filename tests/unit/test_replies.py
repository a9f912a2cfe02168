"""Replies to the node's own connections, without root: the reply key (engine.core.replies), the
reference classifier's reply step, the config key, and the Engine over the fake kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.classify import PacketFields, Reason, lookup
from engine.core.compiler import compile_ruleset
from engine.core.frame import build_frame, parse_frame
from engine.core.model import Action, Firewall, IngressBlock, Rule, RuleSet
from engine.core.replies import ReplySettings, expected_reply, reply_flow
from engine.engine import Engine
from engine.errors import ValidationError
from engine.kernel.abi import NodeCounter
from engine.kernel.fake import FakeKernel
from engine.kernel.seam import XDP_DROP, XDP_PASS
from engine.state.config import NodeConfig, parse_config
from engine.views import TraceRequest

IFACES = {"lo": 1, "eth0": 2}
NODE, PEER = "192.0.2.1", "198.51.100.53"
DENY_ALL = RuleSet(
    (Firewall("deny", ("eth0",), (IngressBlock(("0.0.0.0/0", "::/0"), (Rule(1, Action.DENY),)),)),)
)


def fields(frame: bytes) -> PacketFields:
    parsed = parse_frame(frame).fields
    assert parsed is not None
    return parsed


def query() -> bytes:  # the node asks the peer's DNS
    return build_frame(NODE, PEER, 17, dport=53, sport=40001)


def answer(sport: int = 53, dport: int = 40001) -> bytes:
    return build_frame(PEER, NODE, 17, dport=dport, sport=sport)


def test_an_outbound_flow_expects_exactly_its_reply() -> None:
    flow = expected_reply(2, fields(query()))
    assert flow is not None and flow == reply_flow(2, fields(answer()))
    assert reply_flow(2, fields(answer(sport=54))) != flow  # source port included
    assert reply_flow(2, fields(answer(dport=40002))) != flow
    assert reply_flow(3, fields(answer())) != flow  # another interface
    syn = build_frame(NODE, PEER, 6, dport=443, sport=40100)
    assert expected_reply(2, fields(syn), tcp_open=False) is None  # only a SYN opens
    ping = build_frame(NODE, PEER, 1, icmp_type=8, icmp_code=0)
    pong = build_frame(PEER, NODE, 1, icmp_type=0, icmp_code=0)
    assert expected_reply(2, fields(ping)) == reply_flow(2, fields(pong)) is not None
    assert reply_flow(2, fields(build_frame(PEER, NODE, 1, icmp_type=8, icmp_code=0))) is None


def test_the_reference_passes_a_denied_reply_only_with_its_flow_in_the_table() -> None:
    tables = compile_ruleset(DENY_ALL, IFACES)
    flow = expected_reply(2, fields(query()))
    assert flow is not None
    off = lookup(tables, 2, fields(answer()))
    on = lookup(tables, 2, fields(answer()), {flow})
    forged = lookup(tables, 2, fields(answer(sport=54)), {flow})
    assert (off.action, off.reason) == (Action.DENY, Reason.RULE)
    assert (on.action, on.reason, on.rule_id) == (Action.ALLOW, Reason.REPLY, off.rule_id)
    assert (forged.action, forged.reason) == (Action.DENY, Reason.RULE)
    assert "reply" in on.describe()


def test_config_key_replies() -> None:
    cfg = parse_config({"replies": {"enabled": True, "udpTimeout": 10}})
    assert cfg.replies == ReplySettings(enabled=True, udp_timeout=10.0)
    assert NodeConfig().replies.enabled is False
    with pytest.raises(ValidationError, match=r"replies\.enabled"):
        parse_config({"replies": {"enabled": "yes"}})
    with pytest.raises(ValidationError, match=r"replies\.tcpTimout"):
        parse_config({"replies": {"tcpTimout": 5}})


def make(tmp_path: Path, config: NodeConfig | None = None) -> tuple[Engine, FakeKernel]:
    kernel = FakeKernel(IFACES)
    engine = Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=config or NodeConfig(),
        session=None,
        kernel=kernel,
    )
    return engine, kernel


def test_engine_replies_on_lets_the_nodes_own_answers_through(tmp_path: Path) -> None:
    engine, kernel = make(tmp_path)
    engine.attach(["eth0"])
    engine.add_rule("deny from 0.0.0.0/0 on eth0 order 10", confirm_timeout=0)
    dp = kernel.pinned[engine.pin_root]
    dp.send_out(query(), "eth0")  # replies off: nothing recorded
    assert dp.send(answer(), "eth0") == XDP_DROP
    assert not engine.status().replies
    view = engine.set_replies(True)
    assert view.enabled and engine.status().replies
    dp.send_out(query(), "eth0")
    assert dp.send(answer(), "eth0") == XDP_PASS
    assert dp.send(answer(sport=54), "eth0") == XDP_DROP  # forged: another source port
    view = engine.replies()
    assert (view.held, view.recorded, view.allowed) == (1, 1, 1)
    assert engine.stats().totals.reply_allowed[0] == 1
    traced = engine.trace_packet(TraceRequest("eth0", PEER, "UDP", dport=40001, sport=53, dst=NODE))
    assert (traced.kernel_reason, traced.kernel_verdict, traced.agree) == ("reply", "ALLOW", True)
    assert engine.set_replies(False).enabled is False
    assert dp.send(answer(), "eth0") == XDP_DROP


def test_trace_reply_explains_a_reply_the_node_has_not_opened(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, NodeConfig(replies=ReplySettings(enabled=True)))
    engine.attach(["eth0"])
    engine.add_rule("deny from 0.0.0.0/0 on eth0 order 10", confirm_timeout=0)
    assert engine.status().replies  # the config's setting, applied at load
    req = TraceRequest("eth0", PEER, "UDP", dport=40001, sport=53, dst=NODE, reply=True)
    traced = engine.trace_packet(req)
    assert traced.reference_reason == "reply" and traced.reference_verdict == "ALLOW"
    assert traced.kernel_verdict == "DENY" and traced.agree  # no such flow is open
    assert any("no such flow" in n for n in traced.notes)
    assert NodeCounter.REPLY_ALLOWED in engine.datapath().node_counters()


def test_a_reply_shows_in_flows_as_allowed_by_reply_with_the_rule_it_got_past(
    tmp_path: Path,
) -> None:
    engine, kernel = make(tmp_path, NodeConfig(replies=ReplySettings(enabled=True), flow_sample=1))
    engine.attach(["eth0"])
    engine.add_rule("deny from 0.0.0.0/0 on eth0 order 10", confirm_timeout=0)
    dp = kernel.pinned[engine.pin_root]
    dp.send_out(query(), "eth0")
    for _ in range(3):
        assert dp.send(answer(), "eth0") == XDP_PASS
    # not a reply (another port: the flow table keys on the destination port, not the source's)
    assert dp.send(answer(dport=40002), "eth0") == XDP_DROP
    (rule_id,) = engine.state().rule_ids.values()
    by_port = {f.key.dport: f for f in engine.flows().flows}
    reply = by_port[40001]
    assert by_port[40002].stats.verdict_text() == "DENY"
    assert (reply.stats.packets, reply.stats.reason, reply.stats.rule_id) == (
        3,
        Reason.REPLY,
        rule_id,
    )
    assert reply.stats.action is Action.ALLOW and reply.stats.verdict_text() == "ALLOW (reply)"
    assert [f.key.dport for f in engine.flows(verdict="allow").flows] == [40001]
    # the replies count as the node's "reply allowed", the Deny rule counts only its drop
    assert engine.stats().totals.reply_allowed[0] == 3
    assert dp.rules[rule_id][0] == 1
