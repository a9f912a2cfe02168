"""Read and write IngressNodeFirewall YAML, validating every field as DESIGN §2 says.

All errors of a file are collected and raised together as one ValidationError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from engine.core.cidr import CidrError, parse_cidr
from engine.core.model import (
    API_VERSION,
    KIND,
    ORDER_MAX,
    ORDER_MIN,
    PORT_MAX,
    PORT_MIN,
    Action,
    Firewall,
    IngressBlock,
    PortRange,
    Protocol,
    Rule,
    RuleSet,
)
from engine.core.yamlfile import dump_all, load_all, read_text
from engine.errors import FieldError, ValidationError

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
IFACE_RE = re.compile(r"^[A-Za-z0-9_.:@*?\[\]!-]{1,15}$")


class _Collector:
    """Accumulates FieldErrors for one document."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.errors: list[FieldError] = []

    def add(self, path: str, value: object, problem: str, fix: str = "") -> None:
        self.errors.append(FieldError(self.document, path, value, problem, fix))


def parse_port_range(value: object) -> PortRange:
    """'80', 80 or '1000-2000' -> PortRange; ValueError with a readable message otherwise."""
    if isinstance(value, bool):
        raise ValueError("a port is a number 1-65535 or a range like 1000-2000")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str):
        text = value.strip()
        parts = text.split("-")
        # isascii: str.isdigit() also accepts digits int() refuses ('²') or reads ('٣').
        if len(parts) not in (1, 2) or not all(
            p.strip().isascii() and p.strip().isdigit() for p in parts
        ):
            raise ValueError("a port is a number 1-65535 or a range like 1000-2000")
        low = int(parts[0])
        high = int(parts[-1])
    else:
        raise ValueError("a port is a number 1-65535 or a range like 1000-2000")
    if not (PORT_MIN <= low <= PORT_MAX and PORT_MIN <= high <= PORT_MAX):
        raise ValueError(f"ports must be within {PORT_MIN}-{PORT_MAX}")
    if low > high:
        raise ValueError(f"range is reversed; write {high}-{low}")
    return PortRange(low, high)


