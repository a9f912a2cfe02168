"""Render infw-tui screenshots (SVG) into screenshots/: the main view at three sizes, the add-rule
form, a pending change waiting for its confirmation, trace and history.

python -m console.tui.screenshots          # on the lab, real engine (root)

Without root, the pictures of record are the snapshot tests' (tests/console/__snapshots__: the
real Engine over the fake kernel, with a frozen clock and scripted traffic).

On the lab the first picture waits until the console is visibly alive: counters with rates, a
rule marked as hit right now, and drop events in the pane. The pending-confirm picture adds a
Deny rule through the form, waits for it to take hits, and the change is reverted afterwards,
so the lab's rules are as they were.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, Select

from console.tui.app import InfwApp
from engine import InfwError

OUT_DIR = Path(__file__).resolve().parent.parent.parent / "screenshots"
SIZE = (120, 36)
SMALL = (80, 24)
LARGE = (160, 48)
# The demo rule: it overrides the lab's "allow TCP 80 from 192.0.2.0/24", so it takes hits.
DEMO_RULE = {"protocol": "TCP", "ports": "80", "cidrs": "192.0.2.0/24"}


def svg_for_any_viewer(svg: str) -> str:
    """Textual's SVG relies on the browser keeping leading spaces in text runs; librsvg and some
    other renderers strip them and shift coloured runs left. xml:space="preserve" keeps them."""
    if 'xml:space="preserve"' in svg:
        return svg
    return svg.replace("<svg ", '<svg xml:space="preserve" ', 1)


async def _type(pilot: Pilot[Any], selector: str, text: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)


def alive(app: InfwApp, events: int = 8) -> bool:
    """Counters with rates, a rule hit in the last refresh, and drop events on screen."""
    snap = app.snapshot
    return (
        snap is not None
        and any(r.rate > 0 for r in snap.rules)
        and bool(app.table.hit_keys)
        and app.event_pane.total_seen >= events
    )


async def settle(pilot: Pilot[Any], ready: Callable[[], bool], timeout: float) -> bool:
    """Wait for the lab's traffic until `ready()`; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.25)
        if ready():
            await pilot.pause()
            return True
        if time.monotonic() > deadline:
            return False


async def capture(app: InfwApp, out_dir: Path, timeout: float) -> list[Path]:
    """Drive the app through its main screens and save one SVG of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str) -> None:
        path = out_dir / f"{name}.svg"
        svg = app.export_screenshot(title=f"infw-tui — {name}")
        path.write_text(svg_for_any_viewer(svg), encoding="utf-8")
        written.append(path)

    def warn(what: str) -> None:
        print(f"screenshots: {what} did not happen within {timeout:.0f}s", file=sys.stderr)

    async with app.run_test(size=SIZE) as pilot:
        if not await settle(pilot, lambda: alive(app), timeout):
            warn("counters, a hit and drop events")
        app.table.focus()
        await pilot.pause()
        save("main")

        # the add-rule form, filled in from the keyboard's point of view
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#f-protocol", Select).value = DEMO_RULE["protocol"]
        await pilot.pause()
        await _type(pilot, "#f-cidrs", DEMO_RULE["cidrs"])
        await _type(pilot, "#f-ports", DEMO_RULE["ports"])
        await pilot.pause()
        save("add-rule")

        # apply it: commit-confirmed, so a countdown banner; wait for the new rule's first hits
        before = {r.rule_id for r in app.table.all_rows}
        await pilot.press("enter")
        await pilot.pause()

        def new_rule_hit() -> bool:
            fresh = [r for r in app.table.all_rows if r.rule_id not in before]
            return (
                app.status is not None
                and app.status.pending is not None
                and any(r.rate > 0 and r.last_hit is not None for r in fresh)
            )

        if not await settle(pilot, new_rule_hit, timeout):
            warn("hits on the new Deny rule")
        new_ids = [r.rule_id for r in app.table.all_rows if r.rule_id not in before]
        if new_ids:
            app.table.select_rule_id(new_ids[0])
            await pilot.pause()
        save("pending-confirm")
        if app.status is not None and app.status.pending is not None:
            await pilot.press("r")  # leave the rules as they were
            await pilot.pause()

        await pilot.press("t")
        await pilot.pause()
        await _type(pilot, "#t-src", "192.0.2.11")
        await _type(pilot, "#t-dport", "8080")
        await pilot.press("enter")
        await pilot.pause(0.5)
        save("trace")
        await pilot.press("escape")

        await pilot.press("h")
        await pilot.pause()
        save("history")
        await pilot.press("escape")
        await pilot.pause()

        for size in (SMALL, LARGE):
            await pilot.resize_terminal(*size)
            app.refresh_all()
            if not await settle(pilot, lambda: alive(app, events=0), timeout):
                warn(f"a hit at {size[0]}x{size[1]}")
            save(f"main-{size[0]}x{size[1]}")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.tui.screenshots", description=__doc__)
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help=f"output directory (default {OUT_DIR})"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds to wait for lab traffic to show (counters, hits, drop events)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("screenshots: the lab needs root", file=sys.stderr)
        print(
            "  fix: run as root ('make screenshots'); without root, "
            "tests/console/test_tui_snapshots.py renders the same screens on the fake kernel",
            file=sys.stderr,
        )
        return 4
    from console.tui.main import open_lab

    try:
        engine = open_lab(read_only=False)
    except InfwError as exc:
        print(f"screenshots: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    app = InfwApp(engine, offer_attach=False)
    written = asyncio.run(capture(app, args.out, args.timeout))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
