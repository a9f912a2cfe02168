"""How values read in a cell: counts, bytes, ages, verdicts. Colour always comes with a word."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

from console.format import clock
from engine import DropEvent, RuleRow, printable

VERDICT_STYLE = {
    "DENY": "bold red",
    "WOULD DENY": "bold yellow",
    "ALLOW": "bold green",
}


def verdict_text(verdict: str) -> Text:
    word = verdict.upper()
    return Text(word, style=VERDICT_STYLE.get(word, "bold"))


def shorten(items: Sequence[str], width: int) -> str:
    """Join items; when they don't fit, keep what fits and say how many more ('10.0.0.0/8 +2')."""
    joined = ",".join(items)
    if len(joined) <= width or not items:
        return joined
    first = items[0]
    rest = f" +{len(items) - 1}" if len(items) > 1 else ""
    room = width - len(rest)
    if len(first) > room:
        first = first[: max(1, room - 1)] + "…"
    return first + rest


def rule_summary(row: RuleRow) -> str:
    """One line naming a rule for dialogs: 'rule 3 (web order 10: DENY TCP 80 from 192.0.2.0/24)'."""
    return (
        f"rule {row.rule_id} ({row.firewall} order {row.order}: {row.action.upper()} "
        f"{row.rule.match_text()} from {', '.join(row.cidrs)})"
    )


def match_cell(row: RuleRow, width: int) -> str:
    """A rule's ports, or its ICMP type/code as the event pane writes them ('type 8/0'), in
    width columns: the word 'type' goes first when even that is too wide ('255/255')."""
    rule = row.rule
    if rule.ports is not None or rule.icmp_type is None:
        return row.match
    numbers = (
        f"{rule.icmp_type}" if rule.icmp_code is None else f"{rule.icmp_type}/{rule.icmp_code}"
    )
    text = f"type {numbers}"
    return text if len(text) <= width else numbers


def event_endpoints(ev: DropEvent, sport: bool = True) -> str:
    """'src:sport -> dst:dport' (sport=False leaves the source port out, for narrow panes)."""
    if ev.icmp_type is not None:
        return f"{ev.src} -> {ev.dst} type {ev.icmp_type}/{ev.icmp_code}"
    if ev.dport is not None:
        if ":" in ev.src:
            src = f"[{ev.src}]:{ev.sport}" if sport else ev.src
            return f"{src} -> [{ev.dst}]:{ev.dport}"
        src = f"{ev.src}:{ev.sport}" if sport else ev.src
        return f"{src} -> {ev.dst}:{ev.dport}"
    frag = " (fragment)" if ev.fragment else ""
    return f"{ev.src} -> {ev.dst}{frag}"


EVENT_COLUMNS: tuple[tuple[str, int], ...] = (
    ("time", 12),
    ("iface", 10),
    ("rule", 5),
    ("verdict", 10),
    ("proto", 6),
    ("src -> dst", 0),  # takes what is left
    ("vlan", 5),
    ("len", 5),
)


ENDPOINTS_MAX = 64  # wider panes keep vlan and length next to the addresses


def _cell(text: str, width: int, right: bool = False) -> str:
    if len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text.rjust(width) if right else text.ljust(width)


NARROW_EVENTS = 100  # below this pane width: no millis, no source port, vlan inline, no length


def event_layout(width: int) -> dict[str, int]:
    """Column widths for the event pane at a given pane width (narrow panes drop some)."""
    widths = dict(EVENT_COLUMNS)
    if width < NARROW_EVENTS:
        widths["time"] = 8
        widths["iface"] = 8
        widths["rule"] = 4
        del widths["vlan"], widths["len"]
    fixed = sum(w for w in widths.values()) + len(widths) - 1
    widths["src -> dst"] = max(16, min(ENDPOINTS_MAX, width - fixed - 1))
    return widths


NARROW_HINTS = ("len, source port hidden: widen the terminal", "len hidden: widen", "")


def event_header(width: int) -> Text:
    """The column names; a narrow pane says which columns it leaves out (vlan moves inline)."""
    widths = event_layout(width)
    parts = [_cell(name, w, right=name in ("vlan", "len", "rule")) for name, w in widths.items()]
    header = Text(" ".join(parts).rstrip(), style="bold")
    if "len" not in widths:
        room = widths["src -> dst"] - len("src -> dst") - 2
        hint = next(h for h in NARROW_HINTS if len(h) <= room)
        if hint:
            header.append(" " * (room - len(hint) + 2))
            header.append(hint, style="not bold dim italic")
    return header


def event_line(ev: DropEvent, width: int) -> Text:
    widths = event_layout(width)
    narrow = "len" not in widths
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(_cell(clock(ev.time, millis=widths["time"] > 8), widths["time"]) + " ")
    line.append(_cell(printable(ev.interface), widths["iface"]) + " ", style="cyan")
    line.append(_cell(str(ev.rule_id), widths["rule"], right=True) + " ")
    line.append(_cell(ev.verdict, widths["verdict"]) + " ", style=VERDICT_STYLE.get(ev.verdict, ""))
    line.append(_cell(ev.protocol, widths["proto"]) + " ")
    endpoints = event_endpoints(ev, sport=not narrow)
    if narrow:
        if ev.vlan:
            endpoints += f" vlan {ev.vlan}"
        line.append(_cell(endpoints, widths["src -> dst"]))
        return line
    line.append(_cell(endpoints, widths["src -> dst"]) + " ")
    line.append(_cell(str(ev.vlan) if ev.vlan else "-", widths["vlan"], right=True) + " ")
    line.append(_cell(str(ev.length), widths["len"], right=True))
    return line


def event_search_text(ev: DropEvent) -> str:
    """What '/' matches an event against."""
    return " ".join(
        (
            printable(ev.interface),
            str(ev.rule_id),
            ev.verdict,
            ev.protocol,
            event_endpoints(ev),
            str(ev.vlan),
        )
    ).lower()
