"""Commit-confirmed from the console's side: keep a pending change (confirm) or go back one
generation (revert)."""

from __future__ import annotations

import time
from typing import Any

from engine.errors import ConfirmExpired, StateError
from engine.state.edits import EditTransaction
from engine.state.store import ChangeKind, StoredState
from engine.state.transaction import Rollback
from engine.views import ApplyResult


class CommitConfirm(EditTransaction):
    """Confirm and revert."""

    def confirm(self) -> int:
        """Keep the pending change; returns its generation. Too late raises ConfirmExpired."""
        self._require_write("confirm")
        with self.store.lock():
            self._reap_expired()
            pending = self.store.get_pending()
            if pending is None:
                last = self.store.history(1)
                if last and last[0].kind is ChangeKind.AUTO_REVERT:
                    raise ConfirmExpired(
                        f"too late: {last[0].summary} (now generation {last[0].generation})",
                        "apply the change again and confirm within the timeout",
                    )
                raise StateError("nothing is pending confirmation", "apply a change first")
            if time.time() > pending.deadline:
                raise ConfirmExpired(
                    f"too late: generation {pending.generation} passed its deadline and is being reverted",
                    "apply the change again and confirm within the timeout",
                )
            self.store.clear_pending(pending.generation)
        return pending.generation

    def revert(self, **kwargs: Any) -> ApplyResult:
        """Go back one generation: drops a pending change, or re-applies the previous rules."""
        self._require_write("revert")
        pending = self.store.get_pending()
        if pending is not None:
            self.rollback_pending(pending.generation, Rollback.BY_OPERATOR)
            state = self.state()
            return ApplyResult(
                state.generation, pending.generation, state.ruleset.rule_count(), None
            )
        with self.store.lock():
            stored = self.state()
            prev = self._revert_target(stored)
            if prev is None:
                raise StateError(
                    "no earlier generation with different rules to revert to", "see 'infw history'"
                )
            old = self._generation_state(prev)
            kwargs.setdefault("confirm_timeout", 0)
            kwargs.setdefault("expected_generation", stored.generation)
            # The old rules take their old ids back (and so their counters and event history).
            kwargs.setdefault("previous_ids", {**stored.rule_ids, **old.rule_ids})
            return self.apply(
                old.ruleset, summary=f"revert to generation {prev}", restores=prev, **kwargs
            )

    def _revert_target(self, current: StoredState) -> int | None:
        """The generation one step back: the latest earlier one with different rules (mode and
        attach generations don't count). After a revert, the walk starts from the generation it
        restored, so reverting again keeps going back instead of undoing the revert."""
        gen: int | None = current.generation if current.restores is None else current.restores
        key = current.ruleset.semantic_key()
        while gen is not None:
            gen = self.store.previous_generation(gen)
            if gen is not None and self._generation_state(gen).ruleset.semantic_key() != key:
                return gen
        return None
