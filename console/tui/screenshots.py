"""Render infw-tui screenshots (SVG) into screenshots/: main view, add-rule form, trace, history.

python -m console.tui.screenshots          # on the lab, real engine (root)
python -m console.tui.screenshots --fake   # from the deterministic FakeEngine (no root)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input, Select

from console.tui.app import InfwApp
from engine.errors import InfwError

OUT_DIR = Path(__file__).resolve().parent.parent.parent / "screenshots"
SIZE = (120, 36)


async def _type(pilot: Pilot[Any], selector: str, text: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.focus()
    field.value = ""
    await pilot.press(*text)


async def capture(app: InfwApp, out_dir: Path, warmup: float, advance: Any = None) -> list[Path]:
    """Drive the app through its main screens and save one SVG of each."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str) -> None:
        path = out_dir / f"{name}.svg"
        path.write_text(app.export_screenshot(title=f"infw-tui — {name}"), encoding="utf-8")
        written.append(path)

    async with app.run_test(size=SIZE) as pilot:
        if advance is not None:
            for _ in range(3):
                advance()
                app.refresh_all()
                app.poll_events()
                await pilot.pause()
        else:
            await pilot.pause(warmup)  # real counters and events arrive at their own pace
        app.table.focus()
        await pilot.pause()
        save("main")

        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#f-protocol", Select).value = "TCP"
        await pilot.pause()
        await _type(pilot, "#f-cidrs", "203.0.113.0/24")
        await _type(pilot, "#f-order", "5")
        await _type(pilot, "#f-ports", "7000-7100")
        await pilot.pause()
        save("add-rule")
        await pilot.press("escape")

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
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m console.tui.screenshots", description=__doc__)
    parser.add_argument("--fake", action="store_true", help="use the FakeEngine (no root, no lab)")
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help=f"output directory (default {OUT_DIR})"
    )
    parser.add_argument(
        "--warmup", type=float, default=4.0, help="seconds of lab traffic before the first shot"
    )
    args = parser.parse_args(argv)
    if args.fake:
        from console.tui.fake import FakeEngine

        os.environ.setdefault("TZ", "UTC")
        fake = FakeEngine()
        app = InfwApp(fake, clock=fake.clock, stats_interval=3600, events_interval=3600)
        written = asyncio.run(capture(app, args.out, 0, advance=fake.advance))
    else:
        if os.geteuid() != 0:
            print("screenshots: the lab needs root", file=sys.stderr)
            print(
                "  fix: run as root, or pass --fake for screenshots from the FakeEngine",
                file=sys.stderr,
            )
            return 4
        from console.tui.app import open_lab

        try:
            engine = open_lab(read_only=False)
        except InfwError as exc:
            print(f"screenshots: {exc.message}", file=sys.stderr)
            if exc.fix:
                print(f"  fix: {exc.fix}", file=sys.stderr)
            return exc.exit_code
        app = InfwApp(engine, offer_attach=False)
        written = asyncio.run(capture(app, args.out, args.warmup))
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
