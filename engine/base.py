"""What every part of the Engine shares: the node config, the store, the kernel seam, the
stored state (decoded once per change), the guard, the node split and compile, the
read-only/privilege checks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Literal, overload

from engine.core.compiler import CompiledTables, RuleKey, assign_rule_ids, match_interfaces
from engine.core.guard import Guard, SshSession, session_interface_for
from engine.core.incremental import IncrementalCompiler
from engine.core.model import RuleSet
from engine.core.selector import NodeSplit, split_for_node
from engine.errors import DatapathError, PrivilegeError, StateError
from engine.kernel.host import HostKernel
from engine.kernel.seam import Kernel, LoadedDatapath
from engine.observe.flows import FlowReader
from engine.observe.stats import RateTracker
from engine.state.config import NodeConfig, load_config
from engine.state.store import Store, StoredState, author

Progress = Callable[[str], None]
# An edit: the stored state -> (the rule set to apply, its history summary).
Change = Callable[[StoredState], tuple[RuleSet, str]]


def no_progress(_: str) -> None:
    return None


class EngineBase:
    """The Engine's plumbing; engine.engine.Engine composes the jobs built on it."""

    def __init__(
        self,
        pin_root: str | None = None,
        state_dir: str | None = None,
        *,
        config: NodeConfig | None = None,
        read_only: bool = False,
        netns: str | None = None,
        session: SshSession | None = None,
        interfaces: Callable[[], dict[str, int]] | None = None,
        kernel: Kernel | None = None,
        node_labels: Mapping[str, str] | None = None,
    ) -> None:
        # The kernel seam: HostKernel speaks bcc/netlink; tests pass engine.kernel.fake's.
        self.kernel: Kernel = kernel if kernel is not None else HostKernel()
        self.config = config or load_config()
        if node_labels is not None:  # a console flag wins over the config file's nodeLabels
            self.config = replace(self.config, node_labels=dict(node_labels))
        self.pin_root = pin_root or self.config.pin_root
        if state_dir is None:
            state_dir = self.config.state_dir
            if self.pin_root.rstrip("/") != self.config.pin_root.rstrip("/"):
                # A separate firewall (--pin-root) keeps a separate desired state and history.
                state_dir = os.path.join(state_dir, os.path.basename(self.pin_root.rstrip("/")))
        self.state_dir = state_dir
        self.read_only = read_only
        self.netns = netns
        if netns:
            self.kernel.enter_netns(netns)
        self.session = session if session is not None else SshSession.from_env()
        self._list_interfaces = interfaces or self.kernel.interfaces
        self.store = Store(state_dir)
        self._datapath: LoadedDatapath | None = None
        self._rates = RateTracker()
        self._flow_reader = FlowReader()
        self._state_cache: tuple[tuple[int, int, int], StoredState] | None = None
        # the rule set a watchdog reverts to, read at its start (prepare_rollback)
        self._held_previous: dict[int, StoredState] = {}
        # and the pending state itself, so the kernel can be reverted with the disk gone
        self._held_pending: StoredState | None = None
        # edits in a long-lived engine (console, REPL, agent) recompile only what they touch
        self._compiler = IncrementalCompiler()

    def _require_write(self, what: str) -> None:
        if self.read_only:
            raise PrivilegeError(
                f"cannot {what}: this console is read-only",
                "start it without --read-only to make changes",
            )

    def _require_root(self, what: str) -> None:
        if not self.kernel.has_privileges():
            raise PrivilegeError(
                f"cannot {what}: needs CAP_BPF and CAP_NET_ADMIN",
                "run as root (sudo); --read-only never changes anything but still needs CAP_BPF",
            )

    @overload
    def datapath(self, required: Literal[True] = ...) -> LoadedDatapath: ...

    @overload
    def datapath(self, required: bool) -> LoadedDatapath | None: ...

    def datapath(self, required: bool = True) -> LoadedDatapath | None:
        """The running firewall found through its pins (never compiles)."""
        if self._datapath is None:
            self._datapath = self.kernel.open(self.pin_root)
        if self._datapath is None and required:
            raise StateError(
                f"no firewall is loaded at {self.pin_root}",
                "start one with 'infw attach IFACE' (or 'infw lab up' for the lab)",
            )
        return self._datapath

    def loaded(self) -> bool:
        return self.kernel.is_loaded(self.pin_root)

    def state(self) -> StoredState:
        """The stored desired state, decoded once per change of state.json (consoles poll this)."""
        try:
            st = os.stat(self.store.state_path)
            stamp: tuple[int, int, int] | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            stamp = None
        if stamp is not None and self._state_cache is not None and self._state_cache[0] == stamp:
            return self._state_cache[1]
        stored = self.store.load()
        if stored is None:
            stored = StoredState(0, RuleSet(), {}, "enforce", (), "auto")
        # Trust the stamp only for a file that has been still for a while: a filesystem with
        # coarse timestamps could show two quick same-size writes with one mtime.
        settled = stamp is not None and time.time() - stamp[0] / 1e9 > 1.0
        self._state_cache = (stamp, stored) if stamp is not None and settled else None
        return stored

    def interfaces(self) -> dict[str, int]:
        return self._list_interfaces()

    def guard(self) -> Guard:
        iface = session_interface_for(self.session.server) if self.session else None
        return Guard(self.config.failsafe, self.session, iface)

    def node_split(self, ruleset: RuleSet) -> NodeSplit:
        """The objects whose nodeSelector picks this node (all of them when labels are unknown)."""
        return split_for_node(ruleset, self.config.node_labels)

    def _compile(
        self,
        ruleset: RuleSet,
        ifaces: Mapping[str, int],
        previous_ids: Mapping[RuleKey, int] | None,
        next_id: int | None = None,
    ) -> CompiledTables:
        """Tables of the objects for this node; ids for every stored rule, so an object that is
        not for this node keeps its id (and its counters) until it is. next_id: the store's
        high-water mark, read from the store when not given."""
        if next_id is None:
            next_id = self.state().next_rule_id
        ids = assign_rule_ids(ruleset, previous_ids, next_id)
        # incremental from the last compile in this engine where it can be (same interfaces,
        # fail-safe list and ids), in full otherwise
        tables = self._compiler.compile(
            self.node_split(ruleset).enforced, ifaces, self.config.failsafe, ids
        )
        return replace(tables, rule_ids=ids)

    def _for_this_node(self, stored: StoredState) -> StoredState:
        return replace(stored, ruleset=self.node_split(stored.ruleset).enforced)

    def _object_interfaces(self, ruleset: RuleSet) -> list[str]:
        """The interface names and globs this node's objects name, in order, once each."""
        enforced = self.node_split(ruleset).enforced
        return list(dict.fromkeys(i for fw in enforced.firewalls for i in fw.interfaces))

    def _kernel(self) -> Any:
        """The firewall that runs for this pin root, for a write: the handle already open, the
        pins, or else an orphan of ours (pins removed) pinned again. None when none runs here;
        a program of ours that cannot be reached raises, so a write never goes "stored only"
        past a firewall that keeps filtering."""
        if self._datapath is not None:
            return self._datapath
        if self.loaded():
            return self.datapath()
        orphans = self.kernel.orphans(None, self._named_interfaces())
        if not orphans:
            return None
        if len(orphans) > 1:
            ids = ", ".join(str(o.prog_id) for o in orphans)
            raise DatapathError(
                f"several infw programs run here without pins at {self.pin_root} (ids {ids})",
                "detach the ones you don't want (ip link set dev IFACE xdp off), then attach",
            )
        self.kernel.adopt(self.pin_root, orphans[0].prog_id)
        return self.datapath()

    def _named_interfaces(self) -> list[str]:
        """Interfaces here that the stored attach patterns or this node's objects name (an
        object for other nodes names nothing here: restore would not attach it, so status must
        not call it unfiltered)."""
        stored = self.state()
        patterns = [*stored.interfaces, *self._object_interfaces(stored.ruleset)]
        return match_interfaces(patterns, self.interfaces()) if patterns else []

    def _commit_setting(
        self, dp: LoadedDatapath, stored: StoredState, new: StoredState, summary: str
    ) -> None:
        """Store a change of the node's settings (mode, attach list), not of its rules, and
        stamp the kernel with its generation so status finds the two in step."""
        committed = self.store.commit(
            new, expected_generation=stored.generation, author=author(), summary=summary
        )
        dp.set_generation(committed.generation)

    @staticmethod
    def _enforce(
        dp: LoadedDatapath,
        tables: CompiledTables,
        active_ids: Mapping[RuleKey, int],
        generation: int,
    ) -> None:
        """Make tables live: ids new to the kernel start from zero, then the atomic switch."""
        fresh = set(tables.rule_ids.values()) - set(active_ids.values())
        dp.reset_rule_counters(fresh)
        dp.write_tables(tables, generation)

    def _generation_state(self, generation: int) -> StoredState:
        if generation in self._held_previous:
            return self._held_previous[generation]
        if generation == 0:  # before the first apply: no rules at all
            return StoredState(0, RuleSet(), {}, "enforce", (), "auto")
        return self.store.load_generation(generation)
