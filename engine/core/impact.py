"""Impact preview: what a rule change does, before it lands (pure Python, no kernel).

Two answers: the rule diff by stable rule id (added, removed, changed, order moves), and the
traffic impact: every flow seen in the window decided under the current and the proposed
rules, listing the flows whose verdict changes with their rates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.core.classify import Decision, Reason, lookup
from engine.core.compiler import (
    CompiledTables,
    RuleKey,
    assign_rule_ids,
    compile_ruleset,
    iter_rules,
    rule_key,
)
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe
from engine.core.flows import Flow, FlowKey
from engine.core.model import Action, Rule, RuleSet

DEFAULT_TOP = 10


# --- the rule diff ------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleRef:
    """A rule as the diff names it: its id and where it sits."""

    rule_id: int
    firewall: str
    cidrs: tuple[str, ...]
    interfaces: tuple[str, ...]
    rule: Rule

    def text(self) -> str:
        r = self.rule
        return (
            f"rule {self.rule_id}: {self.firewall} order {r.order} {r.action.value} "
            f"{r.match_text()} from {', '.join(self.cidrs)} on {', '.join(self.interfaces)}"
        )

    def to_json(self) -> dict[str, Any]:
        r = self.rule
        return {
            "id": self.rule_id,
            "firewall": self.firewall,
            "order": r.order,
            "action": r.action.value,
            "match": r.match_text(),
            "sourceCIDRs": list(self.cidrs),
            "interfaces": list(self.interfaces),
        }


@dataclass(frozen=True)
class RuleMove:
    """The same rule (object, sources, match, action) at another order: a new id."""

    before: RuleRef
    after: RuleRef

    def text(self) -> str:
        return (
            f"rule {self.before.rule_id} moved: order {self.before.rule.order} -> "
            f"{self.after.rule.order} (now rule {self.after.rule_id})"
        )


@dataclass(frozen=True)
class RuleDiff:
    added: tuple[RuleRef, ...] = ()
    removed: tuple[RuleRef, ...] = ()
    changed: tuple[tuple[RuleRef, RuleRef], ...] = ()  # same id, different rule or interfaces
    moved: tuple[RuleMove, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.moved)

    def lines(self) -> list[str]:
        out = [f"+ {r.text()}" for r in self.added]
        out += [f"- {r.text()}" for r in self.removed]
        out += [
            f"~ {a.text()}  (was {b.rule.action.value} {b.rule.match_text()}{_iface_note(b, a)})"
            for b, a in self.changed
        ]
        out += [f"> {m.text()}" for m in self.moved]
        return out

    def summary(self) -> str:
        if self.empty:
            return "no rule changes"
        parts = [
            f"{len(items)} {what}"
            for items, what in (
                (self.added, "added"),
                (self.removed, "removed"),
                (self.changed, "changed"),
                (self.moved, "moved"),
            )
            if items
        ]
        return "rules: " + ", ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "added": [r.to_json() for r in self.added],
            "removed": [r.to_json() for r in self.removed],
            "changed": [{"before": b.to_json(), "after": a.to_json()} for b, a in self.changed],
            "moved": [
                {"before": m.before.to_json(), "after": m.after.to_json()} for m in self.moved
            ],
        }


def _iface_note(before: RuleRef, after: RuleRef) -> str:
    if before.interfaces == after.interfaces:
        return ""
    return f" on {', '.join(before.interfaces)}"


def _refs(ruleset: RuleSet, ids: Mapping[RuleKey, int]) -> dict[int, RuleRef]:
    out: dict[int, RuleRef] = {}
    for fw, _, block, _, rule in iter_rules(ruleset):
        rid = ids[rule_key(fw.name, block, rule)]
        out[rid] = RuleRef(rid, fw.name, tuple(sorted(block.source_cidrs)), fw.interfaces, rule)
    return out


def _move_key(ref: RuleRef) -> tuple[object, ...]:
    r = ref.rule
    return (
        ref.firewall,
        ref.cidrs,
        ref.interfaces,
        r.action,
        r.protocol,
        r.ports,
        r.icmp_type,
        r.icmp_code,
    )


def diff_rules(
    current: RuleSet,
    current_ids: Mapping[RuleKey, int],
    proposed: RuleSet,
    proposed_ids: Mapping[RuleKey, int],
) -> RuleDiff:
    """Compare by rule id. A removed and an added rule that differ only in order are a move."""
    before, after = _refs(current, current_ids), _refs(proposed, proposed_ids)
    changed = tuple(
        (before[rid], after[rid])
        for rid in sorted(before.keys() & after.keys())
        if before[rid] != after[rid]
    )
    removed = [before[rid] for rid in sorted(before.keys() - after.keys())]
    added = [after[rid] for rid in sorted(after.keys() - before.keys())]
    moved: list[RuleMove] = []
    for old in list(removed):
        new = next((a for a in added if _move_key(a) == _move_key(old)), None)
        if new is not None:
            moved.append(RuleMove(old, new))
            removed.remove(old)
            added.remove(new)
    return RuleDiff(tuple(added), tuple(removed), changed, tuple(moved))


# --- the traffic impact -------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """A flow's verdict under one rule set."""

    action: Action
    reason: str
    rule_id: int | None

    @classmethod
    def of(cls, decision: Decision, passed_as_reply: bool = False) -> Verdict:
        """passed_as_reply: the flow answers the node's own connection and replies are on,
        so a Deny lets it through (as the kernel does on its deny path)."""
        if passed_as_reply and decision.action is Action.DENY:
            return cls(Action.ALLOW, Reason.REPLY.value, decision.rule_id)
        return cls(decision.action, decision.reason.value, decision.rule_id)

    def text(self) -> str:
        if self.rule_id is not None:
            return f"{self.action.value.upper()} (rule {self.rule_id})"
        return f"{self.action.value.upper()} ({self.reason})"


