"""Read IngressNodeFirewall (and IngressNodeFirewallNodeState) YAML with the operator's admission.

Admission is the operator's CRD schema with its CEL rules plus its validating webhook
(openshift/ingress-node-firewall: config/crd/bases, api/v1alpha1, pkg/webhook, pkg/utils), as
`kubectl apply` meets it (strict field validation: unknown fields are errors). What it admits is
admitted here, what it refuses is refused, with the field path, the value and the fix. Where an
admitted file means something else on this node than in the operator, or can never match, the
file is admitted with a warning saying both meanings (DESIGN §2). All errors of a file are
collected and raised together as one ValidationError.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from engine.core.cidr import CidrError, operator_text, parse_operator_cidr, remember_cidr
from engine.core.export import firewall_to_dict
from engine.core.failsafe import OPERATOR_FAILSAFE
from engine.core.gcpause import gc_paused
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
from engine.core.parity import meaning_notes
from engine.core.yamlfile import load_all, read_text
from engine.errors import FieldError, ValidationError

__all__ = [
    "Admission",
    "admit_documents",
    "admit_yaml",
    "dump_yaml",
    "firewall_to_dict",
    "load_file",
    "load_yaml",
    "parse_documents",
    "parse_firewall",
    "parse_port_range",
]

LIST_KIND = f"{KIND}List"
NODE_STATE_KIND = "IngressNodeFirewallNodeState"
NODE_STATE_LIST_KIND = f"{NODE_STATE_KIND}List"

# metadata.name of a custom resource: a DNS-1123 subdomain (what the API server checks).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
NAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
NAME_MAX = 253
IFNAMSIZ = 16  # the webhook refuses names longer than this (Linux itself allows 15)
LINUX_IFNAME_MAX = 15
GLOB_CHARS = frozenset("*?[")
RULES_PER_ENTRY_MAX = 100  # pkg/failsaferules MAX_INGRESS_RULES
INT32_MAX = 2**31 - 1  # intstr.IntOrString holds an int32
ECHO_TYPES = {Protocol.ICMP: (0, 8), Protocol.ICMPV6: (128, 129)}  # code is always 0 for these

SPEC_KEYS = ("interfaces", "ingress", "nodeSelector")
ENTRY_KEYS = ("sourceCIDRs", "rules")
RULE_KEYS = ("order", "protocolConfig", "action")
TOP_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
SELECTOR_KEYS = ("matchLabels", "matchExpressions")
EXPRESSION_KEYS = ("key", "operator", "values")
# The enums' members looked up once: iterating an Enum costs microseconds, and a big file asks
# for every one of its 10,000 rules.
_PROTOCOLS = tuple((p, p.crd_key) for p in Protocol)
PROTOCOL_CONFIG_KEYS = ("protocol", *(key for _, key in _PROTOCOLS))
_PROTOCOL_BY_VALUE = {p.value: p for p in Protocol}
_ACTION_BY_VALUE = {a.value: a for a in Action}


@dataclass(frozen=True)
class Admission:
    """What admission made of a file: the rules, and what means something else here."""

    ruleset: RuleSet
    warnings: tuple[str, ...] = ()


class _Collector:
    """Accumulates FieldErrors and warnings for one document."""

    def __init__(self, document: str) -> None:
        self.document = document
        self.errors: list[FieldError] = []
        self.warnings: list[str] = []

    def add(self, path: str, value: object, problem: str, fix: str = "") -> None:
        if _too_deep(value):  # a hostile file's nesting must not recurse in repr()
            value = reprlib.repr(value)
        self.errors.append(FieldError(self.document, path, value, problem, fix))

    def warn(self, path: str, text: str) -> None:
        self.warnings.append(f"{self.document}: {path}: {text}")


def _too_deep(value: object, limit: int = 32) -> bool:
    while limit > 0:
        if isinstance(value, dict):
            value = next(iter(value.values()), None)
        elif isinstance(value, list):
            value = value[0] if value else None
        else:
            return False
        limit -= 1
    return True


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _present(raw: Mapping[str, Any], key: str) -> bool:
    """A key with a null value counts as absent, as the API server prunes nulls."""
    return raw.get(key) is not None


def parse_port_range(value: object) -> PortRange:
    """'80', 80 or '1000-2000' -> PortRange (node config and stored state; lenient on spaces)."""
    if isinstance(value, bool):
        raise ValueError("a port is a number 1-65535 or a range like 1000-2000")
    if isinstance(value, int):
        low = high = value
    elif isinstance(value, str):
        parts = value.strip().split("-")
        # isascii: str.isdigit() also accepts digits int() refuses ('²') or reads ('٣').
        if len(parts) not in (1, 2) or not all(
            p.strip().isascii() and p.strip().isdigit() for p in parts
        ):
            raise ValueError("a port is a number 1-65535 or a range like 1000-2000")
        low, high = int(parts[0]), int(parts[-1])
    else:
        raise ValueError("a port is a number 1-65535 or a range like 1000-2000")
    if not (PORT_MIN <= low <= PORT_MAX and PORT_MIN <= high <= PORT_MAX):
        raise ValueError(f"ports must be within {PORT_MIN}-{PORT_MAX}")
    if low > high:
        raise ValueError(f"range is reversed; write {high}-{low}")
    return PortRange(low, high)


def _decimal(text: str) -> int | None:
    """strconv.ParseUint(text, 10, 16): ASCII digits only (leading zeros fine), at most 65535."""
    if not (text.isascii() and text.isdigit()):
        return None
    if int(text) > PORT_MAX:
        raise ValueError(f"ports must be within {PORT_MIN}-{PORT_MAX}")
    return int(text)


def parse_operator_ports(value: object) -> PortRange:
    """The operator's `ports` (an IntOrString; pkg/utils GetPort/GetRange), ValueError otherwise."""
    hint = 'give one port (80) or a range "1000-2000" with start < end, no spaces'
    if _is_int(value):
        assert isinstance(value, int)
        if not -INT32_MAX - 1 <= value <= INT32_MAX:
            raise ValueError(f"not a port (an int32 at most): {hint}")
        if not PORT_MIN <= value <= PORT_MAX:
            raise ValueError(f"ports must be within {PORT_MIN}-{PORT_MAX}")
        return PortRange(value, value)
    if not isinstance(value, str):
        raise ValueError(f"a port is a number or a string: {hint}")
    if "-" not in value:
        port = _decimal(value)
        if port is None:
            raise ValueError(f"not a port number: {hint}")
        if port == 0:
            raise ValueError("port 0 is refused by the operator; ports start at 1")
        return PortRange(port, port)
    start_text, _, end_text = value.partition("-")
    start, end = _decimal(start_text), _decimal(end_text)
    if start is None or end is None:
        raise ValueError(f"not a port range: {hint}")
    if start > end:
        raise ValueError(f"range is reversed; write {end}-{start}")
    if start == end:
        raise ValueError(f"start and end are equal; write the single port {start}")
    if start == 0:
        raise ValueError("a range can't start at 0; start it at 1")
    return PortRange(start, end)


