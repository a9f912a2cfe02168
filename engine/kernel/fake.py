"""The one fake at the kernel seam: a firewall in memory whose packets are decided by the
reference lookup over the tables the Engine wrote (engine.core.classify.lookup, the oracle the
kernel program is tested against).

    kernel = FakeKernel({"lo": 1, "eth0": 2})
    engine = Engine(pin_root, state_dir, kernel=kernel)   # the real Engine, guard and store

`FakeDatapath.send` is a packet that really arrives (it counts and raises a drop event);
`test_run` is a trace (counts nothing), as in the kernel. `FakeWatchdog` starts nothing: a test
runs what the watchdog would do at the deadline with `run_due`.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from engine.core.cidr import parse_address
from engine.core.classify import Decision, has_tables, lookup
from engine.core.classify import Reason as RefReason
from engine.core.compiler import CompiledTables
from engine.core.flows import FlowKey
from engine.core.frame import parse_frame
from engine.core.model import Action as RuleAction
from engine.core.replies import ReplyFlow, ReplySettings, expected_reply
from engine.errors import DatapathError, InfwError
from engine.kernel.abi import (
    DEFAULT_FLOW_SAMPLE,
    EVENT_FLAG_NONFIRST_FRAGMENT,
    MAX_FLOW_SAMPLE,
    Action,
    Config,
    DropEventRecord,
    FlowRecVal,
    LastVerdict,
    Mode,
    NodeCounter,
    Reason,
)
from engine.kernel.flowmap import encode_key
from engine.kernel.seam import XDP_DROP, XDP_PASS, Attachment, Orphan

# Above the kernel's pid_max (2**22): a fake watchdog pid can never name a real process.
FAKE_PID_BASE = 5_000_000
K = TypeVar("K")


@dataclass(frozen=True)
class Verdict:
    """What the program decides for one frame, and what it would count."""

    xdp_action: int
    reason: Reason
    rule_id: int = 0
    counter: NodeCounter | None = None
    event: Action | None = None  # DENY / WOULD_DENY: a drop event is due
    rule_action: int = 0  # the deciding rule's Action (0 without a rule), as flows record it


_FLOW_REASONS = frozenset({Reason.FAILSAFE, Reason.RULE, Reason.NO_MATCH, Reason.REPLY})


class FakeWatchdog:
    """Records the watchdogs the Engine starts; `run_due` does what they do at their deadline."""

    def __init__(self) -> None:
        self.armed: dict[int, tuple[int, float]] = {}  # pid -> (generation, deadline)
        self.fail_to_start = False
        self.stopped: set[int] = set()  # as if SIGSTOPped: alive, but never acts
        self.labels: dict[int, dict[str, str] | None] = {}  # pid -> the node labels it was given
        self._pids = itertools.count(FAKE_PID_BASE)

    def spawn(
        self,
        state_dir: str,
        pin_root: str,
        generation: int,
        deadline: float,
        netns: str | None,
        node_labels: Mapping[str, str] | None = None,
    ) -> int:
        if self.fail_to_start:
            raise InfwError("the confirm watchdog did not start: told to fail", "a test said so")
        pid = next(self._pids)
        self.armed[pid] = (generation, deadline)
        self.labels[pid] = None if node_labels is None else dict(node_labels)
        return pid

    def is_running(self, pid: int) -> bool:
        return pid in self.armed and pid not in self.stopped

    def state(self, pid: int) -> str:
        if pid not in self.armed:
            return "gone"
        return "stopped" if pid in self.stopped else "alive"

    def stop(self, pid: int) -> None:
        self.kill(pid)

    def find(self, state_dir: str, generation: int) -> int:
        return next((pid for pid, (gen, _) in self.armed.items() if gen == generation), 0)

    def kill(self, pid: int) -> None:
        """As if SIGKILLed (or the node rebooted): it will never act."""
        self.armed.pop(pid, None)

    def run_due(self, rollback: Callable[[int], bool], now: float | None = None) -> list[int]:
        """Run rollback(generation) for every watchdog past its deadline (they then exit)."""
        now = time.time() if now is None else now
        done: list[int] = []
        for pid, (generation, deadline) in sorted(self.armed.items()):
            if deadline <= now and pid not in self.stopped:
                del self.armed[pid]
                rollback(generation)
                done.append(generation)
        return done


class FakeDatapath:
    """One firewall 'pinned' in a FakeKernel: its tables, config, counters and attachments."""

    def __init__(self, kernel: FakeKernel, pin_root: str, prog_id: int) -> None:
        self.kernel = kernel
        self.pin_root = pin_root
        self.prog_id = prog_id
        self.tables: CompiledTables | None = None
        self.cfg = Config(
            active_gen=0,
            mode=int(Mode.ENFORCE),
            events_per_sec=1000,
            flow_sample=DEFAULT_FLOW_SAMPLE,
        )
        self.flows: dict[bytes, FlowRecVal] = {}  # packed FlowRecKey -> value, as the map holds
        self._sampler = random.Random(0)  # seeded: tests see the same samples every run
        self.rules: dict[int, tuple[int, int]] = {}
        self.node: dict[NodeCounter, tuple[int, int]] = {c: (0, 0) for c in NodeCounter}
        self._callback: Callable[[DropEventRecord], None] | None = None
        self._queued: list[DropEventRecord] = []
        self.reply_settings = ReplySettings()
        self.outbound: set[ReplyFlow] = set()  # what the egress recorder holds (no expiry)

    # ----------------------------------------------------------------- attach

    def attached(self) -> list[Attachment]:
        links = self.kernel.links
        return [
            (name, links.get(name, 0), mode, prog_id, prog_id == self.prog_id)
            for name, (prog_id, mode) in sorted(self.kernel.xdp.items())
        ]

    def attach(self, ifname: str, mode: str = "auto", force: bool = False) -> str:
        if mode not in ("auto", "native", "generic"):
            raise DatapathError(f"unknown XDP mode {mode!r}", "use native, generic or auto")
        if ifname not in self.kernel.links:
            raise DatapathError(f"no interface named {ifname!r} in this network namespace")
        current = self.kernel.xdp.get(ifname)
        if current is not None and current[0] not in self.kernel.ours() and not force:
            raise DatapathError(
                f"{ifname} already runs a foreign XDP program (id {current[0]})",
                "detach it first, or pass --force to replace it",
            )
        used = "native" if mode == "auto" else mode
        self.kernel.xdp[ifname] = (self.prog_id, used)
        return used

    def detach(self, ifname: str) -> None:
        if ifname not in self.kernel.links:
            raise DatapathError(f"no interface named {ifname!r} in this network namespace")
        current = self.kernel.xdp.get(ifname)
        if current is None:
            return
        if current[0] not in self.kernel.ours():
            raise DatapathError(
                f"{ifname} runs a foreign XDP program (id {current[0]}), not infw's: left in place"
            )
        del self.kernel.xdp[ifname]

    def unload(self) -> None:
        for name, (prog_id, _) in list(self.kernel.xdp.items()):
            if prog_id == self.prog_id:
                del self.kernel.xdp[name]
        self.kernel.pinned.pop(self.pin_root, None)

    def close(self) -> None:
        self._callback = None

    # ----------------------------------------------------------------- config and tables

    def config(self) -> Config:
        return Config.from_buffer_copy(bytes(self.cfg))

    def set_mode(self, mode: Mode) -> None:
        self.cfg.mode = int(mode)

    def set_event_rate(self, per_sec: int) -> None:
        self.cfg.events_per_sec = max(0, int(per_sec))

    def set_generation(self, generation: int) -> None:
        self.cfg.generation = int(generation)

    def table_ifindexes(self) -> set[int]:
        return {entry.ifindex for entry in self.tables.lpm} if self.tables else set()

    def write_tables(self, tables: CompiledTables, generation: int) -> None:
        self.tables = tables
        self.cfg.active_gen ^= 1
        self.cfg.generation = int(generation)

    # ----------------------------------------------------------------- counters

    def reset_rule_counters(self, rule_ids: Iterable[int]) -> None:
        for rid in rule_ids:
            self.rules.pop(rid, None)

    def rule_counters(self, max_id: int | None = None) -> dict[int, tuple[int, int]]:
        return {
            rid: pair
            for rid, pair in self.rules.items()
            if (max_id is None or rid <= max_id) and any(pair)
        }

    def node_counters(self) -> dict[NodeCounter, tuple[int, int]]:
        return dict(self.node)

    # ----------------------------------------------------------------- flows

    def set_flow_sample(self, rate: int) -> None:
        self.cfg.flow_sample = min(max(0, int(rate)), MAX_FLOW_SAMPLE)

    def flow_entries(self) -> tuple[bytes, bytes, int] | None:
        return (
            b"".join(self.flows),
            b"".join(bytes(v) for v in self.flows.values()),
            len(self.flows),
        )

    def _sample_flow(self, frame: bytes, ifindex: int, v: Verdict) -> None:
        """What the program does after deciding: 1 in N packets into the flows map."""
        n = int(self.cfg.flow_sample)
        if not n:
            return
        if self._sampler.randrange(n):
            return  # the program samples each packet with probability 1/n
        parsed = parse_frame(frame)
        if parsed.fields is None or v.reason not in _FLOW_REASONS:
            return
        key = bytes(encode_key(FlowKey.of_packet("", parsed.fields), ifindex))
        now = time.monotonic_ns()
        val = self.flows.get(key) or FlowRecVal(first_ns=now)
        val.packets += 1
        val.bytes += len(frame)
        val.last_ns = now
        val.rule_id, val.reason, val.action = v.rule_id, int(v.reason), int(v.rule_action)
        self.flows[key] = val

    # ----------------------------------------------------------------- events

    def open_events(self, callback: Callable[[DropEventRecord], None]) -> None:
        self._callback = callback

    def other_reader_pid(self) -> int | None:
        return self.kernel.other_reader

    def poll_events(self, timeout_ms: int = 100) -> int:
        if self._callback is None:
            raise DatapathError("events are not open", "call open_events() first")
        queued, self._queued = self._queued, []
        for record in queued:
            self._callback(record)
        return len(queued)

    # ----------------------------------------------------------------- packets

    def decide(self, frame: bytes, ifindex: int) -> Verdict:
        """The program's verdict for frame arriving on ifindex, from the reference lookup."""
        parsed = parse_frame(frame)
        if parsed.kind == "non-ip":
            return Verdict(XDP_PASS, Reason.NONE)
        if parsed.kind == "unparsed" or parsed.fields is None:
            return Verdict(XDP_PASS, Reason.UNPARSED, counter=NodeCounter.UNPARSED)
        replies = self.outbound if self.reply_settings.enabled else None
        if self.tables is None:
            decision = Decision(RuleAction.ALLOW, RefReason.NO_MATCH)
        else:
            decision = lookup(self.tables, ifindex, parsed.fields, replies)
        if decision.reason is RefReason.REPLY:
            # only a Deny looks for replies: the flow records that rule's action, as the program
            return Verdict(
                XDP_PASS,
                Reason.REPLY,
                decision.rule_id or 0,
                NodeCounter.REPLY_ALLOWED,
                rule_action=Action.DENY,
            )
        if decision.reason is RefReason.FAILSAFE:
            return Verdict(XDP_PASS, Reason.FAILSAFE, counter=NodeCounter.FAILSAFE)
        if decision.reason is not RefReason.RULE or decision.rule_id is None:
            covered = self.tables is not None and has_tables(self.tables.fast, ifindex)
            counter = NodeCounter.NO_MATCH if covered else NodeCounter.UNCONFIGURED
            return Verdict(XDP_PASS, Reason.NO_MATCH, counter=counter)
        if decision.action is RuleAction.ALLOW:
            return Verdict(
                XDP_PASS, Reason.RULE, decision.rule_id, NodeCounter.ALLOW, None, Action.ALLOW
            )
        if self.cfg.mode == Mode.AUDIT:
            return Verdict(
                XDP_PASS,
                Reason.RULE,
                decision.rule_id,
                NodeCounter.WOULD_DENY,
                Action.WOULD_DENY,
                Action.DENY,
            )
        return Verdict(
            XDP_DROP, Reason.RULE, decision.rule_id, NodeCounter.DENY, Action.DENY, Action.DENY
        )

    def test_run(
        self, frame: bytes, ifindex: int | None = None, repeat: int = 1
    ) -> tuple[int, LastVerdict, int]:
        """A trace: decided like a real packet, counted nowhere, no event."""
        v = self.decide(frame, 1 if ifindex is None else ifindex)
        return (
            v.xdp_action,
            LastVerdict(reason=int(v.reason), rule_id=v.rule_id, xdp_action=v.xdp_action),
            0,
        )

    def replies(self) -> ReplySettings:
        return self.reply_settings

    def set_replies(self, settings: ReplySettings) -> None:
        self.reply_settings = settings

    def replies_held(self) -> int:
        return len(self.outbound)

    def reply_flows(self) -> frozenset[ReplyFlow]:
        return frozenset(self.outbound)

    def send_out(self, frame: bytes, ifname: str, tcp_open: bool = True) -> None:
        """A packet the node sends on ifname: with replies on, the egress recorder notes the
        reply it expects (tcp_open: a TCP SYN)."""
        parsed = parse_frame(frame)
        ifindex = self.kernel.links.get(ifname)
        if not self.reply_settings.enabled or parsed.fields is None or ifindex is None:
            return
        flow = expected_reply(ifindex, parsed.fields, tcp_open)
        if flow is not None and flow not in self.outbound:
            self.outbound.add(flow)
            _add(self.node, NodeCounter.REPLY_RECORDED, 0)

    def send(self, frame: bytes, ifname: str) -> int:
        """A packet arriving on ifname: counted, and a drop event queued for a deny. Returns
        the XDP action. An interface without our program lets everything through uncounted."""
        attached = self.kernel.xdp.get(ifname)
        if attached is None or attached[0] != self.prog_id:
            return XDP_PASS
        ifindex = self.kernel.links[ifname]
        v = self.decide(frame, ifindex)
        if v.counter is not None:
            _add(self.node, v.counter, len(frame))
        if v.rule_id and v.reason is not Reason.REPLY:  # a reply is the flow's, not the rule's
            _add(self.rules, v.rule_id, len(frame))
        self._sample_flow(frame, ifindex, v)
        if v.event is not None:
            if self.cfg.events_per_sec == 0:
                _add(self.node, NodeCounter.EVENTS_SUPPRESSED, 0)
            else:
                _add(self.node, NodeCounter.EVENTS_SENT, 0)
                self._queued.append(_event_record(frame, ifindex, v))
        return v.xdp_action


