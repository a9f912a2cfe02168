"""The rules table: one row per rule with live counters, sorted and filtered by the operator.

Counters change in place (update_cell) so a refresh never rebuilds the table, moves the cursor
or flickers; the table is rebuilt only when the rules themselves, the filter or the width change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

from console.format import human_bytes, human_count, human_rate, relative_time
from console.tui.widgets.cells import VERDICT_STYLE, match_cell, shorten
from engine import RuleRow, printable

HIT_MARK = "●"


@dataclass(frozen=True)
class RuleColumn:
    key: str
    label: str
    width: int  # 0: takes the room left (CIDRs)
    tier: int  # 0 always shown; 1 from MEDIUM columns wide; 2 from WIDE
    live: bool = False  # changes on every refresh
    descending: bool = False  # first sort direction (big numbers first)


COLUMNS: tuple[RuleColumn, ...] = (
    RuleColumn("hit", " ", 1, 0, live=True),
    RuleColumn("id", "id", 4, 0),
    RuleColumn("order", "order", 5, 0),
    RuleColumn("firewall", "firewall", 14, 2),
    RuleColumn("interfaces", "ifaces", 12, 2),
    RuleColumn("cidrs", "source CIDRs", 0, 0),
    RuleColumn("proto", "proto", 6, 0),
    RuleColumn("match", "ports/ICMP", 11, 0),  # "65535-65535" whole
    RuleColumn("action", "action", 6, 0),
    RuleColumn("packets", "packets", 8, 0, live=True, descending=True),
    RuleColumn("bytes", "bytes", 10, 1, live=True, descending=True),
    RuleColumn("rate", "pkts/s", 7, 0, live=True, descending=True),
    RuleColumn("last", "last hit", 8, 1, live=True, descending=True),
)
MATCH_WIDTH = next(c.width for c in COLUMNS if c.key == "match")
SORTABLE = tuple(c.key for c in COLUMNS if c.key != "hit")
LIVE = ("hit", "packets", "bytes", "rate", "last")  # the cells a refresh may change
MEDIUM, WIDE = 110, 150
CIDR_MIN, CIDR_MAX = 12, 44


def row_key(row: RuleRow) -> str:
    return f"{row.rule_id}|{row.firewall}|{','.join(row.cidrs)}|{row.order}"


SORT_KEYS: dict[str, Callable[[RuleRow], Any]] = {
    "id": lambda r: r.rule_id,
    "order": lambda r: (r.order, r.rule_id),
    "firewall": lambda r: r.firewall,
    "interfaces": lambda r: ",".join(r.interfaces),
    "cidrs": lambda r: ",".join(r.cidrs),
    "proto": lambda r: r.protocol,
    "match": lambda r: r.match,
    "action": lambda r: r.action,
    "packets": lambda r: r.packets,
    "bytes": lambda r: r.bytes,
    "rate": lambda r: r.rate,
    "last": lambda r: r.last_hit or 0.0,
}


def sort_value(row: RuleRow, column: str) -> Any:
    return SORT_KEYS.get(column, SORT_KEYS["id"])(row)


def static_signature(row: RuleRow) -> tuple[object, ...]:
    """What the static cells of a row are made of; equal signatures render equal cells."""
    return (row.rule_id, row.firewall, row.order, row.interfaces, row.cidrs, row.rule)


def search_text(row: RuleRow) -> str:
    """What '/' matches a rule against."""
    return " ".join(
        (
            str(row.rule_id),
            str(row.order),
            row.firewall,
            *row.interfaces,
            *row.cidrs,
            row.protocol,
            row.match,
            match_cell(row, MATCH_WIDTH),  # what the cell shows: '/' finds 'type 8/0' too
            row.action,
            row.action.upper(),
        )
    ).lower()


class RulesTable(DataTable[object]):
    """Rules with packets, bytes, pkts/s and last hit; a hit in the last refresh shows ●."""

    class ColumnsChanged(Message):
        """The width changed which columns fit (the title says how many are hidden)."""

    def __init__(self, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._clock = clock
        self.rows_by_key: dict[str, RuleRow] = {}
        self._all: tuple[RuleRow, ...] = ()
        self._shown_columns: tuple[RuleColumn, ...] = ()
        self._shown_keys: frozenset[str] = frozenset()
        self._cidr_width = 18
        self._signature: tuple[object, ...] | None = None
        self._live_cache: dict[str, tuple[tuple[str, ...], bool]] = {}
        # rows whose cells lag their cached values (out of sight): key -> values the cells show
        self._stale: dict[str, tuple[tuple[str, ...], bool] | None] = {}
        self._previous_packets: dict[str, int] = {}
        self._hit: set[str] = set()
        self._order: list[str] = []
        self.sort_column = "order"
        self.sort_reverse = False
        self.filter_text = ""

    # ------------------------------------------------------------------ layout

    def _layout_for(self, width: int) -> tuple[tuple[RuleColumn, ...], int]:
        tier = 2 if width >= WIDE else 1 if width >= MEDIUM else 0
        shown = tuple(c for c in COLUMNS if c.tier <= tier)
        fixed = sum(c.width for c in shown) + 2 * self.cell_padding * len(shown)
        room = width - fixed - 2  # the vertical scrollbar
        return shown, max(CIDR_MIN, min(CIDR_MAX, room))

    def _ensure_columns(self) -> bool:
        """Pick the columns for the current width; True when they changed."""
        width = self.size.width or (self.app.size.width if self.is_attached else 80)
        shown, cidr_width = self._layout_for(width)
        if shown == self._shown_columns and cidr_width == self._cidr_width and self.columns:
            return False
        self._shown_columns, self._cidr_width = shown, cidr_width
        self._shown_keys = frozenset(c.key for c in shown)
        self.clear(columns=True)
        for col in shown:
            self.add_column(self._label(col), width=col.width or cidr_width, key=col.key)
        self._signature = None
        return True

    @property
    def hidden_columns(self) -> tuple[str, ...]:
        """The labels of the columns the current width leaves out (wider terminals show them)."""
        if not self._shown_columns:
            return ()
        return tuple(c.label for c in COLUMNS if c not in self._shown_columns)

    def _label(self, col: RuleColumn) -> Text:
        if col.key != self.sort_column:
            return Text(col.label)
        arrow = "▼" if self.sort_reverse else "▲"
        return Text(f"{col.label}{arrow}", style="bold underline")

    def on_resize(self, event: events.Resize) -> None:
        if self._ensure_columns():
            self.show(self._all)
            self.post_message(self.ColumnsChanged())
        else:
            self._flush()

    # ------------------------------------------------------------------ cells

    def _static_cells(self, row: RuleRow) -> dict[str, object]:
        action = row.action.upper()
        return {
            "id": str(row.rule_id),
            "order": Text(str(row.order), justify="right"),
            "firewall": shorten([row.firewall], 14),
            "interfaces": shorten([printable(i) for i in row.interfaces], 12),
            "cidrs": shorten(list(row.cidrs), self._cidr_width),
            "proto": row.protocol,
            "match": match_cell(row, MATCH_WIDTH),
            "action": Text(action, style=VERDICT_STYLE.get(action, "")),
        }

    @staticmethod
    def _live_texts(row: RuleRow, hit: bool, now: float) -> tuple[str, str, str, str, str]:
        """The plain text of the live cells (hit, packets, bytes, rate, last): cheap to compare."""
        return (
            HIT_MARK if hit else " ",
            human_count(row.packets),
            human_bytes(row.bytes),
            human_rate(row.rate),
            relative_time(row.last_hit, now),
        )

    @staticmethod
    def _live_cell(col: str, text: str, hit: bool) -> Text:
        if col == "hit":
            return Text(text, style="bold yellow")
        if col == "last":
            return Text(text, justify="right")
        return Text(text, style="bold" if hit else "", justify="right")

    # ------------------------------------------------------------------ updates

    def show(self, rows: Sequence[RuleRow], *, live: bool = True) -> None:
        """Take a fresh reading: counters change in place, the rules only when they changed.

        Per refresh this is one pass over the rows comparing plain strings; a cell is written
        (update_cell) only when its text changed, and nothing is rebuilt unless the rules, the
        filter or the width did.

        live=False is for an off-cycle reading (right after an edit): its counters cover a
        fraction of the refresh interval, which would blank rates and hit marks for a moment, so
        rows already on screen keep their values until the next regular reading.
        """
        self._ensure_columns()
        self._all = tuple(rows)
        now = self._clock()
        needle = self.filter_text.lower()
        visible = [r for r in rows if needle in search_text(r)] if needle else list(rows)
        keys = [row_key(r) for r in visible]
        previous = self._previous_packets
        pairs = list(zip(keys, visible, strict=True))
        if live:
            self._hit = {k for k, r in pairs if k in previous and r.packets > previous[k]}
            self._previous_packets = {k: r.packets for k, r in pairs}
        else:
            self._hit = {k for k, _ in pairs if k in self._hit}
            self._previous_packets = {k: previous.get(k, r.packets) for k, r in pairs}
        self.rows_by_key = dict(pairs)
        cache = self._live_cache
        values = [
            cache[k] if not live and k in cache else self._values(r, k in self._hit, now)
            for k, r in pairs
        ]
        signature = (self._cidr_width, tuple(static_signature(r) for r in visible))
        if signature != self._signature:
            self._rebuild(visible, keys, values)
            self._signature = signature
            return
        stale = self._stale
        top, bottom = self._window()
        for key, value in zip(keys, values, strict=True):
            old = cache.get(key)
            if old == value:
                continue
            cache[key] = value
            if key not in stale:
                stale[key] = old
            # rows out of sight are written when they scroll into view (see _flush)
            try:
                index = self.get_row_index(key)
            except RowDoesNotExist:
                self._signature = None
                continue
            if top <= index < bottom:
                self._write(key)
        self._apply_sort(only_if_changed=True)

    def _values(self, row: RuleRow, hit: bool, now: float) -> tuple[tuple[str, ...], bool]:
        return self._live_texts(row, hit, now), hit

    def _window(self) -> tuple[int, int]:
        """Row indices on screen now, with a page of margin either side."""
        page = max(1, self.size.height)
        top = int(self.scroll_y)
        return top - page, top + 2 * page

    def _write(self, key: str) -> None:
        """Put a row's cached live values into its cells, only those whose text or style changed."""
        before = self._stale.pop(key, None)
        texts, hit = self._live_cache[key]
        for i, col in enumerate(LIVE):
            if col not in self._shown_keys:
                continue
            if (
                before is not None
                and before[0][i] == texts[i]
                and (before[1] == hit or col == "last")
            ):
                continue
            try:
                self.update_cell(key, col, self._live_cell(col, texts[i], hit))
            except CellDoesNotExist:
                self._signature = None

    def _flush(self) -> None:
        """Write the rows that have come into view since their values changed."""
        if not self._stale:
            return
        top, bottom = self._window()
        for key in list(self._stale):
            try:
                index = self.get_row_index(key)
            except RowDoesNotExist:
                self._stale.pop(key, None)
                continue
            if top <= index < bottom:
                self._write(key)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._flush()

    def _rebuild(
        self, rows: list[RuleRow], keys: list[str], values: list[tuple[tuple[str, ...], bool]]
    ) -> None:
        selected = self.selected_key()
        self.clear()
        self._live_cache.clear()
        self._stale.clear()
        self._order = []
        for key, row, (texts, hit) in zip(keys, rows, values, strict=True):
            self._live_cache[key] = (texts, hit)
            cells: dict[str, object] = {
                **self._static_cells(row),
                **{c: self._live_cell(c, t, hit) for c, t in zip(LIVE, texts, strict=True)},
            }
            self.add_row(*(cells[c.key] for c in self._shown_columns), key=key)
        self._apply_sort(only_if_changed=False)
        if selected is not None:
            self.select_key(selected)

    def _apply_sort(self, *, only_if_changed: bool) -> None:
        get = SORT_KEYS.get(self.sort_column, SORT_KEYS["id"])
        rows = self.rows_by_key
        ordered = sorted(rows, key=lambda k: get(rows[k]), reverse=self.sort_reverse)
        if only_if_changed and ordered == self._order:
            return
        selected = self.selected_key()
        self._order = ordered
        rank = {rows[k].rule_id: i for i, k in enumerate(ordered)}
        self.sort("id", key=lambda cell: rank.get(int(str(cell)), 0))
        if selected is not None:
            self.select_key(selected)
        self._flush()

    # ------------------------------------------------------------------ sorting / selection

    def set_sort(self, column: str, reverse: bool | None = None) -> None:
        col = next(c for c in COLUMNS if c.key == column)
        if reverse is None:
            reverse = (not self.sort_reverse) if column == self.sort_column else col.descending
        self.sort_column, self.sort_reverse = column, reverse
        for shown in self._shown_columns:
            self.columns[ColumnKey(shown.key)].label = self._label(shown)
        self._require_update_dimensions = True
        self._apply_sort(only_if_changed=False)
        self.refresh()

    def cycle_sort(self) -> str:
        """Sort by the next column (the `s` key); returns the new sort column."""
        shown = [c.key for c in self._shown_columns if c.key in SORTABLE]
        nxt = (
            shown[(shown.index(self.sort_column) + 1) % len(shown)]
            if self.sort_column in shown
            else shown[0]
        )
        self.set_sort(nxt)
        return nxt

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = event.column_key.value
        if key in SORTABLE:
            self.set_sort(str(key))
        event.stop()

    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return str(self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value)
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    def selected_rule(self) -> RuleRow | None:
        key = self.selected_key()
        return None if key is None else self.rows_by_key.get(key)

    def select_key(self, key: str) -> None:
        try:
            index = self.get_row_index(key)
        except RowDoesNotExist:
            return
        self.move_cursor(row=index, animate=False)

    def select_rule_id(self, rule_id: int) -> None:
        for key, row in self.rows_by_key.items():
            if row.rule_id == rule_id:
                self.select_key(key)
                return

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._signature = None
        self.show(self._all)

    @property
    def hit_keys(self) -> set[str]:
        return set(self._hit)

    @property
    def all_rows(self) -> tuple[RuleRow, ...]:
        return self._all
