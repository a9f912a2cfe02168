"""The rule model: frozen dataclasses mirroring the IngressNodeFirewall custom resource."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

API_VERSION = "ingressnodefirewall.openshift.io/v1alpha1"
KIND = "IngressNodeFirewall"

ORDER_MIN, ORDER_MAX = 1, 2**32 - 1  # the operator's order is a uint32
PORT_MIN, PORT_MAX = 1, 65535


class Protocol(enum.StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"
    ICMP = "ICMP"
    ICMPV6 = "ICMPv6"

    @property
    def ipproto(self) -> int:
        return IPPROTO[self]

    @property
    def has_ports(self) -> bool:
        return self in (Protocol.TCP, Protocol.UDP, Protocol.SCTP)

    @property
    def is_icmp(self) -> bool:
        return self in (Protocol.ICMP, Protocol.ICMPV6)

    @property
    def crd_key(self) -> str:
        """The protocolConfig sub-key the CRD uses for this protocol (tcp, udp, icmpv6...)."""
        return self.value.lower()

    @classmethod
    def parse(cls, text: str) -> Protocol:
        for proto in cls:
            if proto.value.lower() == text.strip().lower():
                return proto
        raise ValueError(text)


IPPROTO: dict[Protocol, int] = {
    Protocol.TCP: 6,
    Protocol.UDP: 17,
    Protocol.SCTP: 132,
    Protocol.ICMP: 1,
    Protocol.ICMPV6: 58,
}
PROTOCOL_BY_NUMBER: dict[int, Protocol] = {v: k for k, v in IPPROTO.items()}


class Action(enum.StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"

    @classmethod
    def parse(cls, text: str) -> Action:
        for action in cls:
            if action.value.lower() == text.strip().lower():
                return action
        raise ValueError(text)


@dataclass(frozen=True, order=True)
class PortRange:
    low: int
    high: int

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"

    def contains(self, port: int) -> bool:
        return self.low <= port <= self.high

    @property
    def is_full(self) -> bool:
        """1-65535, the operator's only way to say every port: here the whole protocol, so port
        0 and non-first fragments match too (export writes a protocol-only rule this way)."""
        return self.low <= PORT_MIN and self.high >= PORT_MAX


@dataclass(frozen=True)
class Rule:
    """One rule of a sourceCIDRs block. protocol None means any protocol."""

    order: int
    action: Action
    protocol: Protocol | None = None
    ports: PortRange | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def has_l4_fields(self) -> bool:
        """True when the rule looks into the L4 header (ports or ICMP type/code)."""
        return self.port_range is not None or self.icmp_type is not None

    @property
    def port_range(self) -> PortRange | None:
        """The ports the rule looks at; None when it takes the whole protocol (1-65535 too)."""
        return None if self.ports is None or self.ports.is_full else self.ports

    def match_text(self) -> str:
        """Short human form of what the rule matches, e.g. 'TCP 8000-8080' or 'ICMP 8/0'."""
        if self.protocol is None:
            return "any"
        if self.ports is not None:
            return f"{self.protocol.value} {self.ports}"
        if self.icmp_type is not None:
            code = "" if self.icmp_code is None else f"/{self.icmp_code}"
            return f"{self.protocol.value} type {self.icmp_type}{code}"
        return self.protocol.value


class HashedTuple(tuple):
    """A tuple that keeps its hash: for big tuples used as dict keys again and again (a block's
    sorted CIDRs in every rule-id key, a merged rule list shared by 100 prefixes). Equal, and
    hashed alike, to the plain tuple."""

    _hash: int

    def __hash__(self) -> int:
        try:
            return self._hash
        except AttributeError:
            self._hash = tuple.__hash__(self)
            return self._hash


class SortedCidrs(HashedTuple, tuple[str, ...]):
    """A block's CIDRs sorted, as rule-id keys hold them."""


@dataclass(frozen=True)
class IngressBlock:
    """A sourceCIDRs list and the rules that apply to packets from it."""

    source_cidrs: tuple[str, ...]
    rules: tuple[Rule, ...]

    @cached_property
    def sorted_cidrs(self) -> tuple[str, ...]:
        """The CIDRs in the form rule ids are keyed by: sorted once per block, not per rule (an
        edit at 100,000 CIDRs builds every rule's key)."""
        return SortedCidrs(sorted(self.source_cidrs))


