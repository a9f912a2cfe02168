"""The header: node, interfaces and XDP mode, enforce/audit, generation, pending confirm, link state."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.views import Status


def interfaces_text(status: Status) -> Text:
    out = Text()
    if not status.interfaces:
        out.append("not attached", style="bold red" if status.loaded else "dim")
        return out
    for i, view in enumerate(status.interfaces):
        if i:
            out.append(", ")
        out.append(view.name, style="bold")
        out.append(f" {view.mode}", style="dim")
        if not view.ours:
            out.append(" FOREIGN", style="bold magenta")
    return out


def mode_text(mode: str) -> Text:
    if mode == "audit":
        return Text(" AUDIT (would-drop only) ", style="bold black on yellow")
    return Text(" ENFORCE ", style="bold white on dark_green")


class StatusHeader(Static):
    """One line saying where the console is and what the firewall does right now."""

    DEFAULT_CSS = """
    StatusHeader { height: 1; background: $panel; color: $text; }
    """

    def show(self, status: Status | None) -> None:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(" infw ", style="bold reverse")
        if status is None:
            line.append(" connecting…")
            self.update(line)
            return
        line.append(f" {status.node}", style="bold")
        if status.netns:
            line.append(f" (netns {status.netns})", style="dim")
        line.append(" │ ")
        line.append_text(mode_text(status.mode))
        line.append(f" │ gen {status.generation} │ {status.rule_count} rules │ ")
        if not status.loaded:
            line.append("NOT LOADED", style="bold red")
            line.append(" │ ")
        line.append_text(interfaces_text(status))
        if status.read_only:
            line.append(" │ ")
            line.append("READ-ONLY", style="bold cyan")
        self.update(line)


class PendingBanner(Static):
    """Shown only while a commit-confirmed change waits; impossible to miss."""

    DEFAULT_CSS = """
    PendingBanner {
        height: 1; display: none;
        background: $warning; color: $background; text-style: bold;
        content-align: center middle;
    }
    PendingBanner.-urgent { background: $error; color: $text; }
    PendingBanner.-shown { display: block; }
    """

    def show(self, generation: int | None, seconds_left: float, read_only: bool = False) -> None:
        if generation is None:
            self.set_class(False, "-shown")
            return
        self.set_class(True, "-shown")
        self.set_class(seconds_left <= 10, "-urgent")
        keys = "" if read_only else " — c confirm / r revert"
        self.update(
            f"PENDING CONFIRM gen {generation} — {seconds_left:.0f}s left{keys} "
            "(reverts by itself if not confirmed)"
        )


class DisconnectedBanner(Static):
    """Shown while the kernel state can't be read: the numbers on screen are stale."""

    DEFAULT_CSS = """
    DisconnectedBanner {
        height: auto; max-height: 2; display: none;
        background: $error; color: $text; text-style: bold;
    }
    DisconnectedBanner.-shown { display: block; }
    """

    def show(self, problem: str | None) -> None:
        self.set_class(problem is not None, "-shown")
        if problem is not None:
            self.update(f"DISCONNECTED from kernel state: {problem} — counters below are stale")
