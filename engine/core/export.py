"""Write rule sets back as IngressNodeFirewall documents.

`firewall_to_dict` is the lossless form the store keeps (infw's own shorthands included);
`export_documents` writes only what the operator admits, so a rule set proven on a node can go to
the cluster unchanged, and says in its notes what it had to change or leave out (DESIGN §2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.failsafe import OPERATOR_FAILSAFE
from engine.core.model import (
    API_VERSION,
    KIND,
    PORT_MAX,
    PORT_MIN,
    Action,
    Firewall,
    PortRange,
    Rule,
    RuleSet,
)
from engine.core.yamlfile import dump_all

GLOB_CHARS = frozenset("*?[")
FULL_PORTS = f"{PORT_MIN}-{PORT_MAX}"
EVERY_PORT = PortRange(PORT_MIN, PORT_MAX)


def rule_to_dict(rule: Rule) -> dict[str, Any]:
    """The stored form: a protocol without its block means every port / every ICMP type."""
    out: dict[str, Any] = {"order": rule.order}
    if rule.protocol is not None:
        pc: dict[str, Any] = {"protocol": rule.protocol.value}
        sub: dict[str, Any] = {}
        if rule.ports is not None:
            sub["ports"] = rule.ports.low if rule.ports.low == rule.ports.high else str(rule.ports)
        if rule.icmp_type is not None:
            sub["icmpType"] = rule.icmp_type
        if rule.icmp_code is not None:
            sub["icmpCode"] = rule.icmp_code
        if sub:
            pc[rule.protocol.crd_key] = sub
        out["protocolConfig"] = pc
    out["action"] = rule.action.value
    return out


def firewall_to_dict(fw: Firewall) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if fw.node_selector:
        spec["nodeSelector"] = dict(fw.node_selector)
    spec["interfaces"] = list(fw.interfaces)
    spec["ingress"] = [
        {"sourceCIDRs": list(b.source_cidrs), "rules": [rule_to_dict(r) for r in b.rules]}
        for b in fw.ingress
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": fw.name, **dict(fw.extra_metadata)},
        "spec": spec,
    }


@dataclass(frozen=True)
class Export:
    """Documents the operator admits, and what changed on the way (one line each)."""

    documents: tuple[dict[str, Any], ...]
    notes: tuple[str, ...] = ()


def _operator_rule(rule: Rule) -> tuple[dict[str, Any] | None, str]:
    """The rule in a form the operator admits (None: it has none), and a note if it changed."""
    out = rule_to_dict(rule)
    proto = rule.protocol
    if proto is None:
        return out, ""
    pc = out["protocolConfig"]
    if proto.has_ports:
        ports = rule.port_range
        covered = ports or EVERY_PORT
        if rule.action is Action.DENY:
            hits = [
                str(fs)
                for fs in OPERATOR_FAILSAFE
                if fs.protocol is proto
                and covered.low <= fs.ports.high
                and fs.ports.low <= covered.high
            ]
            if hits:
                return None, (
                    f"left out: the operator refuses a Deny covering its fail-safe "
                    f"{', '.join(hits)}; split the rule around those ports to take it there"
                )
        if ports is None:
            pc[proto.crd_key] = {"ports": FULL_PORTS}
        return out, ""
    sub = pc.setdefault(proto.crd_key, {})
    if rule.icmp_type is None:
        return out, (
            f"every {proto.value} type has no operator form: written as {proto.crd_key}: {{}}, "
            "which the operator reads as type 0 code 0 only"
        )
    if rule.icmp_code is None:
        sub["icmpCode"] = 0
        return out, (
            f"every code of type {rule.icmp_type} has no operator form: written with "
            "icmpCode 0, the only code it matches there"
        )
    return out, ""


def export_documents(ruleset: RuleSet) -> Export:
    """One operator-admitted document per object, with notes for what changed or is left out."""
    docs: list[dict[str, Any]] = []
    notes: list[str] = []
    for fw in ruleset.firewalls:
        doc = firewall_to_dict(fw)
        entries = []
        for bi, block in enumerate(fw.ingress):
            rules = []
            for rule in block.rules:
                written, note = _operator_rule(rule)
                if note:
                    where = f"{fw.name} {', '.join(block.source_cidrs)} order {rule.order}"
                    notes.append(f"{where}: {note}")
                if written is not None:
                    rules.append(written)
            entry: dict[str, Any] = {"sourceCIDRs": list(block.source_cidrs)}
            if rules:
                entry["rules"] = rules
            elif block.rules:
                notes.append(
                    f"{fw.name} spec.ingress[{bi}]: no rule left, the entry matches nothing"
                )
            entries.append(entry)
        doc["spec"]["ingress"] = entries
        for iface in fw.interfaces:
            if GLOB_CHARS & set(iface):
                notes.append(
                    f"{fw.name}: interface '{iface}' is a glob: the operator's daemon matches "
                    "exact names only, so there it applies nowhere; list the names"
                )
        docs.append(doc)
    return Export(tuple(docs), tuple(notes))


def export_notes(ruleset: RuleSet) -> tuple[str, ...]:
    return export_documents(ruleset).notes


def dump_documents(docs: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> str:
    return dump_all(list(docs))
