"""xdp-filter (Debian's xdp-tools), the closest XDP peer, on infw's own test-run harness.

xdp-filter is loaded for real (`xdp-filter load IFACE -m skb` inside a benchmark namespace with
a bpffs of its own), configured with its own CLI, and its attached program found by id. An fd
on that program keeps it and its maps alive after it is detached, so the loaded program is then
run by BPF_PROG_TEST_RUN exactly like infw's and the XDP_PASS floor: interleaved, on one CPU,
in one run. Only what xdp-filter can express is compared: deny one destination port, deny one
source address, and an allow-list (one allowed source, everything else dropped).
"""

from __future__ import annotations

import os
import socket
import statistics
from dataclasses import dataclass

from bench.netns import VethWorld, inside, run
from bench.result import Figure, not_measured
from bench.rulesets import DEST_V4, HIT_PORT, SOURCE_V4
from bench.testrun import Timing, floor_program, measure_interleaved, pinned_on_cpu
from engine.core.frame import build_frame
from engine.core.model import (
    Action,
    Firewall,
    IngressBlock,
    PortRange,
    Protocol,
    Rule,
    RuleSet,
)
from engine.kernel import bpfsys

GROUP = "xdpfilter"
REPEAT = 1_000_000
RUNS = 5
ROUNDS = 3  # each case is measured this many times; the spread is over rounds
BENCH_CPU = 1
LO = {"lo": 1}
XDP_DROP, XDP_PASS = 1, 2
OTHER_SOURCE = "192.0.2.77"


def _udp(src: str) -> bytes:
    return build_frame(src, DEST_V4, 17, dport=HIT_PORT, payload_len=64 - 42)


def _firewall(*blocks: IngressBlock) -> RuleSet:
    return RuleSet((Firewall("bench", ("*",), blocks),))


@dataclass(frozen=True)
class Case:
    name: str
    policy: str  # xdp-filter's --policy is what happens to the unlisted: allow or deny
    configure: str  # xdp-filter commands after load (IFACE-independent)
    ruleset: RuleSet  # infw's rules for the same policy
    frames: tuple[tuple[str, bytes, int], ...]  # (what, frame, expected action)


def _cases() -> list[Case]:
    port = PortRange(HIT_PORT, HIT_PORT)
    anywhere = ("0.0.0.0/0", "::/0")
    return [
        Case(
            "deny one port",
            "allow",
            f"xdp-filter port {HIT_PORT}",  # its default: destination, TCP and UDP
            _firewall(
                IngressBlock(
                    anywhere,
                    (
                        Rule(1, Action.DENY, Protocol.TCP, port),
                        Rule(2, Action.DENY, Protocol.UDP, port),
                    ),
                )
            ),
            (("to the port, dropped", _udp(SOURCE_V4), XDP_DROP),),
        ),
        Case(
            "deny one source",
            "allow",
            f"xdp-filter ip {SOURCE_V4} -m src",
            _firewall(IngressBlock((f"{SOURCE_V4}/32",), (Rule(1, Action.DENY),))),
            (("from the source, dropped", _udp(SOURCE_V4), XDP_DROP),),
        ),
        Case(
            "allow-list (one source)",
            "deny",
            f"xdp-filter ip {SOURCE_V4} -m src",
            _firewall(
                IngressBlock((f"{SOURCE_V4}/32",), (Rule(1, Action.ALLOW),)),
                IngressBlock(anywhere, (Rule(2, Action.DENY),)),
            ),
            (
                ("listed source, passed", _udp(SOURCE_V4), XDP_PASS),
                ("other source, dropped", _udp(OTHER_SOURCE), XDP_DROP),
            ),
        ),
    ]


