"""Datapath cost per packet: BPF_PROG_TEST_RUN of the loaded firewall minus a trivial XDP_PASS
program, both run by the same harness (bench.testrun), interleaved, on one CPU, in one run.

Frames are 64 bytes (the minimum Ethernet frame without FCS) unless their headers need more:
IPv6 with two extension headers is 78 bytes. No ctx is given, so ingress is ifindex 1 (lo)
and the rules are compiled for `lo`.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.result import Figure, not_measured
from bench.rulesets import (
    BLOCK_V4,
    BLOCK_V6,
    DEST_V4,
    DEST_V6,
    HIT_PORT,
    SOURCE_V4,
    SOURCE_V6,
    BulkShape,
    bulk_ruleset,
    host_v6,
    net_v6_64,
    rules_hit_at_last,
    scattered_v4,
)
from bench.testrun import Timing, floor_program, measure_interleaved, pinned_on_cpu
from engine.core.frame import IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, build_frame
from engine.core.model import Action, RuleSet
from engine.kernel.abi import DEFAULT_FLOW_SAMPLE

GROUP = "datapath"
TARGET_NS = 40.0
TARGET = f"≤ +{TARGET_NS:.0f} ns over floor"
# Many short rounds rather than a few long ones: a burst of load from the other CPU (this VM's
# two vCPUs share a host core's caches) then spoils a round, not a fifth of the figure.
REPEAT = 200_000
RUNS = 25
BENCH_CPU = 1
LO = {"lo": 1}
XDP_DROP, XDP_PASS = 1, 2

RULE_COUNTS = (1, 10, 100, 1000)
CIDR_COUNTS = (100, 1_000, 10_000, 100_000)  # x 10 rules each, for the plot


def udp4(src: str = SOURCE_V4, vlan: tuple[int, ...] = ()) -> bytes:
    pad = 64 - (14 + 4 * len(vlan) + 20 + 8)
    return build_frame(src, DEST_V4, 17, dport=HIT_PORT, vlan=vlan, payload_len=pad)


def udp6(src: str) -> bytes:
    return build_frame(src, DEST_V6, 17, dport=HIT_PORT, payload_len=64 - 62)


def _host(cidr: str) -> str:
    return cidr.split("/")[0]


# Large tables of other shapes: 1,000 blocks x 100 prefixes x 10 rules, probed at the last block
LARGE: dict[str, tuple[str, Callable[[int], str], bool]] = {
    "100k v4 scattered": ("100,000 scattered IPv4 /32s x 10 rules", scattered_v4, True),
    "100k v6 hosts": ("100,000 IPv6 /128 sources x 10 rules", host_v6, False),
    "100k v6 /64": ("100,000 IPv6 /64s x 10 rules", net_v6_64, False),
}
CAPACITY = BulkShape(blocks=1000, cidrs_per_block=1000)  # 1,000,000 scattered IPv4 /32s
CAPACITY_CASE = "1,000,000 scattered IPv4 /32s x 10 rules"
# the capacity goal's shape: 1,000 rules on every one of 1,000,000 prefixes (50 blocks, so 50
# merged lists of 1,000 rules; rule ids are 16-bit, so 1,000 blocks of 1,000 would be refused)
DEEP = BulkShape(blocks=50, cidrs_per_block=20_000, rules_per_block=1000)
DEEP_CASE = "1,000,000 scattered IPv4 /32s x 1,000 rules each, hit at the last"
CAPACITY_CASES = (CAPACITY_CASE, DEEP_CASE)
SAMPLING_OFF = ", flow sampling off"
HASH_ONLY = "hosts in the kernel hash map (no cuckoo buckets)"  # what the buckets replace
# where the shipped program takes these lookups, for the comparison rows' target column
LPM_ONLY_USE = "comparison: only for what the arrays cannot hold, warned on apply"
HASH_ONLY_USE = "comparison: used only for hosts the buckets cannot place"


def udp6_ext() -> bytes:
    return build_frame(
        SOURCE_V6, DEST_V6, 17, dport=HIT_PORT, ipv6_ext=(IPPROTO_HOPOPTS, IPPROTO_DSTOPTS)
    )


@dataclass(frozen=True)
class Case:
    name: str
    tables: str  # key of the rule set it runs against
    frame: bytes
    action: int  # expected XDP action
    rules: int = 0  # for the plot
    cidrs: int = 0
    plotted: str = ""  # "rules" or "cidrs" series, or ""
    # set on a row that measures a lookup infw does not use for this table (what it replaced):
    # printed as the row's target, with no goal to meet
    comparison: str = ""


def _rulesets() -> dict[str, Callable[[], RuleSet]]:
    sets: dict[str, Callable[[], RuleSet]] = {
        "none": RuleSet,
        "1 allow": lambda: rules_hit_at_last(1, Action.ALLOW, (BLOCK_V4,)),
        "1 deny": lambda: rules_hit_at_last(1, Action.DENY, (BLOCK_V4,)),
        "1 deny v6": lambda: rules_hit_at_last(1, Action.DENY, (BLOCK_V6,)),
    }
    for n in RULE_COUNTS[1:]:
        sets[f"{n} rules"] = partial(rules_hit_at_last, n, Action.DENY, (BLOCK_V4,))
    for c in CIDR_COUNTS:
        sets[f"{c} cidrs"] = partial(bulk_ruleset, BulkShape(blocks=c // 100))
    for key, (_, cidr, _) in LARGE.items():
        sets[key] = partial(bulk_ruleset, BulkShape(), cidr=cidr)
        sets[f"{key} lpm"] = sets[key]
        sets[f"{key} hash"] = sets[key]
    sets["1M v4 scattered"] = partial(bulk_ruleset, CAPACITY, cidr=scattered_v4)
    sets["1M x 1000 rules"] = partial(bulk_ruleset, DEEP, cidr=scattered_v4)
    return sets


def _cases() -> list[Case]:
    bulk = BulkShape()
    cases = [
        Case("no rules", "none", udp4(), XDP_PASS),
        Case("1 CIDR x 1 rule, allow", "1 allow", udp4(), XDP_PASS),
        Case("1 CIDR x 1 rule, deny", "1 deny", udp4(), XDP_DROP, 1, 1, "rules"),
    ]
    for n in RULE_COUNTS[1:]:
        cases.append(
            Case(
                f"1 CIDR x {n:,} rules, hit at the last",
                f"{n} rules",
                udp4(),
                XDP_DROP,
                n,
                1,
                "rules",
            )
        )
    for c in CIDR_COUNTS:
        name = f"{c:,} CIDRs x 10 rules, hit at the tenth"
        cases.append(
            Case(
                name, f"{c} cidrs", udp4(bulk.probe_source(c // 100 - 1)), XDP_DROP, 10, c, "cidrs"
            )
        )
    last = (bulk.blocks - 1) * bulk.cidrs_per_block
    for key, (name, cidr, v4) in LARGE.items():
        src = _host(cidr(last))
        frame = udp4(src) if v4 else udp6(src)
        cases.append(Case(name, key, frame, XDP_DROP, 10, bulk.cidrs))
        cases.append(
            Case(
                f"{name}, kernel LPM tries only",
                f"{key} lpm",
                frame,
                XDP_DROP,
                10,
                bulk.cidrs,
                comparison=LPM_ONLY_USE,
            )
        )
        cases.append(
            Case(
                f"{name}, {HASH_ONLY}",
                f"{key} hash",
                frame,
                XDP_DROP,
                10,
                bulk.cidrs,
                comparison=HASH_ONLY_USE,
            )
        )
    probe = _host(scattered_v4((CAPACITY.blocks - 1) * CAPACITY.cidrs_per_block))
    cases.append(Case(CAPACITY_CASE, "1M v4 scattered", udp4(probe), XDP_DROP, 10, CAPACITY.cidrs))
    probe = _host(scattered_v4((DEEP.blocks - 1) * DEEP.cidrs_per_block))
    cases.append(Case(DEEP_CASE, "1M x 1000 rules", udp4(probe), XDP_DROP, 1000, DEEP.cidrs))
    cases += [
        Case("IPv6 + 2 extension headers (78 B), deny", "1 deny v6", udp6_ext(), XDP_DROP),
        Case("VLAN 802.1Q, deny", "1 deny", udp4(vlan=(100,)), XDP_DROP),
        Case("VLAN QinQ (802.1ad + 802.1Q), deny", "1 deny", udp4(vlan=(200, 100)), XDP_DROP),
    ]
    return cases


@dataclass
class Measured:
    case: Case
    ours: Timing  # flow sampling on (the default, 1 in DEFAULT_FLOW_SAMPLE)
    floor: Timing
    compile_s: float
    write_s: float
    bytes_per_prefix: float = 0.0
    unsampled: Timing | None = None  # the same with flow sampling off, in the same rounds

    @property
    def over_ns(self) -> float:
        return self.ours.median_ns - self.floor.median_ns

    @property
    def sampling_ns(self) -> float | None:
        """What flow sampling adds, against the same case with it off."""
        if self.unsampled is None:
            return None
        return self.ours.median_ns - self.unsampled.median_ns


def measure_all(progress: Callable[[str], None] = print) -> tuple[list[Measured], dict[str, str]]:
    from bench.pins import loaded_datapath
    from engine.core.compiler import compile_ruleset

    results: list[Measured] = []
    errors: dict[str, str] = {}
    cases = _cases()
    rulesets = _rulesets()
    with pinned_on_cpu(BENCH_CPU), floor_program() as floor_fd, loaded_datapath("dp") as dp:
        generation = 0
        for key in dict.fromkeys(c.tables for c in cases):
            mine = [c for c in cases if c.tables == key]
            try:
                t0 = time.perf_counter()
                tables = compile_ruleset(rulesets[key](), LO)
                if key.endswith(" lpm"):  # the same tables with no array nodes: all in LPM tries
                    tables = dataclasses.replace(tables, node_budget=0)
                t1 = time.perf_counter()
                generation += 1
                with _hosts_in_hash(key.endswith(" hash")):
                    dp.write_tables(tables, generation)
                t2 = time.perf_counter()
            except Exception as exc:
                for c in mine:
                    errors[c.name] = f"{type(exc).__name__}: {exc}"
                continue
            subjects = {"floor": (floor_fd, mine[0].frame)}
            setup: dict[str, Callable[[], None]] = {}
            for c in mine:
                subjects[c.name] = (dp.prog_fd, c.frame)
                subjects[c.name + SAMPLING_OFF] = (dp.prog_fd, c.frame)
                setup[c.name] = partial(dp.set_flow_sample, DEFAULT_FLOW_SAMPLE)
                setup[c.name + SAMPLING_OFF] = partial(dp.set_flow_sample, 0)
            timings = measure_interleaved(subjects, REPEAT, RUNS, setup)
            dp.set_flow_sample(DEFAULT_FLOW_SAMPLE)
            for c in mine:
                got = timings[c.name]
                if got.action != c.action:
                    errors[c.name] = f"wrong verdict: XDP action {got.action}, expected {c.action}"
                    continue
                results.append(
                    Measured(
                        c,
                        got,
                        timings["floor"],
                        t1 - t0,
                        t2 - t1,
                        _bytes_per_prefix(dp, tables),
                        timings[c.name + SAMPLING_OFF],
                    )
                )
                progress(
                    f"  {c.name}: {got.median_ns:.0f} ns (floor {timings['floor'].median_ns:.0f})"
                )
    return results, errors


@contextmanager
def _hosts_in_hash(on: bool) -> Iterator[None]:
    """Write the exact prefixes to the kernel hash map, as before the cuckoo buckets."""
    from engine.kernel import hostplan

    saved = hostplan.BUCKETS_PER_GEN
    if on:
        hostplan.BUCKETS_PER_GEN = dict.fromkeys(saved, 0)
    try:
        yield
    finally:
        hostplan.BUCKETS_PER_GEN = saved


def _memlock(fd: int) -> int:
    """Kernel memory charged to a map (fdinfo memlock: actual use for LPM tries since 6.x)."""
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return 0


def _bytes_per_prefix(dp: Any, tables: Any) -> float:
    """Map memory the live tables take per source prefix: array-trie nodes used (1 KiB each)
    plus the LPM tries' memlock (actual use on 6.x kernels; the other generation is reclaimed
    first, so only the live one counts)."""
    from engine.kernel.abi import MAP_HOSTS, MAP_SEG, MAP_SRC, NODE_ENTRIES
    from engine.kernel.hostplan import BUCKET_BYTES

    dp.reclaim()
    fast = tables.fast
    nodes = len(fast.rows) if fast.rows is not None else fast.node_count
    lpm = 0
    if fast.lpm or fast.segments:
        lpm = _memlock(dp.maps[MAP_SRC].fd) + _memlock(dp.maps[MAP_SEG].fd)
    plan = dp.tables.last_hosts
    if plan is not None and plan.hashed:
        lpm += _memlock(dp.maps[MAP_HOSTS].fd)
    if plan is not None:  # the cuckoo buckets the hosts occupy (the arrays are preallocated)
        lpm += sum(n * BUCKET_BYTES[space] for space, n in plan.buckets_used.items())
    return (nodes * NODE_ENTRIES * 4 + lpm) / max(len(tables.lpm), 1)


def paired_spread(ours: Timing, floor: Timing) -> tuple[float, float]:
    """The 25th and 75th percentile of ours - floor over the rounds (each round runs both)."""
    diffs = [o - f for o, f in zip(ours.runs_ns, floor.runs_ns, strict=True)]
    q = statistics.quantiles(diffs, n=4)
    return q[0], q[2]


def _note(m: Measured) -> str:
    """Flow sampling's share (every case runs with it on, as in production), the spread of the
    rounds, memory per prefix for the large tables, and compile + write time for the capacity
    case."""
    low, high = paired_spread(m.ours, m.floor)
    parts = [f"flow sampling 1 in {DEFAULT_FLOW_SAMPLE} on; rounds {low:+.0f}..{high:+.0f} ns"]
    if m.unsampled is not None:
        off = m.unsampled.median_ns - m.floor.median_ns
        parts.append(f"off: {off:+.0f} ns")
    if m.case.cidrs >= 100_000:
        parts.append(f"{m.bytes_per_prefix:.0f} B of map memory per prefix")
    if m.case.name in CAPACITY_CASES:
        parts.append(f"compile {m.compile_s:.1f} s, write {m.write_s:.1f} s")
    return "; ".join(parts)


def run_group(plot_path: str | None = None) -> list[Figure]:
    try:
        results, errors = measure_all()
    except Exception as exc:
        return [not_measured(GROUP, "all datapath cases", f"{type(exc).__name__}: {exc}", TARGET)]
    figures: list[Figure] = []
    for m in results:
        figures.append(
            Figure(
                GROUP,
                m.case.name,
                m.ours.median_ns,
                "ns",
                reference=m.floor.median_ns,
                reference_name="XDP_PASS floor",
                compare="difference",
                target=f"({m.case.comparison})" if m.case.comparison else TARGET,
                met=None if m.case.comparison else m.over_ns <= TARGET_NS,
                note=_note(m),
                extra={
                    "bytes_per_prefix": m.bytes_per_prefix,
                    "runs_ns": m.ours.runs_ns,
                    "floor_runs_ns": m.floor.runs_ns,
                    "frame_bytes": len(m.case.frame),
                    "compile_s": m.compile_s,
                    "write_s": m.write_s,
                    "rules": m.case.rules,
                    "cidrs": m.case.cidrs,
                    "series": m.case.plotted,
                    "flow_sample": DEFAULT_FLOW_SAMPLE,
                    "unsampled_ns": m.unsampled.median_ns if m.unsampled else None,
                    "unsampled_runs_ns": m.unsampled.runs_ns if m.unsampled else None,
                },
            )
        )
    for name, err in errors.items():
        figures.append(not_measured(GROUP, name, err, TARGET))
    if plot_path and results:
        from bench.plot import cost_plot

        cost_plot(
            plot_path,
            {
                "rules (1 CIDR, hit at the last)": [
                    (m.case.rules, m.over_ns) for m in results if m.case.plotted == "rules"
                ],
                "CIDRs (10 rules each, hit at the tenth)": [
                    (m.case.cidrs, m.over_ns) for m in results if m.case.plotted == "cidrs"
                ],
            },
            TARGET_NS,
        )
    return figures
