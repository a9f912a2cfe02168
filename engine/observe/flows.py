"""Flows as the consoles see them: the kernel's sampled table read into a FlowTable, the impact
preview over it (or over a capture), and a capture replayed through the loaded program."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.core.capture import read_capture
from engine.core.failsafe import FailSafe
from engine.core.flows import Z95, Flow, FlowKey, FlowStats, FlowTable, sampling_error
from engine.core.impact import DEFAULT_TOP, ImpactPreview, RuleDiff, preview_change
from engine.core.model import Action, RuleSet
from engine.core.replay import NON_IP, KernelAnswer, KernelRun, ReplayReport, replay
from engine.errors import StateError
from engine.kernel.flowmap import decode_records
from engine.kernel.seam import XDP_DROP, LoadedDatapath
from engine.observe.events import monotonic_to_epoch
from engine.observe.trace import KERNEL_REASONS
from engine.state.store import StoredState
from engine.views import RuleRow

DEFAULT_WINDOW = 600.0  # seconds of traffic the impact preview looks at (DESIGN §5)


@dataclass(frozen=True)
class FlowsView:
    """What `infw flows` and the Flows view show."""

    flows: tuple[Flow, ...]
    sample_rate: int  # N: 1 in N packets sampled (0: sampling off)
    window: float
    total: int  # flows in the kernel's table, before filters
    notes: tuple[str, ...] = field(default_factory=tuple)

    def accuracy(self) -> str:
        """How far the counts can be off, said once for the table."""
        n = self.sample_rate
        if n == 0:
            return "flow sampling is off (config flowSample: 0)"
        if n == 1:
            return "every packet counted (exact)"
        busiest = max((f.stats.samples for f in self.flows), default=0)
        per_k = 100 * Z95 * math.sqrt((n - 1) / n)
        head = f"1 in {n} packets sampled, counts scaled: ±{per_k:.0f}%/√k at 95% for k samples"
        if not busiest:
            return head
        return f"{head}; busiest flow {sampling_error(n, busiest).text().split(' (')[0]}"

    def to_json(self) -> dict[str, Any]:
        return {
            "sample_rate": self.sample_rate,
            "window": self.window,
            "total": self.total,
            "accuracy": self.accuracy(),
            "notes": list(self.notes),
            "flows": [f.to_json() for f in self.flows],
        }


def kernel_snapshot(
    dp: LoadedDatapath | None, ifnames: Mapping[int, str]
) -> tuple[dict[FlowKey, FlowStats], int, list[str]]:
    """(flows, sample rate, notes) from the loaded program's flows map."""
    if dp is None:
        return {}, 0, ["no firewall is loaded: no flows are recorded"]
    rate = int(dp.config().flow_sample)
    entries = dp.flow_entries()
    if entries is None:
        return (
            {},
            rate,
            ["the loaded build keeps no flows: run `infw reload` (rules and counters are kept)"],
        )
    keys, values, count = entries
    return (
        decode_records(keys, values, count, ifnames, max(1, rate), monotonic_to_epoch()),
        rate,
        [],
    )


class FlowReader:
    """Keeps the previous snapshot, so a console that refreshes gets rates from deltas."""

    def __init__(self, window: float = DEFAULT_WINDOW) -> None:
        self.table = FlowTable(window=window)

    def read(
        self,
        dp: LoadedDatapath | None,
        ifnames: Mapping[int, str],
        *,
        since: float | None = None,
        interface: str | None = None,
        verdict: Action | None = None,
        top: int | None = None,
        now: float | None = None,
    ) -> FlowsView:
        now = time.time() if now is None else now
        snapshot, rate, notes = kernel_snapshot(dp, ifnames)
        self.table.update(snapshot, now)
        flows = self.table.flows(
            now=now, since=since, interface=interface, verdict=verdict, top=top
        )
        return FlowsView(tuple(flows), rate, self.table.window, len(snapshot), tuple(notes))