def load_xdp_filter(world: VethWorld, case: Case) -> int:
    """Load and configure xdp-filter on the receiver, take an fd on its program, detach it.

    The bpffs is private to the one shell that loads and configures (its commands find their
    maps through pins there); the fd returned is what keeps program and maps alive after.
    """
    script = (
        "mount -t bpf bpf /sys/fs/bpf && "
        f"xdp-filter load {world.rx_if} -m skb -p {case.policy} && {case.configure}"
    )
    # without a dispatcher the attached program is xdp-filter's own, so its id is the filter's
    run(["env", "LIBXDP_SKIP_DISPATCHER=1", "sh", "-c", script], ns=world.rx_ns)
    try:
        with inside(world.rx_ns):
            ifindex = socket.if_nametoindex(world.rx_if)
            prog_id = bpfsys.xdp_query_id(ifindex, bpfsys.XDP_FLAGS_SKB_MODE)
        if not prog_id:
            raise RuntimeError(f"xdp-filter reported success but nothing is on {world.rx_if}")
        fd = bpfsys.prog_fd_by_id(prog_id)
        name = bpfsys.prog_info(fd).name
        if not name.startswith("xdpfilt_"):
            os.close(fd)
            raise RuntimeError(f"program {prog_id} on {world.rx_if} is {name!r}, not xdp-filter")
        return fd
    finally:
        run(["ip", "link", "set", "dev", world.rx_if, "xdpgeneric", "off"], ns=world.rx_ns)


@dataclass
class Pair:
    case: str
    what: str
    infw: list[float]
    xdp_filter: list[float]
    floor: list[float]
    program: str


def run_group() -> list[Figure]:
    from bench.pins import loaded_datapath
    from engine.core.compiler import compile_ruleset

    pairs: list[Pair] = []
    errors: dict[str, str] = {}
    world = VethWorld("xf")
    fds: dict[str, int] = {}
    try:
        world.up()
        cases = _cases()
        for case in cases:
            try:
                fds[case.name] = load_xdp_filter(world, case)
            except Exception as exc:
                errors[case.name] = f"{type(exc).__name__}: {exc}"
        with pinned_on_cpu(BENCH_CPU), floor_program() as floor_fd, loaded_datapath("xf") as dp:
            for gen, case in enumerate(c for c in cases if c.name in fds):
                dp.write_tables(compile_ruleset(case.ruleset, LO), gen + 1)
                program = bpfsys.prog_info(fds[case.name]).name
                for what, frame, action in case.frames:
                    got: dict[str, list[float]] = {"infw": [], "xdp-filter": [], "floor": []}
                    for _ in range(ROUNDS):
                        t = measure_interleaved(
                            {
                                "floor": (floor_fd, frame),
                                "infw": (dp.prog_fd, frame),
                                "xdp-filter": (fds[case.name], frame),
                            },
                            REPEAT,
                            RUNS,
                        )
                        _check_actions(case.name, what, t, action)
                        for k in got:
                            got[k].append(t[k].median_ns)
                    pairs.append(
                        Pair(case.name, what, got["infw"], got["xdp-filter"], got["floor"], program)
                    )
    except Exception as exc:
        errors["all cases"] = f"{type(exc).__name__}: {exc}"
    finally:
        for fd in fds.values():
            os.close(fd)
        world.down()
    return _figures(pairs, errors)


def _check_actions(case: str, what: str, timings: dict[str, Timing], want: int) -> None:
    for who in ("infw", "xdp-filter"):
        if timings[who].action != want:
            raise RuntimeError(
                f"{case}, {what}: {who} returned XDP action {timings[who].action}, expected {want}"
            )


def _figures(pairs: list[Pair], errors: dict[str, str]) -> list[Figure]:
    figures: list[Figure] = []
    for p in pairs:
        saved = [x - i for x, i in zip(p.xdp_filter, p.infw, strict=True)]
        med = statistics.median
        figures.append(
            Figure(
                GROUP,
                f"{p.case}: {p.what} (xdp-filter program {p.program})",
                med(p.infw),
                "ns",
                reference=med(p.xdp_filter),
                reference_name="xdp-filter",
                compare="difference",
                target="cheaper than xdp-filter",
                met=med(p.infw) < med(p.xdp_filter),
                note=(
                    f"floor {med(p.floor):.0f} ns; infw +{med(p.infw) - med(p.floor):.0f} ns, "
                    f"xdp-filter +{med(p.xdp_filter) - med(p.floor):.0f} ns over it; "
                    f"xdp-filter costs {min(saved):.0f}..{max(saved):.0f} ns more "
                    f"over {len(saved)} rounds; ratio ×{med(p.infw) / med(p.xdp_filter):.2f}"
                ),
                extra={"infw_ns": p.infw, "xdp_filter_ns": p.xdp_filter, "floor_ns": p.floor},
            )
        )
    for name, err in errors.items():
        figures.append(not_measured(GROUP, name, err))
    return figures
