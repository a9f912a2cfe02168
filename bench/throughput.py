"""Drop throughput on a veth pair: infw (native XDP) against nftables and iptables, same traffic.

A sender namespace runs trafgen (netsniff-ng) sending one 64-byte UDP frame to a dropped port;
the receiver namespace holds the filter under test. Each filter's own drop counter is sampled
over a fixed window once traffic is steady. Everything happens on one CPU: trafgen pins its
worker to CPU 0, veth hands the frame to the receiver in the sender's softirq, so a packet/s
figure is 1 / (send cost + receive-and-drop cost) and the ratios understate the receive-side
difference; the trivial XDP_DROP program gives the XDP path's own ceiling for scale.

veth and native XDP: with a program attached, veth_xmit queues every frame to the receiver's
NAPI ring (veth_skb_is_eligible_for_gro() returns true whenever the receive queue has an XDP
program), and the program runs in veth's NAPI poll on the skb's data (veth_xdp_rcv_skb; an skb
without XDP_PACKET_HEADROOM or with fragments is first copied into a page). The "peer needs an
XDP program or GRO" condition applies only to frames *redirected into* a veth (ndo_xdp_xmit /
XDP_TX), not to frames the peer transmits, so nothing is needed on the sender side here; the
benchmark checks that every received frame was counted by the program.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.netns import VethWorld, inside, run
from bench.result import Figure, not_measured
from bench.rulesets import HIT_PORT, rules_hit_at_last
from engine.core.frame import build_frame
from engine.core.model import Action

GROUP = "throughput"
WARMUP_S = 0.7
WINDOW_S = 2.5
MAX_PACKETS = 500_000_000  # trafgen's own bound, far above what a window can send
SENDER_CPU = 0  # trafgen pins its single worker to CPU 0; the bench reads counters from CPU 1

Counter = Callable[[], int]


@dataclass
class Rate:
    name: str
    dropped_pps: float
    received_pps: float
    window_s: float

    @property
    def dropped_share(self) -> float:
        return self.dropped_pps / self.received_pps if self.received_pps else 0.0


def _rx_packets(world: VethWorld) -> int:
    out = run(["ip", "-j", "-s", "link", "show", "dev", world.rx_if], ns=world.rx_ns).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


@contextmanager
def _trafgen(world: VethWorld, frame: bytes) -> Iterator[subprocess.Popen[bytes]]:
    cfg = "{ " + ", ".join(f"0x{b:02x}" for b in frame) + " }\n"
    with tempfile.NamedTemporaryFile(
        "w", prefix="infw-bench-", suffix=".trafgen", delete=False
    ) as f:
        f.write(cfg)
        path = f.name
    proc = subprocess.Popen(
        [
            "timeout",
            "-s",
            "INT",
            str(int(WARMUP_S + WINDOW_S + 30)),
            "ip",
            "netns",
            "exec",
            world.tx_ns,
            "trafgen",
            "-o",
            world.tx_if,
            "-i",
            path,
            "-n",
            str(MAX_PACKETS),
            "-P",
            "1",
            "--no-sock-mem",
            "--notouch-irq",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        # trafgen and its wrappers share one process group of their own (start_new_session)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        os.unlink(path)


def measure_rate(world: VethWorld, name: str, dropped: Counter, frame: bytes) -> Rate:
    with _trafgen(world, frame) as proc:
        time.sleep(WARMUP_S)
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"trafgen exited early ({proc.returncode}): {err.strip()[-300:]}")
        d0, r0, t0 = dropped(), _rx_packets(world), time.monotonic()
        time.sleep(WINDOW_S)
        d1, r1, t1 = dropped(), _rx_packets(world), time.monotonic()
    window = t1 - t0
    return Rate(name, (d1 - d0) / window, (r1 - r0) / window, window)


# --- the filters under test ---------------------------------------------------------------------


@contextmanager
def no_filter(world: VethWorld) -> Iterator[Counter]:
    """No filter: the stack delivers to a closed UDP port. Counted as received frames."""
    yield lambda: _rx_packets(world)


XDP_DROP_SOURCE = """
BPF_PERCPU_ARRAY(drops, u64, 1);
int bench_drop(struct xdp_md *ctx) {
    u32 zero = 0;
    u64 *n = drops.lookup(&zero);
    if (n)
        (*n)++;
    return XDP_DROP;
}
"""


@contextmanager
def xdp_floor(world: VethWorld) -> Iterator[Counter]:
    """A trivial counting XDP_DROP program in native mode: the ceiling of the XDP path."""
    from bcc import BPF

    bpf = BPF(text=XDP_DROP_SOURCE)
    try:
        fn = bpf.load_func("bench_drop", BPF.XDP)
        with inside(world.rx_ns):
            bpf.attach_xdp(world.rx_if, fn, BPF.XDP_FLAGS_DRV_MODE)
        try:
            table = bpf["drops"]
            yield lambda: int(sum(table[0]))
        finally:
            with inside(world.rx_ns):
                bpf.remove_xdp(world.rx_if, BPF.XDP_FLAGS_DRV_MODE)
    finally:
        bpf.cleanup()


@contextmanager
def infw_filter(world: VethWorld, dp: Any, rules: int = 1) -> Iterator[Counter]:
    """infw with `rules` rules (the last one drops the traffic), attached natively."""
    from engine.core.compiler import compile_ruleset
    from engine.kernel.abi import NodeCounter

    with inside(world.rx_ns):
        ifindex = world.rx_ifindex_here()
        ruleset = rules_hit_at_last(
            rules, Action.DENY, cidrs=("192.0.2.0/24",), interfaces=(world.rx_if,)
        )
        dp.write_tables(compile_ruleset(ruleset, {world.rx_if: ifindex}), rules)
        mode = dp.attach(world.rx_if, mode="native")
        if mode != "native":
            raise RuntimeError(f"infw attached in {mode} mode, not native")
    yield lambda: int(dp.node_counters()[NodeCounter.DENY][0])
    with inside(world.rx_ns):
        dp.detach(world.rx_if)


def _nft_counter(world: VethWorld, family: str, table: str) -> int:
    out = run(["nft", "-j", "list", "table", family, table], ns=world.rx_ns).stdout
    total = 0
    for item in json.loads(out)["nftables"]:
        rule = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr and any("drop" in e for e in rule["expr"]):
                total += int(expr["counter"]["packets"])
    return total


@contextmanager
def nft_filter(world: VethWorld, hook: str, rules: int = 1) -> Iterator[Counter]:
    """The same rule(s) as an nftables drop, in the netdev ingress hook (as early as XDP's
    software peers get) or the inet input hook."""
    from bench.rulesets import nft_table

    ruleset = rules_hit_at_last(rules, Action.DENY, cidrs=("192.0.2.0/24",))
    if hook == "ingress":
        family, text = (
            "netdev",
            nft_table(ruleset, "netdev", "infwbench", "ingress", device=world.rx_if, priority=-500),
        )
    else:
        family, text = "inet", nft_table(ruleset, "inet", "infwbench", "input", priority=-300)
    run(["nft", "-f", "-"], ns=world.rx_ns, input_text=text)
    try:
        yield lambda: _nft_counter(world, family, "infwbench")
    finally:
        run(["nft", "delete", "table", family, "infwbench"], ns=world.rx_ns, check=False)


def _iptables_counter(world: VethWorld, binary: str) -> int:
    out = run([binary, "-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"], ns=world.rx_ns).stdout
    total = 0
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "DROP":
            total += int(fields[0])
    return total


@contextmanager
def iptables_filter(world: VethWorld, binary: str) -> Iterator[Counter]:
    """The rule as an iptables raw PREROUTING drop (iptables here is the nf_tables backend;
    iptables-legacy is the old x_tables one)."""
    rule = ["-s", "192.0.2.0/24", "-p", "udp", "--dport", str(HIT_PORT), "-j", "DROP"]
    run([binary, "-t", "raw", "-A", "PREROUTING", *rule], ns=world.rx_ns)
    try:
        yield lambda: _iptables_counter(world, binary)
    finally:
        run([binary, "-t", "raw", "-D", "PREROUTING", *rule], ns=world.rx_ns, check=False)
        if binary == "iptables":
            # iptables-nft leaves its (empty) raw table behind: remove it with the namespace's
            # other state (the namespace itself is deleted afterwards anyway)
            run(["nft", "delete", "table", "ip", "raw"], ns=world.rx_ns, check=False)


# --- the group ------------------------------------------------------------------------------


Subject = Callable[[VethWorld, Any], Any]
ROUNDS = 2  # the 1-rule subjects run this many times, interleaved; each keeps its best window

SUBJECTS: list[tuple[str, Subject, int]] = [
    ("no filter (stack, closed port)", lambda w, dp: no_filter(w), 1),
    ("trivial XDP_DROP (native)", lambda w, dp: xdp_floor(w), ROUNDS),
    ("infw XDP native, 1 rule", lambda w, dp: infw_filter(w, dp, 1), ROUNDS),
    ("nft netdev ingress, 1 rule", lambda w, dp: nft_filter(w, "ingress", 1), ROUNDS),
    ("nft inet input, 1 rule", lambda w, dp: nft_filter(w, "input", 1), ROUNDS),
    ("iptables(-nft) raw PREROUTING", lambda w, dp: iptables_filter(w, "iptables"), ROUNDS),
    ("iptables-legacy raw PREROUTING", lambda w, dp: iptables_filter(w, "iptables-legacy"), ROUNDS),
    ("infw XDP native, 1,000 rules hit at last", lambda w, dp: infw_filter(w, dp, 1000), 1),
    (
        "nft netdev ingress, 1,000 rules hit at last",
        lambda w, dp: nft_filter(w, "ingress", 1000),
        1,
    ),
]


def run_group() -> list[Figure]:
    from bench.pins import loaded_datapath

    figures: list[Figure] = []
    rates: dict[str, Rate] = {}
    errors: dict[str, str] = {}
    teardown: dict[str, str] = {}
    world = VethWorld("tp")
    saved_affinity = os.sched_getaffinity(0)
    try:
        world.up()
        time.sleep(0.5)
        frame = build_frame(world.tx_addr, world.rx_addr, 17, dport=HIT_PORT, payload_len=22)
        assert len(frame) == 64
        others = saved_affinity - {SENDER_CPU}
        if others:
            os.sched_setaffinity(0, others)
        with loaded_datapath("tp") as dp:
            for round_no in range(max(n for _, _, n in SUBJECTS)):
                for name, make, rounds in SUBJECTS:
                    if round_no >= rounds or name in errors:
                        continue
                    try:
                        with make(world, dp) as counter:
                            rate = measure_rate(world, name, counter, frame)
                            if name not in rates or rate.dropped_pps > rates[name].dropped_pps:
                                rates[name] = rate
                    except Exception as exc:
                        text = f"{type(exc).__name__}: {exc}"
                        if name in rates:
                            teardown[name] = f"measured, but teardown failed: {text}"
                        else:
                            errors[name] = text
                    finally:
                        # whatever a subject left behind must not filter the next one's traffic
                        run(
                            ["ip", "link", "set", "dev", world.rx_if, "xdp", "off"],
                            ns=world.rx_ns,
                            check=False,
                        )
    finally:
        os.sched_setaffinity(0, saved_affinity)
        world.down()

    for name, rate in rates.items():
        figures.append(
            Figure(
                GROUP,
                name,
                rate.dropped_pps,
                "pkt/s",
                compare="value",
                note="; ".join(
                    filter(
                        None,
                        (
                            f"{rate.dropped_share:.1%} of received frames counted",
                            teardown.get(name, ""),
                        ),
                    )
                ),
                extra={"received_pps": rate.received_pps, "window_s": rate.window_s},
            )
        )
    for name, err in errors.items():
        figures.append(not_measured(GROUP, name, err))

    ours_1 = rates.get("infw XDP native, 1 rule")
    ours_1k = rates.get("infw XDP native, 1,000 rules hit at last")
    target = "higher by a wide margin (≥ ×1.5)"
    for peer, ours in (
        ("nft netdev ingress, 1 rule", ours_1),
        ("nft inet input, 1 rule", ours_1),
        ("iptables(-nft) raw PREROUTING", ours_1),
        ("iptables-legacy raw PREROUTING", ours_1),
        ("nft netdev ingress, 1,000 rules hit at last", ours_1k),
    ):
        ref = rates.get(peer)
        if ours is None or ref is None:
            figures.append(not_measured(GROUP, f"infw vs {peer}", "a side did not run", target))
            continue
        ratio = ours.dropped_pps / ref.dropped_pps if ref.dropped_pps else 0.0
        figures.append(
            Figure(
                GROUP,
                f"infw drop rate vs {peer}",
                ours.dropped_pps,
                "pkt/s",
                reference=ref.dropped_pps,
                reference_name=peer,
                compare="ratio",
                target=target,
                met=ratio >= 1.5,
            )
        )
    floor = rates.get("trivial XDP_DROP (native)")
    if ours_1 is not None and floor is not None and ours_1.dropped_pps and floor.dropped_pps:
        extra_ns = 1e9 / ours_1.dropped_pps - 1e9 / floor.dropped_pps
        figures.append(
            Figure(
                GROUP,
                "infw per-packet time over trivial XDP_DROP (1 rule)",
                1e9 / ours_1.dropped_pps,
                "ns",
                reference=1e9 / floor.dropped_pps,
                reference_name="trivial XDP_DROP",
                compare="difference",
                target="(context: ≈ the test-run difference)",
                met=None,
                note=f"{extra_ns:.0f} ns",
            )
        )
    return figures
