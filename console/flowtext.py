"""Text forms of flows, impact previews and capture replays, shared by the CLI, the REPL and
the TUI (one wording everywhere)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from console.render import PLAIN, Style, ago, human_bytes, table

if TYPE_CHECKING:
    from engine import Flow, FlowsView, ImpactPreview, ReplayReport


def flow_cells(f: Flow, now: float | None = None) -> tuple[str, ...]:
    """IFACE, SOURCE, MATCH, PKT/S, PACKETS, BYTES, VERDICT, RULE, LAST SEEN."""
    s = f.stats
    return (
        f.key.interface,
        f.key.source,
        f.key.match_text(),
        f"{s.pps:.1f}",
        f"{'~' if s.rate > 1 else ''}{s.packets}",
        human_bytes(s.bytes),
        s.verdict_text(),
        "-" if s.rule_id is None else str(s.rule_id),
        ago(s.last_seen, now),
    )


FLOW_HEADERS = ("IFACE", "SOURCE", "MATCH", "PKT/S", "PACKETS", "BYTES", "VERDICT", "RULE", "SEEN")


def flows_text(view: FlowsView, style: Style = PLAIN, now: float | None = None) -> str:
    lines = [f"{len(view.flows)} of {view.total} flows; {view.accuracy()}"]
    lines += [f"note: {n}" for n in view.notes]
    if view.flows:
        body = [flow_cells(f, now) for f in view.flows]
        lines.append(
            table(FLOW_HEADERS, body, right=(3, 4, 5, 7), style=style, paint={6: "verdict"})
        )
    return "\n".join(lines)


def impact_text(preview: ImpactPreview, style: Style = PLAIN) -> str:
    """The rule diff, then the flows whose verdict flips, then the one-line summary."""
    lines = list(preview.diff.lines()) or ["(no rule changes)"]
    for change in preview.traffic.newly_denied:
        lines.append(f"{style.verdict('DENY')}  newly: {change.text()}")
    for change in preview.traffic.newly_allowed:
        lines.append(f"{style.verdict('ALLOW')} newly: {change.text()}")
    lines += [line for line in preview.traffic.lines() if line.startswith("...")]
    lines.append(f"impact: {preview.summary()}")
    lines += [f"warning: {w}" for w in preview.warnings]
    return "\n".join(lines)


def replay_text(report: ReplayReport, style: Style = PLAIN, mismatches: int = 50) -> str:
    rows = sorted(report.rows.items(), key=lambda kv: -kv[1].frames)
    body = [
        (label, row.verdict.upper(), str(row.frames), human_bytes(row.bytes)) for label, row in rows
    ]
    lines = [report.summary()]
    if body:
        lines.append(
            table(
                ("DECIDED BY", "VERDICT", "FRAMES", "BYTES"),
                body,
                right=(2, 3),
                style=style,
                paint={1: "verdict"},
            )
        )
    if report.kernel_skipped:
        lines.append(f"{report.kernel_skipped} frames shorter than Ethernet: reference only")
    shown = report.mismatches[:mismatches]
    lines += [f"DIFFERS {m.text()}" for m in shown]
    if len(report.mismatches) > len(shown):
        lines.append(f"... and {len(report.mismatches) - len(shown)} more frames differ (--json)")
    return "\n".join(lines)