def _int_field(c: _Collector, path: str, value: object, low: int, high: int) -> int | None:
    """An integer field: strings, floats and booleans are refused (the API server coerces none)."""
    if not _is_int(value):
        c.add(path, value, f"must be an integer {low}..{high}", "write it without quotes")
        return None
    assert isinstance(value, int)
    if not low <= value <= high:
        c.add(path, value, f"must be within {low}..{high}")
        return None
    return value


def _unknown_keys(
    c: _Collector, path: str, raw: Mapping[str, Any], allowed: tuple[str, ...]
) -> None:
    for key in raw:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            c.add(where, raw[key], "unknown field", f"allowed: {', '.join(allowed)}")


# ----------------------------------------------------------------------------- rules


@dataclass
class _Entry:
    """One ingress entry as written: for the cross-object checks that compare raw strings."""

    path: str
    cidr_texts: tuple[str, ...]
    orders: frozenset[int]


def _parse_icmp(
    c: _Collector, path: str, sub: Mapping[str, Any], protocol: Protocol, node_forms: bool
) -> tuple[int | None, int | None]:
    _unknown_keys(c, path, sub, ("icmpType", "icmpCode"))
    has_type, has_code = _present(sub, "icmpType"), _present(sub, "icmpCode")
    icmp_type = _int_field(c, f"{path}.icmpType", sub["icmpType"], 0, 255) if has_type else 0
    icmp_code = _int_field(c, f"{path}.icmpCode", sub["icmpCode"], 0, 255) if has_code else 0
    if node_forms and not has_code:
        icmp_code = None  # a rule line's 'icmp type 3' means every code of type 3
    # Omitted fields compare as 0 in the operator's datapath (uint8 with omitempty: a Go client
    # can't even write a 0), so infw reads them as 0 too: the file means the same on both sides.
    if not has_type and not node_forms:
        what = f"code {icmp_code}" if has_code else "code 0"
        c.warn(
            path,
            f"no icmpType: matches type 0 {what} only ({protocol.value} echo reply for type 0), "
            "here as in the operator; give icmpType to match another type",
        )
    elif has_type and not has_code and not node_forms and icmp_type not in ECHO_TYPES[protocol]:
        c.warn(
            path,
            f"icmpType {icmp_type} without icmpCode matches code 0 only, here as in the operator; "
            "add a rule per code to match others",
        )
    return icmp_type, icmp_code


