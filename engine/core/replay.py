"""Replay a capture: every frame decided by the reference and, where given, by the kernel.

The kernel side is a callable (the engine hands in the loaded program's marked test run,
which counts nothing), so this module stays pure: it parses, classifies, compares and
collects the capture's flows for the impact preview.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.core.capture import CaptureFrame
from engine.core.classify import Decision, Reason, classify
from engine.core.compiler import RuleKey
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe
from engine.core.flows import FlowKey, FlowStats, merge_flow
from engine.core.frame import ETH_HLEN, parse_frame
from engine.core.model import Action, RuleSet

NON_IP = "non-ip"
XDP_DROP = 1


@dataclass(frozen=True)
class KernelAnswer:
    """What the loaded program said about one marked frame."""

    dropped: bool
    reason: str  # a classify.Reason value, or "non-ip"
    rule_id: int | None


KernelRun = Callable[[bytes, int], KernelAnswer]


@dataclass(frozen=True)
class FrameVerdict:
    action: Action
    reason: str  # a classify.Reason value, or "non-ip"
    rule_id: int | None = None

    def label(self) -> str:
        """The summary row a frame counts in: 'rule 5', 'fail-safe', 'no match'..."""
        return f"rule {self.rule_id}" if self.rule_id is not None else self.reason

    def text(self) -> str:
        return f"{self.action.value.upper()} ({self.label()})"


@dataclass(frozen=True)
class Mismatch:
    index: int
    interface: str
    frame_len: int
    reference: FrameVerdict
    kernel: KernelAnswer
    summary: str  # what the reference parsed, e.g. "192.0.2.1 TCP 443"

    def text(self) -> str:
        k = self.kernel
        kernel = f"{'DROP' if k.dropped else 'PASS'} ({k.reason}, rule {k.rule_id})"
        return (
            f"frame {self.index} on {self.interface} ({self.frame_len} bytes, {self.summary}): "
            f"reference {self.reference.text()}, kernel {kernel}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "frame": self.index,
            "interface": self.interface,
            "length": self.frame_len,
            "parsed": self.summary,
            "reference": {
                "verdict": self.reference.action.value,
                "reason": self.reference.reason,
                "rule_id": self.reference.rule_id,
            },
            "kernel": {
                "dropped": self.kernel.dropped,
                "reason": self.kernel.reason,
                "rule_id": self.kernel.rule_id,
            },
        }


@dataclass
class RowCount:
    verdict: str
    frames: int = 0
    bytes: int = 0


@dataclass
class ReplayReport:
    path: str
    audit: bool
    frames: int = 0
    outgoing: int = 0  # sent by the capturing host: skipped, an ingress filter never sees them
    kernel_ran: bool = False
    kernel_skipped: int = 0  # shorter than an Ethernet header: the kernel harness refuses them
    rows: dict[str, RowCount] = field(default_factory=dict)  # label -> counts
    mismatches: list[Mismatch] = field(default_factory=list)
    flows: dict[FlowKey, FlowStats] = field(default_factory=dict)
    first_time: float | None = None
    last_time: float | None = None

    @property
    def agree(self) -> bool:
        return not self.mismatches

    @property
    def duration(self) -> float:
        if self.first_time is None or self.last_time is None:
            return 0.0
        return self.last_time - self.first_time

    def summary(self) -> str:
        ran = "kernel and reference" if self.kernel_ran else "reference only (nothing loaded)"
        agreement = (
            ""
            if not self.kernel_ran
            else "; kernel == reference on every frame"
            if self.agree
            else f"; {len(self.mismatches)} frames differ"
        )
        skipped = f", {self.outgoing} outgoing skipped" if self.outgoing else ""
        return f"{self.path}: {self.frames} frames{skipped}, {ran}{agreement}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "frames": self.frames,
            "outgoing_skipped": self.outgoing,
            "kernel_ran": self.kernel_ran,
            "kernel_skipped": self.kernel_skipped,
            "agree": self.agree,
            "rows": {
                k: {"verdict": v.verdict, "frames": v.frames, "bytes": v.bytes}
                for k, v in sorted(self.rows.items())
            },
            "mismatches": [m.to_json() for m in self.mismatches],
            "flows": len(self.flows),
        }


def _agrees(ref: FrameVerdict, kernel: KernelAnswer, audit: bool) -> bool:
    if (kernel.reason, kernel.rule_id) != (ref.reason, ref.rule_id):
        return False
    should_drop = ref.action is Action.DENY and not audit
    return kernel.dropped == should_drop


def replay(
    frames: Iterable[CaptureFrame],
    ruleset: RuleSet,
    rule_ids: Mapping[RuleKey, int],
    *,
    interface: str,
    ifindexes: Mapping[str, int],
    failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE,
    kernel: KernelRun | None = None,
    audit: bool = False,
    path: str = "",
    follow_capture_names: bool = True,
) -> ReplayReport:
    """Decide every incoming frame; `interface` is where frames arrive unless the capture
    names one this node has (pcapng) and follow_capture_names is set."""
    report = ReplayReport(path, audit, kernel_ran=kernel is not None)
    cache: dict[FlowKey, Decision] = {}
    for frame in frames:
        if frame.outgoing:
            report.outgoing += 1
            continue
        report.frames += 1
        iface = interface
        if follow_capture_names and frame.interface in ifindexes:
            iface = frame.interface or interface
        if report.first_time is None:
            report.first_time = frame.time
        report.last_time = frame.time
        parsed = parse_frame(frame.data)
        summary = parsed.why
        if parsed.kind == "ip" and parsed.fields is not None:
            key = FlowKey.of_packet(iface, parsed.fields)
            decision = cache.get(key)
            if decision is None:
                decision = classify(ruleset, rule_ids, iface, parsed.fields, failsafe)
                cache[key] = decision
            ref = FrameVerdict(decision.action, decision.reason.value, decision.rule_id)
            merge_flow(
                report.flows,
                key,
                FlowStats(
                    1,
                    len(frame.data),
                    frame.time,
                    frame.time,
                    decision.action,
                    decision.reason,
                    decision.rule_id,
                    samples=1,
                ),
            )
            summary = key.match_text() + f" from {key.source}"
        elif parsed.kind == "unparsed":
            ref = FrameVerdict(Action.ALLOW, Reason.UNPARSED.value)
        else:
            ref = FrameVerdict(Action.ALLOW, NON_IP)
        row = report.rows.setdefault(ref.label(), RowCount(ref.action.value))
        row.frames += 1
        row.bytes += len(frame.data)
        if kernel is not None and len(frame.data) < ETH_HLEN:
            # BPF_PROG_TEST_RUN refuses frames shorter than Ethernet, and no NIC delivers one.
            report.kernel_skipped += 1
        elif kernel is not None:
            answer = kernel(frame.data, ifindexes.get(iface, 0))
            if not _agrees(ref, answer, audit):
                report.mismatches.append(
                    Mismatch(frame.index, iface, len(frame.data), ref, answer, summary)
                )
    _set_capture_rates(report)
    return report


def _set_capture_rates(report: ReplayReport) -> None:
    """A capture's rate is its frames over the capture's span (at least one second)."""
    span = max(report.duration, 1.0)
    for key, stats in list(report.flows.items()):
        report.flows[key] = replace(stats, pps=stats.packets / span)
