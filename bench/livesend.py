"""Drop rates on a veth pair with a sender that is not the bottleneck: live frames.

The sender is BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES (what xdp-trafficgen does)
running a one-line XDP_TX program with the sender's veth as ingress device: the kernel turns
XDP_TX into a redirect out of that veth, whose ndo_xdp_xmit hands xdp_frames straight to the
receiver's NAPI ring. The receiver drops them with the filter under test: an XDP program sees
the xdp_frame itself (no skb is ever built), nftables and iptables need veth to build an skb
per frame and run GRO first (GRO is switched on so the receiver has NAPI without XDP).

Two placements, both reported:
- "own cores": the receiver's NAPI is threaded and its kthread pinned to CPU 1, the sender runs
  on CPU 0; the veth ring (256 frames) overflows when the receiver is slower and the excess is
  dropped at the sender. Every frame's page goes back to the sender's page pool across CPUs,
  and on some hosts that lock is what this placement measures: on the Xeon VM of 2026-12-04,
  perf on the receiver's CPU showed ~75% of its time in contended spin locks (paravirt waits
  halt the vCPU) around page_pool_put_unrefed_netmem and 4.5% in infw's program; a trivial
  drop given a loop of arithmetic that costs it 44 ns a frame on one core ran 228 ns a frame
  slower here.
- "one core": NAPI in softirq on the sender's CPU, so packets/s = 1 / (send + receive); the
  sender's own cost (the trivial drop's time per frame is an upper bound on it) bounds every
  receiver figure from above. The ratio rows also give each filter's time per frame beyond
  the trivial drop's, which is what the filter itself adds.

Every figure carries the sender's own rate beside it, so a reader sees it is not the limit.
Rounds are interleaved across subjects; medians are reported with the min..max spread.
"""

from __future__ import annotations

import os
import socket
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.netns import VethWorld, inside, run
from bench.result import Figure, not_measured
from bench.rulesets import HIT_PORT
from bench.throughput import (
    Counter,
    _rx_packets,
    infw_filter,
    iptables_filter,
    nft_filter,
    xdp_floor,
)
from engine.core.frame import build_frame
from engine.kernel import bpfsys

GROUP = "livesend"
SENDER_CPU = 0
RECEIVER_CPU = 1
WINDOW_S = 0.5  # sending time per sample
ROUNDS = 3
FIRST_CHUNK = 4096  # frames per test-run call; doubled while a call takes under CHUNK_S
CHUNK_S = 0.05
DRAIN_S = 0.02  # the veth ring holds 256 frames: this is ample for the receiver to finish
OWN, ONE = "own cores", "one core"
MODES = (OWN, ONE)
TX_SOURCE = "int live_tx(struct xdp_md *ctx) { return XDP_TX; }\n"


class LiveSender:
    """The XDP_TX program run with live frames out of the sender's veth."""

    def __init__(self, world: VethWorld) -> None:
        from bcc import BPF

        self.world = world
        self._bpf = BPF(text=TX_SOURCE)
        self.prog_fd = int(self._bpf.load_func("live_tx", BPF.XDP).fd)
        with inside(world.tx_ns):
            self.ifindex = socket.if_nametoindex(world.tx_if)

    def close(self) -> None:
        self._bpf.cleanup()

    def send_for(self, frame: bytes, seconds: float) -> tuple[int, float]:
        """Send `frame` repeatedly for about `seconds`: (frames sent, seconds taken)."""
        sent, chunk = 0, FIRST_CHUNK
        start = time.perf_counter()
        # the device is looked up in the caller's namespace, so the calls run inside it
        with inside(self.world.tx_ns):
            while True:
                t0 = time.perf_counter()
                bpfsys.prog_test_run_live(self.prog_fd, frame, chunk, self.ifindex)
                sent += chunk
                now = time.perf_counter()
                if now - start >= seconds:
                    return sent, now - start
                if now - t0 < CHUNK_S:
                    chunk *= 2


def _napi_threads(ifname: str) -> set[int]:
    """pids of the NAPI kthreads named after `ifname` (napi/<ifname>-<napi id>)."""
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith(f"napi/{ifname}-"):
            found.add(int(entry))
    return found