@dataclass(frozen=True)
class Firewall:
    """One IngressNodeFirewall object."""

    name: str
    interfaces: tuple[str, ...]
    ingress: tuple[IngressBlock, ...]
    node_selector: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Metadata we do not interpret (labels, annotations...) kept for a faithful export.
    extra_metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class RuleSet:
    """Every firewall object the node enforces."""

    firewalls: tuple[Firewall, ...] = ()

    def firewall(self, name: str) -> Firewall | None:
        for fw in self.firewalls:
            if fw.name == name:
                return fw
        return None

    def rule_count(self) -> int:
        return sum(len(b.rules) for fw in self.firewalls for b in fw.ingress)

    def with_firewall(self, new: Firewall) -> RuleSet:
        """Replace the object of the same name, or append it."""
        out = [new if fw.name == new.name else fw for fw in self.firewalls]
        if self.firewall(new.name) is None:
            out.append(new)
        return RuleSet(tuple(out))

    def without_firewall(self, name: str) -> RuleSet:
        return RuleSet(tuple(fw for fw in self.firewalls if fw.name != name))

    def semantic_key(self) -> tuple[Any, ...]:
        """A comparable form that ignores metadata; equal keys mean equal behaviour."""
        return tuple(
            (fw.name, fw.interfaces, tuple((b.source_cidrs, b.rules) for b in fw.ingress))
            for fw in sorted(self.firewalls, key=lambda f: f.name)
        )


def add_rule(
    ruleset: RuleSet,
    firewall: str,
    interfaces: tuple[str, ...],
    cidrs: tuple[str, ...],
    rule: Rule,
) -> RuleSet:
    """Add (or replace, same order) a rule in the block with exactly these CIDRs.

    The object is created with `interfaces` when missing; an existing object keeps its own
    interfaces (they belong to every rule in it: see `rule_conflict`). A block with the same
    CIDR set is reused so that order uniqueness holds where the operator checks it.
    """
    fw = ruleset.firewall(firewall) or Firewall(name=firewall, interfaces=interfaces, ingress=())
    blocks = list(fw.ingress)
    for i, block in enumerate(blocks):
        if set(block.source_cidrs) == set(cidrs):
            kept = tuple(r for r in block.rules if r.order != rule.order)
            rules = tuple(sorted((*kept, rule), key=lambda r: r.order))
            blocks[i] = replace(block, rules=rules)
            break
    else:
        blocks.append(IngressBlock(source_cidrs=cidrs, rules=(rule,)))
    return ruleset.with_firewall(replace(fw, ingress=tuple(blocks)))


def remove_rule(ruleset: RuleSet, firewall: str, cidrs: tuple[str, ...], order: int) -> RuleSet:
    """Remove one rule; an emptied block disappears, an emptied object too."""
    fw = ruleset.firewall(firewall)
    if fw is None:
        return ruleset
    blocks = []
    for block in fw.ingress:
        if set(block.source_cidrs) == set(cidrs):
            block = replace(block, rules=tuple(r for r in block.rules if r.order != order))
        if block.rules:
            blocks.append(block)
    if not blocks:
        return ruleset.without_firewall(firewall)
    return ruleset.with_firewall(replace(fw, ingress=tuple(blocks)))


def rule_conflict(
    ruleset: RuleSet,
    firewall: str,
    interfaces: tuple[str, ...] | None,
    cidrs: tuple[str, ...],
    order: int,
    replacing: tuple[str, tuple[str, ...], int] | None = None,
) -> tuple[str, str, str] | None:
    """Why a one-rule change can't go in as asked: (field, problem, fix), or None.

    An order already used in the block would silently replace that rule, and other interfaces
    than the object's would widen (or narrow) every rule of the object.
    """
    fw = ruleset.firewall(firewall)
    if fw is None:
        return None
    if interfaces is not None and set(interfaces) != set(fw.interfaces):
        return (
            "interfaces",
            f"object {firewall} applies to {', '.join(fw.interfaces)}: a rule can't change that "
            "for the object's other rules",
            f"leave out 'on' (or say 'on {','.join(fw.interfaces)}'), or put the rule in another "
            "object with 'firewall NAME'",
        )
    for block in fw.ingress:
        if set(block.source_cidrs) != set(cidrs):
            continue
        for rule in block.rules:
            same = replacing == (firewall, tuple(sorted(block.source_cidrs)), rule.order)
            if rule.order == order and not same:
                return (
                    "order",
                    f"order {order} is already used by a rule for {', '.join(cidrs)} in {firewall} "
                    f"({rule.action.value} {rule.match_text()})",
                    "pick a free order, or edit that rule",
                )
    return None