@dataclass(frozen=True)
class FlowChange:
    key: FlowKey
    pps: float
    packets: int
    before: Verdict
    after: Verdict

    def text(self) -> str:
        return (
            f"{self.key.text()}  {self.pps:.1f} pkt/s  {self.before.text()} -> {self.after.text()}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            **self.key.to_json(),
            "pps": round(self.pps, 3),
            "packets": self.packets,
            "before": {
                "verdict": self.before.action.value,
                "reason": self.before.reason,
                "rule_id": self.before.rule_id,
            },
            "after": {
                "verdict": self.after.action.value,
                "reason": self.after.reason,
                "rule_id": self.after.rule_id,
            },
        }


@dataclass(frozen=True)
class ChangeTotals:
    flows: int = 0
    pps: float = 0.0
    packets: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"flows": self.flows, "pps": round(self.pps, 3), "packets": self.packets}


def _totals(changes: Sequence[FlowChange]) -> ChangeTotals:
    return ChangeTotals(len(changes), sum(c.pps for c in changes), sum(c.packets for c in changes))


@dataclass(frozen=True)
class TrafficImpact:
    flows_seen: int
    newly_denied: tuple[FlowChange, ...]  # the top N, busiest first
    newly_allowed: tuple[FlowChange, ...]
    denied_total: ChangeTotals
    allowed_total: ChangeTotals
    rule_moved: int = 0  # flows whose verdict holds but another rule decides it now
    source: str = "flows"  # what the traffic was: "flows" (the kernel's table) or a capture

    @property
    def changes(self) -> bool:
        return bool(self.denied_total.flows or self.allowed_total.flows)

    def summary(self) -> str:
        if not self.flows_seen:
            return f"no traffic seen ({self.source}): nothing to compare against"
        if not self.changes:
            return f"no seen flow changes verdict ({self.flows_seen} flows, {self.source})"
        parts = []
        for total, what in ((self.denied_total, "denied"), (self.allowed_total, "allowed")):
            if total.flows:
                parts.append(
                    f"newly {what}: {total.flows} flow{'s' if total.flows != 1 else ''} "
                    f"({total.pps:.1f} pkt/s)"
                )
        return "; ".join(parts) + f" of {self.flows_seen} seen ({self.source})"

    def lines(self) -> list[str]:
        out = [f"DROPS {c.text()}" for c in self.newly_denied]
        out += [f"ALLOWS {c.text()}" for c in self.newly_allowed]
        hidden_d = self.denied_total.flows - len(self.newly_denied)
        hidden_a = self.allowed_total.flows - len(self.newly_allowed)
        if hidden_d > 0 or hidden_a > 0:
            out.append(
                f"... and {max(0, hidden_d)} more newly denied, {max(0, hidden_a)} more "
                "newly allowed (--top to show more)"
            )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "flows_seen": self.flows_seen,
            "newly_denied": [c.to_json() for c in self.newly_denied],
            "newly_allowed": [c.to_json() for c in self.newly_allowed],
            "denied_total": self.denied_total.to_json(),
            "allowed_total": self.allowed_total.to_json(),
            "rule_moved": self.rule_moved,
        }