def _parse_protocol_config(
    c: _Collector, path: str, pc: object, node_forms: bool
) -> tuple[bool, Protocol | None, PortRange | None, int | None, int | None]:
    """(ok, protocol, ports, icmp type, icmp code) of a protocolConfig (CRD enum + CEL + webhook)."""
    if pc is None:
        return True, None, None, None, None
    if not isinstance(pc, dict):
        c.add(path, pc, "must be a mapping like {protocol: TCP, tcp: {ports: 80}}")
        return False, None, None, None, None
    before = len(c.errors)
    _unknown_keys(c, path, pc, PROTOCOL_CONFIG_KEYS)
    if not _present(pc, "protocol"):
        c.add(
            f"{path}.protocol",
            None,
            "missing (protocolConfig needs a protocol)",
            'give TCP, UDP, SCTP, ICMP, ICMPv6, or "" for any; or leave protocolConfig out',
        )
        return False, None, None, None, None
    text = pc["protocol"]
    protocol: Protocol | None = None
    if text != "":
        found = _PROTOCOL_BY_VALUE.get(text) if isinstance(text, str) else None
        if found is None:
            near = [
                p.value
                for p in Protocol
                if isinstance(text, str) and p.value.lower() == text.lower()
            ]
            c.add(
                f"{path}.protocol",
                text,
                "unknown protocol (the operator's enum is case-sensitive)",
                f"write {near[0]}" if near else 'use TCP, UDP, SCTP, ICMP, ICMPv6 or ""',
            )
            return False, None, None, None, None
        protocol = found
    for other, other_key in _PROTOCOLS:
        if other is not protocol and _present(pc, other_key):
            c.add(
                f"{path}.{other_key}",
                pc[other_key],
                f"'{other_key}' is forbidden unless protocol is {other.value}",
                f"use '{protocol.crd_key}:'" if protocol else "remove it, or set the protocol",
            )
    ports = icmp_type = icmp_code = None
    if protocol is not None:
        spath = f"{path}.{protocol.crd_key}"
        sub = pc.get(protocol.crd_key)
        if sub is None:
            if node_forms:
                return len(c.errors) == before, protocol, None, None, None
            example = 'tcp: {ports: "1-65535"}' if protocol.has_ports else "icmp: {icmpType: 8}"
            example = example.replace("tcp", protocol.crd_key).replace(
                "icmp:", f"{protocol.crd_key}:"
            )
            c.add(
                spath,
                None,
                f"{protocol.crd_key} is required when protocol is {protocol.value}",
                f"add it, e.g. {example}",
            )
        elif not isinstance(sub, dict):
            c.add(spath, sub, "must be a mapping")
        elif protocol.has_ports:
            _unknown_keys(c, spath, sub, ("ports",))
            if not _present(sub, "ports"):
                c.add(
                    f"{spath}.ports",
                    None,
                    "missing: the operator reads it as port 0 and refuses it",
                    'give a port or a range; every port is "1-65535"',
                )
            else:
                try:
                    ports = parse_operator_ports(sub["ports"])
                except ValueError as exc:
                    c.add(f"{spath}.ports", sub["ports"], str(exc))
        else:
            icmp_type, icmp_code = _parse_icmp(c, spath, sub, protocol, node_forms)
    return len(c.errors) == before, protocol, ports, icmp_type, icmp_code


