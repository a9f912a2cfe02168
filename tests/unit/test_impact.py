"""engine.core.impact: the rule diff by id and the flows whose verdict a change flips."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.classify import PacketFields, Reason, classify
from engine.core.compiler import assign_rule_ids
from engine.core.flows import Flow, FlowKey, FlowStats
from engine.core.impact import diff_rules, preview_change
from engine.core.model import (
    Action,
    Firewall,
    IngressBlock,
    PortRange,
    Protocol,
    Rule,
    RuleSet,
    add_rule,
    remove_rule,
)
from tests.unit.strategies import NODE_INTERFACES, packets_for, tricky_rulesets

CIDRS = ("192.0.2.0/24",)


def _rs(*rules: Rule, name: str = "fw", cidrs: tuple[str, ...] = CIDRS) -> RuleSet:
    return RuleSet((Firewall(name, ("eth0",), (IngressBlock(cidrs, rules),)),))


def _tcp(order: int, port: int, action: Action) -> Rule:
    return Rule(order, action, Protocol.TCP, PortRange(port, port))


def _flow(src: str, proto: int, dport: int | None, pps: float, iface: str = "eth0") -> Flow:
    stats = FlowStats(int(pps * 10), 0, 0.0, 1.0, Action.ALLOW, Reason.NO_MATCH, pps=pps)
    return Flow(FlowKey(iface, src, proto, dport), stats)


def test_diff_by_id_added_removed_changed_moved() -> None:
    current = _rs(
        _tcp(10, 80, Action.ALLOW), _tcp(20, 443, Action.ALLOW), _tcp(30, 22, Action.DENY)
    )
    ids = assign_rule_ids(current)
    proposed = remove_rule(current, "fw", CIDRS, 30)  # removed
    proposed = add_rule(proposed, "fw", ("eth0",), CIDRS, _tcp(10, 80, Action.DENY))  # changed
    proposed = remove_rule(proposed, "fw", CIDRS, 20)
    proposed = add_rule(proposed, "fw", ("eth0",), CIDRS, _tcp(25, 443, Action.ALLOW))  # moved
    proposed = add_rule(proposed, "fw", ("eth0",), CIDRS, _tcp(40, 8080, Action.DENY))  # added
    new_ids = assign_rule_ids(proposed, ids)
    diff = diff_rules(current, ids, proposed, new_ids)
    assert [r.rule.order for r in diff.added] == [40]
    assert [r.rule.order for r in diff.removed] == [30]
    assert [(b.rule.action, a.rule.action) for b, a in diff.changed] == [
        (Action.ALLOW, Action.DENY)
    ]
    assert [(m.before.rule.order, m.after.rule.order) for m in diff.moved] == [(20, 25)]
    assert diff.summary() == "rules: 1 added, 1 removed, 1 changed, 1 moved"
    assert any(line.startswith("> rule") for line in diff.lines())
    assert diff_rules(current, ids, current, ids).empty


def test_deny_names_the_flows_it_drops_with_rates() -> None:
    current = _rs(_tcp(10, 22, Action.ALLOW))
    ids = assign_rule_ids(current)
    proposed = add_rule(current, "fw", ("eth0",), CIDRS, _tcp(20, 443, Action.DENY))
    flows = [
        _flow("192.0.2.7", 6, 443, 2.0),
        _flow("192.0.2.8", 6, 443, 5.0),
        _flow("192.0.2.9", 6, 80, 9.0),  # another port: untouched
        _flow("198.51.100.1", 6, 443, 4.0),  # another source: untouched
        _flow("192.0.2.7", 6, 443, 3.0, iface="eth1"),  # the object is on eth0 only
    ]
    preview = preview_change(current, ids, proposed, flows, interfaces={"eth0": 1, "eth1": 2})
    t = preview.traffic
    assert [c.key.source for c in t.newly_denied] == ["192.0.2.8", "192.0.2.7"]
    assert t.denied_total.flows == 2 and t.denied_total.pps == 7.0
    assert t.allowed_total.flows == 0 and t.flows_seen == 5
    new_id = preview.proposed_ids[("fw", CIDRS, 20)]
    assert {c.after.rule_id for c in t.newly_denied} == {new_id}
    assert "newly denied: 2 flows (7.0 pkt/s)" in preview.summary()
    assert "1 added" in preview.summary()
    assert preview.to_json()["traffic"]["denied_total"]["flows"] == 2
    # the same change previewed over fewer top rows still counts every flow
    top1 = preview_change(current, ids, proposed, flows, top=1).traffic
    assert len(top1.newly_denied) == 1 and top1.denied_total.flows == 2
    assert any("more newly denied" in line for line in top1.lines())


def test_removing_a_deny_lists_newly_allowed() -> None:
    current = _rs(_tcp(10, 443, Action.DENY))
    ids = assign_rule_ids(current)
    preview = preview_change(current, ids, RuleSet(), [_flow("192.0.2.1", 6, 443, 1.0)])
    assert preview.traffic.allowed_total.flows == 1
    assert preview.traffic.newly_allowed[0].before.rule_id == ids[("fw", CIDRS, 10)]
    assert preview.traffic.newly_allowed[0].after.reason == "no match"


def test_no_flows_says_so() -> None:
    current = _rs(_tcp(10, 443, Action.DENY))
    preview = preview_change(current, assign_rule_ids(current), RuleSet(), [])
    assert preview.traffic.summary().startswith("no traffic seen")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_impact_agrees_with_the_brute_force_reference(data: st.DataObject) -> None:
    """Every flip the preview reports is a flip under classify, and every classify flip is
    reported: the compiled walk stands in for the reference only because it equals it."""
    current = data.draw(tricky_rulesets())
    proposed = data.draw(tricky_rulesets())
    ids = assign_rule_ids(current)
    new_ids = assign_rule_ids(proposed, ids)
    packets = data.draw(st.lists(packets_for(current), min_size=1, max_size=15))
    iface = data.draw(st.sampled_from(sorted(NODE_INTERFACES)))
    flows = []
    for src, proto, dport, icmp_type, icmp_code, nonfirst in packets:
        key = FlowKey.of_packet(
            iface, PacketFields(src, proto, dport, icmp_type, icmp_code, nonfirst)
        )
        flows.append(Flow(key, FlowStats(1, 64, 0.0, 0.0, Action.ALLOW, Reason.NO_MATCH)))
    flows = list({f.key: f for f in flows}.values())
    preview = preview_change(
        current, ids, proposed, flows, interfaces=NODE_INTERFACES, top=len(flows)
    )
    want_denied: set[FlowKey] = set()
    want_allowed: set[FlowKey] = set()
    for f in flows:
        before = classify(current, ids, iface, f.key.packet())
        after = classify(proposed, new_ids, iface, f.key.packet())
        if before.action is not after.action:
            (want_denied if after.action is Action.DENY else want_allowed).add(f.key)
    assert {c.key for c in preview.traffic.newly_denied} == want_denied
    assert {c.key for c in preview.traffic.newly_allowed} == want_allowed
