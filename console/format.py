"""How numbers and times read in every console (CLI, REPL, TUI): counts, bytes, rates, ages, clocks.

One home, so `infw stats` and the TUI's rules table never disagree on what 1.5 KiB or '3m ago' is.
"""

from __future__ import annotations

import time


def human_count(n: int | float) -> str:
    """12,345 stays exact; larger counts shrink to 123.4k, 12.3M, 1.2G."""
    n = int(n)
    if n < 100_000:
        return f"{n:,}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)  # pragma: no cover - unreachable


def human_bytes(n: int | float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover - the loop always returns


def human_rate(rate: float) -> str:
    if rate <= 0:
        return "0"
    if rate < 10:
        return f"{rate:.1f}"
    return human_count(round(rate))


def ago(when: float | None, now: float | None = None) -> str:
    """'3s ago', '5m ago', '2h ago', '4d ago'; 'never' for never."""
    if when is None:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - when)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def relative_time(when: float | None, now: float) -> str:
    """ago() for a table cell: '-' for never, so an unhit rule's cell stays quiet."""
    return "-" if when is None else ago(when, now)


def clock(epoch: float, millis: bool = False) -> str:
    """Local wall-clock time of day, 'HH:MM:SS' or 'HH:MM:SS.mmm'."""
    text = time.strftime("%H:%M:%S", time.localtime(epoch))
    return f"{text}.{int((epoch % 1) * 1000):03d}" if millis else text


def timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