def _parse_rule(c: _Collector, path: str, raw: object, node_forms: bool) -> Rule | None:
    if not isinstance(raw, dict):
        c.add(path, raw, "a rule must be a mapping with order, protocolConfig and action")
        return None
    before = len(c.errors)
    _unknown_keys(c, path, raw, RULE_KEYS)
    order = None
    if not _present(raw, "order"):
        c.add(f"{path}.order", None, "missing", f"give an integer {ORDER_MIN}..{ORDER_MAX}")
    else:
        order = _int_field(c, f"{path}.order", raw["order"], ORDER_MIN, ORDER_MAX)
    action: Action | None = Action.ALLOW
    if not _present(raw, "action"):
        if not node_forms:
            c.warn(
                f"{path}.action",
                "no action: Allow here (the CRD's documented default); the operator's daemon "
                "refuses to load a rule without one, so write action: Allow",
            )
    else:
        text = raw["action"]
        chosen = _ACTION_BY_VALUE.get(text) if isinstance(text, str) else None
        if chosen is None:
            near = [
                a.value
                for a in Action
                if isinstance(raw["action"], str) and a.value.lower() == raw["action"].lower()
            ]
            c.add(
                f"{path}.action",
                raw["action"],
                "unknown action (the operator's enum is case-sensitive)",
                f"write {near[0]}" if near else "use Allow or Deny",
            )
            action = None
        else:
            action = chosen
    ok, protocol, ports, icmp_type, icmp_code = _parse_protocol_config(
        c, f"{path}.protocolConfig", raw.get("protocolConfig"), node_forms
    )
    if not ok or len(c.errors) != before or order is None or action is None:
        return None
    if not node_forms:
        _operator_failsafe(c, path, raw, protocol, ports)
    return Rule(order, action, protocol, ports, icmp_type, icmp_code)


def _operator_failsafe(
    c: _Collector,
    path: str,
    raw: Mapping[str, Any],
    protocol: Protocol | None,
    ports: PortRange | None,
) -> None:
    """The webhook's pin-hole check: a TCP/UDP rule that is not Allow may not cover its fail-safe
    ports. A Deny is the guard's (exit 3, with the node's own list); an omitted action is refused
    here, as the operator refuses it although it means Allow."""
    if _present(raw, "action") or protocol not in (Protocol.TCP, Protocol.UDP):
        return
    span = ports or PortRange(PORT_MIN, PORT_MAX)
    hits = [
        str(fs)
        for fs in OPERATOR_FAILSAFE
        if fs.protocol is protocol and span.low <= fs.ports.high and fs.ports.low <= span.high
    ]
    if hits:
        c.add(
            f"{path}.action",
            None,
            f"missing on a rule that covers the fail-safe {', '.join(hits)}: the operator "
            "refuses a rule that is not Allow there",
            "write action: Allow, or narrow the ports",
        )


def _parse_entry(
    c: _Collector, path: str, raw: object, node_forms: bool
) -> tuple[IngressBlock, _Entry] | None:
    if not isinstance(raw, dict):
        c.add(path, raw, "must be a mapping with sourceCIDRs and rules")
        return None
    before = len(c.errors)
    _unknown_keys(c, path, raw, ENTRY_KEYS)
    cidrs_raw = raw.get("sourceCIDRs")
    cidrs: dict[str, None] = {}  # in the order written, each network once
    texts: list[str] = []
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
                parsed = parse_operator_cidr(text)
            except CidrError as exc:
                c.add(f"{path}.sourceCIDRs[{i}]", text, str(exc))
                continue
            normal = operator_text(text, parsed)
            if parsed.prefix.is_v4 and not parsed.mapped:
                remember_cidr(normal, parsed.prefix)  # what parse_cidr says of it: no 2nd parse
            if parsed.mapped:
                c.warn(
                    f"{path}.sourceCIDRs[{i}]",
                    f"{text} is an IPv4-mapped IPv6 prefix: IPv4 {normal} here; the operator's "
                    "datapath keys it with a wrong length, so write it as IPv4",
                )
            elif parsed.host_bits:
                c.warn(
                    f"{path}.sourceCIDRs[{i}]",
                    f"{text} has host bits set: it means {normal}, here and in the operator",
                )
            texts.append(str(text))
            cidrs[normal] = None
    rules_raw = raw.get("rules")
    rules: list[Rule] = []
    orders: set[int] = set()
    if rules_raw is not None and not isinstance(rules_raw, list):
        c.add(f"{path}.rules", rules_raw, "must be a list of rules")
    elif rules_raw:
        if len(rules_raw) > RULES_PER_ENTRY_MAX:
            c.add(
                f"{path}.rules",
                len(rules_raw),
                f"more than {RULES_PER_ENTRY_MAX} rules in one entry (the operator's limit)",
                "split the rules over entries with narrower sourceCIDRs",
            )
        seen: dict[int, int] = {}
        for i, rraw in enumerate(rules_raw):
            rule = _parse_rule(c, f"{path}.rules[{i}]", rraw, node_forms)
            # Duplicates are found from the raw order, so a rule with other errors still
            # reports its clash: every error of a file at once.
            order = rraw.get("order") if isinstance(rraw, dict) else None
            if _is_int(order):
                assert isinstance(order, int)
                if order in seen:
                    c.add(
                        f"{path}.rules[{i}].order",
                        order,
                        f"duplicate order (also rules[{seen[order]}])",
                        "orders must be unique within one sourceCIDRs entry",
                    )
                    continue
                seen[order] = i
                orders.add(order)
            if rule is not None:
                rules.append(rule)
    elif not node_forms:
        c.warn(
            f"{path}.rules",
            "no rules: this entry matches nothing (here and in the operator)",
        )
    if len(c.errors) != before:
        return None
    block = IngressBlock(tuple(cidrs), tuple(sorted(rules, key=lambda r: r.order)))
    return block, _Entry(path, tuple(texts), frozenset(orders))


