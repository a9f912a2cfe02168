"""The table of a listing screen (history, interfaces): rows picked with a row cursor, zebra
stripes, and columns that are fixed when the table is made."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import RenderableType
from textual.widgets import DataTable


@dataclass(frozen=True)
class Column:
    label: str
    key: str
    width: int | None = None  # None: as wide as its content


class ListingTable(DataTable[RenderableType]):
    def __init__(self, columns: Sequence[Column], *, id: str) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, id=id)
        self._fixed_columns = tuple(columns)

    def on_mount(self) -> None:
        # Textual mounts a screen's widgets before the screen itself, so the columns are here
        # by the time the screen's on_mount fills the rows.
        for column in self._fixed_columns:
            self.add_column(column.label, key=column.key, width=column.width)
