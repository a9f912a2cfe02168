"""The safety guard (DESIGN §4): refuse Deny rules over fail-safe ports, changes that would drop
the operator's own SSH session, and attaching where that is risky. Pure: no kernel, no root.

`session_interface_for` is the one impure helper (it asks netlink which interface holds an
address); the engine calls it and hands the answer to `Guard`.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import netaddr

from engine.core.blockmemo import BlockMemo
from engine.core.classify import PacketFields, Reason, classify, rule_matches
from engine.core.compiler import RuleKey, assign_rule_ids, iter_rules, rule_key
from engine.core.failsafe import FAILSAFE_CONFIG_HINT, FailSafe
from engine.core.model import Action, Firewall, IngressBlock, PortRange, Rule, RuleSet
from engine.errors import GuardRefusal

IPPROTO_TCP = 6


def _plain_address(text: str) -> str | None:
    """An address without zone id, IPv4-mapped IPv6 shown as IPv4; None when not an address."""
    bare = text.strip().split("%", 1)[0]
    try:
        ip = netaddr.IPAddress(bare)
    except (netaddr.AddrFormatError, ValueError, TypeError):
        return None
    if ip.version == 6 and ip.is_ipv4_mapped():
        return str(ip.ipv4())
    return str(ip)


@dataclass(frozen=True)
class SshSession:
    """The operator's SSH connection as sshd describes it in SSH_CONNECTION."""

    client: str
    client_port: int
    server: str
    server_port: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SshSession | None:
        """Parse 'client cport server sport'; None when absent or malformed."""
        words = environ.get("SSH_CONNECTION", "").split()
        if len(words) != 4 or not (words[1].isdigit() and words[3].isdigit()):
            return None
        client, server = _plain_address(words[0]), _plain_address(words[2])
        cport, sport = int(words[1]), int(words[3])
        if client is None or server is None or not (0 < cport < 65536 and 0 < sport < 65536):
            return None
        return cls(client, cport, server, sport)

    def __str__(self) -> str:
        return f"SSH session from {self.client} to port {self.server_port}"


@dataclass(frozen=True)
class Refusal:
    """One reason the guard refuses a change; `field` names the form field it concerns."""

    check: str  # failsafe | lockout | attach-session | attach-foreign
    message: str
    fix: str
    rule: str = ""
    field: str = ""
    refusable: bool = True  # --force may override it
    rule_id: int | None = None

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class GuardRefusals(GuardRefusal):
    """Every refusal of one change, so a console can place each next to its field."""

    def __init__(self, refusals: Iterable[Refusal]) -> None:
        self.refusals = tuple(refusals)
        hard = [r for r in self.refusals if not r.refusable]
        if len(self.refusals) == 1:
            message = self.refusals[0].message
            fix = self.refusals[0].fix
        else:
            message = f"refused ({len(self.refusals)} reasons):\n" + "\n".join(
                f"  - {r}" for r in self.refusals
            )
            fix = ""
        if hard:
            fix = (fix + "; " if fix else "") + "--force cannot override this"
        elif fix:
            fix += "; or pass --force if you are sure"
        else:
            fix = "fix each reason, or pass --force if you are sure"
        super().__init__(message, fix, rule=self.refusals[0].rule, refusable=not hard)


def rule_label(fw: Firewall, block: IngressBlock, rule: Rule) -> str:
    """'Deny rule web order 10 (TCP 1-1024 from 0.0.0.0/0)': how refusals name a rule."""
    return (
        f"{rule.action.value} rule {fw.name} order {rule.order} "
        f"({rule.match_text()} from {', '.join(block.source_cidrs)})"
    )


def _overlap(a: PortRange, b: PortRange) -> PortRange | None:
    low, high = max(a.low, b.low), min(a.high, b.high)
    return PortRange(low, high) if low <= high else None


def _failsafe_hits(block: IngressBlock, failsafe: object) -> tuple[tuple[int, list[str]], ...]:
    """(index, what it covers) of each Deny rule in block whose port range takes in a fail-safe
    port: the per-block part of the check, remembered per block (an edit re-checks what it
    changed, not 10,000 rules)."""
    assert isinstance(failsafe, tuple)
    out = []
    for index, rule in enumerate(block.rules):
        if rule.action is not Action.DENY or rule.protocol is None or rule.ports is None:
            continue
        hits = []
        for fs in failsafe:
            common = _overlap(rule.ports, fs.ports) if fs.protocol is rule.protocol else None
            if common is not None:
                hits.append(f"{common}/{fs.protocol.value.lower()} ({fs.purpose})")
        if hits:
            out.append((index, hits))
    return tuple(out)