def _int_field(c: _Collector, path: str, value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        else:
            c.add(path, value, f"must be an integer {low}..{high}")
            return None
    if not low <= value <= high:
        c.add(path, value, f"must be within {low}..{high}")
        return None
    return value


def _parse_rule(c: _Collector, path: str, raw: object, family_v4: set[bool]) -> Rule | None:
    if not isinstance(raw, dict):
        c.add(path, raw, "a rule must be a mapping with order, protocolConfig and action")
        return None
    before = len(c.errors)
    for key in raw:
        if key not in ("order", "protocolConfig", "action"):
            c.add(
                f"{path}.{key}", raw[key], "unknown field", "allowed: order, protocolConfig, action"
            )
    order = None
    if "order" not in raw:
        c.add(f"{path}.order", None, "missing", f"give an integer {ORDER_MIN}..{ORDER_MAX}")
    else:
        order = _int_field(c, f"{path}.order", raw["order"], ORDER_MIN, ORDER_MAX)
    action = None
    if "action" not in raw:
        c.add(f"{path}.action", None, "missing", "use Allow or Deny")
    else:
        try:
            action = Action.parse(str(raw["action"]))
        except ValueError:
            c.add(f"{path}.action", raw["action"], "unknown action", "use Allow or Deny")
        else:
            if raw["action"] != action.value:  # the operator's CRD enum is case-sensitive
                c.add(f"{path}.action", raw["action"], "wrong case", f"write {action.value}")
                action = None
    protocol: Protocol | None = None
    ports: PortRange | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    pc = raw.get("protocolConfig")
    ppath = f"{path}.protocolConfig"
    if pc is not None and not isinstance(pc, dict):
        c.add(ppath, pc, "must be a mapping like {protocol: TCP, tcp: {ports: 80}}")
    elif isinstance(pc, dict) and pc.get("protocol") not in (None, ""):
        try:
            protocol = Protocol.parse(str(pc["protocol"]))
        except ValueError:
            c.add(
                f"{ppath}.protocol",
                pc["protocol"],
                "unknown protocol",
                "use TCP, UDP, SCTP, ICMP or ICMPv6",
            )
        else:
            if pc["protocol"] != protocol.value:  # case-sensitive in the operator's CRD
                c.add(f"{ppath}.protocol", pc["protocol"], "wrong case", f"write {protocol.value}")
        for key in pc:
            if key == "protocol":
                continue
            if protocol is None or key != protocol.crd_key:
                c.add(
                    f"{ppath}.{key}",
                    pc[key],
                    "does not belong to this protocol",
                    f"use '{protocol.crd_key}:'" if protocol else "",
                )
        if protocol is not None:
            sub = pc.get(protocol.crd_key)
            spath = f"{ppath}.{protocol.crd_key}"
            if sub is not None and not isinstance(sub, dict):
                c.add(spath, sub, "must be a mapping")
            elif isinstance(sub, dict):
                if protocol.has_ports:
                    for key in sub:
                        if key != "ports":
                            c.add(
                                f"{spath}.{key}",
                                sub[key],
                                "unknown field",
                                "only 'ports' is allowed",
                            )
                    if "ports" in sub:
                        try:
                            ports = parse_port_range(sub["ports"])
                        except ValueError as exc:
                            c.add(f"{spath}.ports", sub["ports"], str(exc))
                else:
                    for key in sub:
                        if key not in ("icmpType", "icmpCode"):
                            c.add(
                                f"{spath}.{key}",
                                sub[key],
                                "unknown field",
                                "use icmpType and icmpCode",
                            )
                    if "icmpType" in sub:
                        icmp_type = _int_field(c, f"{spath}.icmpType", sub["icmpType"], 0, 255)
                    if "icmpCode" in sub:
                        icmp_code = _int_field(c, f"{spath}.icmpCode", sub["icmpCode"], 0, 255)
                        if "icmpType" not in sub:
                            c.add(
                                f"{spath}.icmpCode",
                                sub["icmpCode"],
                                "a code needs a type",
                                "add icmpType",
                            )
            if protocol is Protocol.ICMP and False in family_v4:
                c.add(
                    f"{ppath}.protocol",
                    "ICMP",
                    "ICMP rules need IPv4 sources only",
                    "use ICMPv6 for IPv6 sourceCIDRs, or split the block by family",
                )
            if protocol is Protocol.ICMPV6 and True in family_v4:
                c.add(
                    f"{ppath}.protocol",
                    "ICMPv6",
                    "ICMPv6 rules need IPv6 sources only",
                    "use ICMP for IPv4 sourceCIDRs, or split the block by family",
                )
    elif isinstance(pc, dict):
        for key in pc:
            if key != "protocol":
                c.add(f"{ppath}.{key}", pc[key], "set 'protocol' before its settings")
    if len(c.errors) != before or order is None or action is None:
        return None
    return Rule(order, action, protocol, ports, icmp_type, icmp_code)


def _parse_block(c: _Collector, path: str, raw: object) -> IngressBlock | None:
    if not isinstance(raw, dict):
        c.add(path, raw, "must be a mapping with sourceCIDRs and rules")
        return None
    before = len(c.errors)
    for key in raw:
        if key not in ("sourceCIDRs", "rules"):
            c.add(f"{path}.{key}", raw[key], "unknown field", "allowed: sourceCIDRs, rules")
    cidrs_raw = raw.get("sourceCIDRs")
    cidrs: list[str] = []
    seen_cidrs: set[str] = set()
    families: set[bool] = set()
    if not isinstance(cidrs_raw, list) or not cidrs_raw:
        c.add(
            f"{path}.sourceCIDRs",
            cidrs_raw,
            "must be a non-empty list of CIDRs",
            "e.g. [192.0.2.0/24, '2001:db8::/32']",
        )
    else:
        for i, text in enumerate(cidrs_raw):
            try:
                prefix = parse_cidr(str(text))
            except CidrError as exc:
                c.add(f"{path}.sourceCIDRs[{i}]", text, str(exc))
                continue
            families.add(prefix.is_v4)
            text = str(prefix)
            if text not in seen_cidrs:
                seen_cidrs.add(text)
                cidrs.append(text)
    rules_raw = raw.get("rules")
    rules: list[Rule] = []
    if not isinstance(rules_raw, list) or not rules_raw:
        c.add(f"{path}.rules", rules_raw, "must be a non-empty list of rules")
    else:
        seen: dict[int, int] = {}
        for i, rraw in enumerate(rules_raw):
            rule = _parse_rule(c, f"{path}.rules[{i}]", rraw, families)
            # Duplicates are found from the raw order, so a rule with other errors still
            # reports its clash: every error of a file at once.
            order = rraw.get("order") if isinstance(rraw, dict) else None
            if isinstance(order, int) and not isinstance(order, bool):
                if order in seen:
                    c.add(
                        f"{path}.rules[{i}].order",
                        order,
                        f"duplicate order (also rules[{seen[order]}])",
                        "orders must be unique within one sourceCIDRs block",
                    )
                    continue
                seen[order] = i
            if rule is not None:
                rules.append(rule)
    if len(c.errors) != before:
        return None
    return IngressBlock(tuple(cidrs), tuple(sorted(rules, key=lambda r: r.order)))


def parse_firewall(raw: object, document: str) -> tuple[Firewall | None, list[FieldError]]:
    """Validate one decoded YAML document; returns the object or the errors."""
    c = _Collector(document)
    if not isinstance(raw, dict):
        c.add("", raw, f"a document must be a mapping of kind {KIND}")
        return None, c.errors
    if raw.get("apiVersion") != API_VERSION:
        c.add("apiVersion", raw.get("apiVersion"), "wrong apiVersion", f"use {API_VERSION}")
    if raw.get("kind") != KIND:
        c.add("kind", raw.get("kind"), "wrong kind", f"use {KIND}")
    meta = raw.get("metadata")
    name = ""
    extra: dict[str, Any] = {}
    if not isinstance(meta, dict) or "name" not in meta:
        c.add(
            "metadata.name",
            None,
            "missing",
            "every object needs a name, e.g. metadata: {name: web}",
        )
    else:
        name = str(meta["name"])
        if not NAME_RE.match(name):
            c.add(
                "metadata.name",
                meta["name"],
                "not a valid object name",
                "use lowercase letters, digits, '-' and '.', starting and ending alphanumeric",
            )
        extra = {k: v for k, v in meta.items() if k != "name"}
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        c.add(
            "spec",
            spec,
            "missing or not a mapping",
            "add spec: {interfaces: [...], ingress: [...]}",
        )
        return None, c.errors
    for key in spec:
        if key not in ("interfaces", "ingress", "nodeSelector"):
            c.add(
                f"spec.{key}",
                spec[key],
                "unknown field",
                "allowed: interfaces, ingress, nodeSelector",
            )
    ifaces_raw = spec.get("interfaces")
    interfaces: list[str] = []
    if not isinstance(ifaces_raw, list) or not ifaces_raw:
        c.add(
            "spec.interfaces",
            ifaces_raw,
            "must be a non-empty list of interface names or globs",
            "e.g. [eth0, 'ens*']",
        )
    else:
        for i, iface in enumerate(ifaces_raw):
            if not isinstance(iface, str) or not IFACE_RE.match(iface):
                c.add(
                    f"spec.interfaces[{i}]",
                    iface,
                    "not an interface name or glob",
                    "names are 1-15 characters; globs may use * ? [..]",
                )
            elif iface not in interfaces:
                interfaces.append(iface)
    selector = spec.get("nodeSelector") or {}
    if not isinstance(selector, dict):
        c.add("spec.nodeSelector", selector, "must be a mapping")
        selector = {}
    ingress_raw = spec.get("ingress")
    blocks: list[IngressBlock] = []
    if not isinstance(ingress_raw, list):
        c.add("spec.ingress", ingress_raw, "must be a list of {sourceCIDRs, rules}")
    else:
        seen_sets: dict[frozenset[str], int] = {}
        for i, braw in enumerate(ingress_raw):
            block = _parse_block(c, f"spec.ingress[{i}]", braw)
            if block is None:
                continue
            key = frozenset(block.source_cidrs)
            if key in seen_sets:
                c.add(
                    f"spec.ingress[{i}].sourceCIDRs",
                    list(block.source_cidrs),
                    f"same sourceCIDRs as spec.ingress[{seen_sets[key]}]",
                    "merge the two blocks into one",
                )
                continue
            seen_sets[key] = i
            blocks.append(block)
    if c.errors:
        return None, c.errors
    fw = Firewall(name, tuple(interfaces), tuple(blocks), dict(selector), extra)
    return fw, []


def parse_documents(docs: Iterable[object], source: str = "input") -> RuleSet:
    """Validate decoded documents into a RuleSet, or raise one ValidationError with every error."""
    errors: list[FieldError] = []
    firewalls: list[Firewall] = []
    names: dict[str, str] = {}
    for index, raw in enumerate(docs):
        if raw is None:
            continue  # an empty document between '---' separators
        label = f"{source} document {index + 1}"
        if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict):
            label += f" ({raw['metadata'].get('name')})"
        fw, errs = parse_firewall(raw, label)
        errors.extend(errs)
        if fw is None:
            continue
        if fw.name in names:
            errors.append(
                FieldError(
                    label,
                    "metadata.name",
                    fw.name,
                    f"duplicate object name (also in {names[fw.name]})",
                    "give each object its own name",
                )
            )
            continue
        names[fw.name] = label
        firewalls.append(fw)
    if errors:
        raise ValidationError(errors)
    return RuleSet(tuple(firewalls))


def load_yaml(text: str, source: str = "input") -> RuleSet:
    """Parse one or many YAML documents (a List kind's items are unwrapped too)."""
    docs = load_all(text, source)
    flat: list[object] = []
    for doc in docs:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            flat.extend(doc["items"])
        else:
            flat.append(doc)
    if not any(d is not None for d in flat):
        raise ValidationError(
            [FieldError(source, "", "", "no documents found", f"give at least one {KIND} document")]
        )
    return parse_documents(flat, source)


def load_file(path: str) -> RuleSet:
    return load_yaml(read_text(path), path)


def rule_to_dict(rule: Rule) -> dict[str, Any]:
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


def dump_yaml(ruleset: RuleSet) -> str:
    """Export in the operator's schema; one document per object."""
    docs = [firewall_to_dict(fw) for fw in ruleset.firewalls]
    return dump_all(docs)