def _merge_same_sources(
    c: _Collector, parsed: list[tuple[IngressBlock, _Entry]]
) -> list[IngressBlock]:
    """Entries with the same sourceCIDRs are one list of rules (the operator's controller merges
    them too); the same order twice there is refused: its controller fails to merge it."""
    merged: dict[frozenset[str], IngressBlock] = {}
    first: dict[frozenset[str], _Entry] = {}
    for block, entry in parsed:
        key = frozenset(block.source_cidrs)
        if key not in merged:
            merged[key], first[key] = block, entry
            continue
        have = merged[key]
        clash = sorted({r.order for r in have.rules} & {r.order for r in block.rules})
        if clash:
            c.add(
                f"{entry.path}.rules",
                clash,
                f"order {', '.join(map(str, clash))} also used for the same sourceCIDRs in "
                f"{first[key].path}: the operator's controller fails to merge them (SyncError)",
                "give the rules distinct orders, or merge the two entries",
            )
            continue
        rules = tuple(sorted((*have.rules, *block.rules), key=lambda r: r.order))
        merged[key] = replace(have, rules=rules)
    return list(merged.values())


# ----------------------------------------------------------------------------- objects


def _parse_interfaces(c: _Collector, raw: object, node_forms: bool) -> list[str]:
    interfaces: list[str] = []
    if not isinstance(raw, list) or not raw:
        c.add(
            "spec.interfaces",
            raw,
            "must be a non-empty list of interface names",
            "e.g. [eth0, 'ens*']",
        )
        return interfaces
    for i, iface in enumerate(raw):
        path = f"spec.interfaces[{i}]"
        if not isinstance(iface, str):
            c.add(path, iface, "an interface name is a string")
        elif not iface.strip():
            c.add(path, iface, "blank interface name", "give a name like eth0")
        elif len(iface.encode()) > IFNAMSIZ:
            c.add(path, iface, f"longer than {IFNAMSIZ} bytes", "Linux names are 1-15 characters")
        elif iface[0].isascii() and iface[0].isdigit():
            c.add(path, iface, "can't start with a digit (the operator's rule)", "e.g. eth0")
        else:
            _interface_notes(c, path, iface)
            if iface not in interfaces:
                interfaces.append(iface)
    return interfaces


def _interface_notes(c: _Collector, path: str, iface: str) -> None:
    if GLOB_CHARS & set(iface):
        c.warn(
            path,
            f"'{iface}' is a glob: here it matches every interface it fits; the operator's "
            "daemon matches exact names only, so it applies nowhere there",
        )
    elif (
        len(iface.encode()) > LINUX_IFNAME_MAX
        or iface in (".", "..")
        or any(ch.isspace() or ch in "/:" for ch in iface)
    ):
        c.warn(path, f"no Linux interface can be called '{iface}': it never matches")


