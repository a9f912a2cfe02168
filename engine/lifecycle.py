"""The firewall's lifecycle on the node: load and attach, detach and unload, the node agent's
sweep that follows interfaces, restore at boot and reload of a new build."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from engine.base import Progress, no_progress
from engine.core.compiler import match_interfaces
from engine.core.guard import raise_if_refused
from engine.errors import StateError
from engine.observe.snapshot import Snapshot
from engine.state.store import StoredState
from engine.state.transaction import Rollback
from engine.views import InterfaceView, Status


class Lifecycle(Snapshot):
    """Attach lifecycle."""

    def attach(
        self,
        patterns: Sequence[str],
        *,
        mode: str = "auto",
        force: bool = False,
        progress: Progress = no_progress,
    ) -> list[InterfaceView]:
        """Load the program if needed (compiling once), then attach it to matching interfaces."""
        self._require_write("attach")
        self._require_root("attach an XDP program")
        ifaces = self.interfaces()
        names = match_interfaces(patterns, ifaces)
        missing = [p for p in patterns if not match_interfaces([p], ifaces)]
        if missing:
            raise StateError(
                f"no interface here matches {', '.join(missing)}",
                f"interfaces in this namespace: {', '.join(sorted(ifaces))}",
            )
        with self.store.lock():
            dp = self._kernel()
            foreign = {}
            if dp is not None:
                foreign = {name: not ours for name, _, _, _, ours in dp.attached()}
            else:
                foreign = {name: True for name in self.kernel.xdp_interfaces()}
            guard = self.guard()
            refusals = [
                r for name in names for r in guard.check_attach(name, foreign.get(name, False))
            ]
            raise_if_refused(refusals, force)
            if dp is None:
                dp = self._load_program(self.state(), progress)
            for name in names:
                progress(f"attaching to {name}")
                dp.attach(name, mode=mode, force=force)
            stored = self.state()
            merged = tuple(dict.fromkeys((*stored.interfaces, *patterns)))
            if merged != stored.interfaces or stored.attach_mode != mode:
                self._commit_setting(
                    dp,
                    stored,
                    replace(stored, interfaces=merged, attach_mode=mode),
                    f"attach {', '.join(patterns)}",
                )
        return [v for v in self.status().interfaces if v.name in names]

    def detach(self, patterns: Sequence[str] | None = None) -> list[str]:
        """Detach from matching interfaces; with none given, detach everywhere and remove pins."""
        self._require_write("detach")
        # Under the store lock, kernel and store together: the agent (which follows the stored
        # patterns under the same lock) never sees the program gone and the pattern still there.
        with self.store.lock():
            # an orphan of ours (pins removed) is pinned again first: a detach must not leave
            # a program filtering that it calls gone
            dp = self._kernel()
            if dp is None:
                return []
            attached = [name for name, _, _, _, ours in dp.attached() if ours]
            if not patterns:
                dp.unload()
                self._datapath = None
                return attached
            names = match_interfaces(patterns, {n: 0 for n in attached})
            if not names:
                raise StateError(
                    f"no interface this firewall is attached to matches {', '.join(patterns)}",
                    f"attached: {', '.join(attached) or 'none'}",
                )
            for name in names:
                dp.detach(name)
            stored = self.state()
            # A stored glob that covered a detached name is replaced by the names it still
            # covers, so restore does not attach the detached interface again.
            gone = set(names)
            kept_list: list[str] = []
            for p in stored.interfaces:
                covered = match_interfaces([p], {n: 0 for n in attached})
                if p in patterns or gone & set(covered):
                    kept_list.extend(n for n in covered if n not in gone)
                else:
                    kept_list.append(p)
            kept = tuple(dict.fromkeys(kept_list))
            if kept != stored.interfaces:
                self._commit_setting(
                    dp, stored, replace(stored, interfaces=kept), f"detach {', '.join(patterns)}"
                )
            return names

    def follow_interfaces(self) -> list[str]:
        """One sweep of the node agent (engine.agent), also safe to run by hand: take back an
        expired pending change whose watchdog failed; give every interface that a stored attach
        pattern names the tables for its current ifindex, then the program. Returns what it did.

        Tables are rewritten only while the kernel and the store name the same generation: in a
        drift (a revert the store could not record) the store's rules are the wrong ones."""
        self._require_write("follow interfaces")
        done: list[str] = []
        reverted = self._reap_expired()
        if reverted:
            done.append(reverted)
        with self.store.lock():
            stored = self.state()
            dp = self._kernel() if stored.interfaces else None
            if dp is None:
                return done
            try:
                done += self._follow(dp, stored)
            finally:
                # The agent must not keep a handle: a `detach` removes the pins, and a held
                # handle would let the next sweep put the program back.
                self._datapath = None
                dp.close()
        return done

    def _follow(self, dp: Any, stored: StoredState) -> list[str]:
        done: list[str] = []
        ifaces = self.interfaces()
        names = match_interfaces(stored.interfaces, ifaces)
        attached = {name: ours for name, _, _, _, ours in dp.attached()}
        kernel_gen = int(dp.config().generation)
        if kernel_gen == stored.generation:
            tables = self._compile(stored.ruleset, ifaces, stored.rule_ids)
            missing = {e.ifindex for e in tables.lpm} - dp.table_ifindexes()
            if missing:
                self._enforce(dp, tables, stored.rule_ids, stored.generation)
                gone = sorted(n for n, i in ifaces.items() if i in missing)
                done.append(f"tables written for {', '.join(gone)} (new ifindex)")
        for name in names:
            if name in attached and not attached[name]:
                continue  # a foreign program: never replaced without --force (status names it)
            if name not in attached:
                mode = dp.attach(name, mode=stored.attach_mode)
                done.append(f"attached to {name} ({mode})")
        return done

    def follow(self, stop: threading.Event, say: Callable[[str], None]) -> None:
        """Run the node agent until stop is set (`infw agent`)."""
        from engine import agent

        self._require_write("run the agent")
        self._require_root("follow interfaces")
        agent.run(self, stop, say)

    def restore(self, progress: Progress = no_progress, *, attach: bool = True) -> Status:
        """Re-apply the stored state (boot): load, write the stored rules, attach the stored
        interfaces and (attach) those the objects for this node name, globs resolved; names
        that match nothing here are reported through progress. A change left pending by a
        console or a boot that came before its confirm is rolled back first: only confirmed
        rules come back."""
        self._require_write("restore")
        self._require_root("restore the firewall")
        with self.store.lock():
            pending = self.store.get_pending()
            if pending is not None and not self.kernel.watchdog.is_running(pending.watchdog_pid):
                self.rollback_pending(pending.generation, Rollback.RESTORED_UNCONFIRMED)
        stored = self.state()
        named = self._object_interfaces(stored.ruleset) if attach else []
        if not stored.interfaces and not named:
            raise StateError(
                f"no stored state to restore in {self.state_dir}",
                "apply rules and attach interfaces first",
            )
        dp = self._kernel()
        if dp is not None:
            progress("firewall already loaded: rewriting its tables")
            ifaces = self.interfaces()
            tables = self._compile(stored.ruleset, ifaces, stored.rule_ids)
            self._enforce(dp, tables, stored.rule_ids, stored.generation)
        ifaces = self.interfaces()
        wanted = list(dict.fromkeys((*stored.interfaces, *named)))
        patterns = [p for p in wanted if match_interfaces([p], ifaces)]
        missing = [p for p in wanted if p not in patterns]
        if missing:
            progress(f"no interface here matches {', '.join(missing)}: not attached")
        if patterns:
            self.attach(patterns, mode=stored.attach_mode, progress=progress)
        return self.status()

    def reload(self, progress: Progress = no_progress) -> Status:
        """Swap in a new build of the program: maps (rules, counters) are reused, and every
        interface moves to the new program with an atomic replace."""
        self._require_write("reload the program")
        self._require_root("reload the XDP program")
        if not self.loaded():
            raise StateError(
                f"no firewall is loaded at {self.pin_root}", "attach one first: 'infw attach IFACE'"
            )
        with self.store.lock():
            progress("compiling infw.bpf.c with bcc")
            if self._datapath is not None:
                self._datapath.close()
            self._datapath = self.kernel.load(self.pin_root)
        return self.status()