_FAILSAFE_HITS = BlockMemo(_failsafe_hits)


def _candidates(ruleset: RuleSet, ifname: str, pkt: PacketFields) -> RuleSet:
    """Only the rules that could decide `pkt` on `ifname`, in their original relative order.

    The classifier parses every CIDR it meets; 100,000 CIDRs cost it half a second, and the
    guard runs on every edit. Dropping rules that cannot match keeps the ranking (it compares
    order, prefix, object name, then positions, whose relative order is unchanged)."""
    firewalls = []
    for fw in ruleset.firewalls:
        if not any(fnmatch.fnmatchcase(ifname, p) for p in fw.interfaces):
            continue
        blocks = []
        for block in fw.ingress:
            rules = tuple(r for r in block.rules if rule_matches(r, pkt))
            if rules:
                blocks.append(replace(block, rules=rules))
        if blocks:
            firewalls.append(replace(fw, ingress=tuple(blocks)))
    return RuleSet(tuple(firewalls))


class Guard:
    """Decides whether a change is safe to apply; every answer names the rule and the fix."""

    def __init__(
        self,
        failsafe: tuple[FailSafe, ...],
        session: SshSession | None,
        session_interface: str | None,
    ) -> None:
        self.failsafe = failsafe
        self.session = session
        self.session_interface = session_interface

    def check(
        self,
        new: RuleSet,
        rule_ids: Mapping[RuleKey, int],
        interfaces: Mapping[str, int],
        *,
        audit: bool = False,
    ) -> list[Refusal]:
        """Everything wrong with enforcing `new`. In audit mode nothing drops, so the session
        check is skipped there; the engine must check again when switching to enforce."""
        refusals = self.check_failsafe(new, rule_ids)
        if not audit:
            refusals.extend(self.check_lockout(new, rule_ids, interfaces))
        return refusals

    def check_failsafe(self, new: RuleSet, rule_ids: Mapping[RuleKey, int]) -> list[Refusal]:
        """Deny rules whose port range explicitly includes a fail-safe port.

        A Deny without ports (protocol-only or protocol-less) names no port: fail-safe traffic
        still passes it in the datapath, so it is not refused (see `failsafe_notes`)."""
        out: list[Refusal] = []
        found = [
            (fw, block, index, hits)
            for fw in new.firewalls
            for block in fw.ingress
            for index, hits in _FAILSAFE_HITS(block, self.failsafe)
        ]
        for fw, block, index, hits in found:
            rule = block.rules[index]
            label = rule_label(fw, block, rule)
            which = "passes" if len(hits) == 1 else "pass"
            out.append(
                Refusal(
                    check="failsafe",
                    message=f"{label} covers {', '.join(hits)}, which always {which}",
                    fix=_failsafe_fix(hits),
                    rule=label,
                    field="ports",
                    rule_id=rule_ids.get(rule_key(fw.name, block, rule)),
                )
            )
        return out

    def failsafe_notes(self, new: RuleSet) -> list[str]:
        """Deny rules that match fail-safe traffic without naming its port: not refused, but
        worth showing ("22/tcp (SSH) still passes")."""
        out: list[str] = []
        for fw, _, block, _, rule in iter_rules(new):
            if rule.action is not Action.DENY or rule.ports is not None:
                continue
            spared = [str(fs) for fs in self.failsafe if rule.protocol in (None, fs.protocol)]
            if spared:
                out.append(
                    f"{rule_label(fw, block, rule)}: fail-safe {', '.join(spared)} still passes"
                )
        return out

    def check_lockout(
        self, new: RuleSet, rule_ids: Mapping[RuleKey, int], interfaces: Mapping[str, int]
    ) -> list[Refusal]:
        """Would `new` drop the operator's SSH session (client -> server_port, TCP)?

        When the interface carrying the session is unknown, every interface is checked: a
        refusal that can be forced is better than a lost session."""
        session = self.session
        if session is None:
            return []
        if self.session_interface is not None:
            candidates = [self.session_interface]
            unknown = False
        else:
            candidates = sorted(interfaces)
            unknown = True
        pkt = PacketFields(
            src=session.client, ipproto=IPPROTO_TCP, dport=session.server_port, dst=session.server
        )
        ids = assign_rule_ids(new, rule_ids)  # tolerate a caller's ids that miss new rules
        out: list[Refusal] = []
        for ifname in candidates:
            decision = classify(_candidates(new, ifname, pkt), ids, ifname, pkt, self.failsafe)
            if decision.action is not Action.DENY or decision.reason is not Reason.RULE:
                continue
            info = decision.rule
            assert info is not None  # a RULE decision always carries its rule
            fw = new.firewall(info.firewall)
            block = IngressBlock(info.cidrs, (info.rule,))
            label = (
                rule_label(fw, block, info.rule) if fw is not None else f"rule {decision.rule_id}"
            )
            where = f"on {ifname}" + (" (the interface carrying it is unknown)" if unknown else "")
            out.append(
                Refusal(
                    check="lockout",
                    message=(
                        f"{label} would drop your SSH session from {session.client} "
                        f"to port {session.server_port} {where}"
                    ),
                    fix=(
                        f"add an Allow for TCP {session.server_port} from {session.client} at a lower "
                        "order, or narrow this rule's sources or ports"
                    ),
                    rule=label,
                    field="ports" if info.rule.ports is not None else "sourceCIDRs",
                    rule_id=decision.rule_id,
                )
            )
        return out

    def check_attach(self, ifname: str, foreign_program: bool) -> list[Refusal]:
        """Attaching XDP to `ifname`: risky on the session's interface, destructive over a
        program that is not ours."""
        out: list[Refusal] = []
        if self.session is not None and ifname == self.session_interface:
            out.append(
                Refusal(
                    check="attach-session",
                    message=(
                        f"{ifname} carries your {self.session}; a wrong rule there cuts you off"
                    ),
                    fix=(
                        "try the rules in audit mode or the lab first; keep the confirm timeout so "
                        "the watchdog can restore the previous rules"
                    ),
                    field="interfaces",
                )
            )
        if foreign_program:
            out.append(
                Refusal(
                    check="attach-foreign",
                    message=(
                        f"{ifname} already runs an XDP program this firewall did not attach "
                        "(another tool, or an infw firewall under another --pin-root); "
                        "attaching replaces it"
                    ),
                    fix=(
                        f"detach it first (ip link set dev {ifname} xdp off) if it is not needed, "
                        "or pass --force"
                    ),
                    field="interfaces",
                )
            )
        return out