def _parse_selector(c: _Collector, raw: object) -> dict[str, Any]:
    """A metav1.LabelSelector: matchLabels of strings, matchExpressions of {key, operator, values}."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        c.add("spec.nodeSelector", raw, "must be a mapping", "e.g. {matchLabels: {role: edge}}")
        return {}
    _unknown_keys(c, "spec.nodeSelector", raw, SELECTOR_KEYS)
    labels = raw.get("matchLabels")
    if labels is not None:
        if not isinstance(labels, dict):
            c.add("spec.nodeSelector.matchLabels", labels, "must be a mapping of strings")
        else:
            for key, value in labels.items():
                if not isinstance(value, str):
                    c.add(
                        f"spec.nodeSelector.matchLabels.{key}",
                        value,
                        "label values are strings",
                        f"quote it: '{json.dumps(value)}'",
                    )
    exprs = raw.get("matchExpressions")
    if exprs is not None:
        if not isinstance(exprs, list):
            c.add("spec.nodeSelector.matchExpressions", exprs, "must be a list")
        else:
            for i, expr in enumerate(exprs):
                path = f"spec.nodeSelector.matchExpressions[{i}]"
                if not isinstance(expr, dict):
                    c.add(path, expr, "must be {key, operator, values}")
                    continue
                _unknown_keys(c, path, expr, EXPRESSION_KEYS)
                for key in ("key", "operator"):
                    if not isinstance(expr.get(key), str):
                        c.add(f"{path}.{key}", expr.get(key), "missing or not a string")
                values = expr.get("values")
                if values is not None and not (
                    isinstance(values, list) and all(isinstance(v, str) for v in values)
                ):
                    c.add(f"{path}.values", values, "must be a list of strings")
    return dict(raw)


def _parse_metadata(c: _Collector, raw: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    meta = raw.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") is None:
        c.add(
            "metadata.name",
            None,
            "missing",
            "every object needs a name, e.g. metadata: {name: web}",
        )
        return "", {}
    name = meta["name"]
    if not isinstance(name, str) or len(name) > NAME_MAX or not NAME_RE.match(name):
        c.add(
            "metadata.name",
            name,
            "not a valid object name",
            "use lowercase letters, digits, '-' and '.', starting and ending alphanumeric",
        )
        return "", {}
    return name, {k: v for k, v in meta.items() if k != "name"}


def _check_head(c: _Collector, raw: Mapping[str, Any], kind: str) -> None:
    _unknown_keys(c, "", raw, TOP_KEYS)
    if raw.get("apiVersion") != API_VERSION:
        c.add("apiVersion", raw.get("apiVersion"), "wrong apiVersion", f"use {API_VERSION}")
    if raw.get("kind") != kind:
        c.add("kind", raw.get("kind"), "wrong kind", f"use {kind}")


@dataclass
class _Parsed:
    firewall: Firewall
    entries: list[_Entry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _parse_object(
    raw: object, document: str, node_forms: bool
) -> tuple[_Parsed | None, _Collector]:
    c = _Collector(document)
    if not isinstance(raw, dict):
        c.add("", raw, f"a document must be a mapping of kind {KIND}")
        return None, c
    _check_head(c, raw, KIND)
    name, extra = _parse_metadata(c, raw)
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        c.add(
            "spec",
            spec,
            "missing or not a mapping",
            "add spec: {interfaces: [...], ingress: [...]}",
        )
        return None, c
    _unknown_keys(c, "spec", spec, SPEC_KEYS)
    interfaces = _parse_interfaces(c, spec.get("interfaces"), node_forms)
    selector = _parse_selector(c, spec.get("nodeSelector"))
    ingress_raw = spec.get("ingress")
    parsed: list[tuple[IngressBlock, _Entry]] = []
    if not isinstance(ingress_raw, list) or not ingress_raw:
        c.add(
            "spec.ingress",
            ingress_raw,
            "must be a non-empty list of {sourceCIDRs, rules}",
            "e.g. ingress: [{sourceCIDRs: [192.0.2.0/24], rules: [...]}]",
        )
    else:
        for i, braw in enumerate(ingress_raw):
            got = _parse_entry(c, f"spec.ingress[{i}]", braw, node_forms)
            if got is not None:
                parsed.append(got)
    blocks = _merge_same_sources(c, parsed)
    if c.errors:
        return None, c
    fw = Firewall(name, tuple(interfaces), tuple(blocks), selector, extra)
    return _Parsed(fw, [e for _, e in parsed], c.warnings), c


def parse_firewall(
    raw: object, document: str, *, node_forms: bool = False
) -> tuple[Firewall | None, list[FieldError]]:
    """Validate one decoded document; returns the object or the errors.

    node_forms admits infw's own shorthands that the operator's schema has no form for (a
    protocol without its block: every port, every ICMP type): the rule line uses it."""
    fw, errors, _ = parse_firewall_checked(raw, document, node_forms=node_forms)
    return fw, errors


def parse_firewall_checked(
    raw: object, document: str, *, node_forms: bool = False
) -> tuple[Firewall | None, list[FieldError], list[str]]:
    """parse_firewall, with the warnings of an admitted object."""
    parsed, c = _parse_object(raw, document, node_forms)
    return (parsed.firewall if parsed else None), c.errors, c.warnings


# ----------------------------------------------------------------------------- node state


def _node_state_objects(raw: Mapping[str, Any], document: str) -> tuple[list[_Parsed], _Collector]:
    """An IngressNodeFirewallNodeState: per interface, the merged entries (one CIDR each) the
    operator's controller computed for one node. One object per interface here."""
    c = _Collector(document)
    _check_head(c, raw, NODE_STATE_KIND)
    name, extra = _parse_metadata(c, raw)
    spec = raw.get("spec")
    rules_map = spec.get("interfaceIngressRules") if isinstance(spec, dict) else None
    if not isinstance(spec, dict) or not isinstance(rules_map, dict):
        c.add(
            "spec.interfaceIngressRules",
            rules_map,
            "must be a mapping of interface name to ingress entries",
            "e.g. interfaceIngressRules: {eth0: [{sourceCIDRs: [...], rules: [...]}]}",
        )
        return [], c
    _unknown_keys(c, "spec", spec, ("interfaceIngressRules",))
    out: list[_Parsed] = []
    used: set[str] = set()
    for iface, entries in rules_map.items():
        path = f"spec.interfaceIngressRules.{iface}"
        if not isinstance(entries, list):
            c.add(path, entries, "must be a list of {sourceCIDRs, rules}")
            continue
        parsed = []
        for i, braw in enumerate(entries):
            got = _parse_entry(c, f"{path}[{i}]", braw, False)
            if got is not None:
                parsed.append(got)
        blocks = _merge_same_sources(c, parsed)
        if not blocks or not isinstance(iface, str):
            continue
        if isinstance(iface, str):
            _interface_notes(c, path, iface)
        base = re.sub(r"[^a-z0-9]+", "-", iface.lower()).strip("-") or "if"
        object_name = f"{name}.{base}"
        while object_name in used:
            object_name += "-x"
        used.add(object_name)
        labels = {"nodeState": name, "interface": iface}
        fw = Firewall(object_name, (iface,), tuple(blocks), {}, {**extra, "infw": labels})
        out.append(_Parsed(fw, [e for _, e in parsed], []))
    return out, c


