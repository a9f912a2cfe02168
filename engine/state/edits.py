"""The edit transaction (DESIGN §4): check, store, switch the kernel and arm the watchdog, all
or nothing; and its undo, putting back the rule set from before a pending change."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from engine.base import Change, EngineBase, Progress, no_progress
from engine.core.compiler import CompiledTables, RuleKey, match_interfaces, slow_path_note
from engine.core.gcpause import gc_paused
from engine.core.guard import raise_if_refused
from engine.core.model import RuleSet
from engine.core.parity import operator_failsafe_refusals
from engine.errors import InfwError, StateError
from engine.kernel.abi import Mode
from engine.kernel.seam import LoadedDatapath
from engine.state.store import Pending, StoredState, author
from engine.state.transaction import Rollback, signals_held
from engine.views import ApplyResult, PendingView

REAP_GRACE_S = 3.0  # past the deadline, a live watchdog is given this long to act itself


@dataclass(frozen=True)
class _Attach:
    """What an apply attaches (the interfaces its objects name), and how."""

    names: tuple[str, ...]
    mode: str = "auto"
    force: bool = False
    progress: Progress = no_progress


class EditTransaction(EngineBase):
    """Applying a whole rule set, and rolling a pending one back."""

    def pending(self) -> PendingView | None:
        with contextlib.suppress(InfwError):  # status reports a failed take-over itself
            self._reap_expired()
        p = self.store.get_pending()
        if p is None:
            return None
        return PendingView(p.generation, p.previous_generation, p.deadline, p.author)

    def _reap_expired(self) -> str:
        """A pending change past its deadline whose watchdog has not acted (killed, stopped,
        OOM, reboot) is rolled back here, by whichever console looks first: unconfirmed never
        means kept. Returns what was taken back ("" when nothing)."""
        if self.read_only:
            return ""
        p = self.store.get_pending()
        if p is None or time.time() < p.deadline + REAP_GRACE_S:
            return ""
        # Past the deadline and its grace, a watchdog still pending has failed, whatever it is
        # doing: a stopped one would otherwise hold the revert (and every edit) forever.
        pid = p.watchdog_pid or self.kernel.watchdog.find(self.state_dir, p.generation)
        state = self.kernel.watchdog.state(pid)
        self.kernel.watchdog.stop(pid)
        why = Rollback.WATCHDOG_GONE if state == "gone" else Rollback.WATCHDOG_HUNG
        if not self.rollback_pending(p.generation, why):
            return ""
        return (
            f"generation {p.generation} was not confirmed and its watchdog was {state}: "
            f"reverted just now to the rules of generation {p.previous_generation}"
        )

    def check(
        self,
        ruleset: RuleSet,
        *,
        force: bool = False,
        previous_ids: Mapping[RuleKey, int] | None = None,
    ) -> tuple[CompiledTables, list[str]]:
        """Validate a rule set against the node and the guard without applying anything."""
        tables, _, warnings = self._check(ruleset, force=force, previous_ids=previous_ids)
        return tables, warnings

    def _check(
        self,
        ruleset: RuleSet,
        *,
        force: bool,
        previous_ids: Mapping[RuleKey, int] | None,
    ) -> tuple[CompiledTables, bool, list[str]]:
        """check(), also saying whether --force went past a refusal."""
        stored = self.state()
        ifaces = self.interfaces()
        ids = stored.rule_ids if previous_ids is None else previous_ids
        tables = self._compile(ruleset, ifaces, ids)
        split = self.node_split(ruleset)
        refusals = self.guard().check(
            split.enforced, tables.rule_ids, ifaces, audit=self.state().mode == "audit"
        )
        raise_if_refused(refusals, force)
        warnings = [f"forced past: {r.message}" for r in refusals]
        warnings += split.notes()
        slow = slow_path_note(tables)
        if slow:
            warnings.append(slow)
        warnings += [
            f"the operator refuses {n}"
            for n in operator_failsafe_refusals(ruleset, self.config.failsafe)
        ]
        for fw in split.enforced.firewalls:
            if not match_interfaces(fw.interfaces, ifaces):
                warnings.append(f"{fw.name}: no interface here matches {', '.join(fw.interfaces)}")
        return tables, bool(refusals), warnings

    @gc_paused()  # guard, store and compile of 100,000 prefixes: no cycles, collect after
    def apply(
        self,
        ruleset: RuleSet,
        *,
        confirm_timeout: float | None = None,
        force: bool = False,
        expected_generation: int | None = None,
        summary: str = "apply",
        previous_ids: Mapping[RuleKey, int] | None = None,
        restores: int | None = None,
        attach: bool = False,
        attach_mode: str = "auto",
        progress: Progress = no_progress,
    ) -> ApplyResult:
        """Apply a whole rule set: guard, store, then an atomic switch in the datapath.

        With a confirm timeout above 0 the change stays pending and a detached watchdog puts the
        previous rule set back unless `confirm()` comes in time.
        """
        self._require_write("apply rules")
        timeout = self.config.confirm_timeout if confirm_timeout is None else confirm_timeout
        with self.store.lock():
            self._reap_expired()
            stored = self.state()
            pending = self.store.get_pending()
            if pending is not None:
                left = max(0.0, pending.deadline - time.time())
                raise StateError(
                    f"generation {pending.generation} is pending confirmation ({left:.0f}s left)",
                    "run 'infw confirm' to keep it or 'infw revert' to drop it, then apply again",
                )
            if expected_generation is not None and expected_generation != stored.generation:
                raise StateError(
                    f"the rules changed under you (now generation {stored.generation}, "
                    f"you edited generation {expected_generation})",
                    "reload the rules and retry",
                )
            tables, forced, warnings = self._check(ruleset, force=force, previous_ids=previous_ids)
            plan = self._attach_plan(ruleset, force, warnings) if attach else []
            if forced and timeout <= 0:
                # --force never skips the safety net: a forced change is always confirmable.
                timeout = self.config.confirm_timeout or 60.0
                warnings.append(f"forced changes are commit-confirmed: {timeout:.0f}s to confirm")
            new_state = replace(
                stored, ruleset=ruleset, rule_ids=dict(tables.rule_ids), restores=restores
            )
            if attach:
                # The objects' own names and globs, not only what matches now: the agent and
                # restore then follow an interface that appears, returns or is recreated.
                named = self._object_interfaces(ruleset)
                merged = tuple(dict.fromkeys((*stored.interfaces, *named)))
                new_state = replace(new_state, interfaces=merged)
            if plan:
                new_state = replace(new_state, attach_mode=attach_mode)
                if self._kernel() is None:
                    # Loading changes no packet: the program runs nowhere until it is attached.
                    self._load_program(stored, progress)
            with signals_held():
                return self._commit_and_enforce(
                    stored,
                    new_state,
                    tables,
                    ruleset,
                    timeout,
                    summary,
                    warnings,
                    _Attach(tuple(plan), attach_mode, force, progress),
                )

    def _attach_plan(self, ruleset: RuleSet, force: bool, warnings: list[str]) -> list[str]:
        """The interfaces here that this node's objects name and no infw program of ours filters
        yet (globs resolved), checked by the guard like `attach`; names that match nothing are
        reported in warnings."""
        patterns = self._object_interfaces(ruleset)
        ifaces = self.interfaces()
        names = match_interfaces(patterns, ifaces) if patterns else []
        missing = [p for p in patterns if not match_interfaces([p], ifaces)]
        if missing:
            warnings.append(f"no interface here matches {', '.join(missing)}: not attached")
        dp = self._kernel()
        if dp is not None:
            attached = {a[0]: a[4] for a in dp.attached()}
            foreign = {name: not ours for name, ours in attached.items()}
            names = [n for n in names if not attached.get(n, False)]
        else:
            foreign = {name: True for name in self.kernel.xdp_interfaces()}
        if not names:
            return []
        self._require_root("attach an XDP program (or pass --no-attach to store only)")
        guard = self.guard()
        refusals = [r for n in names for r in guard.check_attach(n, foreign.get(n, False))]
        raise_if_refused(refusals, force)
        warnings.append(f"attaching to {', '.join(names)}: the interfaces the objects name")
        return names

    def _load_program(self, stored: StoredState, progress: Progress) -> LoadedDatapath:
        """Compile and pin the program with the stored rules and mode (attached nowhere yet)."""
        progress("compiling infw.bpf.c with bcc (a few seconds, once)")
        dp = self.kernel.load(self.pin_root)
        self._datapath = dp
        tables = self._compile(stored.ruleset, self.interfaces(), stored.rule_ids)
        dp.write_tables(tables, stored.generation)
        dp.set_mode(Mode.AUDIT if stored.mode == "audit" else Mode.ENFORCE)
        dp.set_event_rate(self.config.event_rate)
        dp.set_flow_sample(self.config.flow_sample)
        dp.set_replies(self.config.replies)
        return dp

    def _commit_and_enforce(
        self,
        stored: StoredState,
        new_state: StoredState,
        tables: CompiledTables,
        ruleset: RuleSet,
        timeout: float,
        summary: str,
        warnings: list[str],
        attach: _Attach | None = None,
    ) -> ApplyResult:
        """Intent, store, watchdog, kernel, in that order (signals are held): whatever fails,
        the kernel is touched last, so a failed command never leaves its change live, and a
        change that is live always has a watchdog that can take it back."""
        dp = self._kernel()
        if dp is None:
            warnings.append(
                "NOT ENFORCED: no firewall is loaded here, the rules are stored only; "
                "'infw apply FILE' without --no-attach (or 'infw attach IFACE') enforces them"
            )
        pend_view = None
        attached_now: list[str] = []
        pending: Pending | None = None
        if timeout > 0 and dp is not None:
            # The intent first: if it cannot be recorded, nothing else happens.
            pending = Pending(
                stored.generation + 1, stored.generation, time.time() + timeout, 0, author()
            )
            self.store.set_pending(pending)
        try:
            new_state = self.store.commit(
                new_state, expected_generation=stored.generation, author=author(), summary=summary
            )
        except BaseException:
            if pending is not None:
                self._drop_intent(pending.generation)
            raise
        watchdog_pid = 0
        try:
            if pending is not None:
                # The watchdog reads the previous rules and opens the maps before it answers,
                # so from here on the change can be reverted without the disk or the pins.
                watchdog_pid = self.kernel.watchdog.spawn(
                    self.state_dir,
                    self.pin_root,
                    new_state.generation,
                    pending.deadline,
                    self.netns,
                    # the revert compiles this node's objects, as this change did
                    self.config.node_labels,
                )
                pending = replace(pending, watchdog_pid=watchdog_pid)
                try:
                    self.store.set_pending(pending)
                except InfwError as exc:  # the marker with pid 0 still arms the watchdog
                    warnings.append(f"the watchdog pid was not recorded: {exc.message}")
                pend_view = PendingView(
                    pending.generation,
                    pending.previous_generation,
                    pending.deadline,
                    pending.author,
                )
            if dp is not None:
                # Attached before the switch: for that moment the interface gets the rules that
                # were in force, as `attach` gives it; then the atomic switch to the new ones.
                plan = attach or _Attach(())
                for name in plan.names:
                    plan.progress(f"attaching to {name}")
                    dp.attach(name, mode=plan.mode, force=plan.force)
                    attached_now.append(name)
                self._enforce(dp, tables, stored.rule_ids, new_state.generation)
        except BaseException:  # Ctrl-C too: the kernel kept the old tables; so does the store
            for name in attached_now:
                with contextlib.suppress(InfwError):
                    dp.detach(name)
            if pending is not None:
                self._drop_intent(pending.generation)
                self.kernel.watchdog.stop(watchdog_pid)
            with contextlib.suppress(InfwError):  # if even this fails, status shows the drift
                self.store.uncommit(new_state.generation)
            raise
        return ApplyResult(
            new_state.generation,
            stored.generation,
            ruleset.rule_count(),
            pend_view,
            tuple(warnings),
        )

    def _drop_intent(self, generation: int) -> None:
        with contextlib.suppress(InfwError):
            self.store.clear_pending(generation)

    @gc_paused()  # reading the stored state too
    def _edit(self, change: Change, **kwargs: Any) -> ApplyResult:
        """Read, change and apply under the store lock, so two consoles never lose an edit."""
        with self.store.lock():
            stored = self.state()
            ruleset, summary = change(stored)
            kwargs.setdefault("expected_generation", stored.generation)
            return self.apply(ruleset, summary=summary, **kwargs)

    def prepare_rollback(self, generation: int) -> None:
        """Take now what a rollback of pending `generation` needs later (the watchdog calls it
        at its start): the previous rule set in memory and the firewall's fds, so the revert
        needs neither the disk nor the pins at the deadline."""
        pending = self.store.get_pending()
        if pending is None or pending.generation != generation:
            raise StateError(
                f"generation {generation} is not pending confirmation", "nothing to watch"
            )
        previous = self._generation_state(pending.previous_generation)
        self._held_previous = {pending.previous_generation: previous}
        current = self.state()  # the change commits before its watchdog starts
        self._held_pending = current if current.generation == generation else None
        if self._kernel() is None:
            raise StateError(
                f"no firewall is loaded at {self.pin_root}: nothing to revert",
                "apply with --confirm-timeout 0, or attach first",
            )

    def revert_held(self, generation: int) -> None:
        """The kernel half of rollback_pending from what prepare_rollback took, touching no
        file: for the watchdog when the state dir cannot be read, or is not the one the change
        was recorded in (unmounted, deleted, replaced). The store records it later: the marker
        there still names the change, so the next command (or the agent) takes it back."""
        current = self._held_pending
        if current is None or current.generation != generation:
            raise StateError(
                f"generation {generation} was not held at the watchdog's start",
                "the next infw command takes the change back from the store",
            )
        old = next(iter(self._held_previous.values()))
        dp = self._kernel()  # the handle opened at the start: no pins needed
        ids = {**current.rule_ids, **old.rule_ids}
        tables = self._compile(old.ruleset, self.interfaces(), ids, current.next_rule_id)
        self._enforce(dp, tables, current.rule_ids, current.generation + 1)
        for name in self._attached_by(current, old, dp):
            dp.detach(name)

    def rollback_pending(self, generation: int, reason: Rollback = Rollback.NOT_CONFIRMED) -> bool:
        """Put back the rule set from before a pending change: the kernel first, then the store.

        A kernel that cannot be reached while a program of ours runs raises (the revert is not
        done); a store that cannot be written raises StateError after the kernel was reverted,
        with the pending marker left in place so that the next command finishes the job."""
        with self.store.lock():
            pending = self.store.get_pending()
            if pending is None or pending.generation != generation:
                return False
            stored = self.state()
            old = self._generation_state(pending.previous_generation)
            ifaces = self.interfaces()
            # The old rules take their old ids back, so their counters come back with them.
            ids = {**stored.rule_ids, **old.rule_ids}
            tables = self._compile(old.ruleset, ifaces, ids)
            new_state = replace(
                stored,
                ruleset=old.ruleset,
                rule_ids=dict(tables.rule_ids),
                restores=pending.previous_generation,
                interfaces=old.interfaces,
                attach_mode=old.attach_mode,
            )
            dp = self._kernel()
            if dp is not None:
                self._enforce(dp, tables, stored.rule_ids, stored.generation + 1)
                # An unconfirmed change also undoes the attachments it made.
                for name in self._attached_by(stored, old, dp):
                    dp.detach(name)
            try:
                self.store.commit(
                    new_state,
                    expected_generation=stored.generation,
                    author=author(),
                    summary=f"{reason.summary} (back to {pending.previous_generation})",
                    kind=reason.kind,
                )
                self.store.clear_pending(generation)
            except InfwError as exc:
                where = "the kernel runs the previous rules again, but " if dp else ""
                raise StateError(
                    f"{where}the store could not record the revert of generation "
                    f"{generation}: {exc.message}",
                    "free space in (or remount read-write) the state dir "
                    f"{self.state_dir}; the next infw command finishes the revert",
                ) from exc
        return True

    def _attached_by(self, new: StoredState, old: StoredState, dp: LoadedDatapath) -> list[str]:
        """Interfaces of ours that `new`'s attach list covers and `old`'s does not."""
        ifaces = self.interfaces()
        before = set(match_interfaces(old.interfaces, ifaces)) if old.interfaces else set()
        after = match_interfaces(new.interfaces, ifaces) if new.interfaces else []
        ours = {a[0] for a in dp.attached() if a[4]}
        return [n for n in after if n not in before and n in ours]
