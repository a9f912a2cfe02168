"""The Engine facade: the one door between the consoles and the firewall (DESIGN §1).

Edits flow console -> Engine -> guard -> store -> compiler -> datapath; observation flows
kernel -> datapath -> stats/events -> console. Consoles hold no firewall logic.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, TextIO, overload

from engine import health
from engine.core import crd
from engine.core.compiler import (
    CompiledTables,
    RuleKey,
    assign_rule_ids,
    match_interfaces,
)
from engine.core.export import dump_documents, export_documents
from engine.core.guard import Guard, SshSession, raise_if_refused, session_interface_for
from engine.core.impact import DEFAULT_TOP, ImpactPreview, diff_rules
from engine.core.incremental import IncrementalCompiler
from engine.core.model import (
    ORDER_MAX,
    ORDER_MIN,
    Action,
    RuleSet,
    add_rule,
    remove_rule,
    rule_conflict,
)
from engine.core.parity import operator_failsafe_refusals
from engine.core.replay import ReplayReport
from engine.core.ruleline import DEFAULT_FIREWALL, RuleLine, format_rule_line, parse_rule_line
from engine.core.selector import NodeSplit, split_for_node
from engine.core.yamlfile import read_stdin
from engine.errors import (
    ConfirmExpired,
    DatapathError,
    FieldError,
    FirewallUnreachable,
    InfwError,
    PrivilegeError,
    StateError,
    ValidationError,
)
from engine.kernel.abi import DEFAULT_PIN_ROOT as DEFAULT_PIN_ROOT
from engine.kernel.abi import REPLIES_MAX_ENTRIES, DropEventRecord, Mode, NodeCounter
from engine.kernel.host import HostKernel
from engine.kernel.seam import Kernel, LoadedDatapath
from engine.observe import trace as observe_trace
from engine.observe.events import EventBuffer, decode_event, monotonic_to_epoch
from engine.observe.flows import (
    DEFAULT_WINDOW,
    FlowReader,
    FlowsView,
    PendingDrops,
    capture_flows,
    pending_drops,
    replay_capture,
)
from engine.observe.flows import preview as flow_preview
from engine.observe.stats import RateTracker, build_rule_rows
from engine.state.config import NodeConfig, load_config
from engine.state.store import ChangeKind, Pending, Store, StoredState, author
from engine.state.transaction import Rollback, signals_held
from engine.views import (
    ApplyResult,
    DropEvent,
    HistoryView,
    InterfaceView,
    NodeTotals,
    PendingView,
    Problem,
    RepliesView,
    RuleRow,
    StatsSnapshot,
    Status,
    TraceRequest,
    TraceResult,
)

if TYPE_CHECKING:
    from engine.connect import ConnectOptions

Progress = Callable[[str], None]
# An edit: the stored state -> (the rule set to apply, its history summary).
Change = Callable[[StoredState], tuple[RuleSet, str]]


def _quiet(_: str) -> None:
    return None


class Engine:
    """Everything a console can do to the node's firewall."""

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
        # edits in a long-lived engine (console, REPL, agent) recompile only what they touch
        self._compiler = IncrementalCompiler()

    # ----------------------------------------------------------------- plumbing

    def _require_write(self, what: str) -> None:
        if self.read_only:
            raise PrivilegeError(
                f"cannot {what}: this console is read-only",
                "start it without --read-only to make changes",
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
    ) -> CompiledTables:
        """Tables of the objects for this node; ids for every stored rule, so an object that is
        not for this node keeps its id (and its counters) until it is."""
        ids = assign_rule_ids(ruleset, previous_ids, self.state().next_rule_id)
        # incremental from the last compile in this engine where it can be (same interfaces,
        # fail-safe list and ids), in full otherwise
        tables = self._compiler.compile(
            self.node_split(ruleset).enforced, ifaces, self.config.failsafe, ids
        )
        return replace(tables, rule_ids=ids)

    # ----------------------------------------------------------------- views

    def status(self) -> Status:
        """The truth about the firewall: what the kernel runs, what the store holds, and every
        problem found between them (Status.problems, each with the command that repairs it)."""
        problems: list[Problem] = []
        reverted = ""
        try:
            reverted = self._reap_expired()
        except InfwError as exc:
            kind = "store" if isinstance(exc, StateError) else "kernel"
            problems.append(Problem(kind, exc.message, exc.fix))
        stored = self.state()
        labels = self.config.node_labels
        split = self.node_split(stored.ruleset)
        dp = None
        try:
            dp = self.datapath(required=False) if self.loaded() else None
        except InfwError as exc:
            problems.append(Problem("kernel", exc.message, exc.fix))
        views: list[InterfaceView] = []
        mode = stored.mode
        generation = stored.generation
        if dp is not None:
            for ifname, ifindex, xmode, prog_id, ours in dp.attached():
                views.append(InterfaceView(ifname, ifindex, xmode, prog_id, ours))
            cfg = dp.config()
            mode = "audit" if cfg.mode == Mode.AUDIT else "enforce"
            generation = int(cfg.generation)
        pending = self.store.get_pending()
        wd_text = ""
        if pending is not None:
            pid = pending.watchdog_pid or self.kernel.watchdog.find(
                self.state_dir, pending.generation
            )
            wd_text, problem = health.watchdog_problem(
                pending, pid, self.kernel.watchdog.state(pid), time.time(), REAP_GRACE_S
            )
            if problem is not None:
                problems.append(problem)
        named = self._named_interfaces()
        orphans = self.kernel.orphans(dp.prog_id if dp is not None else None, named)
        problems += health.orphan_problems(orphans)
        if dp is not None:
            problems += health.drift_problems(generation, stored.generation, pending)
            problems += health.unfiltered_problems(
                dp,
                self._compile(stored.ruleset, self.interfaces(), stored.rule_ids),
                named,
                views,
            )
        return Status(
            node=socket.gethostname(),
            loaded=dp is not None,
            pin_root=self.pin_root,
            mode=mode,
            generation=generation,
            rule_count=stored.ruleset.rule_count(),
            interfaces=tuple(views),
            pending=self.pending(),
            failsafe=tuple(str(fs) for fs in self.config.failsafe),
            read_only=self.read_only,
            netns=self.netns,
            store_generation=stored.generation,
            problems=tuple(problems),
            reverted=reverted,
            watchdog=wd_text,
            node_labels=None if labels is None else dict(labels),
            not_for_node=tuple(fw.name for fw in split.other_nodes),
            replies=dp.replies().enabled if dp is not None else self.config.replies.enabled,
            agent=self._agent_text(),
        )

    def _agent_text(self) -> str:
        from engine.agent import agent_pid

        pid = agent_pid(self.pin_root)
        return f"running pid {pid}" if pid else ""

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

    def ruleset(self) -> RuleSet:
        return self.state().ruleset

    def export_yaml(self) -> str:
        return crd.dump_yaml(self.ruleset())

    def export(self, *, as_json: bool = False) -> str:
        """The stored rules in forms the operator admits: YAML, or (as_json) a v1 List (JSON is
        YAML, so `infw apply` takes either file back as it is). `export_notes` says what had
        to change on the way."""
        docs = export_documents(self.ruleset()).documents
        if not as_json:
            return dump_documents(docs)
        return (
            json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}, indent=2) + "\n"
        )

    def export_notes(self) -> tuple[str, ...]:
        """What an export changes or leaves out, and what the operator reads differently."""
        return export_documents(self.ruleset()).notes

    @staticmethod
    def admit_rules(path: str, stdin: TextIO | None = None) -> crd.Admission:
        """A rule file through the operator's admission ("-" reads stdin): rules and warnings."""
        if path == "-":
            text = (stdin or sys.stdin).read() if stdin is not None else read_stdin()
            return crd.admit_yaml(text, "<stdin>")
        return crd.admit_file(path)

    @classmethod
    def read_rules(cls, path: str, stdin: TextIO | None = None) -> RuleSet:
        """A rule file (YAML, one or more IngressNodeFirewall documents); "-" reads stdin."""
        return cls.admit_rules(path, stdin).ruleset

    def validate_file(self, path: str, stdin: TextIO | None = None) -> tuple[RuleSet, list[str]]:
        """Read and check a rule file against this node and the guard; applies nothing. The
        warnings say where the file means something else here than in the operator."""
        admitted = self.admit_rules(path, stdin)
        _, warnings = self.check(admitted.ruleset)
        return admitted.ruleset, [*admitted.warnings, *warnings]

    def apply_file(self, path: str, stdin: TextIO | None = None, **kwargs: Any) -> ApplyResult:
        """apply() the rules of a file ("-": stdin); the history names the file."""
        admitted = self.admit_rules(path, stdin)
        name = "stdin" if path == "-" else os.path.basename(path)
        kwargs.setdefault("summary", f"apply {name}")
        result = self.apply(admitted.ruleset, **kwargs)
        return replace(result, warnings=(*admitted.warnings, *result.warnings))

    def serve_metrics(self, listen: str | None = None, *, allow_public: bool = False) -> Any:
        """The Prometheus exporter on listen (default: the config's metrics_listen), in a
        daemon thread; a non-loopback address only with allow_public."""
        from engine.observe.metrics import serve_metrics

        return serve_metrics(self, listen or self.config.metrics_listen, allow_public=allow_public)

    def lock_holder(self) -> int | None:
        """The pid of the console holding the store lock right now (0: unknown), or None."""
        return self.store.busy_holder()

    # ----------------------------------------------------------------- opening

    @staticmethod
    def connect(options: ConnectOptions, *, kernel: Kernel | None = None) -> Engine:
        """The Engine a console's options name (--pin-root, --state-dir, --netns, --lab)."""
        from engine.connect import connect

        return connect(options, kernel=kernel)

    @staticmethod
    def open_lab(
        read_only: bool = False, progress: Progress = _quiet, *, kernel: Kernel | None = None
    ) -> Engine:
        """The lab's engine, bringing the lab and its firewall up when needed."""
        from engine.connect import open_lab

        return open_lab(read_only, progress, kernel=kernel)

    def is_lab(self) -> bool:
        """This engine looks at the lab's firewall."""
        from engine.lab.world import LAB_PIN_ROOT

        return os.path.normpath(self.pin_root) == os.path.normpath(LAB_PIN_ROOT)

    def start_lab_firewall(self, progress: Progress = _quiet) -> list[str]:
        """Give the lab its example rules and attach them, unless a firewall runs already;
        returns the interfaces ours runs on."""
        from engine.lab.firewall import start_lab_firewall

        return start_lab_firewall(self, progress)

    def rule_rows(
        self,
        counters: dict[int, tuple[int, int]] | None = None,
        rates: dict[int, tuple[float, float | None]] | None = None,
    ) -> list[RuleRow]:
        stored = self.state()
        return build_rule_rows(stored.ruleset, stored.rule_ids, counters or {}, rates or {})

    def stats(self) -> StatsSnapshot:
        """The kernel's counters now; FirewallUnreachable when there is no datapath to read
        (the stored rules alone are rule_rows())."""
        now = time.time()
        dp = self.datapath(required=False) if self.loaded() else None
        if dp is None:
            if os.path.isdir(self.pin_root) and not os.access(self.pin_root, os.R_OK | os.X_OK):
                # 'not loaded' would be a lie: the pins may be there, we may not look.
                raise PrivilegeError(
                    f"cannot read the pins at {self.pin_root}: permission denied",
                    "reading the kernel's counters needs root (CAP_BPF): run it with sudo",
                )
            raise FirewallUnreachable(
                f"no firewall is loaded at {self.pin_root} (no pins there)",
                "start one with 'infw attach IFACE' (or 'infw lab up'); "
                "'infw rules' shows the stored rules",
            )
        counters: dict[int, tuple[int, int]] = {}
        totals = NodeTotals()
        generation = self.state().generation
        if dp is not None:
            counters = dp.rule_counters(max(self.state().rule_ids.values(), default=0))
            node = dp.node_counters()

            def pair(c: NodeCounter) -> tuple[int, int]:
                packets, nbytes = node.get(c, (0, 0))
                return int(packets), int(nbytes)

            totals = NodeTotals(
                allowed=pair(NodeCounter.ALLOW),
                denied=pair(NodeCounter.DENY),
                would_deny=pair(NodeCounter.WOULD_DENY),
                failsafe=pair(NodeCounter.FAILSAFE),
                no_match=pair(NodeCounter.NO_MATCH),
                unparsed=pair(NodeCounter.UNPARSED),
                events_sent=pair(NodeCounter.EVENTS_SENT)[0],
                events_suppressed=pair(NodeCounter.EVENTS_SUPPRESSED)[0],
                events_lost=pair(NodeCounter.EVENTS_LOST)[0],
                reply_allowed=pair(NodeCounter.REPLY_ALLOWED),
                replies_recorded=pair(NodeCounter.REPLY_RECORDED)[0],
            )
            generation = int(dp.config().generation)
        rows = self.rule_rows(counters, self._rates.update(counters, now))
        return StatsSnapshot(now, tuple(rows), totals, generation)

    def history(self, limit: int = 50) -> list[HistoryView]:
        current = self.state().generation
        return [
            HistoryView(h.generation, h.time, h.author, h.summary, h.generation == current)
            for h in self.store.history(limit)
        ]

    # ----------------------------------------------------------------- edits

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
        warnings += [
            f"the operator refuses {n}"
            for n in operator_failsafe_refusals(ruleset, self.config.failsafe)
        ]
        for fw in split.enforced.firewalls:
            if not match_interfaces(fw.interfaces, ifaces):
                warnings.append(f"{fw.name}: no interface here matches {', '.join(fw.interfaces)}")
        return tables, bool(refusals), warnings

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
        progress: Progress = _quiet,
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
            if plan:
                merged = tuple(dict.fromkeys((*stored.interfaces, *plan)))
                new_state = replace(new_state, interfaces=merged, attach_mode=attach_mode)
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

    def _edit(self, change: Change, **kwargs: Any) -> ApplyResult:
        """Read, change and apply under the store lock, so two consoles never lose an edit."""
        with self.store.lock():
            stored = self.state()
            ruleset, summary = change(stored)
            kwargs.setdefault("expected_generation", stored.generation)
            return self.apply(ruleset, summary=summary, **kwargs)

    def add_rule(self, line: str | RuleLine, **kwargs: Any) -> ApplyResult:
        return self._edit(self._added(line), **kwargs)

    def _added(self, line: str | RuleLine) -> Change:
        def change(stored: StoredState) -> tuple[RuleSet, str]:
            parsed = self._resolve_line(stored, line)
            self._refuse_conflict(stored, parsed, None)
            new = add_rule(
                stored.ruleset, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule
            )
            crd.check_ruleset(new, f"rule in {parsed.firewall}")  # the webhook's order check
            return new, f"add {parsed.firewall} order {parsed.rule.order}"

        return change

    def check_rule(
        self, line: str | RuleLine, rule_id: int | None = None, *, force: bool = False
    ) -> list[str]:
        """The dry run of add_rule (or, with rule_id, edit_rule): the same rule set those would
        apply, through the same conflict checks and guard; applies nothing. Raises what the
        apply would raise (ValidationError, GuardRefusal); returns its warnings."""
        change = self._added(line) if rule_id is None else self._edited(rule_id, line)
        ruleset, _ = change(self.state())
        _, warnings = self.check(ruleset, force=force)
        return warnings

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
        if not interfaces:
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
        return replace(parsed, interfaces=interfaces)

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
        return self._edit(self._edited(rule_id, line), **kwargs)

    def _edited(self, rule_id: int, line: str | RuleLine) -> Change:
        def change(stored: StoredState) -> tuple[RuleSet, str]:
            row = self._find_rule(rule_id, stored)
            parsed = self._resolve_line(stored, line, row)
            self._refuse_conflict(stored, parsed, row)
            new = remove_rule(stored.ruleset, row.firewall, row.cidrs, row.order)
            new = add_rule(new, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
            crd.check_ruleset(new, f"rule {rule_id}")
            return new, f"edit rule {rule_id}"

        return change

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
        if self._kernel() is None:
            raise StateError(
                f"no firewall is loaded at {self.pin_root}: nothing to revert",
                "apply with --confirm-timeout 0, or attach first",
            )

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
        """Interfaces here that the stored attach patterns or the objects name."""
        stored = self.state()
        patterns = [
            *stored.interfaces,
            *(i for fw in stored.ruleset.firewalls for i in fw.interfaces),
        ]
        return match_interfaces(patterns, self.interfaces()) if patterns else []

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

    def set_mode(self, mode: str, *, force: bool = False) -> str:
        self._require_write("switch mode")
        if mode not in ("enforce", "audit"):
            raise StateError(f"unknown mode {mode!r}", "use 'enforce' or 'audit'")
        with self.store.lock():
            stored = self.state()
            if mode == "enforce" and stored.mode != "enforce":
                # Audit skipped the session check: enforcing must not start dropping our own SSH.
                refusals = self.guard().check_lockout(
                    self.node_split(stored.ruleset).enforced, stored.rule_ids, self.interfaces()
                )
                raise_if_refused(refusals, force)
            dp = self.datapath()
            dp.set_mode(Mode.AUDIT if mode == "audit" else Mode.ENFORCE)
            if stored.mode != mode:
                new = self.store.commit(
                    replace(stored, mode=mode),
                    expected_generation=stored.generation,
                    author=author(),
                    summary=f"mode {mode}",
                )
                dp.set_generation(new.generation)
        return mode

    # ----------------------------------------------------------------- replies

    def replies(self) -> RepliesView:
        """Replies to the node's own connections: on or off, timeouts, the flow table."""
        dp = self.datapath(required=False) if self.loaded() else None
        settings = dp.replies() if dp is not None else self.config.replies
        node = dp.node_counters() if dp is not None else {}
        held = dp.replies_held() if dp is not None else 0
        recorded = int(node.get(NodeCounter.REPLY_RECORDED, (0, 0))[0])
        return RepliesView(
            enabled=settings.enabled,
            tcp_timeout=settings.tcp_timeout,
            udp_timeout=settings.udp_timeout,
            icmp_timeout=settings.icmp_timeout,
            held=held,
            capacity=REPLIES_MAX_ENTRIES,
            recorded=recorded,
            evicted=max(0, recorded - held),
            allowed=int(node.get(NodeCounter.REPLY_ALLOWED, (0, 0))[0]),
        )

    def set_replies(self, enabled: bool) -> RepliesView:
        """Let replies to the node's own connections pass a Deny (on) or not (off), on the
        running firewall, with config.yaml's timeouts. Node-local: the rule files are not
        touched; the setting lives in the firewall's pins, so a reload keeps it."""
        self._require_write("switch replies")
        self._require_root("attach the egress recorder")
        self.datapath().set_replies(replace(self.config.replies, enabled=enabled))
        return self.replies()

    # ----------------------------------------------------------------- attach

    def attach(
        self,
        patterns: Sequence[str],
        *,
        mode: str = "auto",
        force: bool = False,
        progress: Progress = _quiet,
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
                new = self.store.commit(
                    replace(stored, interfaces=merged, attach_mode=mode),
                    expected_generation=stored.generation,
                    author=author(),
                    summary=f"attach {', '.join(patterns)}",
                )
                dp.set_generation(new.generation)
        return [v for v in self.status().interfaces if v.name in names]

    def detach(self, patterns: Sequence[str] | None = None) -> list[str]:
        """Detach from matching interfaces; with none given, detach everywhere and remove pins."""
        self._require_write("detach")
        # Under the store lock, kernel and store together: the agent (which follows the stored
        # patterns under the same lock) never sees the program gone and the pattern still there.
        with self.store.lock():
            if not self.loaded():
                return []
            dp = self.datapath()
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
                new = self.store.commit(
                    replace(stored, interfaces=kept),
                    expected_generation=stored.generation,
                    author=author(),
                    summary=f"detach {', '.join(patterns)}",
                )
                dp.set_generation(new.generation)
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

    def restore(self, progress: Progress = _quiet, *, attach: bool = True) -> Status:
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

    def _object_interfaces(self, ruleset: RuleSet) -> list[str]:
        """The interface names and globs this node's objects name, in order, once each."""
        enforced = self.node_split(ruleset).enforced
        return list(dict.fromkeys(i for fw in enforced.firewalls for i in fw.interfaces))

    def reload(self, progress: Progress = _quiet) -> Status:
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

    def _require_root(self, what: str) -> None:
        if not self.kernel.has_privileges():
            raise PrivilegeError(
                f"cannot {what}: needs CAP_BPF and CAP_NET_ADMIN",
                "run as root (sudo); --read-only never changes anything but still needs CAP_BPF",
            )

    # ----------------------------------------------------------------- observe

    def open_events(self, max_per_second: int = 200) -> EventSource:
        return EventSource(self.datapath(), self.interfaces, max_per_second)

    def trace(
        self,
        interface: str,
        src: str,
        proto: str,
        dport: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
        *,
        dst: str | None = None,
        vlan: tuple[int, ...] = (),
        fragment: bool = False,
        sport: int = 40000,
        reply: bool = False,
    ) -> TraceResult:
        """Decide a built packet twice: the reference classifier and the loaded kernel program
        (reply: explain it as a reply to a connection the node opened)."""
        req = TraceRequest(
            interface,
            src,
            proto,
            dport,
            icmp_type,
            icmp_code,
            dst,
            tuple(vlan),
            fragment,
            sport,
            reply,
        )
        return self._trace(req)

    @staticmethod
    def check_trace(req: TraceRequest) -> None:
        """Refuse (RequestError) a packet that cannot exist: ports on ICMP, ICMP from IPv6..."""
        observe_trace.check_trace(req)

    def trace_packet(self, req: TraceRequest) -> TraceResult:
        """check_trace, then trace: what the CLI, the REPL and the TUI dialog ask."""
        observe_trace.check_trace(req)
        return self._trace(req)

    def _trace(self, req: TraceRequest) -> TraceResult:
        dp = self.datapath() if self.loaded() else None
        # Only the objects for this node decide its packets, here as in the kernel.
        mine = self._for_this_node(self.state())
        return observe_trace.trace(mine, self.interfaces(), self.config.failsafe, dp, req)

    # ----------------------------------------------------------------- flows and impact

    def flows(
        self,
        *,
        since: float | None = None,
        interface: str | None = None,
        verdict: str | None = None,
        top: int | None = None,
    ) -> FlowsView:
        """The kernel's sampled flows, busiest first; a console that calls again gets rates
        from the difference (the first call: each flow's average since first seen)."""
        wanted = None if verdict is None else _parse_verdict(verdict)
        dp = self.datapath(required=False) if self.loaded() else None
        ifnames = {v: k for k, v in self.interfaces().items()}
        return self._flow_reader.read(
            dp, ifnames, since=since, interface=interface, verdict=wanted, top=top
        )

    def set_flow_sample(self, rate: int) -> None:
        """Sample 1 in rate packets into the flows map (0: off), until the next reload."""
        self._require_write("change flow sampling")
        self.datapath().set_flow_sample(rate)

    def preview(
        self,
        proposed: RuleSet,
        *,
        capture: str | None = None,
        interface: str | None = None,
        since: float = DEFAULT_WINDOW,
        top: int = DEFAULT_TOP,
    ) -> ImpactPreview:
        """What replacing the rules by `proposed` does: the rule diff and, over the flows seen
        in the last `since` seconds (or every frame of a capture), the verdicts that change."""
        # Only the objects for this node decide its packets, before and after the change.
        stored = self._for_this_node(self.state())
        proposed = self.node_split(proposed).enforced
        ifaces = self.interfaces()
        if capture is not None:
            report = replay_capture(capture, stored, ifaces, self.config.failsafe, None, interface)
            flows = capture_flows(report)
            source = f"capture {os.path.basename(capture)}, {report.frames} frames"
        else:
            view = self.flows(since=since, interface=interface)
            flows = list(view.flows)
            source = f"flows of the last {since:.0f}s"
            if view.sample_rate > 1:
                source += f", 1 in {view.sample_rate} sampled"
        return flow_preview(
            stored, proposed, flows, ifaces, self.config.failsafe, top=top, source=source
        )

    def preview_file(self, path: str, stdin: TextIO | None = None, **kwargs: Any) -> ImpactPreview:
        """`infw diff FILE` and `apply --dry-run`: the file checked as apply would, previewed."""
        ruleset, _ = self.validate_file(path, stdin)
        return self.preview(ruleset, **kwargs)

    def preview_add(self, line: str | RuleLine, **kwargs: Any) -> ImpactPreview:
        return self._preview_change(self._added(line), **kwargs)

    def preview_edit(self, rule_id: int, line: str | RuleLine, **kwargs: Any) -> ImpactPreview:
        return self._preview_change(self._edited(rule_id, line), **kwargs)

    def preview_delete(self, rule_id: int, **kwargs: Any) -> ImpactPreview:
        return self._preview_change(self._deleted(rule_id), **kwargs)

    def _preview_change(self, change: Change, **kwargs: Any) -> ImpactPreview:
        """The dry run of an edit: the rule set it would apply, checked, then previewed."""
        ruleset, _ = change(self.state())
        self.check(ruleset, force=bool(kwargs.pop("force", False)))
        return self.preview(ruleset, **kwargs)

    def trace_pcap(self, path: str, interface: str | None = None) -> ReplayReport:
        """Every frame of a capture through the loaded program (marked: counts nothing) and
        the reference; the frames where they differ are listed."""
        dp = self.datapath() if self.loaded() else None
        stored = self._for_this_node(self.state())
        return replay_capture(path, stored, self.interfaces(), self.config.failsafe, dp, interface)

    def _for_this_node(self, stored: StoredState) -> StoredState:
        return replace(stored, ruleset=self.node_split(stored.ruleset).enforced)

    def pending_drops(self, snapshot: StatsSnapshot) -> PendingDrops | None:
        """While a change is pending: what its new or newly denying rules drop now, measured
        from their counters in `snapshot`."""
        p = self.store.get_pending()
        if p is None:
            return None
        before = self._generation_state(p.previous_generation)
        after = self.state()
        diff = diff_rules(before.ruleset, before.rule_ids, after.ruleset, after.rule_ids)
        return pending_drops(diff, snapshot.rules)


def _parse_verdict(text: str) -> Action:
    try:
        return Action.parse(text)
    except ValueError:
        raise StateError(f"unknown verdict {text!r}", "use allow or deny") from None


@dataclass(frozen=True)
class _Attach:
    """What an apply attaches (the interfaces its objects name), and how."""

    names: tuple[str, ...]
    mode: str = "auto"
    force: bool = False
    progress: Progress = _quiet


REAP_GRACE_S = 3.0  # past the deadline, a live watchdog is given this long to act itself


class EventSource:
    """Drop events from the pinned ring buffer, sampled into a bounded buffer."""

    def __init__(
        self,
        datapath: LoadedDatapath,
        interfaces: Callable[[], dict[str, int]],
        max_per_second: int,
    ) -> None:
        self.buffer = EventBuffer(max_per_second=max_per_second)
        self._interfaces = interfaces
        self._ifnames = {v: k for k, v in interfaces().items()}
        self._datapath = datapath
        self._clock_offset = monotonic_to_epoch()
        datapath.open_events(self._on_record)

    def _on_record(self, record: DropEventRecord) -> None:
        if record.ifindex not in self._ifnames:
            self._ifnames = {v: k for k, v in self._interfaces().items()}
            # Remember a vanished interface too, so a flood from it costs one netlink dump.
            self._ifnames.setdefault(record.ifindex, f"if{record.ifindex}")
        self.buffer.add(decode_event(record, self._ifnames, self._clock_offset))

    def other_reader(self) -> int | None:
        """The pid of another console reading drop events: the ring buffer has one consumer
        position, so each reader then sees only part of the events."""
        pid = self._datapath.other_reader_pid()
        return int(pid) if pid else None

    def poll(self, timeout_ms: int = 100) -> list[DropEvent]:
        self._clock_offset = monotonic_to_epoch()  # once per batch, not per event
        self._datapath.poll_events(timeout_ms)
        return self.buffer.drain()
