"""Per-block results kept across edits (engine.core.blockmemo) and the hashed sorted CIDRs of
rule-id keys: the shortcuts that make an edit at 100,000 CIDRs cheap must never change an
answer."""

from __future__ import annotations

from dataclasses import replace

from engine.core.compiler import assign_rule_ids, rule_key
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe
from engine.core.guard import Guard
from engine.core.model import Action, IngressBlock, PortRange, Protocol, Rule, RuleSet, add_rule
from engine.core.parity import operator_failsafe_refusals


def _deny(port: int, order: int = 1) -> Rule:
    return Rule(order, Action.DENY, Protocol.TCP, PortRange(port, port))


def test_the_guard_answers_again_for_another_failsafe_list_and_a_changed_block() -> None:
    rs = add_rule(RuleSet(), "web", ("eth0",), ("192.0.2.0/24",), _deny(2222))
    ids = assign_rule_ids(rs)
    assert Guard(DEFAULT_FAILSAFE, None, None).check_failsafe(rs, ids) == []
    alt = (FailSafe(Protocol.TCP, PortRange(2222, 2222), "SSH (alt)"),)
    (refusal,) = Guard(alt, None, None).check_failsafe(rs, ids)  # same block, other list
    assert "2222/tcp (SSH (alt))" in refusal.message and refusal.rule_id == 1
    fw = rs.firewalls[0]
    block = replace(fw.ingress[0], rules=(_deny(8080),))  # the edit: a new block object
    edited = RuleSet((replace(fw, ingress=(block,)),))
    assert Guard(alt, None, None).check_failsafe(edited, assign_rule_ids(edited, ids)) == []
    assert Guard(alt, None, None).check_failsafe(rs, ids) != []  # the old block still refused


def test_operator_failsafe_notes_follow_the_nodes_list() -> None:
    rs = add_rule(RuleSet(), "web", ("eth0",), ("192.0.2.0/24",), _deny(10250))
    assert operator_failsafe_refusals(rs, DEFAULT_FAILSAFE) == []  # the node spares it too
    (note,) = operator_failsafe_refusals(rs, ())
    assert note.startswith("web 192.0.2.0/24 order 1: it covers 10250/tcp")


def test_sorted_cidrs_hash_and_compare_as_the_plain_tuple() -> None:
    block = IngressBlock(("198.51.100.0/24", "192.0.2.0/24"), (_deny(80),))
    key = rule_key("web", block, block.rules[0])
    plain = ("web", ("192.0.2.0/24", "198.51.100.0/24"), 1)
    assert key == plain and hash(key) == hash(plain)
    assert {plain: 7}[key] == 7 and {key: 7}[plain] == 7
    assert block.sorted_cidrs is block.sorted_cidrs  # sorted once per block


def test_ids_are_kept_and_fresh_ones_go_out_in_rule_order() -> None:
    rs = RuleSet()
    for order in (1, 2, 3):
        rs = add_rule(rs, "web", ("eth0",), ("192.0.2.0/24",), _deny(1000 + order, order))
    ids = assign_rule_ids(rs)
    assert sorted(ids.values()) == [1, 2, 3]
    more = add_rule(rs, "web", ("eth0",), ("10.0.0.0/8",), _deny(9, 5))
    more = add_rule(more, "web", ("eth0",), ("10.0.0.0/8",), _deny(9, 4))
    again = assign_rule_ids(more, ids, first_new=4)
    assert {k: v for k, v in again.items() if k in ids} == ids
    new = [again[k] for k in again if k not in ids]
    assert new == [4, 5]  # in the order the rules come: order 4, then order 5
