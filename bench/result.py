"""One benchmark figure: ours against a floor or a peer measured in the same run, and its target."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Compare = Literal["difference", "ratio", "value"]


@dataclass
class Figure:
    """A row of the results table.

    `compare` says how ours relates to the reference: "difference" (ours - ref, e.g. ns over
    the floor), "ratio" (ours / ref, e.g. packets/s against nftables) or "value" (ours alone,
    e.g. a CPU share, when the target is absolute).
    """

    group: str
    case: str
    ours: float | None
    unit: str
    reference: float | None = None
    reference_name: str = ""
    compare: Compare = "difference"
    target: str = ""
    met: bool | None = None
    note: str = ""
    error: str = ""  # "not measured: <reason>" when the case could not run
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def derived(self) -> float | None:
        if self.ours is None:
            return None
        if self.compare == "value":
            return self.ours
        if self.reference is None:
            return None
        if self.compare == "difference":
            return self.ours - self.reference
        return self.ours / self.reference if self.reference else None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["derived"] = self.derived
        return out


def not_measured(group: str, case: str, reason: str, target: str = "") -> Figure:
    return Figure(group, case, None, "", target=target, error=f"not measured: {reason}")


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "–"
    mag = abs(value)
    if mag >= 100_000:
        text = f"{value:,.0f}"
    elif mag >= 100:
        text = f"{value:.0f}"
    elif mag >= 10:
        text = f"{value:.1f}"
    elif mag >= 0.01 or value == 0:
        text = f"{value:.2f}"
    else:
        text = f"{value:.2g}"
    return f"{text} {unit}".strip()


def markdown_row(fig: Figure) -> str:
    if fig.error:
        cells = [fig.group, fig.case, fig.error, "", "", fig.target, "–"]
    else:
        ref = (
            f"{_num(fig.reference, fig.unit)} ({fig.reference_name})" if fig.reference_name else ""
        )
        derived = fig.derived
        if fig.compare == "difference":
            diff = f"{'+' if (derived or 0) >= 0 else ''}{_num(derived, fig.unit)}"
        elif fig.compare == "ratio":
            diff = f"×{_num(derived)}" if derived is not None else "–"
        else:
            diff = ""
        met = {True: "yes", False: "**NO**", None: "–"}[fig.met]
        ours = _num(fig.ours, fig.unit)
        cells = [fig.group, fig.case, ours, ref, diff, fig.target, met]
    if fig.note:
        cells[1] = f"{cells[1]} ({fig.note})"
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


TABLE_HEAD = (
    "| group | case | ours | floor / peer | difference or ratio | target | met? |\n"
    "|---|---|---|---|---|---|---|"
)