@dataclass
class Placement:
    """Where the receiver's NAPI runs; `pin()` re-pins threads veth may have recreated."""

    world: VethWorld
    mode: str
    foreign: set[int] = field(default_factory=set)  # same-named threads not ours, left alone

    def apply(self) -> None:
        threaded = "1" if self.mode == OWN else "0"
        path = f"/sys/class/net/{self.world.rx_if}/threaded"
        run(["sh", "-c", f"echo {threaded} > {path}"], ns=self.world.rx_ns)
        self.pin()

    def pin(self) -> None:
        if self.mode != OWN:
            return
        for pid in _napi_threads(self.world.rx_if) - self.foreign:
            os.sched_setaffinity(pid, {RECEIVER_CPU})


@dataclass
class Sample:
    sent_pps: float
    dropped_pps: float
    received_pps: float


def measure(sender: LiveSender, placement: Placement, counter: Counter, frame: bytes) -> Sample:
    placement.pin()
    world = sender.world
    d0, r0 = counter(), _rx_packets(world)
    sent, seconds = sender.send_for(frame, WINDOW_S)
    time.sleep(DRAIN_S)
    d1, r1 = counter(), _rx_packets(world)
    return Sample(sent / seconds, (d1 - d0) / seconds, (r1 - r0) / seconds)


Subject = Callable[[VethWorld, Any], AbstractContextManager[Counter]]
INFW_1 = "infw, 1 rule"
INFW_1K = "infw, 1,000 rules hit at last"
XDP_DROP = "trivial XDP_DROP"
NFT_INGRESS = "nft netdev ingress, 1 rule"
NFT_INGRESS_1K = "nft netdev ingress, 1,000 rules hit at last"
NFT_INPUT = "nft inet input, 1 rule"
IPT_RAW = "iptables(-nft) raw PREROUTING"

SUBJECTS: dict[str, Subject] = {
    XDP_DROP: lambda w, dp: xdp_floor(w),
    INFW_1: lambda w, dp: infw_filter(w, dp, 1),
    INFW_1K: lambda w, dp: infw_filter(w, dp, 1000),
    NFT_INGRESS: lambda w, dp: nft_filter(w, "ingress", 1),
    NFT_INGRESS_1K: lambda w, dp: nft_filter(w, "ingress", 1000),
    NFT_INPUT: lambda w, dp: nft_filter(w, "input", 1),
    IPT_RAW: lambda w, dp: iptables_filter(w, "iptables"),
}

# (ours, peer, target, goal ratio)
RATIOS: tuple[tuple[str, str, str, float], ...] = (
    (INFW_1, NFT_INGRESS, "≥ ×3 (what NIC drivers show)", 3.0),
    (INFW_1, NFT_INPUT, "higher by a wide margin (≥ ×1.5)", 1.5),
    (INFW_1, IPT_RAW, "higher by a wide margin (≥ ×1.5)", 1.5),
    (INFW_1K, NFT_INGRESS_1K, "higher by a wide margin (≥ ×1.5)", 1.5),
    (INFW_1, XDP_DROP, "(context: the XDP ceiling on this veth)", 0.0),
)


def _spread(values: list[float], scale: float = 1e6, unit: str = "M") -> str:
    return f"{min(values) / scale:.2f}..{max(values) / scale:.2f} {unit}"


@contextmanager
def _world() -> Iterator[VethWorld]:
    world = VethWorld("ls")
    try:
        world.up()
        # NAPI on the receiver without an XDP program (nft, iptables) needs GRO
        run(["ethtool", "-K", world.rx_if, "gro", "on"], ns=world.rx_ns)
        time.sleep(0.3)
        yield world
    finally:
        world.down()