def raise_if_refused(refusals: Iterable[Refusal], force: bool) -> list[Refusal]:
    """Raise GuardRefusals unless there are none, or force is set and all can be forced.

    Returns the refusals that force overrode, so the caller can record them (never silently)."""
    found = list(refusals)
    if not found:
        return []
    if not force or any(not r.refusable for r in found):
        raise GuardRefusals(found)
    return found


def session_interface_for(server_addr: str) -> str | None:
    """The interface in the current network namespace that holds `server_addr` (netlink)."""
    from pyroute2 import IPRoute

    wanted = _plain_address(server_addr)
    if wanted is None:
        return None
    with IPRoute() as ipr:
        for msg in ipr.get_addr():
            addr = msg.get_attr("IFA_ADDRESS")
            local = msg.get_attr("IFA_LOCAL")
            if wanted not in {_plain_address(a) for a in (addr, local) if a}:
                continue
            links = ipr.get_links(msg["index"])
            if links:
                name = links[0].get_attr("IFLA_IFNAME")
                return str(name) if name else None
    return None


def _failsafe_fix(hits: list[str]) -> str:
    fix = f"narrow the port range to leave the fail-safe ports out; they are {FAILSAFE_CONFIG_HINT}"
    if any("(SSH)" in h for h in hits):
        # The operator dropped SSH from its list so users can restrict it; here it is the
        # node's choice, made in the config file, never by a rule.
        fix += ": to restrict SSH with rules, remove its 22/tcp entry there"
    return fix
