"""Plain, frozen views of the firewall that the consoles render (no kernel, no UI types)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from engine.core.model import Rule


@dataclass(frozen=True)
class InterfaceView:
    name: str
    ifindex: int
    mode: str  # "native", "generic", "none"
    prog_id: int
    ours: bool  # False: a foreign XDP program sits there


@dataclass(frozen=True)
class PendingView:
    generation: int
    previous_generation: int
    deadline: float  # epoch seconds
    author: str

    def remaining(self, now: float) -> float:
        return max(0.0, self.deadline - now)


@dataclass(frozen=True)
class Problem:
    """Something status found wrong, and the one command (or step) that repairs it.

    kind: orphaned (a program of ours runs with its pins gone), drift (kernel and store name
    different generations), watchdog (a pending change whose watchdog is dead or stopped),
    unfiltered (an interface the objects name runs without its tables), store (the state dir
    cannot be written), pin_root (unsafe pin root), kernel (the firewall cannot be reached)."""

    kind: str
    message: str
    fix: str


@dataclass(frozen=True)
class Status:
    node: str
    loaded: bool  # a firewall program is pinned under pin_root
    pin_root: str
    mode: str  # "enforce" | "audit"
    generation: int
    rule_count: int
    interfaces: tuple[InterfaceView, ...]
    pending: PendingView | None
    failsafe: tuple[str, ...]
    read_only: bool
    netns: str | None = None
    store_generation: int = 0  # what the state dir holds (generation is the kernel's)
    problems: tuple[Problem, ...] = ()  # empty: nothing wrong; `infw status` exits non-zero
    reverted: str = ""  # what this very status took back (an expired pending change)
    watchdog: str = ""  # "alive pid N", "stopped pid N", "gone (pid N)" while pending
    replies: bool = False  # replies to the node's own connections pass a Deny (infw replies)
    # flows: 1 in N packets sampled into the kernel's flow table (0: off). flow_sample is what
    # the kernel runs (the config's when nothing is loaded); the config's flowSample is given
    # to a program when it is loaded, so the two differ after a live change or a config edit.
    flow_sample: int = 0
    flow_sample_config: int = 0
    agent: str = ""  # "running pid N" or "" (not running)
    # packets passed unfiltered on interfaces with the program but no tables, and which of
    # ours have none now ("" when neither)
    unconfigured: str = ""
    # nodeSelector: this node's labels (None: unknown, every object applies) and the objects
    # stored for other nodes, not enforced here.
    node_labels: dict[str, str] | None = None
    not_for_node: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleRow:
    """One rule as the table shows it, with its live counters."""

    rule_id: int
    firewall: str
    order: int
    interfaces: tuple[str, ...]
    cidrs: tuple[str, ...]
    rule: Rule
    packets: int = 0
    bytes: int = 0
    rate: float = 0.0  # packets per second over the last refresh interval
    last_hit: float | None = None  # epoch seconds of the last refresh that saw new hits

    @property
    def protocol(self) -> str:
        return self.rule.protocol.value if self.rule.protocol else "any"

    @property
    def match(self) -> str:
        r = self.rule
        if r.ports is not None:
            return str(r.ports)
        if r.icmp_type is not None:
            return f"type {r.icmp_type}" + ("" if r.icmp_code is None else f" code {r.icmp_code}")
        return "*"

    @property
    def action(self) -> str:
        return self.rule.action.value

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.rule_id,
            "firewall": self.firewall,
            "order": self.order,
            "interfaces": list(self.interfaces),
            "sourceCIDRs": list(self.cidrs),
            "protocol": self.protocol,
            "match": self.match,
            "action": self.action,
            "packets": self.packets,
            "bytes": self.bytes,
            "rate": round(self.rate, 3),
            "lastHit": self.last_hit,
        }


@dataclass(frozen=True)
class NodeTotals:
    allowed: tuple[int, int] = (0, 0)  # (packets, bytes) allowed by a rule
    denied: tuple[int, int] = (0, 0)
    would_deny: tuple[int, int] = (0, 0)
    failsafe: tuple[int, int] = (0, 0)
    no_match: tuple[int, int] = (0, 0)
    unparsed: tuple[int, int] = (0, 0)
    events_sent: int = 0
    events_suppressed: int = 0
    events_lost: int = 0
    reply_allowed: tuple[int, int] = (0, 0)  # a Deny matched a reply to the node's own flow
    replies_recorded: int = 0  # outbound flows the egress recorder started
    # passed on an interface running the program with no tables for it (not filtered)
    unconfigured: tuple[int, int] = (0, 0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RepliesView:
    """`infw replies`: the setting, its timeouts and the flow table's bounds."""

    enabled: bool
    tcp_timeout: float
    udp_timeout: float
    icmp_timeout: float
    held: int  # outbound flows in the table now
    capacity: int
    recorded: int  # flows recorded since load
    evicted: int  # pushed out by the LRU before they expired or were used
    allowed: int  # packets a Deny matched that passed as replies

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StatsSnapshot:
    time: float
    rules: tuple[RuleRow, ...]
    totals: NodeTotals
    generation: int


@dataclass(frozen=True)
class DropEvent:
    time: float  # epoch seconds
    interface: str
    rule_id: int
    verdict: str  # "DENY" or "WOULD DENY"
    protocol: str
    src: str
    dst: str
    sport: int | None
    dport: int | None
    icmp_type: int | None
    icmp_code: int | None
    vlan: int
    length: int
    fragment: bool = False

    def endpoint_text(self) -> str:
        if self.icmp_type is not None:
            return f"{self.src} -> {self.dst} type {self.icmp_type}/{self.icmp_code}"
        if self.dport is not None:
            return f"{self.src}:{self.sport} -> {self.dst}:{self.dport}"
        return f"{self.src} -> {self.dst}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TraceRequest:
    """A packet to trace: from src, protocol proto (TCP, UDP, SCTP, ICMP, ICMPv6 or a number),
    arriving on interface; dst defaults to a documentation address of src's family."""

    interface: str
    src: str
    proto: str
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    dst: str | None = None
    vlan: tuple[int, ...] = ()
    fragment: bool = False
    sport: int = 40000
    # explain it as a reply to a connection the node opened (the reference adds that flow to
    # the kernel's live table; the kernel answers from its live table alone)
    reply: bool = False


@dataclass(frozen=True)
class TraceResult:
    interface: str
    frame_len: int
    kernel_verdict: str | None  # "ALLOW"/"DENY"/"WOULD DENY"; None when no program is loaded
    kernel_reason: str | None
    kernel_rule_id: int | None
    reference_verdict: str
    reference_reason: str
    reference_rule_id: int | None
    explanation: str
    agree: bool
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ApplyResult:
    generation: int
    previous_generation: int
    rule_count: int
    pending: PendingView | None
    warnings: tuple[str, ...] = ()
    changed: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HistoryView:
    generation: int
    time: float
    author: str
    summary: str
    current: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