def run_group() -> list[Figure]:
    from bench.pins import loaded_datapath

    samples: dict[tuple[str, str], list[Sample]] = {}
    errors: dict[str, str] = {}
    saved_affinity = os.sched_getaffinity(0)
    foreign = _napi_threads("ibrx0")
    try:
        if {SENDER_CPU, RECEIVER_CPU} - saved_affinity:
            raise RuntimeError(f"needs CPUs {SENDER_CPU} and {RECEIVER_CPU}")
        os.sched_setaffinity(0, {SENDER_CPU})
        with _world() as world, loaded_datapath("ls") as dp:
            sender = LiveSender(world)
            frame = build_frame(world.tx_addr, world.rx_addr, 17, dport=HIT_PORT, payload_len=22)
            try:
                for mode in MODES:
                    placement = Placement(world, mode, foreign)
                    placement.apply()
                    for _ in range(ROUNDS):
                        for name, make in SUBJECTS.items():
                            if name in errors:
                                continue
                            try:
                                with make(world, dp) as counter:
                                    sample = measure(sender, placement, counter, frame)
                                samples.setdefault((mode, name), []).append(sample)
                            except Exception as exc:
                                errors[name] = f"{type(exc).__name__}: {exc}"
                            finally:
                                run(
                                    ["ip", "link", "set", "dev", world.rx_if, "xdp", "off"],
                                    ns=world.rx_ns,
                                    check=False,
                                )
            finally:
                sender.close()
    finally:
        os.sched_setaffinity(0, saved_affinity)
    return _figures(samples, errors)


def _own_costs(ours_pps: float, peer_pps: float, drop_pps: float) -> str:
    """Each filter's time per frame beyond the trivial XDP_DROP's in the same placement: what
    the filter itself adds to the sender, veth and page-pool work every figure includes."""
    ours = 1e9 / ours_pps - 1e9 / drop_pps
    peer = 1e9 / peer_pps - 1e9 / drop_pps
    text = f"per frame over the trivial drop: ours {ours:+.0f} ns, peer {peer:+.0f} ns"
    return text + (f" (×{peer / ours:.1f})" if ours > 0 else "")


def _figures(samples: dict[tuple[str, str], list[Sample]], errors: dict[str, str]) -> list[Figure]:
    figures: list[Figure] = []
    for (mode, name), got in samples.items():
        drops = [s.dropped_pps for s in got]
        sent = [s.sent_pps for s in got]
        counted = sum(s.dropped_pps for s in got) / max(sum(s.received_pps for s in got), 1.0)
        figures.append(
            Figure(
                GROUP,
                f"{name} [{mode}]",
                statistics.median(drops),
                "pkt/s",
                compare="value",
                note=(
                    f"sender {statistics.median(sent) / 1e6:.2f} Mpps ({_spread(sent)}); "
                    f"drops {_spread(drops)}; {counted:.1%} of received counted"
                ),
                extra={"dropped_pps": drops, "sent_pps": sent},
            )
        )
    for name, err in errors.items():
        figures.append(not_measured(GROUP, name, err))
    for mode in MODES:
        for ours, peer, target, goal in RATIOS:
            a, b = samples.get((mode, ours)), samples.get((mode, peer))
            case = f"{ours} vs {peer} [{mode}]"
            if not a or not b:
                figures.append(not_measured(GROUP, case, "a side did not run", target))
                continue
            # rounds are interleaved, so round i of one is paired with round i of the other
            per_round = [
                x.dropped_pps / y.dropped_pps for x, y in zip(a, b, strict=False) if y.dropped_pps
            ]
            ours_pps = statistics.median(s.dropped_pps for s in a)
            peer_pps = statistics.median(s.dropped_pps for s in b)
            ratio = ours_pps / peer_pps if peer_pps else 0.0
            note = f"per round ×{min(per_round):.2f}..×{max(per_round):.2f}" if per_round else ""
            floor = samples.get((mode, XDP_DROP))
            if floor and peer != XDP_DROP and ours_pps and peer_pps:
                note += "; " + _own_costs(
                    ours_pps, peer_pps, statistics.median(s.dropped_pps for s in floor)
                )
            figures.append(
                Figure(
                    GROUP,
                    case,
                    ours_pps,
                    "pkt/s",
                    reference=peer_pps,
                    reference_name=peer,
                    compare="ratio",
                    target=target,
                    met=(ratio >= goal) if goal else None,
                    note=note,
                )
            )
    return figures
