"""One-rule edits (add, edit, delete, reorder) and their dry run: each is a Change read and
applied under the store lock, so two consoles never lose an edit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from engine.base import Change
from engine.core import crd
from engine.core.model import ORDER_MAX, ORDER_MIN, RuleSet, add_rule, remove_rule, rule_conflict
from engine.core.parity import changed_rules, meaning_notes
from engine.core.ruleline import DEFAULT_FIREWALL, RuleLine, format_rule_line, parse_rule_line
from engine.errors import FieldError, StateError, ValidationError
from engine.observe.stats import build_rule_rows
from engine.state.edits import EditTransaction
from engine.state.store import StoredState
from engine.views import ApplyResult, RuleRow


class RuleChange:
    """A one-rule Change that keeps the warnings of the line it resolved (its admission and
    operator-parity notes, as validate gives them for a file), so the apply, the dry run and
    the preview of the edit report them as the CLI does for a file."""

    def __init__(self, build: Callable[[StoredState], tuple[RuleSet, str, RuleLine]]) -> None:
        self._build = build
        self.warnings: tuple[str, ...] = ()

    def __call__(self, stored: StoredState) -> tuple[RuleSet, str]:
        ruleset, summary, parsed = self._build(stored)
        self.warnings = _line_warnings(stored.ruleset, ruleset, parsed)
        return ruleset, summary


class RuleEdits(EditTransaction):
    """Edits of one rule, by its line or its id."""

    def add_rule(self, line: str | RuleLine, **kwargs: Any) -> ApplyResult:
        return self._noted(self._added(line), **kwargs)

    def _noted(self, change: RuleChange, **kwargs: Any) -> ApplyResult:
        result = self._edit(change, **kwargs)
        return replace(result, warnings=(*change.warnings, *result.warnings))

    def _added(self, line: str | RuleLine) -> RuleChange:
        def change(stored: StoredState) -> tuple[RuleSet, str, RuleLine]:
            parsed = self._resolve_line(stored, line)
            self._refuse_conflict(stored, parsed, None)
            new = add_rule(
                stored.ruleset, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule
            )
            crd.check_ruleset(new, f"rule in {parsed.firewall}")  # the webhook's order check
            return new, f"add {parsed.firewall} order {parsed.rule.order}", parsed

        return RuleChange(change)

    def check_rule(
        self, line: str | RuleLine, rule_id: int | None = None, *, force: bool = False
    ) -> list[str]:
        """The dry run of add_rule (or, with rule_id, edit_rule): the same rule set those would
        apply, through the same conflict checks and guard; applies nothing. Raises what the
        apply would raise (ValidationError, GuardRefusal); returns its warnings (the line's
        own, then the check's)."""
        change = self._added(line) if rule_id is None else self._edited(rule_id, line)
        ruleset, _ = change(self.state())
        _, warnings = self.check(ruleset, force=force)
        return [*change.warnings, *warnings]

    @staticmethod
    def _resolve_line(
        stored: StoredState, line: str | RuleLine, row: RuleRow | None = None
    ) -> RuleLine:
        """Parse a rule line; without 'on', the rule takes its object's interfaces (or, for a
        new object, the attached ones); without 'firewall', an edit stays in its object."""
        if isinstance(line, RuleLine):
            return line
        default_fw = row.firewall if row else DEFAULT_FIREWALL
        parsed = parse_rule_line(line, ("*",), default_firewall=default_fw)
        if parsed.interfaces_given:
            return parsed
        fw = stored.ruleset.firewall(parsed.firewall)
        interfaces = fw.interfaces if fw else stored.interfaces
        if interfaces:
            # parsed again with the interfaces it takes: the stand-in's warnings are not its own
            return parse_rule_line(line, tuple(interfaces), default_firewall=default_fw)
        raise ValidationError(
            [
                FieldError(
                    f"rule '{line}'",
                    "spec.interfaces",
                    None,
                    "missing",
                    "add 'on IFACE' (a name or glob, e.g. on eth0)",
                )
            ]
        )

    @staticmethod
    def _refuse_conflict(stored: StoredState, parsed: RuleLine, row: RuleRow | None) -> None:
        replacing = (row.firewall, tuple(sorted(row.cidrs)), row.order) if row else None
        conflict = rule_conflict(
            stored.ruleset,
            parsed.firewall,
            parsed.interfaces if parsed.interfaces_given else None,
            parsed.cidrs,
            parsed.rule.order,
            replacing,
        )
        if conflict is not None:
            field, problem, fix = conflict
            path = "spec.interfaces" if field == "interfaces" else "spec.ingress[0].rules[0].order"
            value = parsed.interfaces if field == "interfaces" else parsed.rule.order
            raise ValidationError(
                [FieldError(f"rule in {parsed.firewall}", path, value, problem, fix)]
            )

    def _find_rule(self, rule_id: int, stored: StoredState | None = None) -> RuleRow:
        stored = stored or self.state()
        rows = build_rule_rows(stored.ruleset, stored.rule_ids, {}, {})
        for row in rows:
            if row.rule_id == rule_id:
                return row
        known = ", ".join(str(r.rule_id) for r in rows) or "none"
        raise StateError(f"no rule with id {rule_id}", f"known ids: {known}")

    def delete_rule(self, rule_id: int, **kwargs: Any) -> ApplyResult:
        return self._edit(self._deleted(rule_id), **kwargs)

    def _deleted(self, rule_id: int) -> Change:
        def change(stored: StoredState) -> tuple[RuleSet, str]:
            row = self._find_rule(rule_id, stored)
            new = remove_rule(stored.ruleset, row.firewall, row.cidrs, row.order)
            return new, f"delete rule {rule_id} ({row.firewall} order {row.order})"

        return change

    def edit_rule(self, rule_id: int, line: str | RuleLine, **kwargs: Any) -> ApplyResult:
        return self._noted(self._edited(rule_id, line), **kwargs)

    def _edited(self, rule_id: int, line: str | RuleLine) -> RuleChange:
        def change(stored: StoredState) -> tuple[RuleSet, str, RuleLine]:
            row = self._find_rule(rule_id, stored)
            parsed = self._resolve_line(stored, line, row)
            self._refuse_conflict(stored, parsed, row)
            new = remove_rule(stored.ruleset, row.firewall, row.cidrs, row.order)
            new = add_rule(new, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
            crd.check_ruleset(new, f"rule {rule_id}")
            return new, f"edit rule {rule_id}", parsed

        return RuleChange(change)

    def reorder_target(self, rule_id: int, delta: int) -> int:
        """The order a move by delta lands on: past every order its block already uses, so a
        move never replaces a rule. Outside 1..ORDER_MAX raises ValidationError."""
        stored = self.state()
        return self._reorder_order(stored, self._find_rule(rule_id, stored), delta)

    def reorder_rule(self, rule_id: int, delta: int, **kwargs: Any) -> ApplyResult:
        """Move a rule up (delta < 0) or down within its block: an edit of its order."""

        def change(stored: StoredState) -> tuple[RuleSet, str]:
            row = self._find_rule(rule_id, stored)
            order = self._reorder_order(stored, row, delta)
            moved = replace(row.rule, order=order)
            line = format_rule_line(row.firewall, row.interfaces, row.cidrs, moved)
            return self._edited(rule_id, line)(stored)

        return self._edit(change, **kwargs)

    @staticmethod
    def _reorder_order(stored: StoredState, row: RuleRow, delta: int) -> int:
        if delta == 0:
            raise StateError(f"a move of rule {row.rule_id} by 0 goes nowhere", "move by +1 or -1")
        taken = {
            r.order
            for r in build_rule_rows(stored.ruleset, stored.rule_ids, {}, {})
            if r.firewall == row.firewall
            and set(r.cidrs) == set(row.cidrs)
            and r.rule_id != row.rule_id
        }
        order = row.order + delta
        while order in taken:  # never land on (and so replace) a rule of the same block
            order += delta
        if not ORDER_MIN <= order <= ORDER_MAX:
            raise ValidationError(
                [
                    FieldError(
                        f"rule {row.rule_id}",
                        "spec.ingress[0].rules[0].order",
                        order,
                        f"order stays within {ORDER_MIN}..{ORDER_MAX}",
                        "move it the other way",
                    )
                ]
            )
        return order


def _line_warnings(old: RuleSet, new: RuleSet, parsed: RuleLine) -> tuple[str, ...]:
    """What `apply` of the resulting file would print about the rule a line added or changed:
    the line's admission warnings, and the operator-parity notes about that rule among the
    stored ones (a prefix it nests in or around included), not the untouched rules' notes."""
    notes = meaning_notes(new, changed_rules(old, new))
    return tuple(dict.fromkeys((*parsed.admission, *notes)))
