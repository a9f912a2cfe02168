"""Run the benchmark groups and write bench/results.json and bench/results.md.

    python -m bench.run                 # every group
    python -m bench.run datapath edits  # some of them

Each group is guarded: one that fails is recorded as "not measured: <reason>" and the others
still run. Everything a group creates (namespaces, pins, nft tables) is removed by the group.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.result import TABLE_HEAD, Figure, markdown_row, not_measured

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "results.md"
PLOT = HERE / "cost_vs_rules.svg"


def _datapath() -> list[Figure]:
    from bench import datapath

    return datapath.run_group(str(PLOT))


def _throughput() -> list[Figure]:
    from bench import throughput

    return throughput.run_group()


def _livesend() -> list[Figure]:
    from bench import livesend

    return livesend.run_group()


def _xdpfilter() -> list[Figure]:
    from bench import xdpfilter

    return xdpfilter.run_group()


def _edits() -> list[Figure]:
    from bench import edits

    return edits.run_group()


def _console() -> list[Figure]:
    from bench import console

    return console.run_group()


def _replies() -> list[Figure]:
    from bench import replies

    return replies.run_group()


def _impact() -> list[Figure]:
    from bench import impact

    return impact.run_group()


GROUPS: dict[str, Callable[[], list[Figure]]] = {
    "datapath": _datapath,
    "throughput": _throughput,
    "livesend": _livesend,
    "xdpfilter": _xdpfilter,
    "edits": _edits,
    "console": _console,
    "impact": _impact,
    "replies": _replies,
}


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return {
        "kernel": platform.release(),
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def preflight() -> str | None:
    """Why nothing that needs the kernel can run, or None."""
    if os.geteuid() != 0:
        return "needs root (BPF, namespaces)"
    try:
        from engine.kernel.loader import headers_problem
    except Exception as exc:
        return f"engine.kernel.datapath does not import ({type(exc).__name__}: {exc})"
    return headers_problem()


def leftovers() -> list[str]:
    from bench.netns import leftover_namespaces
    from bench.pins import leftover_pin_roots

    return leftover_namespaces() + leftover_pin_roots()


def _machine_line(info: dict[str, Any]) -> str:
    return (
        f"{info['cpu']}, {info['cores']} cores, kernel {info['kernel']}, "
        f"Python {info['python']}; load average at start {info['loadavg_at_start']}; {info['time']}"
    )


def render(
    info: dict[str, Any],
    figures: list[Figure],
    durations: dict[str, float],
    runs: dict[str, dict[str, Any]] | None = None,
) -> str:
    lines = ["# infw benchmark results", "", f"Machine: {_machine_line(info)}.", ""]
    # a partial run merges into older results: say when and where each group was measured
    older = {g: r for g, r in (runs or {}).items() if r != info}
    if older:
        lines += ["Groups measured in earlier runs:", ""]
        lines += [f"- {g}: {_machine_line(r)}" for g, r in older.items()]
        lines.append("")
    lines += [
        "Every figure is measured in one run of its group against the floor or peer beside it.",
        "",
        TABLE_HEAD,
    ]
    lines += [markdown_row(f) for f in figures]
    lines += [
        "",
        "Group wall times: " + ", ".join(f"{g} {s:.0f} s" for g, s in durations.items()),
        "",
    ]
    if PLOT.exists():
        lines += [f"![cost over floor vs rule and CIDR count]({PLOT.name})", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    names = list(argv if argv is not None else sys.argv[1:]) or list(GROUPS)
    unknown = [n for n in names if n not in GROUPS]
    if unknown:
        print(
            f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}",
            file=sys.stderr,
        )
        return 2
    info = machine()
    figures: list[Figure] = []
    durations: dict[str, float] = {}
    problem = preflight()
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        start = time.monotonic()
        if problem:
            figures.append(not_measured(name, "all cases", problem))
            continue
        try:
            got = GROUPS[name]()
        except Exception as exc:
            traceback.print_exc()
            got = [not_measured(name, "all cases", f"{type(exc).__name__}: {exc}")]
        durations[name] = time.monotonic() - start
        for fig in got:
            print("  " + markdown_row(fig), flush=True)
        figures.extend(got)
    left = leftovers()
    if left:
        info["leftovers"] = left
        print(f"[bench] WARNING: left behind: {', '.join(left)}", file=sys.stderr)
    # A partial run (some groups) merges into the existing results instead of dropping the rest.
    previous: list[dict[str, Any]] = []
    runs: dict[str, dict[str, Any]] = {}
    if set(names) != set(GROUPS) and RESULTS_JSON.exists():
        try:
            old = json.loads(RESULTS_JSON.read_text())
            previous = [f for f in old["figures"] if f["group"] not in names]
            kept = {f["group"] for f in previous}
            # results written before runs were recorded per group carry one machine line
            runs = {g: old.get("runs", {}).get(g, old["machine"]) for g in kept}
        except (ValueError, KeyError):
            previous, runs = [], {}
    runs.update(dict.fromkeys(names, info))
    order = {g: i for i, g in enumerate(GROUPS)}
    runs = dict(sorted(runs.items(), key=lambda item: order.get(item[0], 99)))
    payload = {
        "machine": info,
        "runs": runs,
        "group_seconds": durations,
        "figures": previous + [f.to_json() for f in figures],
    }
    RESULTS_JSON.write_text(json.dumps(payload, indent=2) + "\n")
    merged = [_from_json(f) for f in previous] + figures
    merged.sort(key=lambda f: order.get(f.group, 99))
    text = render(info, merged, durations, runs)
    RESULTS_MD.write_text(text)
    print()
    print(text)
    return 0


def _from_json(raw: dict[str, Any]) -> Figure:
    raw = {k: v for k, v in raw.items() if k != "derived"}
    return Figure(**raw)


if __name__ == "__main__":
    sys.exit(main())