# ----------------------------------------------------------------------------- files


def _selector_key(selector: Mapping[str, Any]) -> str:
    """reflect.DeepEqual of two LabelSelectors, as the webhook compares them."""
    return json.dumps(selector, sort_keys=True, default=str)


def _cross_object_orders(parsed: list[tuple[str, _Parsed]]) -> list[FieldError]:
    """The webhook refuses an entry whose sourceCIDR string another object with an equal
    nodeSelector also lists, when the two entries share an order."""
    errors: list[FieldError] = []
    seen: dict[tuple[str, str], list[tuple[str, _Entry]]] = {}
    selectors = [_selector_key(p.firewall.node_selector) for _, p in parsed]
    names: dict[str, set[str]] = {}
    for sel, (_, p) in zip(selectors, parsed, strict=True):
        names.setdefault(sel, set()).add(p.firewall.name)
    for sel, (label, p) in zip(selectors, parsed, strict=True):
        if len(names[sel]) < 2:
            continue  # no other object shares its nodeSelector: nothing to compare with
        reported: set[tuple[str, str]] = set()
        for entry in p.entries:
            for text in entry.cidr_texts:
                for other_name, other in seen.get((sel, text.strip()), []):
                    common = sorted(entry.orders & other.orders)
                    if other_name == p.firewall.name or not common:
                        continue
                    if (entry.path, other_name) in reported:
                        continue
                    reported.add((entry.path, other_name))
                    errors.append(
                        FieldError(
                            label,
                            f"{entry.path}.rules",
                            common,
                            f"order {', '.join(map(str, common))} is not unique for sourceCIDR "
                            f"{text} and conflicts with object {other_name} (same nodeSelector)",
                            "give each object's rules for that CIDR their own orders",
                        )
                    )
        for entry in p.entries:
            for text in entry.cidr_texts:
                seen.setdefault((sel, text.strip()), []).append((p.firewall.name, entry))
    return errors


