"""Console costs: first frame when attaching to a running firewall, CPU of a 1,000-rule table
refreshing at 1 Hz, the event pane under 20,000 drop events/s, and resident memory.

Each measurement runs in a child process (`python -m bench.console <mode> ...`) so that its CPU
time and memory are the console's alone; a bare Textual app measured the same way is the floor.
Events come through the real path: a generator process test-runs denied frames through the
pinned program, the kernel writes them to the ring buffer, the console's EventSource reads them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.result import Figure, not_measured

GROUP = "console"
RULES = 1000
REFRESH_S = 12.0
EVENTS_PER_S = 20_000
FRAME_TARGET_S = 1.5
CPU_TARGET = 0.10
SIZE = (120, 40)


# --- child side ---------------------------------------------------------------------------------


def _usage() -> dict[str, float]:
    """CPU time of this process (all threads) and its peak RSS.

    The peak comes from VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across
    execve, so a child of a big parent (bcc's LLVM) would report the parent's peak.
    """
    ru = resource.getrusage(resource.RUSAGE_SELF)
    hwm = float(ru.ru_maxrss)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = float(line.split()[1])
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_kib": hwm}


def _engine(pin_root: str, state: str) -> Any:
    from engine.engine import Engine
    from engine.state.config import NodeConfig

    return Engine(
        pin_root,
        state,
        config=NodeConfig(pin_root=pin_root, state_dir=state),
        session=None,
        interfaces=lambda: {"lo": 1},
    )


def _bare_app() -> Any:
    from textual.app import App, ComposeResult
    from textual.widgets import Footer, Static

    class Bare(App[None]):
        def compose(self) -> ComposeResult:
            yield Static("floor")
            yield Footer()

    return Bare()


async def _drive(app: Any, seconds: float, ready: Any) -> dict[str, float]:
    async with app.run_test(size=SIZE) as pilot:
        while not ready(app):
            await pilot.pause(0.005)
        print("FRAME", flush=True)
        u0, t0 = _usage(), time.monotonic()
        if seconds > 0:
            await pilot.pause(seconds)
        u1, t1 = _usage(), time.monotonic()
        out = {
            "cpu_share": (u1["cpu_s"] - u0["cpu_s"]) / (t1 - t0) if seconds > 0 else 0.0,
            "wall_s": t1 - t0,
        }
        source = getattr(app, "event_source", None)
        if source is not None:
            c = source.buffer.counts
            out |= {"received": c.received, "kept": c.kept, "sampled_out": c.sampled_out}
    return out


def _rows(app: Any) -> int:
    rows = app.table.all_rows
    return len(rows() if callable(rows) else rows)


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console")
    p.add_argument("mode", choices=("infw", "bare", "generate"))
    p.add_argument("--pin-root", default="")
    p.add_argument("--state", default="")
    p.add_argument("--seconds", type=float, default=0.0)
    p.add_argument("--rate", type=int, default=EVENTS_PER_S)
    args = p.parse_args(argv)
    if args.mode == "generate":
        return _generate(args.pin_root, args.rate, args.seconds)
    if args.mode == "bare":
        result = asyncio.run(_drive(_bare_app(), args.seconds, lambda app: app.is_running))
    else:
        from console.tui.app import InfwApp

        app = InfwApp(_engine(args.pin_root, args.state), offer_attach=False, events_per_second=200)
        result = asyncio.run(_drive(app, args.seconds, lambda a: _rows(a) >= RULES))
    result |= {"maxrss_kib": _usage()["maxrss_kib"]}
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _generate(pin_root: str, rate: int, seconds: float) -> int:
    """Drop events at `rate`/s: denied frames test-run through the pinned program in 10 ms slices."""
    from bench.datapath import udp4
    from bench.testrun import pinned_prog_fd, test_run

    fd = pinned_prog_fd(os.path.join(pin_root, "prog"))
    frame = udp4()
    per_slice = max(1, rate // 100)
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate) - sent
        if due > 0:
            n = min(due, per_slice * 20)  # catch up after an oversleep under load
            test_run(fd, frame, n)
            sent += n
        time.sleep(0.01)
    print("RESULT " + json.dumps({"sent": sent, "seconds": time.monotonic() - start}), flush=True)
    return 0


# --- parent side ---------------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.console", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def _run_child(args: list[str], timeout: float) -> tuple[float, dict[str, Any]]:
    """(seconds from spawn to the first frame, the child's RESULT)."""
    start = time.monotonic()
    proc = _spawn(args)
    frame_at = None
    result: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("FRAME") and frame_at is None:
                frame_at = time.monotonic() - start
            elif line.startswith("RESULT "):
                result = json.loads(line[7:])
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0 or (frame_at is None and args[0] != "generate"):
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"child {args[0]} failed ({proc.returncode}): {err.strip()[-800:]}")
    return frame_at or 0.0, result


def run_group() -> list[Figure]:
    try:
        import console.tui.app  # noqa: F401
    except Exception as exc:
        reason = f"console.tui.app does not import ({type(exc).__name__}: {exc})"
        return [
            not_measured(GROUP, c, reason)
            for c in (
                "first frame",
                "1,000-rule refresh CPU",
                "event pane 20k/s",
                "resident memory",
            )
        ]
    from bench.pins import loaded_datapath, pin_root
    from bench.rulesets import BLOCK_V4, rules_hit_at_last
    from engine.core.model import Action

    figures: list[Figure] = []
    root = pin_root("con")
    with (
        tempfile.TemporaryDirectory(prefix="infw-bench-state-") as state,
        loaded_datapath("con") as dp,
    ):
        engine = _engine(root, state)
        engine.apply(
            rules_hit_at_last(RULES, Action.DENY, (BLOCK_V4,), interfaces=("lo",)),
            confirm_timeout=0,
            summary="bench console rules",
        )
        dp.close()  # the console must find everything through the pins alone

        def attempt(case: str, fn: Any) -> None:
            try:
                figures.extend(fn())
            except Exception as exc:
                figures.append(not_measured(GROUP, case, f"{type(exc).__name__}: {exc}"))

        def first_frame() -> list[Figure]:
            bare_s, _ = _run_child(["bare"], 60)
            ours_s, _ = _run_child(["infw", "--pin-root", root, "--state", state], 60)
            return [
                Figure(
                    GROUP,
                    f"first frame, attach to running firewall ({RULES:,} rules)",
                    ours_s,
                    "s",
                    reference=bare_s,
                    reference_name="bare Textual app",
                    compare="difference",
                    target=f"< {FRAME_TARGET_S} s",
                    met=ours_s < FRAME_TARGET_S,
                    note="process spawn to first full table, imports included",
                )
            ]

        def refresh() -> list[Figure]:
            _, bare = _run_child(["bare", "--seconds", str(REFRESH_S)], 120)
            _, ours = _run_child(
                ["infw", "--pin-root", root, "--state", state, "--seconds", str(REFRESH_S)], 120
            )
            return [
                Figure(
                    GROUP,
                    f"{RULES:,}-rule table at 1 Hz, CPU share ({REFRESH_S:.0f} s)",
                    ours["cpu_share"] * 100,
                    "% core",
                    reference=bare["cpu_share"] * 100,
                    reference_name="idle bare Textual app",
                    compare="difference",
                    target=f"< {CPU_TARGET * 100:.0f}% of a core",
                    met=ours["cpu_share"] < CPU_TARGET,
                ),
                Figure(
                    GROUP,
                    "resident memory (max RSS)",
                    ours["maxrss_kib"] / 1024,
                    "MiB",
                    reference=bare["maxrss_kib"] / 1024,
                    reference_name="bare Textual app",
                    compare="difference",
                    target="(reported)",
                    met=None,
                ),
            ]

        def events() -> list[Figure]:
            from engine.kernel.abi import NodeCounter
            from engine.kernel.datapath import Datapath

            with Datapath.open(root) as live:  # type: ignore[union-attr]
                live.set_event_rate(EVENTS_PER_S * 2)  # let the whole flood reach the console
                proc = _spawn(
                    ["infw", "--pin-root", root, "--state", state, "--seconds", str(REFRESH_S)]
                )
                try:
                    assert proc.stdout is not None
                    line = proc.stdout.readline()
                    if not line.startswith("FRAME"):
                        raise RuntimeError(
                            f"console child: {line!r} {proc.stderr.read() if proc.stderr else ''}"
                        )
                    # the flood runs only while the console is up, so every loss is the console's
                    before = live.node_counters()
                    gen = _spawn(["generate", "--pin-root", root, "--seconds", str(REFRESH_S - 2)])
                    out, _ = gen.communicate(timeout=60)
                    time.sleep(0.3)  # the console's last poll
                    after = live.node_counters()
                    rest, err = proc.communicate(timeout=60)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    live.set_event_rate(2000)
            if "RESULT " not in rest:
                raise RuntimeError(f"console child failed: {err.strip()[-800:]}")
            ours = json.loads(rest.split("RESULT ", 1)[1])
            sent = after[NodeCounter.EVENTS_SENT][0] - before[NodeCounter.EVENTS_SENT][0]
            lost = after[NodeCounter.EVENTS_LOST][0] - before[NodeCounter.EVENTS_LOST][0]
            gen_result = json.loads(out.split("RESULT ", 1)[1]) if "RESULT " in out else {}
            rate = gen_result.get("sent", 0) / max(gen_result.get("seconds", 1), 1e-9)
            received = ours.get("received", 0)
            return [
                Figure(
                    GROUP,
                    f"event pane under {EVENTS_PER_S:,} events/s: CPU share",
                    ours["cpu_share"] * 100,
                    "% core",
                    compare="value",
                    target="keeps up (no ring-buffer loss), sampled with the rest counted",
                    met=lost == 0 and ours.get("sampled_out", 0) + ours.get("kept", 0) == received,
                    note=(
                        f"generated {rate:,.0f}/s for {gen_result.get('seconds', 0):.0f} s; kernel sent "
                        f"{sent:,}, ring-buffer lost {lost:,}; console received {received:,} "
                        f"(kept {ours.get('kept', 0):,}, sampled out {ours.get('sampled_out', 0):,}); "
                        "CPU share over the whole window"
                    ),
                    extra={
                        "console": ours,
                        "generator": gen_result,
                        "kernel_sent": sent,
                        "kernel_lost": lost,
                    },
                )
            ]

        attempt("first frame", first_frame)
        attempt("1,000-rule refresh CPU", refresh)
        attempt("event pane 20k/s", events)
    return figures


if __name__ == "__main__":
    sys.exit(child(sys.argv[1:]))
