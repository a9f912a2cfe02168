"""The header: node, interfaces and XDP mode, enforce/audit, generation, pending confirm, link state.

Each line is built in a few variants, most detailed first; the first one that fits the terminal
is shown, so 80 columns get a shorter but complete line instead of one cut off mid-word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rich.text import Text
from textual import events
from textual.widgets import Static

from engine import InterfaceView, Status, printable

SEP = " │ "
DOT = " · "


def first_fitting(variants: Iterable[Text], width: int) -> Text:
    """The first variant whose cells fit `width`; else the last one, cut with an ellipsis."""
    last = Text()
    for variant in variants:
        last = variant
        if variant.cell_len <= width:
            return variant
    last.no_wrap = True
    last.overflow = "ellipsis"
    return last


def interfaces_text(status: Status, detail: int = 2) -> Text:
    """The attached interfaces with their XDP mode.

    detail 2: 'infw-n1 native · infw-n2 native'; 1: modes grouped, 'infw-n1, infw-n2 native';
    0: a count, '2 ifaces native'.
    """
    out = Text()
    views = status.interfaces
    if not views:
        out.append("NOT ATTACHED", style="bold red" if status.loaded else "dim")
        return out
    if detail >= 2:
        for i, view in enumerate(views):
            if i:
                out.append(DOT, style="dim")
            _one_interface(out, view)
        return out
    if detail <= 0:
        modes = "/".join(dict.fromkeys(v.mode for v in views))
        out.append(f"{len(views)} iface{'s' if len(views) != 1 else ''}", style="bold")
        out.append(" ")
        out.append(modes, style="dim")
        foreign = sum(1 for v in views if not v.ours)
        if foreign:
            out.append(DOT, style="dim")
            out.append(f"{foreign} FOREIGN", style="bold magenta")
        return out
    groups: dict[tuple[str, bool], list[str]] = {}
    for view in views:
        groups.setdefault((view.mode, view.ours), []).append(printable(view.name))
    for i, ((mode, ours), names) in enumerate(groups.items()):
        if i:
            out.append(DOT, style="dim")
        out.append(", ".join(names), style="bold")
        out.append(" ")
        out.append(mode, style="dim")
        if not ours:
            out.append(" ")
            out.append("FOREIGN", style="bold magenta")
    return out


def _one_interface(out: Text, view: InterfaceView) -> None:
    out.append(printable(view.name), style="bold")
    out.append(" ")
    out.append(view.mode, style="dim")
    if not view.ours:
        out.append(" ")
        out.append("FOREIGN", style="bold magenta")


def mode_text(mode: str, short: bool = False) -> Text:
    if mode == "audit":
        label = " AUDIT " if short else " AUDIT (would-drop only) "
        return Text(label, style="bold black on yellow")
    return Text(" ENFORCE ", style="bold white on dark_green")


def header_variants(status: Status | None) -> list[Text]:
    """The header line, most detailed first."""
    if status is None:
        line = Text()
        line.append(" infw ", style="bold reverse")
        line.append(" connecting…")
        return [line]

    def build(
        *, netns: bool, node_label: bool, short_mode: bool, ifaces: int, badge: bool = True
    ) -> Text:
        line = Text()
        if badge:
            line.append(" infw ", style="bold reverse")
        line.append(" ")
        if node_label:
            line.append("node ", style="dim")
        line.append(status.node, style="bold")
        if netns and status.netns:
            line.append(f" (netns {status.netns})", style="dim")
        line.append(SEP, style="dim")
        line.append_text(mode_text(status.mode, short=short_mode))
        if status.replies:  # the node's own replies pass a Deny: worth a glance
            line.append(DOT, style="dim")
            line.append("replies" if short_mode else "replies on", style="bold")
        line.append(SEP, style="dim")
        line.append(f"gen {status.generation}")
        line.append(DOT, style="dim")
        line.append(f"{status.rule_count} rules")
        line.append(SEP, style="dim")
        if not status.loaded:
            line.append("NOT LOADED", style="bold red")
            line.append(SEP, style="dim")
        if ifaces >= 0:
            if ifaces >= 1 and status.interfaces:
                line.append("XDP ", style="dim")
            line.append_text(interfaces_text(status, ifaces))
        if status.read_only:
            line.append(SEP, style="dim")
            line.append("READ-ONLY", style="bold cyan")
        return line

    plans: list[dict[str, object]] = [
        dict(netns=True, node_label=True, short_mode=False, ifaces=2),
        dict(netns=False, node_label=False, short_mode=False, ifaces=2),
        dict(netns=False, node_label=False, short_mode=True, ifaces=2),
        dict(netns=False, node_label=False, short_mode=True, ifaces=1),
        dict(netns=False, node_label=False, short_mode=True, ifaces=0),
        dict(netns=False, node_label=False, short_mode=True, ifaces=0, badge=False),
    ]
    return [build(**plan) for plan in plans]  # type: ignore[arg-type]


class FittedStatic(Static):
    """A one-line Static that re-picks the variant that fits whenever its width changes."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._variants: Callable[[], list[Text]] = list
        self._shown: Text | None = None

    def set_variants(self, variants: Callable[[], list[Text]]) -> None:
        self._variants = variants
        self._fit()

    def _fit(self) -> None:
        width = self.size.width or (self.app.size.width if self.is_attached else 80)
        chosen = first_fitting(self._variants(), width)
        if self._shown is not None and chosen == self._shown:
            return
        self._shown = chosen
        self.update(chosen, layout=False)  # one line, fixed height: no re-layout

    def on_resize(self, event: events.Resize) -> None:
        self._fit()


class StatusHeader(FittedStatic):
    """One line saying where the console is and what the firewall does right now."""

    def show(self, status: Status | None) -> None:
        self.set_variants(lambda: header_variants(status))


class PendingBanner(FittedStatic):
    """Shown only while a commit-confirmed change waits; impossible to miss."""

    def show(
        self,
        generation: int | None,
        seconds_left: float,
        read_only: bool = False,
        drops: str = "",
    ) -> None:
        """drops: what the pending change drops now, measured from its rules' counters."""
        if generation is None:
            self.set_class(False, "-shown")
            return
        self.set_class(True, "-shown")
        self.set_class(seconds_left <= 10, "-urgent")
        left = f"{seconds_left:.0f}s left"
        keys = "" if read_only else " — c confirm / r revert"
        short_keys = "" if read_only else " — c confirm · r revert"
        self.set_variants(
            lambda: [
                *(
                    [
                        Text(
                            f"PENDING CONFIRM gen {generation} — {left}{keys} — {drops} "
                            "(reverts by itself if not confirmed)"
                        ),
                        Text(f"PENDING CONFIRM gen {generation} — {left}{short_keys} — {drops}"),
                    ]
                    if drops
                    else []
                ),
                Text(
                    f"PENDING CONFIRM gen {generation} — {left}{keys} "
                    "(reverts by itself if not confirmed)"
                ),
                Text(f"PENDING CONFIRM gen {generation} — {left}{short_keys} or it reverts"),
                Text(f"PENDING CONFIRM gen {generation} — {left}{short_keys}"),
                Text(f"PENDING gen {generation} {left}{short_keys}"),
            ]
        )


class DisconnectedBanner(Static):
    """Shown while the kernel state can't be read: the numbers on screen are stale."""

    def show(self, problem: str | None) -> None:
        self.set_class(problem is not None, "-shown")
        if problem is not None:
            self.update(f"DISCONNECTED from kernel state: {problem} — counters below are stale")
