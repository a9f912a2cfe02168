"""A deterministic stand-in for engine.Engine, for the TUI's layout tests and snapshots only.

It keeps the same call shapes and returns the same view types; its clock moves only when a
test calls advance(), so every frame is reproducible. It is not a firewall: it decides nothing
on its own beyond what the screens need to be exercised (one guard check, a trace verdict).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from engine.core import crd
from engine.core.classify import PacketFields, classify, protocol_number
from engine.core.compiler import RuleKey, assign_rule_ids, iter_rules, rule_key
from engine.core.guard import Guard, raise_if_refused
from engine.core.impact import ImpactPreview, preview_change
from engine.core.model import ORDER_MAX, ORDER_MIN, Action, RuleSet, add_rule, remove_rule
from engine.core.ruleline import RuleLine, format_rule_line, parse_rule_line
from engine.errors import GuardRefusal, InfwError, StateError
from engine.observe.events import EventBuffer
from engine.observe.flows import FlowsView, PendingDrops
from engine.observe.stats import RateTracker, build_rule_rows
from engine.state.config import NodeConfig
from engine.views import (
    ApplyResult,
    DropEvent,
    HistoryView,
    InterfaceView,
    NodeTotals,
    PendingView,
    RuleRow,
    StatsSnapshot,
    Status,
    TraceRequest,
    TraceResult,
)

START_TIME = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC

FAKE_RULES: tuple[str, ...] = (
    "deny tcp 8080 from 192.0.2.0/24 on infw-n* order 10 firewall lab",
    "allow tcp 80 from 192.0.2.0/24 on infw-n* order 20 firewall lab",
    "deny udp 5000-5010 from 198.51.100.0/24 on infw-n* order 10 firewall lab",
    "deny icmp type 8 from 198.51.100.0/24 on infw-n* order 20 firewall lab",
    "allow tcp 443 from 192.0.2.0/24,198.51.100.0/24 on infw-n* order 50 firewall lab",
    "deny tcp 9000 from 2001:db8:1::/64 on infw-n* order 10 firewall lab",
    "allow icmpv6 type 128 from 2001:db8::/32 on infw-n* order 30 firewall lab",
    "deny from 203.0.113.0/24 on infw-n1,infw-n2 order 100 firewall blocklist",
)
# Packets per second each rule sees when the clock advances (by position in FAKE_RULES).
FAKE_RATES: tuple[int, ...] = (40, 120, 25, 5, 60, 8, 3, 0)
FAKE_SIZES: tuple[int, ...] = (74, 1400, 96, 84, 590, 94, 104, 60)
FAKE_INTERFACES: dict[str, int] = {"lo": 1, "eth0": 2, "infw-n1": 3, "infw-n2": 4, "ext0": 5}


class FakeClock:
    """Time that moves only when told to."""

    def __init__(self, start: float = START_TIME) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class _Generation:
    generation: int
    ruleset: RuleSet
    time: float
    author: str
    summary: str


class FakeEventSource:
    def __init__(self, engine: FakeEngine, max_per_second: int) -> None:
        self.buffer = EventBuffer(max_per_second=max_per_second, clock=engine.clock)
        self._engine = engine
        engine._sources.append(self)

    def offer(self, events: Sequence[DropEvent]) -> None:
        for ev in events:
            self.buffer.add(ev)

    def poll(self, timeout_ms: int = 100) -> list[DropEvent]:
        return self.buffer.drain()

    def other_reader(self) -> int | None:
        return self._engine.other_reader_pid


class FakeEngine:
    """engine.Engine's calls over in-memory state, a fake clock and scripted traffic."""

    def __init__(
        self,
        clock: FakeClock | None = None,
        *,
        read_only: bool = False,
        loaded: bool = True,
        node: str = "lab-node",
        rules: Sequence[str] = FAKE_RULES,
        config: NodeConfig | None = None,
    ) -> None:
        self.clock = clock or FakeClock()
        self.config = config or NodeConfig()
        self.read_only = read_only
        self.node = node
        self.loaded_flag = loaded
        self.mode = "enforce"
        self.stats_error: InfwError | None = None  # set to make stats() fail (disconnected)
        self.kernel_disagrees = False  # make trace() report a kernel/reference disagreement
        self.other_reader_pid: int | None = None  # another console reading the drop events
        self.checked: list[RuleSet] = []  # every rule set check() judged (dry runs included)
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        ruleset = RuleSet()
        for line in rules:
            parsed = parse_rule_line(line)
            ruleset = add_rule(
                ruleset, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule
            )
        self._ruleset = ruleset
        self._rule_ids: dict[RuleKey, int] = assign_rule_ids(ruleset)
        self._history: list[_Generation] = [
            _Generation(1, RuleSet(), self.clock() - 7200, "root", "attach infw-n*"),
            _Generation(2, ruleset, self.clock() - 3600, "root", "apply examples/lab.yaml"),
        ]
        self._pending: PendingView | None = None
        self._attached: dict[str, InterfaceView] = {}
        if loaded:
            self._attached = {
                "infw-n1": InterfaceView("infw-n1", 3, "native", 42, True),
                "infw-n2": InterfaceView("infw-n2", 4, "native", 42, True),
            }
        self._foreign = {"ext0": InterfaceView("ext0", 5, "generic", 7, False)}
        self._counters: dict[int, tuple[int, int]] = {}
        self._rates = RateTracker()
        self._sources: list[FakeEventSource] = []
        self._event_seq = 0
        self.totals = NodeTotals()
        self._seed_counters()

    # ------------------------------------------------------------------ scripted traffic

    def _seed_counters(self) -> None:
        for i, rid in enumerate(self._ids_in_order()):
            rate = FAKE_RATES[i % len(FAKE_RATES)]
            size = FAKE_SIZES[i % len(FAKE_SIZES)]
            self._counters[rid] = (rate * 600, rate * 600 * size)
        self._rates.update(self._counters, self.clock())

    def _ids_in_order(self) -> list[int]:
        return [
            self._rule_ids[rule_key(fw.name, block, rule)]
            for fw, _, block, _, rule in iter_rules(self._ruleset)
        ]

    def advance(self, seconds: float = 1.0, events_per_rule: int = 2) -> None:
        """Move the clock; every rule with a rate gets its packets, Deny rules their events."""
        self.clock.advance(seconds)
        if not self.loaded_flag:
            return
        fresh: list[DropEvent] = []
        allowed = denied = 0
        for i, (fw, _, block, _, rule) in enumerate(iter_rules(self._ruleset)):
            rid = self._rule_ids[rule_key(fw.name, block, rule)]
            rate = FAKE_RATES[i % len(FAKE_RATES)]
            size = FAKE_SIZES[i % len(FAKE_SIZES)]
            pkts = int(rate * seconds)
            old = self._counters.get(rid, (0, 0))
            self._counters[rid] = (old[0] + pkts, old[1] + pkts * size)
            if rule.action is Action.DENY:
                denied += pkts
                for _ in range(min(events_per_rule, pkts)):
                    fresh.append(self._event(rid, block.source_cidrs[0], rule, size))
            else:
                allowed += pkts
        t = self.totals
        audit = self.mode == "audit"
        self.totals = replace(
            t,
            allowed=(t.allowed[0] + allowed, t.allowed[1] + allowed * 500),
            denied=t.denied if audit else (t.denied[0] + denied, t.denied[1] + denied * 90),
            would_deny=(t.would_deny[0] + denied, t.would_deny[1] + denied * 90)
            if audit
            else t.would_deny,
            failsafe=(t.failsafe[0] + int(2 * seconds), t.failsafe[1] + int(2 * seconds) * 66),
            no_match=(t.no_match[0] + int(10 * seconds), t.no_match[1] + int(10 * seconds) * 120),
            events_sent=t.events_sent + len(fresh),
            events_suppressed=t.events_suppressed + max(0, denied - len(fresh)),
        )
        for source in self._sources:
            source.offer(fresh)

    def _event(self, rule_id: int, cidr: str, rule: Any, size: int) -> DropEvent:
        self._event_seq += 1
        seq = self._event_seq
        v6 = ":" in cidr
        base = cidr.split("/")[0]
        host = seq % 200 + 10
        src = f"{base}{host:x}" if v6 else base.rsplit(".", 1)[0] + f".{host}"
        dst = "2001:db8:1::1" if v6 else "192.0.2.1"
        proto = rule.protocol.value if rule.protocol else "TCP"
        ports = rule.ports
        icmp = rule.protocol is not None and rule.protocol.is_icmp
        return DropEvent(
            time=self.clock() - 0.5 + (seq % 10) / 20,
            interface="infw-n1" if seq % 3 else "infw-n2",
            rule_id=rule_id,
            verdict="WOULD DENY" if self.mode == "audit" else "DENY",
            protocol=proto,
            src=src,
            dst=dst,
            sport=None if icmp else 40000 + seq % 1000,
            dport=None if icmp else (ports.low if ports else 443),
            icmp_type=rule.icmp_type if icmp else None,
            icmp_code=(rule.icmp_code or 0) if icmp else None,
            vlan=100 if seq % 7 == 0 else 0,
            length=size,
        )

    # ------------------------------------------------------------------ views

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def _check_pending_expiry(self) -> None:
        """What the real watchdog does when the deadline passes."""
        if self._pending is not None and self.clock() >= self._pending.deadline:
            previous = self._pending.previous_generation
            self._pending = None
            old = next(g for g in self._history if g.generation == previous)
            self._commit(old.ruleset, f"auto-revert: not confirmed in time (back to {previous})")

    def status(self) -> Status:
        self._check_pending_expiry()
        views = tuple(
            sorted((*self._attached.values(), *self._foreign.values()), key=lambda v: v.ifindex)
        )
        return Status(
            node=self.node,
            loaded=self.loaded_flag,
            pin_root="/sys/fs/bpf/infw",
            mode=self.mode,
            generation=self._history[-1].generation,
            rule_count=self._ruleset.rule_count(),
            interfaces=views if self.loaded_flag else tuple(self._foreign.values()),
            pending=self._pending,
            failsafe=tuple(str(fs) for fs in self.config.failsafe),
            read_only=self.read_only,
        )

    def rule_rows(self) -> list[RuleRow]:
        rates = self._rates.update(self._counters, self.clock())
        return build_rule_rows(self._ruleset, self._rule_ids, self._counters, rates)

    def stats(self) -> StatsSnapshot:
        if self.stats_error is not None:
            raise self.stats_error
        return StatsSnapshot(
            self.clock(), tuple(self.rule_rows()), self.totals, self._history[-1].generation
        )

    def open_events(self, max_per_second: int = 200) -> FakeEventSource:
        if not self.loaded_flag:
            raise StateError("no firewall is loaded at /sys/fs/bpf/infw", "attach first")
        return FakeEventSource(self, max_per_second)

    def ruleset(self) -> RuleSet:
        return self._ruleset

    def export_yaml(self) -> str:
        return crd.dump_yaml(self._ruleset)

    def interfaces(self) -> dict[str, int]:
        return dict(FAKE_INTERFACES)

    def history(self, limit: int = 50) -> list[HistoryView]:
        current = self._history[-1].generation
        return [
            HistoryView(g.generation, g.time, g.author, g.summary, g.generation == current)
            for g in reversed(self._history[-limit:])
        ]

    # ------------------------------------------------------------------ edits

    def _require_write(self, what: str) -> None:
        if self.read_only:
            from engine.errors import PrivilegeError

            raise PrivilegeError(
                f"cannot {what}: this console is read-only", "start it without --read-only"
            )

    def _commit(self, ruleset: RuleSet, summary: str) -> int:
        generation = self._history[-1].generation + 1
        self._rule_ids = assign_rule_ids(ruleset, self._rule_ids)
        self._ruleset = ruleset
        self._history.append(_Generation(generation, ruleset, self.clock(), "operator", summary))
        return generation

    def apply(
        self,
        ruleset: RuleSet,
        *,
        confirm_timeout: float | None = None,
        force: bool = False,
        expected_generation: int | None = None,
        summary: str = "apply",
    ) -> ApplyResult:
        self._record("apply", summary, confirm_timeout=confirm_timeout, force=force)
        self._require_write("apply rules")
        self._check_pending_expiry()
        if self._pending is not None:
            raise StateError(
                f"generation {self._pending.generation} is pending confirmation",
                "press c to keep it or r to drop it, then apply again",
            )
        self.check(ruleset, force=force)
        previous = self._history[-1].generation
        generation = self._commit(ruleset, summary)
        timeout = self.config.confirm_timeout if confirm_timeout is None else confirm_timeout
        if timeout > 0:
            self._pending = PendingView(generation, previous, self.clock() + timeout, "operator")
        return ApplyResult(generation, previous, ruleset.rule_count(), self._pending)

    def check(self, ruleset: RuleSet, *, force: bool = False) -> tuple[Any, list[str]]:
        """engine.core.guard's fail-safe check (no SSH session here, so no lockout check)."""
        self.checked.append(ruleset)  # not in self.calls: dry runs come and go asynchronously
        ids = assign_rule_ids(ruleset, self._rule_ids)
        refusals = Guard(self.config.failsafe, None, None).check_failsafe(ruleset, ids)
        forced = raise_if_refused(refusals, force)
        return None, [f"forced past: {r.message}" for r in forced]

    def _parse(self, line: str | RuleLine, default: tuple[str, ...] = ()) -> RuleLine:
        return line if isinstance(line, RuleLine) else parse_rule_line(line, default)

    def add_rule(self, line: str | RuleLine, **kwargs: Any) -> ApplyResult:
        parsed = self._parse(line)
        new = add_rule(self._ruleset, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
        return self.apply(new, summary=f"add {parsed.firewall} order {parsed.rule.order}", **kwargs)

    def check_rule(
        self, line: str | RuleLine, rule_id: int | None = None, *, force: bool = False
    ) -> list[str]:
        """The dry run of add_rule / edit_rule: the same rule set through check()."""
        if rule_id is None:
            parsed = self._parse(line)
            new = add_rule(
                self._ruleset, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule
            )
        else:
            row = self._row(rule_id)
            parsed = self._parse(line, row.interfaces)
            new = remove_rule(self._ruleset, row.firewall, row.cidrs, row.order)
            new = add_rule(new, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
        return self.check(new, force=force)[1]

    def reorder_target(self, rule_id: int, delta: int) -> int:
        row = self._row(rule_id)
        taken = {
            r.order
            for r in self.rule_rows()
            if r.firewall == row.firewall
            and set(r.cidrs) == set(row.cidrs)
            and r.rule_id != row.rule_id
        }
        order = row.order + delta
        while order in taken:
            order += delta
        if not ORDER_MIN <= order <= ORDER_MAX:
            raise StateError(f"order stays within {ORDER_MIN}..{ORDER_MAX}", "move the other way")
        return order

    def reorder_rule(self, rule_id: int, delta: int, **kwargs: Any) -> ApplyResult:
        row = self._row(rule_id)
        order = self.reorder_target(rule_id, delta)
        line = format_rule_line(
            row.firewall, row.interfaces, row.cidrs, replace(row.rule, order=order)
        )
        return self.edit_rule(rule_id, line, **kwargs)

    def trace_packet(self, req: TraceRequest) -> TraceResult:
        return self.trace(
            req.interface, req.src, req.proto, req.dport, req.icmp_type, req.icmp_code
        )

    def _row(self, rule_id: int) -> RuleRow:
        for row in self.rule_rows():
            if row.rule_id == rule_id:
                return row
        raise StateError(f"no rule with id {rule_id}", "pick a rule from the table")

    def edit_rule(self, rule_id: int, line: str | RuleLine, **kwargs: Any) -> ApplyResult:
        row = self._row(rule_id)
        parsed = self._parse(line, row.interfaces)
        new = remove_rule(self._ruleset, row.firewall, row.cidrs, row.order)
        new = add_rule(new, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
        # The edited rule keeps its id, as the real store does.
        key = (parsed.firewall, tuple(sorted(parsed.cidrs)), parsed.rule.order)
        self._rule_ids = {k: v for k, v in self._rule_ids.items() if v != rule_id}
        self._rule_ids[key] = rule_id
        return self.apply(new, summary=f"edit rule {rule_id}", **kwargs)

    def delete_rule(self, rule_id: int, **kwargs: Any) -> ApplyResult:
        row = self._row(rule_id)
        new = remove_rule(self._ruleset, row.firewall, row.cidrs, row.order)
        return self.apply(new, summary=f"delete rule {rule_id}", **kwargs)

    def confirm(self) -> int:
        self._record("confirm")
        self._require_write("confirm")
        if self._pending is None:
            raise StateError("nothing is pending confirmation", "apply a change first")
        generation, self._pending = self._pending.generation, None
        return generation

    def revert(self, **kwargs: Any) -> ApplyResult:
        self._record("revert")
        self._require_write("revert")
        if self._pending is not None:
            previous = self._pending.previous_generation
            pending_gen = self._pending.generation
            self._pending = None
            old = next(g for g in self._history if g.generation == previous)
            self._commit(old.ruleset, f"reverted by operator (back to {previous})")
            return ApplyResult(
                self._history[-1].generation, pending_gen, old.ruleset.rule_count(), None
            )
        if len(self._history) < 2:
            raise StateError("no earlier generation to revert to", "see the history")
        old = self._history[-2]
        return self.apply(
            old.ruleset, confirm_timeout=0, summary=f"revert to generation {old.generation}"
        )

    def set_mode(self, mode: str) -> str:
        self._record("set_mode", mode)
        self._require_write("switch mode")
        if mode not in ("enforce", "audit"):
            raise StateError(f"unknown mode {mode!r}", "use 'enforce' or 'audit'")
        self.mode = mode
        return mode

    # ------------------------------------------------------------------ attach / trace

    def attach(
        self,
        patterns: Sequence[str],
        *,
        mode: str = "auto",
        force: bool = False,
        progress: Callable[[str], None] | None = None,
    ) -> list[InterfaceView]:
        self._record("attach", tuple(patterns), mode=mode, force=force)
        self._require_write("attach")
        out = []
        for name in patterns:
            if name not in FAKE_INTERFACES:
                raise StateError(f"no interface here matches {name}", "pick one from the list")
            if name in self._foreign and not force:
                raise GuardRefusal(
                    f"a foreign XDP program (id {self._foreign[name].prog_id}) is attached to {name}",
                    "detach it first, or force to replace it",
                )
            if progress is not None:
                progress(f"attaching to {name}")
            self._foreign.pop(name, None)
            view = InterfaceView(
                name, FAKE_INTERFACES[name], "native" if mode == "auto" else mode, 42, True
            )
            self._attached[name] = view
            out.append(view)
        self.loaded_flag = True
        return out

    def detach(self, patterns: Sequence[str] | None = None) -> list[str]:
        self._record("detach", tuple(patterns or ()))
        self._require_write("detach")
        names = list(patterns) if patterns else list(self._attached)
        for name in names:
            self._attached.pop(name, None)
        return names

    def preview(self, proposed: RuleSet, **kwargs: Any) -> ImpactPreview:
        """The rule diff of the change; this fake sees no traffic."""
        ids = assign_rule_ids(self.ruleset())
        return preview_change(self.ruleset(), ids, proposed, [], source="fake flows")

    def preview_add(self, line: str, **kwargs: Any) -> ImpactPreview:
        self.check_rule(line)
        parsed = self._parse(line)
        new = add_rule(self._ruleset, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
        return self.preview(new)

    def preview_edit(self, rule_id: int, line: str, **kwargs: Any) -> ImpactPreview:
        self.check_rule(line, rule_id)
        row = self._row(rule_id)
        parsed = self._parse(line, row.interfaces)
        new = remove_rule(self._ruleset, row.firewall, row.cidrs, row.order)
        return self.preview(
            add_rule(new, parsed.firewall, parsed.interfaces, parsed.cidrs, parsed.rule)
        )

    def flows(self, **kwargs: Any) -> FlowsView:
        return FlowsView((), 0, 600.0, 0, ("the fake engine records no flows",))

    def pending_drops(self, snapshot: StatsSnapshot) -> PendingDrops | None:
        return None

    def trace(
        self,
        interface: str,
        src: str,
        proto: str,
        dport: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
    ) -> TraceResult:
        self._record("trace", interface, src, proto, dport, icmp_type, icmp_code)
        if interface not in FAKE_INTERFACES:
            raise StateError(f"no interface {interface!r} here", "pick one from the list")
        pkt = PacketFields(src, protocol_number(proto), dport, icmp_type, icmp_code)
        ref = classify(self._ruleset, self._rule_ids, interface, pkt, self.config.failsafe)
        verdict = ref.action.value.upper()
        k_verdict, k_rule = verdict, ref.rule_id
        if self.kernel_disagrees:
            k_verdict = "ALLOW" if verdict == "DENY" else "DENY"
        agree = not self.kernel_disagrees
        return TraceResult(
            interface,
            74,
            k_verdict,
            ref.reason.value,
            k_rule,
            verdict,
            ref.reason.value,
            ref.rule_id,
            ref.describe(),
            agree,
            ("fake engine: the kernel verdict is scripted",),
        )
