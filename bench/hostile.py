"""How long and how much memory each hostile input costs before it is refused (issue #15).

    python -m bench.hostile            # every case, a table
    python -m bench.hostile --json     # the same as JSON

Each case runs in a child process of its own, under setrlimit (1 GiB of address space, 20 s of
CPU), so a case that regressed fails alone instead of taking the machine down. Time is the
call alone (imports excluded); memory is the child's peak RSS above its RSS after imports.
Goal: every refusal well under 1 s and 200 MB.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ADDRESS_SPACE = 1 << 30
CPU_SECONDS = 20

HEAD = """apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata:
  name: web
spec:
"""
RULES = """  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
"""


def _alias_bomb(d: Path) -> str:
    """The issue's 735-byte file: nine levels of nine aliases inside a valid object."""
    lines = ["a0: &a0 [eth0, eth0, eth0, eth0, eth0, eth0, eth0, eth0, eth0]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    doc = HEAD.replace("spec:\n", "spec:\n  " + "\n  ".join(lines) + "\n  interfaces: *a8\n")
    (d / "bomb.yaml").write_text(doc + RULES + "    - {order: 1, action: Deny}\n")
    return str(d / "bomb.yaml")


def _huge_rules(d: Path) -> str:
    """About 90 MB: a million rules in one entry (refused by its size before it is read)."""
    path = d / "huge.yaml"
    rule = "    - {order: 1, protocolConfig: {protocol: TCP, tcp: {ports: 80}}, action: Deny}\n"
    with path.open("w") as fh:
        fh.write(HEAD + "  interfaces: [eth0]\n" + RULES)
        block = rule * 10_000
        for _ in range(100):
            fh.write(block)
    return str(path)


def _nodes_under_cap(d: Path) -> str:
    """Under the byte cap, over the node cap: two million tiny scalars in 4 MB."""
    path = d / "nodes.yaml"
    path.write_text("[" + "0," * 2_000_000 + "0]\n")
    return str(path)


def _many_errors(d: Path) -> str:
    """20,000 rules with a bad action each: 20,000 errors, 20 printed (validation, not the reader)."""
    path = d / "errors.yaml"
    body = "".join(f"    - {{order: {i + 1}, action: Maybe}}\n" for i in range(20_000))
    path.write_text(HEAD + "  interfaces: [eth0]\n" + RULES + body)
    return str(path)


def _deep(d: Path) -> str:
    path = d / "deep.yaml"
    path.write_text(HEAD + "  interfaces: " + "[" * 10_000 + "]" * 10_000 + "\n")
    return str(path)


def _deep_block(d: Path) -> str:
    path = d / "deep-block.yaml"
    path.write_text("- " * 10_000 + "x\n")  # block sequences, one per "- "
    return str(path)


def _fifo(d: Path) -> str:
    os.mkfifo(d / "fifo.yaml")
    return str(d / "fifo.yaml")


def _duplicate(d: Path) -> str:
    path = d / "dup.yaml"
    path.write_text(HEAD + "  interfaces: [eth0]\n" + RULES + "    - order: 1\n"
                    "      action: Deny\n      action: Allow\n")  # fmt: skip
    return str(path)


def _base60(d: Path) -> str:
    path = d / "base60.yaml"
    path.write_text(
        HEAD + "  interfaces: [eth0]\n" + RULES + "    - order: 1\n      protocolConfig:\n"
        "        protocol: TCP\n        tcp: {ports: 1:20}\n      action: Deny\n"
    )
    return str(path)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], str]  # the path to read; "-" reads stdin
    stdin: str | None = None


CASES = (
    Case("alias bomb (9 levels of 9)", _alias_bomb),
    Case("stdin from /dev/zero", lambda d: "-", "/dev/zero"),
    Case("FIFO with no writer", _fifo),
    Case("90 MB, 1,000,000 rules", _huge_rules),
    Case("2,000,000 nodes in 4 MB", _nodes_under_cap),
    Case("10,000-deep flow nesting", _deep),
    Case("10,000-deep block nesting", _deep_block),
    Case("duplicate key", _duplicate),
    Case("port 1:20 (YAML 1.1 base 60)", _base60),
    Case("20,000 bad rules", _many_errors),
)


@dataclass(frozen=True)
class Measured:
    case: str
    seconds: float
    cpu_seconds: float
    peak_mb: float
    refused: bool
    first_line: str
    lines: int


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(path: str) -> dict[str, object]:
    """Runs in the limited child: read and validate as `infw validate` does."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    from console.render import error_lines
    from engine.core import crd
    from engine.core.yamlfile import read_stdin
    from engine.errors import ValidationError

    base = _kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from here
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        if path == "-":
            crd.load_yaml(read_stdin(), "<stdin>")
        else:
            crd.load_file(path)
        refused, lines = False, ["accepted"]
    except ValidationError as exc:
        refused, lines = True, error_lines(exc)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_mb": max(0, _kib("VmHWM") - base) / 1024,
        "refused": refused,
        "first_line": lines[1] if len(lines) > 1 else lines[0],
        "lines": len(lines),
    }


def measure(case: Case, workdir: Path) -> Measured:
    path = case.make(workdir)
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    stdin = open(case.stdin, "rb") if case.stdin else subprocess.DEVNULL  # noqa: SIM115
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.hostile", "--child", path],
            stdin=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=CPU_SECONDS + 10,
        )
    finally:
        if case.stdin:
            stdin.close()  # type: ignore[union-attr]
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        nan = float("nan")
        return Measured(case.name, nan, nan, nan, False, f"child failed: {tail}", 0)
    out = json.loads(proc.stdout)
    return Measured(case.name, **out)


def run_all() -> list[Measured]:
    with tempfile.TemporaryDirectory(prefix="infw-hostile-") as tmp:
        return [measure(case, Path(tmp)) for case in CASES]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        print(json.dumps(_child(argv[1])))
        return 0
    results = run_all()
    if argv[:1] == ["--json"]:
        print(json.dumps([asdict(r) for r in results], indent=2))
        return 0
    print(f"{'case':30} {'seconds':>7} {'cpu s':>6} {'peak MB':>7}  refused  first error line")
    for r in results:
        print(
            f"{r.case:30} {r.seconds:7.3f} {r.cpu_seconds:6.3f} {r.peak_mb:7.1f}"
            f"  {'yes' if r.refused else 'NO ':7}"
            f"  {r.first_line[:100]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
