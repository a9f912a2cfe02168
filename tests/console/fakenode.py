"""A node for the console tests: the real Engine (its guard, store, commit-confirm and watchdog
logic) over the one fake kernel (engine.kernel.fake), with the lab's example rules, a clock that
moves only when a test says so, and scripted clients whose packets arrive as real frames
(FakeDatapath.send: decided by the reference lookup, counted, drop events queued, flows sampled).

    node = FakeNode(tmp_path, clock)   # under frozen_time(clock): wall and kernel time are fake
    app = InfwApp(node.engine, clock=clock, ...)
    node.advance(1.0)                  # a second of traffic; due watchdogs revert

This replaces the hand-written fake engines of the TUI and REPL tests (issue #13): what the
console shows comes from the same Engine calls as on a node.
"""

from __future__ import annotations

import contextlib
import socket
import time
import types
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import engine.kernel.fake as fake_kernel_module
import engine.observe.events as events_module
import engine.observe.snapshot as snapshot_module
from engine.core.classify import protocol_number
from engine.core.frame import build_frame
from engine.core.model import RuleSet, add_rule
from engine.core.ruleline import parse_rule_line
from engine.engine import Engine
from engine.kernel.abi import LastVerdict, Reason
from engine.kernel.fake import FakeDatapath, FakeKernel
from engine.kernel.seam import XDP_DROP, XDP_PASS
from engine.state.config import NodeConfig

START_TIME = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
# The fake kernel's monotonic clock (bpf_ktime_get_ns) is the wall clock minus this, so a drop
# event's time is exactly when its packet was sent.
BOOT_TIME = 1_699_990_000.0

# Rules like the lab's (examples/lab.yaml), as rule lines; the ICMP ones carry code 0, as the CRD
# form reads an icmpType without icmpCode, so the console shows them here as on the lab.
LAB_LINES: tuple[str, ...] = (
    "deny tcp 8080 from 192.0.2.0/24 on infw-n* order 10 firewall lab",
    "allow tcp 80 from 192.0.2.0/24 on infw-n* order 20 firewall lab",
    "deny udp 5000-5010 from 198.51.100.0/24 on infw-n* order 10 firewall lab",
    "deny icmp type 8 code 0 from 198.51.100.0/24 on infw-n* order 20 firewall lab",
    "allow tcp 443 from 192.0.2.0/24,198.51.100.0/24 on infw-n* order 50 firewall lab",
    "deny tcp 9000 from 2001:db8:1::/64 on infw-n* order 10 firewall lab",
    "allow icmpv6 type 128 code 0 from 2001:db8::/32 on infw-n* order 30 firewall lab",
    "deny from 203.0.113.0/24 on infw-n1,infw-n2 order 100 firewall blocklist",
)
INTERFACES: dict[str, int] = {"lo": 1, "eth0": 2, "infw-n1": 3, "infw-n2": 4, "ext0": 5}
ATTACHED = ("infw-n1", "infw-n2")
# The Engine calls a FakeNode records on its console's engine (FakeNode.calls).
RECORDED = (
    "add_rule",
    "edit_rule",
    "delete_rule",
    "reorder_rule",
    "confirm",
    "revert",
    "set_mode",
    "attach",
    "detach",
    "preview_add",
    "preview_edit",
    "trace_packet",
)
STEPS_PER_SECOND = 20  # each second of traffic is sent in steps, so events spread over it


class NodeClock:
    """Wall time that moves only when told to."""

    def __init__(self, start: float = START_TIME) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now = round(self.now + seconds, 6)