def preview(
    stored: StoredState,
    proposed: RuleSet,
    flows: Sequence[Flow],
    interfaces: Mapping[str, int],
    failsafe: tuple[FailSafe, ...],
    *,
    top: int = DEFAULT_TOP,
    source: str = "flows",
    replies: bool = False,
) -> ImpactPreview:
    return preview_change(
        stored.ruleset,
        stored.rule_ids,
        proposed,
        flows,
        interfaces=interfaces,
        failsafe=failsafe,
        top=top,
        source=source,
        first_new=stored.next_rule_id,
        replies=replies,
    )


def kernel_runner(dp: LoadedDatapath) -> KernelRun:
    """The loaded program's marked test run (counts nothing) as replay's KernelRun."""

    def run(frame: bytes, ifindex: int) -> KernelAnswer:
        xdp_action, last, _ = dp.test_run(frame, ifindex)
        reason = KERNEL_REASONS.get(int(last.reason), NON_IP)
        return KernelAnswer(xdp_action == XDP_DROP, reason, int(last.rule_id) or None)

    return run


def replay_capture(
    path: str,
    stored: StoredState,
    interfaces: Mapping[str, int],
    failsafe: tuple[FailSafe, ...],
    dp: LoadedDatapath | None,
    interface: str | None,
) -> ReplayReport:
    """Every frame of the capture through the reference and (when loaded) the kernel."""
    iface = interface or _default_interface(stored, interfaces)
    if iface not in interfaces:
        raise StateError(
            f"no interface {iface!r} here to replay the capture on",
            f"give --iface, one of: {', '.join(sorted(interfaces)) or 'none'}",
        )
    return replay(
        read_capture(path),
        stored.ruleset,
        stored.rule_ids,
        interface=iface,
        ifindexes=interfaces,
        failsafe=failsafe,
        kernel=None if dp is None else kernel_runner(dp),
        audit=stored.mode == "audit",
        path=path,
    )


def capture_flows(report: ReplayReport) -> list[Flow]:
    return [Flow(k, s) for k, s in report.flows.items()]


def _default_interface(stored: StoredState, interfaces: Mapping[str, int]) -> str:
    """The one interface the firewall is attached to, when there is exactly one."""
    named = [n for n in stored.interfaces if n in interfaces]
    if len(named) == 1:
        return named[0]
    raise StateError(
        "which interface did the capture come in on?",
        f"give --iface, one of: {', '.join(sorted(interfaces)) or 'none'}",
    )


@dataclass(frozen=True)
class PendingDrops:
    """What a pending change is dropping now: its new or newly denying rules' counters."""

    rule_ids: tuple[int, ...]
    pps: float
    packets: int

    def text(self) -> str:
        if not self.rule_ids:
            return "adds no Deny"
        ids = ", ".join(str(r) for r in self.rule_ids)
        return f"dropping {self.pps:.1f} pkt/s now (rules {ids}; {self.packets} packets)"

    def so_far(self) -> str:
        """The same without a rate (one read, as a one-shot status has)."""
        if not self.rule_ids:
            return "adds no Deny"
        ids = ", ".join(str(r) for r in self.rule_ids)
        return f"its Deny rules {ids} have counted {self.packets} packets"

    def to_json(self) -> dict[str, Any]:
        return {"rule_ids": list(self.rule_ids), "pps": round(self.pps, 3), "packets": self.packets}


def pending_drops(diff: RuleDiff, rows: Sequence[RuleRow]) -> PendingDrops:
    """Sum the counters of the Deny rules the change added, changed to Deny or moved."""
    ids = {r.rule_id for r in diff.added if r.rule.action is Action.DENY}
    ids |= {a.rule_id for b, a in diff.changed if a.rule.action is Action.DENY}
    ids |= {m.after.rule_id for m in diff.moved if m.after.rule.action is Action.DENY}
    hit = [r for r in rows if r.rule_id in ids]
    return PendingDrops(tuple(sorted(ids)), sum(r.rate for r in hit), sum(r.packets for r in hit))
