"""What the consoles show: status, rules with counters and rates, node totals, history,
export, and the drop event stream."""

from __future__ import annotations

import json
import os
import socket
import time

from engine import health
from engine.core import crd
from engine.core.export import dump_documents, export_documents
from engine.core.model import RuleSet
from engine.errors import FirewallUnreachable, InfwError, PrivilegeError, StateError
from engine.kernel.abi import Mode, NodeCounter
from engine.observe.event_source import EventSource
from engine.observe.stats import build_rule_rows
from engine.state.edits import REAP_GRACE_S, EditTransaction
from engine.views import (
    HistoryView,
    InterfaceView,
    NodeTotals,
    Problem,
    RuleRow,
    StatsSnapshot,
    Status,
)


class Snapshot(EditTransaction):
    """Views of the firewall, read from the store and the kernel."""

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
        flow_sample = self.config.flow_sample
        if dp is not None:
            for ifname, ifindex, xmode, prog_id, ours in dp.attached():
                views.append(InterfaceView(ifname, ifindex, xmode, prog_id, ours))
            cfg = dp.config()
            mode = "audit" if cfg.mode == Mode.AUDIT else "enforce"
            generation = int(cfg.generation)
            flow_sample = int(cfg.flow_sample)
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
        agent_text, agent_problem = self._agent_health()
        problems += [agent_problem] if agent_problem is not None else []
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
            agent=agent_text,
            unconfigured=health.unconfigured_text(dp, views) if dp is not None else "",
            flow_sample=flow_sample,
            flow_sample_config=self.config.flow_sample,
        )

    def _agent_health(self) -> tuple[str, Problem | None]:
        from engine.agent import agent_health

        return agent_health(self.pin_root)

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
                unconfigured=pair(NodeCounter.UNCONFIGURED),
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

    def open_events(self, max_per_second: int = 200) -> EventSource:
        return EventSource(self.datapath(), self.interfaces, max_per_second)
