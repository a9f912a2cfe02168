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
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

from console.tui.cells import (
    VERDICT_STYLE,
    human_bytes,
    human_count,
    human_rate,
    relative_time,
    shorten,
)
from engine.views import RuleRow

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
    RuleColumn("match", "ports/ICMP", 10, 0),
    RuleColumn("action", "action", 6, 0),
    RuleColumn("packets", "packets", 8, 0, live=True, descending=True),
    RuleColumn("bytes", "bytes", 10, 1, live=True, descending=True),
    RuleColumn("rate", "pkts/s", 7, 0, live=True, descending=True),
    RuleColumn("last", "last hit", 8, 1, live=True, descending=True),
)
SORTABLE = tuple(c.key for c in COLUMNS if c.key != "hit")
MEDIUM, WIDE = 110, 150
CIDR_MIN, CIDR_MAX = 12, 44


def row_key(row: RuleRow) -> str:
    return f"{row.rule_id}|{row.firewall}|{','.join(row.cidrs)}|{row.order}"


def sort_value(row: RuleRow, column: str) -> Any:
    values: dict[str, Any] = {
        "id": row.rule_id,
        "order": (row.order, row.rule_id),
        "firewall": row.firewall,
        "interfaces": ",".join(row.interfaces),
        "cidrs": ",".join(row.cidrs),
        "proto": row.protocol,
        "match": row.match,
        "action": row.action,
        "packets": row.packets,
        "bytes": row.bytes,
        "rate": row.rate,
        "last": row.last_hit or 0.0,
    }
    return values.get(column, row.rule_id)


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
            row.action,
            row.action.upper(),
        )
    ).lower()


class RulesTable(DataTable[object]):
    """Rules with packets, bytes, pkts/s and last hit; a hit in the last refresh shows ●."""

    def __init__(self, clock: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._clock = clock
        self.rows_by_key: dict[str, RuleRow] = {}
        self._all: tuple[RuleRow, ...] = ()
        self._shown_columns: tuple[RuleColumn, ...] = ()
        self._cidr_width = 18
        self._signature: tuple[object, ...] | None = None
        self._live_cache: dict[tuple[str, str], str] = {}
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
        self.clear(columns=True)
        for col in shown:
            self.add_column(self._label(col), width=col.width or cidr_width, key=col.key)
        self._signature = None
        return True

    def _label(self, col: RuleColumn) -> Text:
        if col.key != self.sort_column:
            return Text(col.label)
        arrow = "▼" if self.sort_reverse else "▲"
        return Text(f"{col.label}{arrow}", style="bold underline")

    def on_resize(self, event: events.Resize) -> None:
        if self._ensure_columns():
            self.show(self._all)

    # ------------------------------------------------------------------ cells

    def _static_cells(self, row: RuleRow) -> dict[str, object]:
        action = row.action.upper()
        return {
            "id": str(row.rule_id),
            "order": Text(str(row.order), justify="right"),
            "firewall": shorten([row.firewall], 14),
            "interfaces": shorten(list(row.interfaces), 12),
            "cidrs": shorten(list(row.cidrs), self._cidr_width),
            "proto": row.protocol,
            "match": row.match,
            "action": Text(action, style=VERDICT_STYLE.get(action, "")),
        }

    def _live_cells(self, row: RuleRow, hit: bool, now: float) -> dict[str, Text]:
        style = "bold" if hit else ""
        return {
            "hit": Text(HIT_MARK if hit else " ", style="bold yellow"),
            "packets": Text(human_count(row.packets), style=style, justify="right"),
            "bytes": Text(human_bytes(row.bytes), style=style, justify="right"),
            "rate": Text(human_rate(row.rate), style=style, justify="right"),
            "last": Text(relative_time(row.last_hit, now), justify="right"),
        }

    # ------------------------------------------------------------------ updates

    def show(self, rows: Sequence[RuleRow]) -> None:
        """Take a fresh reading: counters change in place, the rules only when they changed."""
        self._ensure_columns()
        self._all = tuple(rows)
        now = self._clock()
        needle = self.filter_text.lower()
        visible = [r for r in rows if not needle or needle in search_text(r)]
        keys = [row_key(r) for r in visible]
        self._hit = {
            k
            for k, r in zip(keys, visible, strict=True)
            if k in self._previous_packets and r.packets > self._previous_packets[k]
        }
        self._previous_packets = {k: r.packets for k, r in zip(keys, visible, strict=True)}
        self.rows_by_key = dict(zip(keys, visible, strict=True))
        shown = {c.key for c in self._shown_columns}
        signature = tuple(
            (k, tuple(str(v) for v in self._static_cells(r).values()))
            for k, r in zip(keys, visible, strict=True)
        )
        if signature != self._signature:
            self._rebuild(visible, keys, shown, now)
            self._signature = signature
            return
        for key, row in zip(keys, visible, strict=True):
            for col, cell in self._live_cells(row, key in self._hit, now).items():
                if col not in shown:
                    continue
                plain = f"{cell.plain}|{cell.style}"
                if self._live_cache.get((key, col)) == plain:
                    continue
                self._live_cache[(key, col)] = plain
                try:
                    self.update_cell(key, col, cell)
                except CellDoesNotExist:
                    self._signature = None
        self._apply_sort(only_if_changed=True)

    def _rebuild(self, rows: list[RuleRow], keys: list[str], shown: set[str], now: float) -> None:
        selected = self.selected_key()
        self.clear()
        self._live_cache.clear()
        self._order = []
        for key, row in zip(keys, rows, strict=True):
            cells: dict[str, object] = {
                **self._static_cells(row),
                **self._live_cells(row, key in self._hit, now),
            }
            for col, cell in cells.items():
                if isinstance(cell, Text) and col in ("hit", "packets", "bytes", "rate", "last"):
                    self._live_cache[(key, col)] = f"{cell.plain}|{cell.style}"
            self.add_row(*(cells[c.key] for c in self._shown_columns), key=key)
        self._apply_sort(only_if_changed=False)
        if selected is not None:
            self.select_key(selected)

    def _apply_sort(self, *, only_if_changed: bool) -> None:
        ordered = sorted(
            self.rows_by_key,
            key=lambda k: sort_value(self.rows_by_key[k], self.sort_column),
            reverse=self.sort_reverse,
        )
        if only_if_changed and ordered == self._order:
            return
        selected = self.selected_key()
        self._order = ordered
        rank = {self.rows_by_key[k].rule_id: i for i, k in enumerate(ordered)}
        self.sort("id", key=lambda cell: rank.get(int(str(cell)), 0))
        if selected is not None:
            self.select_key(selected)

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