def order_conflicts(ruleset: RuleSet, source: str = "rules") -> list[FieldError]:
    """The webhook's cross-object order check on a rule set already in the model (edits)."""
    parsed = []
    for fw in ruleset.firewalls:
        entries = [
            _Entry(f"spec.ingress[{i}]", b.source_cidrs, frozenset(r.order for r in b.rules))
            for i, b in enumerate(fw.ingress)
        ]
        parsed.append((f"{source} ({fw.name})", _Parsed(fw, entries)))
    return _cross_object_orders(parsed)


def check_ruleset(ruleset: RuleSet, source: str = "edited rules") -> None:
    """Refuse a changed rule set the operator's webhook would refuse (ValidationError)."""
    errors = order_conflicts(ruleset, source)
    if errors:
        raise ValidationError(errors)


def _flatten(docs: Iterable[object]) -> list[object]:
    """Unwrap `kind: IngressNodeFirewallList` and a v1 `List` into their items."""
    flat: list[object] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") in ("List", LIST_KIND, NODE_STATE_LIST_KIND):
            items = doc.get("items")
            flat.extend(items if isinstance(items, list) else [])
        else:
            flat.append(doc)
    return flat


def _label(source: str, index: int, raw: object) -> str:
    label = f"{source} document {index + 1}"
    if isinstance(raw, dict) and isinstance(raw.get("metadata"), dict):
        label += f" ({raw['metadata'].get('name')})"
    return label


def admit_documents(docs: Iterable[object], source: str = "input") -> Admission:
    """Admit decoded documents as the operator would, or raise one ValidationError with every
    error. Warnings say where an admitted file means something else here."""
    errors: list[FieldError] = []
    parsed: list[tuple[str, _Parsed]] = []
    warnings: list[str] = []
    names: dict[str, str] = {}
    for index, raw in enumerate(_flatten(docs)):
        if raw is None:
            continue  # an empty document between '---' separators
        label = _label(source, index, raw)
        if isinstance(raw, dict) and raw.get("kind") == NODE_STATE_KIND:
            objects, c = _node_state_objects(raw, label)
        else:
            one, c = _parse_object(raw, label, False)
            objects = [one] if one else []
        errors.extend(c.errors)
        warnings.extend(c.warnings)
        if c.errors:
            continue
        for p in objects:
            if p.firewall.name in names:
                errors.append(
                    FieldError(
                        label,
                        "metadata.name",
                        p.firewall.name,
                        f"duplicate object name (also in {names[p.firewall.name]})",
                        "give each object its own name",
                    )
                )
                continue
            names[p.firewall.name] = label
            parsed.append((label, p))
    errors.extend(_cross_object_orders(parsed))
    if errors:
        raise ValidationError(errors)
    if not parsed:
        raise ValidationError(
            [FieldError(source, "", "", "no documents found", f"give at least one {KIND} document")]
        )
    ruleset = RuleSet(tuple(p.firewall for _, p in parsed))
    return Admission(ruleset, (*warnings, *meaning_notes(ruleset)))


def parse_documents(docs: Iterable[object], source: str = "input") -> RuleSet:
    return admit_documents(docs, source).ruleset


@gc_paused()  # a 100,000-CIDR file builds a million objects, no cycles
def admit_yaml(text: str, source: str = "input") -> Admission:
    """Admit one or many YAML documents (List kinds unwrapped)."""
    return admit_documents(load_all(text, source), source)


def load_yaml(text: str, source: str = "input") -> RuleSet:
    return admit_yaml(text, source).ruleset


def admit_file(path: str) -> Admission:
    return admit_yaml(read_text(path), path)


def load_file(path: str) -> RuleSet:
    return admit_file(path).ruleset


def dump_yaml(ruleset: RuleSet) -> str:
    """Export in the operator's schema (only forms it admits); one document per object."""
    from engine.core.export import dump_documents, export_documents

    return dump_documents(export_documents(ruleset).documents)