def flow_interfaces(
    flows: Iterable[Flow], known: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Name -> ifindex for compiling: the node's where known, made-up ones otherwise (a
    capture names interfaces this node may not have; the rules only see names)."""
    out = dict(known or {})
    taken = set(out.values())
    next_index = 1
    for name in sorted({f.key.interface for f in flows} - out.keys()):
        while next_index in taken:
            next_index += 1
        out[name] = next_index
        taken.add(next_index)
    return out


def traffic_impact(
    flows: Sequence[Flow],
    current: CompiledTables,
    proposed: CompiledTables,
    interfaces: Mapping[str, int],
    *,
    top: int = DEFAULT_TOP,
    source: str = "flows",
    replies: bool = False,
) -> TrafficImpact:
    """Decide every flow under both rule sets and keep those whose verdict flips.

    The decision walks the compiled images (`classify.lookup`), which the unit and kernel
    tests prove equal to the brute-force reference `classify`; it is what makes 10k flows
    against 1k rules cost a fraction of a second. With `replies` on, a flow the kernel saw
    pass as a reply (it answers the node's own connection) passes any Deny under both rule
    sets: taking a catch-all Deny away, or adding one, does not change what it gets.
    """
    denied: list[FlowChange] = []
    allowed: list[FlowChange] = []
    moved = 0
    for flow in flows:
        ifindex = interfaces.get(flow.key.interface)
        if ifindex is None:
            continue
        pkt = flow.key.packet()
        reply = replies and flow.stats.reason is Reason.REPLY
        before = Verdict.of(lookup(current, ifindex, pkt), reply)
        after = Verdict.of(lookup(proposed, ifindex, pkt), reply)
        if before.action is after.action:
            moved += before.rule_id != after.rule_id
            continue
        change = FlowChange(flow.key, flow.stats.pps, flow.stats.packets, before, after)
        (denied if after.action is Action.DENY else allowed).append(change)

    def rank(items: list[FlowChange]) -> list[FlowChange]:
        # repr: a key's port or ICMP fields may be None (fragments), which don't order with ints.
        return sorted(items, key=lambda c: (-c.pps, -c.packets, repr(c.key)))

    denied, allowed = rank(denied), rank(allowed)
    return TrafficImpact(
        len(flows),
        tuple(denied[:top]),
        tuple(allowed[:top]),
        _totals(denied),
        _totals(allowed),
        moved,
        source,
    )


@dataclass(frozen=True)
class ImpactPreview:
    diff: RuleDiff
    traffic: TrafficImpact
    proposed_ids: Mapping[RuleKey, int] = field(default_factory=dict, compare=False)
    # what the apply of this change would warn of (an edit's dry run sets them)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def summary(self) -> str:
        """One line: what the form and the apply step show."""
        return f"{self.traffic.summary()}; {self.diff.summary()}"

    def lines(self) -> list[str]:
        return [*self.diff.lines(), *self.traffic.lines()]

    def to_json(self) -> dict[str, Any]:
        return {
            "diff": self.diff.to_json(),
            "traffic": self.traffic.to_json(),
            "summary": self.summary(),
            "warnings": list(self.warnings),
        }


def preview_change(
    current: RuleSet,
    current_ids: Mapping[RuleKey, int],
    proposed: RuleSet,
    flows: Sequence[Flow],
    *,
    interfaces: Mapping[str, int] | None = None,
    failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE,
    top: int = DEFAULT_TOP,
    source: str = "flows",
    first_new: int = 1,
    replies: bool = False,
) -> ImpactPreview:
    """The whole preview of replacing `current` by `proposed`, over these flows.

    Proposed ids are assigned as an apply would (kept where the rule's key is unchanged, new
    ones from the store's high-water mark `first_new`), so the ids named here are the ones
    the change will have.
    """
    ifaces = flow_interfaces(flows, interfaces)
    proposed_ids = assign_rule_ids(proposed, current_ids, first_new)
    cur = compile_ruleset(current, ifaces, failsafe, current_ids)
    new = compile_ruleset(proposed, ifaces, failsafe, proposed_ids)
    return ImpactPreview(
        diff_rules(current, cur.rule_ids, proposed, new.rule_ids),
        traffic_impact(flows, cur, new, ifaces, top=top, source=source, replies=replies),
        new.rule_ids,
    )
