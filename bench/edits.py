"""Edit latency: one rule edit until packets see it, and a bulk apply, infw against `nft -f`.

infw's probe is BPF_PROG_TEST_RUN of the loaded program (the same program packets run);
nftables' probe is a real UDP packet across a veth pair into a socket in the receiver
namespace. Both clocks start just before the edit is handed over and stop when the first
probe after it sees the new verdict.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from bench.netns import VethWorld, inside, run
from bench.result import Figure, not_measured
from bench.rulesets import (
    BLOCK_V4,
    BULK_BASE,
    DEST_V4,
    HIT_PORT,
    BulkShape,
    bulk_ruleset,
    hit_rule,
    nft_table,
    rules_hit_at_last,
)
from bench.testrun import test_run
from engine.core.model import Action, RuleSet

GROUP = "edits"
EDIT_TARGET_S = 0.010
ENGINE_TARGET_S = 0.050  # through Engine.apply: guard, fsynced store commit, compile, write
BULK_TARGET_S = 2.0
CLI_TARGET_S = 1.0  # `infw add` as a CLI process, process start included
CLI_ROUNDS = 3  # timed adds (after one that fills the bytecode cache); the median is reported
CLI_PORT = 7000  # the added rules deny UDP to CLI_PORT + i from the first bulk address
CLI_NS = "infw-bench-ed-cli"  # a namespace with only lo, so the CLI sees the interfaces (and
# so compiles the tables) the in-process rows do
REPO = Path(__file__).resolve().parents[1]
XDP_DROP = 1
BASE_RULES = 100
PROBE_TIMEOUT_S = 2.0
NFT_TABLE = "infwbench"
XDP_PASS = 2


def flip_last(ruleset: RuleSet) -> RuleSet:
    """The edit: the deciding (last) rule of the first block turns from Deny to Allow."""
    fw = ruleset.firewalls[0]
    block = fw.ingress[0]
    last = block.rules[-1]
    rules = (*block.rules[:-1], hit_rule(last.order, Action.ALLOW))
    new_fw = replace(fw, ingress=(replace(block, rules=rules), *fw.ingress[1:]))
    return RuleSet((new_fw, *ruleset.firewalls[1:]))


def _until(probe: Callable[[], bool], start: float) -> float:
    """Seconds from start until probe() first says the new verdict is live."""
    while not probe():
        if time.perf_counter() - start > PROBE_TIMEOUT_S:
            raise TimeoutError("the edit never became visible to packets")
    return time.perf_counter() - start


# --- infw ---------------------------------------------------------------------------------------


def _settle() -> None:
    """The one full cyclic-GC pass that follows a big allocation (a 100,000-prefix compile
    leaves millions of objects; the pass costs 100-300 ms) runs now, not inside the timed edit:
    a long-lived console has had it long before its operator's edit, and where it lands in a
    run is otherwise chance (it moved into the first edit once the full compile got faster)."""
    gc.collect()


def infw_edit(dp: object, base: RuleSet, frame: bytes) -> dict[str, float]:
    """Datapath path: compile the edit incrementally and write what changed; probes by test run.

    The base is written twice first, so both generations' halves hold it, as on a firewall
    that has seen an apply since it was loaded; the edit then rewrites only what differs."""
    from engine.core.incremental import IncrementalCompiler

    lo = {"lo": 1}
    compiler = IncrementalCompiler()
    tables = compiler.compile(base, lo)
    dp.write_tables(tables, 1)  # type: ignore[attr-defined]
    dp.write_tables(tables, 2)  # type: ignore[attr-defined]
    fd = dp.prog_fd  # type: ignore[attr-defined]
    if test_run(fd, frame, 1)[0] == XDP_PASS:
        raise RuntimeError("the base rule set does not drop the probe")
    edited = flip_last(base)
    _settle()
    start = time.perf_counter()
    cpu = time.process_time()
    new_tables = compiler.compile(edited, lo, previous_ids=tables.rule_ids)
    compiled = time.perf_counter() - start
    dp.write_tables(new_tables, 3)  # type: ignore[attr-defined]
    written = time.perf_counter() - start
    cpu = time.process_time() - cpu
    visible = _until(lambda: test_run(fd, frame, 1)[0] == XDP_PASS, start)
    delta = compiler.last_delta
    return {
        "compile_s": compiled,
        "write_s": written - compiled,
        "visible_s": visible,
        "cpu_s": cpu,
        "incremental": float(compiler.full_compiles == 1 and delta is not None),
        "rows_written": float(len(delta.rows or ())) if delta else -1.0,
        "delta_write": float(dp.tables.last_write.startswith("delta")),  # type: ignore[attr-defined]
    }


def engine_edit(pin_root: str, base: RuleSet, frame: bytes, fd: int) -> dict[str, float]:
    """Engine path (what a console does): guard, store (fsynced), compile, write; probes by test
    run. The edit and its undo are applied once first, so the engine's compiler and both
    generations' halves have seen the rule set, as in a console that has applied before."""
    from engine.engine import Engine
    from engine.state.config import NodeConfig

    with tempfile.TemporaryDirectory(prefix="infw-bench-state-") as state:
        eng = Engine(
            pin_root,
            state,
            config=NodeConfig(pin_root=pin_root, state_dir=state),
            session=None,
            interfaces=lambda: {"lo": 1},
        )
        edited = flip_last(base)
        eng.apply(base, confirm_timeout=0)
        eng.apply(edited, confirm_timeout=0, summary="bench warm-up")
        eng.apply(base, confirm_timeout=0, summary="bench warm-up undo")
        if test_run(fd, frame, 1)[0] == XDP_PASS:
            raise RuntimeError("the base rule set does not drop the probe")
        _settle()
        start = time.perf_counter()
        cpu = time.process_time()
        eng.apply(edited, confirm_timeout=0, summary="bench edit")
        applied = time.perf_counter() - start
        cpu = time.process_time() - cpu
        visible = _until(lambda: test_run(fd, frame, 1)[0] == XDP_PASS, start)
    return {"apply_s": applied, "visible_s": visible, "cpu_s": cpu}


