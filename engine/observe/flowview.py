"""Flows and the impact preview through the Engine: who is hitting this node, and what a
change would drop before it lands (DESIGN §5)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from engine.base import Change
from engine.core.impact import DEFAULT_TOP, ImpactPreview, diff_rules
from engine.core.model import Action, RuleSet
from engine.core.replay import ReplayReport
from engine.core.ruleline import RuleLine
from engine.errors import RequestError, StateError
from engine.kernel.abi import MAX_FLOW_SAMPLE
from engine.observe.flows import (
    DEFAULT_WINDOW,
    FlowsView,
    PendingDrops,
    capture_flows,
    pending_drops,
    replay_capture,
)
from engine.observe.flows import preview as flow_preview
from engine.state.rule_edits import RuleChange, RuleEdits
from engine.views import StatsSnapshot


class FlowViews(RuleEdits):
    """Flows, replays and impact previews."""

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
        view = self._flow_reader.read(
            dp, ifnames, since=since, interface=interface, verdict=wanted, top=top
        )
        # A misspelt --iface must not read as "no traffic"; a gone interface's flows still show.
        if interface is not None and not view.flows and interface not in ifnames.values():
            raise RequestError(
                f"no interface {interface!r} on this node",
                f"give --iface, one of: {', '.join(sorted(ifnames.values())) or 'none'}",
                field="iface",
            )
        return view

    def set_flow_sample(self, rate: int) -> int:
        """Sample 1 in rate packets into the flows map (0: off), until the next load; returns
        the rate it replaces (the map keeps sample counts, not the rate they were taken at, so
        a console can say that the counts already there are now scaled by the new one)."""
        self._require_write("change flow sampling")
        if not 0 <= rate <= MAX_FLOW_SAMPLE:
            raise StateError(
                f"flow sample rate {rate} is out of range",
                f"give N in 0..{MAX_FLOW_SAMPLE} (1 in N packets; 1 every packet, 0 off)",
            )
        dp = self.datapath()
        previous = int(dp.config().flow_sample)
        dp.set_flow_sample(rate)
        return previous

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
            stored,
            proposed,
            flows,
            ifaces,
            self.config.failsafe,
            top=top,
            source=source,
            replies=self._replies_on(),
        )

    def _replies_on(self) -> bool:
        """Whether the kernel passes replies now (the config's setting when nothing runs)."""
        dp = self.datapath(required=False) if self.loaded() else None
        return dp.replies().enabled if dp is not None else self.config.replies.enabled

    def preview_add(self, line: str | RuleLine, **kwargs: Any) -> ImpactPreview:
        return self._preview_change(self._added(line), **kwargs)

    def preview_edit(self, rule_id: int, line: str | RuleLine, **kwargs: Any) -> ImpactPreview:
        return self._preview_change(self._edited(rule_id, line), **kwargs)

    def preview_delete(self, rule_id: int, **kwargs: Any) -> ImpactPreview:
        return self._preview_change(self._deleted(rule_id), **kwargs)

    def _preview_change(self, change: Change, **kwargs: Any) -> ImpactPreview:
        """The dry run of an edit: the rule set it would apply, checked, then previewed, with
        the warnings the apply would give (the rule line's own first)."""
        ruleset, _ = change(self.state())
        _, warnings = self.check(ruleset, force=bool(kwargs.pop("force", False)))
        notes = change.warnings if isinstance(change, RuleChange) else ()
        return replace(self.preview(ruleset, **kwargs), warnings=(*notes, *warnings))

    def trace_pcap(self, path: str, interface: str | None = None) -> ReplayReport:
        """Every frame of a capture through the loaded program (marked: counts nothing) and
        the reference; the frames where they differ are listed."""
        dp = self.datapath() if self.loaded() else None
        stored = self._for_this_node(self.state())
        return replay_capture(path, stored, self.interfaces(), self.config.failsafe, dp, interface)

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
