"""The one key table of the main screen: its bindings, the footer's ranking, `?` help and the
command palette are all built from it, so a key can't be bound in one place and missing in another.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    """One key of the main screen (or, with no binding, a line of help about a global key)."""

    key: str  # Textual's key name ("a", "slash", "plus"); "" for a help-only line
    action: str  # the app action it runs, with arguments ("reorder(1)")
    label: str = ""  # the footer's word
    help: str = ""  # its line in `?` help; "" when another key's line covers it
    shown: str = ""  # how help writes the key(s); the key itself by default
    palette: str = ""  # the command palette's title; "" keeps it out of the palette
    palette_help: str = ""
    footer: bool = True  # listed in the footer (when there is room)
    rank: int = 99  # lower stays in the footer longer when room is short

    @property
    def name(self) -> str:
        """The action without its arguments ("reorder"), as check_action sees it."""
        return self.action.split("(", 1)[0]


# In footer order (left to right); help lists them in the same order.
KEYS: tuple[Key, ...] = (
    Key(
        "a",
        "add",
        "Add",
        "add a rule (form with inline validation; applies commit-confirmed)",
        palette="Add rule",
        palette_help="open the rule form",
        rank=2,
    ),
    Key(
        "e",
        "edit",
        "Edit",
        "edit the selected rule",
        palette="Edit rule",
        palette_help="edit the selected rule",
        rank=3,
    ),
    Key(
        "d",
        "delete",
        "Delete",
        "delete the selected rule (asks first)",
        palette="Delete rule",
        palette_help="delete the selected rule",
        rank=4,
    ),
    Key(
        "c",
        "confirm",
        "Confirm",
        "confirm the pending change (only while one is pending)",
        palette="Confirm pending change",
        palette_help="keep the pending generation",
        rank=0,
    ),
    Key(
        "r",
        "revert",
        "Revert",
        "revert the pending change at once (only while one is pending)",
        palette="Revert pending change",
        palette_help="drop the pending generation now",
        rank=1,
    ),
    Key(
        "slash",
        "filter",
        "Filter",
        "filter the focused pane (rules table or drop events); esc clears",
        shown="/",
        palette="Filter",
        palette_help="filter the focused pane",
        rank=7,
    ),
    Key(
        "f",
        "flows",
        "Flows",
        "flows view: who is hitting the node, by pkts/s (d deny source, a allow port, t trace; f back)",
        palette="Flows",
        palette_help="top flows with verdict and rule",
        rank=6,
    ),
    Key(
        "t",
        "trace",
        "Trace",
        "trace a packet: kernel and reference verdicts with the deciding rule",
        palette="Trace a packet",
        palette_help="kernel and reference verdicts",
        rank=8,
    ),
    Key(
        "i",
        "interfaces",
        "Ifaces",
        "interfaces: attach, detach, XDP mode, foreign programs",
        palette="Interfaces",
        palette_help="attach, detach, XDP mode",
        rank=9,
    ),
    Key(
        "h",
        "history",
        "History",
        "history of applied generations, with revert",
        palette="History",
        palette_help="applied generations, revert",
        rank=10,
    ),
    Key(
        "m",
        "mode",
        "Mode",
        "switch enforce / audit (asks first)",
        palette="Switch enforce/audit",
        palette_help="change the firewall mode",
        rank=11,
    ),
    Key(
        "p",
        "pause",
        "Pause",
        "pause / resume following drop events",
        palette="Pause/resume drop events",
        palette_help="stop following the event pane",
        rank=12,
    ),
    Key(
        "s",
        "sort",
        "Sort",
        "sort by the next column / reverse (or click a column header)",
        shown="s / S",
        palette="Sort by next column",
        palette_help="cycle the sort column",
        rank=13,
    ),
    Key(
        "y",
        "export",
        "YAML",
        "export the rules as IngressNodeFirewall YAML (save to a file)",
        palette="Export YAML",
        palette_help="IngressNodeFirewall YAML, save to file",
        rank=14,
    ),
    Key(
        "question_mark",
        "help",
        "Help",
        "this help",
        shown="?",
        palette="Keys and help",
        palette_help="every key",
        rank=5,
    ),
    Key(
        "q",
        "quit_console",
        "Quit",
        "quit the console (the firewall keeps running; asks while a change is pending)",
        palette="Quit infw-tui",
        palette_help="the firewall keeps running",
        rank=6,
    ),
    Key(
        "plus",
        "reorder(1)",
        "Later",
        "move the selected rule later (+) or earlier (-) by one order",
        shown="+ / -",
        palette="Move rule later",
        palette_help="order + 1",
        footer=False,
    ),
    Key(
        "minus",
        "reorder(-1)",
        "Earlier",
        palette="Move rule earlier",
        palette_help="order - 1",
        footer=False,
    ),
    Key(
        "S",
        "sort_reverse",
        "Reverse sort",
        palette="Reverse sort",
        palette_help="flip the sort direction",
        footer=False,
    ),
    Key("", "focus", help="switch focus between the rules table and the drop events", shown="tab"),
    Key("", "palette", help="command palette (every action by name)", shown="ctrl+p"),
)

BINDINGS: list[Binding | tuple[str, str] | tuple[str, str, str]] = [
    Binding(k.key, k.action, k.label, show=k.footer) for k in KEYS if k.key
]
HELP: list[tuple[str, str]] = [(k.shown or k.key, k.help) for k in KEYS if k.help]
PALETTE: tuple[Key, ...] = tuple(k for k in KEYS if k.palette)
_RANKS = {k.name: k.rank for k in KEYS}


def rank(action: str) -> int:
    """The footer's order of importance for an action (unknown actions rank last)."""
    return _RANKS.get(action.split("(", 1)[0], 99)