# --- nftables -------------------------------------------------------------------------------------


@contextlib.contextmanager
def probe_sockets(world: VethWorld) -> Iterator[Callable[[], bool]]:
    """A probe that sends one UDP packet across the veth and says whether it arrived."""
    with inside(world.tx_ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with inside(world.rx_ns):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.bind((world.rx_addr, HIT_PORT))
    rx.setblocking(False)
    try:

        def probe() -> bool:
            tx.sendto(b"infw-bench-probe", (world.rx_addr, HIT_PORT))
            ready, _, _ = select.select([rx], [], [], 0.001)
            if not ready:
                return False
            while True:  # drain, so a late packet can't answer the next probe
                try:
                    rx.recv(64)
                except BlockingIOError:
                    return True

        yield probe
    finally:
        tx.close()
        rx.close()


def _nft(world: VethWorld, text: str) -> None:
    run(["nft", "-f", "-"], ns=world.rx_ns, input_text=text)


def nft_edit(world: VethWorld, base: RuleSet) -> dict[str, float]:
    """nftables: the same base rules in the netdev ingress hook, the edit as one `nft -f`
    replacing the deciding rule (found by its handle, as an operator's tool would)."""
    table = nft_table(base, "netdev", NFT_TABLE, "ingress", device=world.rx_if, priority=-500)
    _nft(world, table)
    try:
        listing = run(
            ["nft", "-a", "list", "chain", "netdev", NFT_TABLE, "ingress"], ns=world.rx_ns
        ).stdout
        set_name = f"{base.firewalls[0].name}_0_v4"
        found = re.search(
            rf"@{set_name} udp dport {HIT_PORT} counter packets \d+ bytes \d+ drop "
            r"# handle (\d+)",
            listing,
        )
        if not found:
            raise RuntimeError(f"deciding rule not found in:\n{listing[:2000]}")
        edit = (
            f"replace rule netdev {NFT_TABLE} ingress handle {found.group(1)} "
            f"ip saddr @{set_name} udp dport {HIT_PORT} counter accept\n"
        )
        with probe_sockets(world) as probe:
            if probe():
                raise RuntimeError("the base nft rules do not drop the probe")
            start = time.perf_counter()
            _nft(world, edit)
            applied = time.perf_counter() - start
            visible = _until(probe, start)
        # and one rule added, as `nft add rule` from a shell (the peer of `infw add`)
        start = time.perf_counter()
        run(
            [
                *("nft", "add", "rule", "netdev", NFT_TABLE, "ingress", "ip", "saddr"),
                *(str(BULK_BASE), "udp", "dport", str(CLI_PORT), "counter", "drop"),
            ],
            ns=world.rx_ns,
        )
        added = time.perf_counter() - start
        return {"apply_s": applied, "visible_s": visible, "add_s": added}
    finally:
        run(["nft", "delete", "table", "netdev", NFT_TABLE], ns=world.rx_ns, check=False)


def nft_bulk(world: VethWorld, ruleset: RuleSet) -> dict[str, float]:
    text = nft_table(ruleset, "netdev", NFT_TABLE, "ingress", device=world.rx_if, priority=-500)
    with tempfile.NamedTemporaryFile("w", prefix="infw-bench-", suffix=".nft") as f:
        f.write(text)
        f.flush()
        try:
            start = time.perf_counter()
            subprocess.run(
                ["ip", "netns", "exec", world.rx_ns, "nft", "-f", f.name],
                check=True,
                capture_output=True,
                timeout=300,
            )
            elapsed = time.perf_counter() - start
        finally:
            run(["nft", "delete", "table", "netdev", NFT_TABLE], ns=world.rx_ns, check=False)
    return {"apply_s": elapsed, "bytes": float(len(text))}


def engine_bulk(pin_root: str, ruleset: RuleSet, frame: bytes, fd: int) -> dict[str, float]:
    """End to end, what `infw apply FILE` does on a node whose program is loaded: read and parse
    the YAML (hostile-input reader), the operator's admission, guard, fsynced store commit,
    compile, map write; with nothing parsed before in this process, as in a fresh CLI."""
    from engine.core import yamlfile
    from engine.core.cidr import forget_parsed_cidrs
    from engine.core.crd import dump_yaml
    from engine.engine import Engine
    from engine.state.config import NodeConfig

    text = dump_yaml(ruleset)
    with (
        tempfile.TemporaryDirectory(prefix="infw-bench-state-") as state,
        tempfile.NamedTemporaryFile("w", prefix="infw-bench-", suffix=".yaml") as f,
    ):
        f.write(text)
        f.flush()
        eng = Engine(
            pin_root,
            state,
            config=NodeConfig(pin_root=pin_root, state_dir=state),
            session=None,
            interfaces=lambda: {"lo": 1},
        )
        forget_parsed_cidrs()
        start = time.perf_counter()
        cpu = time.process_time()
        admitted = eng.admit_rules(f.name)
        admitted_at = time.perf_counter()
        eng.apply(admitted.ruleset, confirm_timeout=0, summary="bench bulk")
        total = time.perf_counter() - start
        cpu = time.process_time() - cpu
        if test_run(fd, frame, 1)[0] == XDP_PASS:
            raise RuntimeError("the bulk rule set does not drop the probe")
    yaml_start = time.perf_counter()
    yamlfile.load_all(text, "bench")  # the reader alone, for the split
    return {
        "total_s": total,
        "admit_s": admitted_at - start,
        "yaml_s": time.perf_counter() - yaml_start,
        "apply_s": total - (admitted_at - start),
        "cpu_s": cpu,
        "bytes": float(len(text)),
    }


def cli_add(pin_root: str, ruleset: RuleSet, fd: int) -> dict[str, float]:
    """`infw add RULE` as an operator types it, on a node holding ruleset: a new CLI process
    (start, imports, stored state read, admission, guard, fsynced store, compile, map write),
    timed from spawn to exit, and each added rule checked to drop its probe afterwards. The
    process runs with its bytecode cached (a warm-up add first), as an installed CLI does."""
    from engine.core.frame import build_frame
    from engine.engine import Engine
    from engine.state.config import NodeConfig

    source = str(BULK_BASE)
    fw = ruleset.firewalls[0].name
    times: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="infw-bench-state-") as state,
        tempfile.TemporaryDirectory(prefix="infw-bench-pyc-") as pyc,
    ):
        eng = Engine(
            pin_root,
            state,
            config=NodeConfig(pin_root=pin_root, state_dir=state),
            session=None,
            interfaces=lambda: {"lo": 1},
        )
        eng.apply(ruleset, confirm_timeout=0, summary="bench cli base")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=pyc)
        run(["ip", "netns", "add", CLI_NS])
        try:
            for i in range(CLI_ROUNDS + 1):
                port = CLI_PORT + i
                frame = build_frame(source, DEST_V4, 17, dport=port, payload_len=64 - 42)
                if test_run(fd, frame, 1)[0] != XDP_PASS:
                    raise RuntimeError(f"udp {port} from {source} is dropped before its add")
                cmd = [
                    *(sys.executable, "-m", "console.cli", "--pin-root", pin_root),
                    *("--state-dir", state, "--netns", CLI_NS, "add", "--confirm-timeout", "0"),
                    *("deny", "udp", str(port), "from", f"{source}/32", "order", str(50 + i)),
                    *("firewall", fw),
                ]
                start = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=120)
                elapsed = time.perf_counter() - start
                if test_run(fd, frame, 1)[0] != XDP_DROP:
                    raise RuntimeError(f"the add of udp {port} from {source} did not take")
                if i:  # the first one wrote the bytecode cache
                    times.append(elapsed)
        finally:
            run(["ip", "netns", "del", CLI_NS], check=False)
    return {
        "apply_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "rounds": float(len(times)),
    }