class FakeKernel:
    """A node in memory: its links, the XDP programs on them and the firewalls 'pinned' here."""

    def __init__(
        self, interfaces: Mapping[str, int] | None = None, *, privileged: bool = True
    ) -> None:
        self.links: dict[str, int] = dict(interfaces or {"lo": 1, "eth0": 2})
        self.privileged = privileged
        self.xdp: dict[str, tuple[int, str]] = {}  # ifname -> (program id, XDP mode)
        self.pinned: dict[str, FakeDatapath] = {}
        self.unpinned: dict[int, FakeDatapath] = {}  # program id -> a firewall whose pins went
        self.loads = 0  # compiles: attaching to a running firewall must not add one
        self.netns: str | None = None
        self.other_reader: int | None = None
        self._watchdog = FakeWatchdog()
        self._prog_ids = itertools.count(100)
        self._builds: set[int] = set()  # every program id this kernel loaded ("ours")

    @property
    def watchdog(self) -> FakeWatchdog:
        return self._watchdog

    def ours(self) -> set[int]:
        return self._builds

    def add_foreign(self, ifname: str, prog_id: int = 7, mode: str = "native") -> None:
        """Another tool's XDP program on ifname."""
        self.xdp[ifname] = (prog_id, mode)

    def is_loaded(self, pin_root: str) -> bool:
        return pin_root in self.pinned

    def open(self, pin_root: str) -> FakeDatapath | None:
        return self.pinned.get(pin_root)

    def load(self, pin_root: str) -> FakeDatapath:
        self.loads += 1
        prog_id = next(self._prog_ids)
        self._builds.add(prog_id)
        dp = self.pinned.get(pin_root)
        if dp is None:
            dp = self.pinned[pin_root] = FakeDatapath(self, pin_root, prog_id)
            return dp
        # A reload: the maps stay, every interface on the old build moves to the new one.
        old = dp.prog_id
        dp.prog_id = prog_id
        for name, (pid, mode) in list(self.xdp.items()):
            if pid == old:
                self.xdp[name] = (prog_id, mode)
        return dp

    def xdp_interfaces(self) -> list[str]:
        return sorted(self.xdp)

    def interfaces(self) -> dict[str, int]:
        return dict(self.links)

    def has_privileges(self) -> bool:
        return self.privileged

    def enter_netns(self, name: str) -> None:
        self.netns = name

    def remove_pins(self, pin_root: str) -> None:
        """rm pin_root/*: the program keeps running and filtering, out of reach."""
        dp = self.pinned.pop(pin_root)
        self.unpinned[dp.prog_id] = dp

    def orphans(self, pinned_prog_id: int | None, names: Collection[str]) -> list[Orphan]:
        found: dict[int, list[str]] = {}
        for name, (prog_id, _) in sorted(self.xdp.items()):
            if prog_id in self.unpinned and prog_id != pinned_prog_id and name in names:
                found.setdefault(prog_id, []).append(name)
        return [Orphan(pid, tuple(ifs)) for pid, ifs in sorted(found.items())]

    def adopt(self, pin_root: str, prog_id: int) -> None:
        if pin_root in self.pinned:
            raise DatapathError(f"cannot adopt program {prog_id}: {pin_root} holds pins")
        dp = self.unpinned.pop(prog_id)
        dp.pin_root = pin_root
        self.pinned[pin_root] = dp


def _add(table: dict[K, tuple[int, int]], key: K, nbytes: int) -> None:
    packets, total = table.get(key, (0, 0))
    table[key] = (packets + 1, total + nbytes)


def _event_record(frame: bytes, ifindex: int, v: Verdict) -> DropEventRecord:
    parsed = parse_frame(frame)
    fields = parsed.fields
    assert fields is not None and v.event is not None
    rec = DropEventRecord(
        ts_ns=time.monotonic_ns(),
        ifindex=ifindex,
        rule_id=v.rule_id,
        verdict=int(v.event),
        family=parsed.family,
        l4proto=fields.ipproto,
        flags=EVENT_FLAG_NONFIRST_FRAGMENT if fields.nonfirst_fragment else 0,
        vlan=parsed.vlan,
        sport=parsed.sport or 0,
        dport=fields.dport or 0,
        icmp_type=fields.icmp_type or 0,
        icmp_code=fields.icmp_code or 0,
        pkt_len=len(frame),
    )
    for name, text in (("src", fields.src), ("dst", fields.dst)):
        getattr(rec, name)[:] = list(parse_address(text)[0].to_bytes(16, "big"))
    return rec