class _Proxy:
    """A module as one engine module sees it: some names replaced, the rest the real ones."""

    def __init__(self, real: types.ModuleType, **names: Any) -> None:
        self._real = real
        self.__dict__.update(names)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _FakeTime(types.SimpleNamespace):
    """The `time` module as the engine's event decoding and the fake kernel see it: wall and
    monotonic time from the node's clock; everything else is the real module."""

    def __init__(self, clock: NodeClock) -> None:
        super().__init__()
        self._clock = clock

    def time(self) -> float:
        return self._clock()

    def monotonic(self) -> float:
        return self._clock() - BOOT_TIME

    def monotonic_ns(self) -> int:
        # half a millisecond after the clock's tick: a time shown to the millisecond reads the
        # tick's, never the one before it by a float's rounding
        return round((self._clock() - BOOT_TIME) * 1e9) + 500_000

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def frozen_time(clock: NodeClock, node: str = "lab-node") -> Iterator[None]:
    """time.time() is the node's clock (the store's history, deadlines, rates) and the fake
    kernel's and the event decoder's monotonic clocks follow it (event and flow times); the
    node's name is `node` wherever the test runs."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "time", clock)
        shim = _FakeTime(clock)
        mp.setattr(fake_kernel_module, "time", shim)
        mp.setattr(events_module, "time", shim)
        mp.setattr(snapshot_module, "socket", _Proxy(socket, gethostname=lambda: node))
        yield


@dataclass(frozen=True)
class Client:
    """Packets one client sends each second on one interface: src varies by packet."""

    ifname: str
    network: str  # the source prefix; the host part varies
    proto: str
    rate: int  # packets per second
    dport: int | None = None
    icmp_type: int | None = None
    size: int = 0  # payload bytes

    def frame(self, seq: int) -> bytes:
        v6 = ":" in self.network
        host = seq % 200 + 10
        if v6:
            src, dst = f"{self.network.split('/')[0]}{host:x}", "2001:db8:1::1"
        else:
            src, dst = self.network.rsplit(".", 1)[0] + f".{host}", "192.0.2.1"
        return build_frame(
            src,
            dst,
            protocol_number(self.proto),
            dport=self.dport,
            sport=40000 + seq % 1000,
            icmp_type=self.icmp_type,
            icmp_code=0 if self.icmp_type is not None else None,
            vlan=(100,) if seq % 7 == 0 else (),
            payload_len=self.size,
        )


# What the lab's clients send (and which lab rule decides it), plus fail-safe and unmatched.
LAB_CLIENTS: tuple[Client, ...] = (
    Client("infw-n1", "192.0.2.0/24", "TCP", 8, dport=8080),  # deny, lab order 10
    Client("infw-n2", "192.0.2.0/24", "TCP", 24, dport=80, size=1346),  # allow, order 20
    Client("infw-n1", "198.51.100.0/24", "UDP", 5, dport=5000, size=42),  # deny udp
    Client("infw-n2", "198.51.100.0/24", "ICMP", 2, icmp_type=8, size=56),  # deny icmp echo
    Client("infw-n1", "198.51.100.0/24", "TCP", 12, dport=443, size=536),  # allow 443
    Client("infw-n2", "2001:db8:1::/64", "TCP", 3, dport=9000),  # deny v6
    Client("infw-n1", "2001:db8::/64", "ICMPv6", 1, icmp_type=128, size=56),  # allow echo v6
    Client("infw-n1", "10.9.0.0/24", "TCP", 2, dport=22),  # fail-safe: SSH passes
    Client("infw-n2", "10.8.0.0/24", "UDP", 4, dport=123, size=48),  # no rule matches
)


def lab_ruleset(lines: Sequence[str]) -> RuleSet:
    ruleset = RuleSet()
    for line in lines:
        p = parse_rule_line(line)
        ruleset = add_rule(ruleset, p.firewall, p.interfaces, p.cidrs, p.rule)
    return ruleset


class FakeNode:
    """The lab on the fake kernel: `engine` is what the console gets."""

    def __init__(
        self,
        state: Path,
        clock: NodeClock,
        *,
        read_only: bool = False,
        loaded: bool = True,
        rules: Sequence[str] = LAB_LINES,
        clients: Sequence[Client] = LAB_CLIENTS,
    ) -> None:
        self.clock = clock
        self.clients = tuple(clients)
        self.kernel = FakeKernel(INTERFACES)
        self.kernel.add_foreign("ext0", 7, "generic")
        self.pin_root = str(state / "pins")
        self.state_dir = str(state / "state")
        writer = self.other_console()
        now = clock.now
        if loaded:
            clock.now = now - 7200  # history as an operator left it: attached, then rules
            writer.attach(list(ATTACHED))
        clock.now = now - 3600
        # forced: a test may give rules the guard refuses (as if forced in earlier, and kept:
        # a forced change is commit-confirmed whatever the timeout)
        writer.apply(
            lab_ruleset(rules), confirm_timeout=0, force=True, summary="apply examples/lab.yaml"
        )
        if writer.pending() is not None:
            writer.confirm()
        clock.now = now
        self.engine = self.other_console(read_only=read_only)
        # what the console asked of the engine (the calls it changes or judges the rules with)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        for name in RECORDED:
            setattr(self.engine, name, self._recorded(name, getattr(self.engine, name)))
        self._seq = 0
        self._due = [0.0] * len(self.clients)

    def _recorded(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return call(*args, **kwargs)

        return recorded

    def called(self, *names: str) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
        """The recorded calls of these names, oldest first."""
        return [c for c in self.calls if c[0] in names]

    def other_console(self, *, read_only: bool = False) -> Engine:
        """An engine of its own on the same node: another console (or the CLI) beside the
        one under test."""
        return Engine(
            self.pin_root,
            self.state_dir,
            config=NodeConfig(),
            session=None,
            read_only=read_only,
            kernel=self.kernel,
        )

    @property
    def datapath(self) -> FakeDatapath | None:
        return self.kernel.pinned.get(self.pin_root)

    def disconnect(self) -> None:
        """The pins go (rm -r of the pin root): the program keeps running, out of reach."""
        self.kernel.remove_pins(self.pin_root)

    def reconnect(self) -> None:
        dp = next(iter(self.kernel.unpinned.values()))
        self.kernel.adopt(self.pin_root, dp.prog_id)

    def advance(self, seconds: float = 1.0) -> None:
        """Move the clock by seconds, the clients sending their packets on the way; a
        watchdog whose deadline passed reverts (from an engine of its own, as its process)."""
        steps = max(1, round(seconds * STEPS_PER_SECOND))
        for _ in range(steps):
            self.clock.advance(seconds / steps)
            self._send(seconds / steps)
        self.run_watchdogs()

    def _send(self, dt: float) -> None:
        dp = self.datapath
        for i, client in enumerate(self.clients):
            self._due[i] += client.rate * dt
            while self._due[i] >= 1.0 - 1e-9:
                self._due[i] -= 1.0
                self._seq += 1
                if dp is not None:
                    dp.send(client.frame(self._seq), client.ifname)

    def run_watchdogs(self) -> list[int]:
        return self.kernel.watchdog.run_due(self.other_console().rollback_pending, now=self.clock())

    def other_reader(self, pid: int | None) -> None:
        """Another console reading the drop events (the ring buffer's one consumer position)."""
        self.kernel.other_reader = pid

    def disagree(self) -> None:
        """Make the kernel's test run answer the opposite of the reference (a datapath bug)."""
        dp = self.datapath
        assert dp is not None
        real: Callable[..., Any] = dp.test_run

        def test_run(frame: bytes, ifindex: int | None = None, repeat: int = 1) -> Any:
            action, verdict, ns = real(frame, ifindex, repeat)
            flipped = XDP_PASS if action == XDP_DROP else XDP_DROP
            reason = Reason.NO_MATCH if verdict.reason == Reason.RULE else Reason.RULE
            return flipped, LastVerdict(reason=int(reason), rule_id=0, xdp_action=flipped), ns

        dp.test_run = test_run  # type: ignore[method-assign]