def infw_bulk(dp: object, ruleset: RuleSet) -> dict[str, float]:
    from engine.core import crd
    from engine.core.compiler import compile_ruleset

    text = crd.dump_yaml(ruleset)
    t0 = time.perf_counter()
    parsed = crd.load_yaml(text)
    t1 = time.perf_counter()
    tables = compile_ruleset(parsed, {"lo": 1})
    t2 = time.perf_counter()
    dp.write_tables(tables, 100)  # type: ignore[attr-defined]
    t3 = time.perf_counter()
    return {
        "parse_s": t1 - t0,
        "compile_s": t2 - t1,
        "write_s": t3 - t2,
        "entries": float(len(tables.lpm) + len(tables.segments)),
    }


# --- the group ------------------------------------------------------------------------------------


def run_group() -> list[Figure]:
    from bench.datapath import udp4
    from bench.pins import loaded_datapath, pin_root

    figures: list[Figure] = []
    results: dict[str, dict[str, float]] = {}
    errors: dict[str, str] = {}
    small = rules_hit_at_last(BASE_RULES, Action.DENY, (BLOCK_V4,), interfaces=("*",))
    shape = BulkShape()
    big = bulk_ruleset(shape)
    # the bulk set plus the block the edit probes (documentation range, so nft can be probed
    # with real packets): the edit flips its deciding rule
    probe_block = (
        rules_hit_at_last(shape.rules_per_block, Action.DENY, (BLOCK_V4,)).firewalls[0].ingress[0]
    )
    big_edit = RuleSet(
        (replace(big.firewalls[0], ingress=(probe_block, *big.firewalls[0].ingress)),)
    )
    world = VethWorld("ed")

    def attempt(name: str, fn: Callable[[], dict[str, float]]) -> None:
        try:
            results[name] = fn()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"

    try:
        with loaded_datapath("ed") as dp:
            frame = udp4()
            attempt("infw edit", lambda: infw_edit(dp, small, frame))
            attempt("engine edit", lambda: engine_edit(pin_root("ed"), small, frame, dp.prog_fd))
            attempt("infw bulk", lambda: infw_bulk(dp, big))
            attempt("infw edit on bulk", lambda: infw_edit(dp, big_edit, frame))
            attempt(
                "engine edit on bulk",
                lambda: engine_edit(pin_root("ed"), big_edit, frame, dp.prog_fd),
            )
            attempt("engine bulk", lambda: engine_bulk(pin_root("ed"), big_edit, frame, dp.prog_fd))
            attempt("cli add on bulk", lambda: cli_add(pin_root("ed"), big_edit, dp.prog_fd))
        world.up()
        attempt("nft edit", lambda: nft_edit(world, small))
        attempt("nft bulk", lambda: nft_bulk(world, big))
        attempt("nft edit on bulk", lambda: nft_edit(world, big_edit))
    finally:
        world.down()

    def fig(
        case: str,
        ours_key: str,
        ours_field: str,
        peer_key: str,
        target: float | None,
        note: str = "",
    ) -> None:
        ours, peer = results.get(ours_key), results.get(peer_key)
        if ours is None:
            figures.append(
                not_measured(
                    GROUP,
                    case,
                    errors.get(ours_key, "did not run"),
                    f"< {target * 1000:.0f} ms" if target else "",
                )
            )
            return
        value = ours[ours_field]
        figures.append(
            Figure(
                GROUP,
                case,
                value * 1000,
                "ms",
                reference=peer["visible_s"] * 1000
                if peer and "visible_s" in peer
                else (peer["apply_s"] * 1000 if peer else None),
                reference_name=f"nft -f ({peer_key})" if peer else "",
                compare="ratio",
                target=f"< {target * 1000:.0f} ms" if target else "",
                met=(value < target) if target else None,
                note=note,
                extra={"ours": ours, "peer": peer, "peer_error": errors.get(peer_key, "")},
            )
        )

    fig(
        f"one rule edit visible, {BASE_RULES} rules (Datapath: compile + write)",
        "infw edit",
        "visible_s",
        "nft edit",
        EDIT_TARGET_S,
        _split(results.get("infw edit")),
    )
    fig(
        f"one rule edit visible, {BASE_RULES} rules (Engine.apply)",
        "engine edit",
        "visible_s",
        "nft edit",
        ENGINE_TARGET_S,
        _cpu(results.get("engine edit")),
    )
    fig(
        f"one rule edit visible, on {shape.rules:,} rules / {shape.cidrs:,} CIDRs",
        "infw edit on bulk",
        "visible_s",
        "nft edit on bulk",
        EDIT_TARGET_S,
        _split(results.get("infw edit on bulk")),
    )
    fig(
        f"one rule edit visible, on {shape.rules:,} rules / {shape.cidrs:,} CIDRs (Engine.apply)",
        "engine edit on bulk",
        "visible_s",
        "nft edit on bulk",
        ENGINE_TARGET_S,
        _cpu(results.get("engine edit on bulk")),
    )
    cli = results.get("cli add on bulk")
    nft_add = results.get("nft edit on bulk")
    floor = results.get("engine edit on bulk")
    case = (
        f"infw add (one rule line) on {shape.rules:,} rules / {shape.cidrs:,} CIDRs, "
        "CLI process end to end"
    )
    if cli is not None:
        figures.append(
            Figure(
                GROUP,
                case,
                cli["apply_s"] * 1000,
                "ms",
                reference=nft_add["add_s"] * 1000 if nft_add else None,
                reference_name="nft add rule (one process)" if nft_add else "",
                compare="ratio",
                target=f"< {CLI_TARGET_S * 1000:.0f} ms",
                met=cli["apply_s"] < CLI_TARGET_S,
                note=(
                    f"median of {int(cli['rounds'])}, {cli['min_s'] * 1000:.0f}.."
                    f"{cli['max_s'] * 1000:.0f} ms; a new process each: start, imports, state "
                    "read, full compile, full map write"
                    + (
                        f"; the same edit through Engine.apply in a long-lived process "
                        f"{floor['apply_s'] * 1000:.0f} ms"
                        if floor
                        else ""
                    )
                ),
                extra={"ours": cli, "peer": nft_add, "floor": floor},
            )
        )
    else:
        figures.append(
            not_measured(
                GROUP,
                case,
                errors.get("cli add on bulk", "did not run"),
                f"< {CLI_TARGET_S * 1000:.0f} ms",
            )
        )
    e2e = results.get("engine bulk")
    nft_bulk_result = results.get("nft bulk")
    case = f"bulk apply {shape.rules:,} rules / {shape.cidrs:,} CIDRs from YAML, end to end"
    if e2e is not None:
        figures.append(
            Figure(
                GROUP,
                case,
                e2e["total_s"],
                "s",
                reference=nft_bulk_result["apply_s"] if nft_bulk_result else None,
                reference_name="nft -f (sets + rules)" if nft_bulk_result else "",
                compare="ratio",
                target=f"< {BULK_TARGET_S:g} s",
                met=e2e["total_s"] < BULK_TARGET_S,
                note=(
                    f"read + YAML + admission {e2e['admit_s']:.2f} s (the YAML reader alone "
                    f"{e2e['yaml_s']:.2f} s), Engine.apply {e2e['apply_s']:.2f} s (guard, "
                    f"fsynced store, compile, map write); CPU {e2e['cpu_s']:.2f} s; "
                    f"{e2e['bytes'] / 1e6:.1f} MB of YAML"
                ),
                extra={
                    "ours": e2e,
                    "peer": nft_bulk_result,
                    "peer_error": errors.get("nft bulk", ""),
                },
            )
        )
    else:
        figures.append(
            not_measured(
                GROUP, case, errors.get("engine bulk", "did not run"), f"< {BULK_TARGET_S:g} s"
            )
        )
    bulk = results.get("infw bulk")
    if bulk is not None:
        total = bulk["compile_s"] + bulk["write_s"]
        peer = results.get("nft bulk")
        figures.append(
            Figure(
                GROUP,
                f"bulk apply {shape.rules:,} rules / {shape.cidrs:,} CIDRs (Datapath only: "
                "full compile + write of a parsed rule set)",
                total,
                "s",
                reference=peer["apply_s"] if peer else None,
                reference_name="nft -f (sets + rules)" if peer else "",
                compare="ratio",
                target="(context: the kernel side of the row above)",
                met=None,
                note=(
                    f"compile {bulk['compile_s']:.2f} s + map write {bulk['write_s']:.2f} s; "
                    f"YAML parse before it {bulk['parse_s']:.2f} s"
                ),
                extra={"ours": bulk, "peer": peer, "peer_error": errors.get("nft bulk", "")},
            )
        )
    else:
        figures.append(
            not_measured(
                GROUP,
                "bulk apply (Datapath only)",
                errors.get("infw bulk", "did not run"),
            )
        )
    for name in ("nft edit", "nft bulk", "nft edit on bulk"):
        if name in errors:
            figures.append(not_measured(GROUP, f"peer: {name}", errors[name]))
    return figures


def _cpu(r: dict[str, float] | None) -> str:
    return f"CPU {r['cpu_s'] * 1000:.1f} ms" if r and "cpu_s" in r else ""


def _split(r: dict[str, float] | None) -> str:
    if not r:
        return ""
    text = f"compile {r['compile_s'] * 1000:.1f} ms + write {r['write_s'] * 1000:.1f} ms"
    if "cpu_s" in r:
        kind = "only changed entries written" if r.get("delta_write") else "full write"
        text += f"; CPU {r['cpu_s'] * 1000:.1f} ms; {int(r.get('rows_written', 0))} rows, {kind}"
    return text
