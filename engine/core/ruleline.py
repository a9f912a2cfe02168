"""The one-line rule form the REPL and CLI take, validated exactly like the YAML.

allow tcp 8000-8080 from 192.0.2.0/24 on eth0 order 10
deny icmp type 8 code 0 from 198.51.100.0/24,2001:db8::/32 order 20 firewall web
deny from 203.0.113.0/24 on 'ens*' order 30
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from engine.core.crd import parse_firewall_checked
from engine.core.model import API_VERSION, KIND, Firewall, Rule, RuleSet
from engine.core.parity import meaning_notes
from engine.errors import FieldError, ValidationError

DEFAULT_FIREWALL = "infw-console"
SYNTAX = "ACTION [PROTO [PORTS | type T [code C]]] from CIDR[,CIDR] [on IFACE[,IFACE]] order N [firewall NAME]"


@dataclass(frozen=True)
class RuleLine:
    firewall: str
    interfaces: tuple[str, ...]
    cidrs: tuple[str, ...]
    rule: Rule
    # False: 'on' was left out and the defaults filled it in (not part of the rule's identity)
    interfaces_given: bool = field(default=True, compare=False)
    # What the rule means here that the operator reads otherwise (admitted all the same).
    warnings: tuple[str, ...] = field(default=(), compare=False)
    # Of those, the admission's (host bits, globs, names): what the line says of itself; the
    # rest are operator-parity notes, which an edit recomputes among the stored rules.
    admission: tuple[str, ...] = field(default=(), compare=False)


def _err(line: str, path: str, value: object, problem: str, fix: str = "") -> ValidationError:
    return ValidationError(
        [FieldError(f"rule '{line}'", path, value, problem, fix or f"syntax: {SYNTAX}")]
    )


def _is_number(text: str) -> bool:
    # str.isdigit() alone accepts '²', which int() refuses.
    return text.isascii() and text.isdigit()


def parse_rule_line(
    line: str, default_interfaces: tuple[str, ...] = (), default_firewall: str = DEFAULT_FIREWALL
) -> RuleLine:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise _err(line, "", line, f"cannot split the line ({exc})") from exc
    if not words:
        raise _err(line, "", line, "empty rule")
    action, rest = words[0], words[1:]
    proto: str | None = None
    ports: str | None = None
    icmp: dict[str, Any] = {}
    cidrs: list[str] = []
    ifaces: list[str] = []
    order: Any = None
    firewall = default_firewall
    i = 0
    keywords = {"from", "on", "order", "firewall", "type", "code"}
    while i < len(rest):
        word = rest[i].lower()
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        if word in keywords and nxt is None:
            raise _err(line, word, None, f"'{word}' needs a value")
        if word == "from":
            cidrs += [c for c in str(nxt).split(",") if c]
            i += 2
        elif word == "on":
            ifaces += [c for c in str(nxt).split(",") if c]
            i += 2
        elif word == "order":
            order = int(str(nxt)) if _is_number(str(nxt)) else nxt
            i += 2
        elif word == "firewall":
            firewall = str(nxt)
            i += 2
        elif word in ("type", "code"):
            icmp["icmpType" if word == "type" else "icmpCode"] = (
                int(str(nxt)) if _is_number(str(nxt)) else nxt
            )
            i += 2
        elif proto is None and i == 0:
            proto = rest[i]
            i += 1
        elif proto is not None and ports is None and not icmp and i == 1:
            ports = rest[i]
            i += 1
        else:
            raise _err(line, "", rest[i], "unexpected word")
    if order is None:
        raise _err(line, "order", None, "missing", "add 'order N' (1 or more, lower wins)")
    if not cidrs:
        raise _err(line, "from", None, "missing", "add 'from CIDR', e.g. from 192.0.2.0/24")
    interfaces = tuple(ifaces) or default_interfaces
    if not interfaces:
        raise _err(line, "on", None, "missing", "add 'on IFACE' (a name or glob, e.g. on eth0)")
    rule: dict[str, Any] = {"order": order, "action": action.capitalize()}
    if proto is not None:
        pc: dict[str, Any] = {"protocol": proto.upper() if proto.lower() != "icmpv6" else "ICMPv6"}
        key = pc["protocol"].lower()
        if ports is not None:
            # icmp too, so 'tcp 80 type 8' is refused by validation rather than dropped silently
            pc[key] = {"ports": ports, **icmp}
        elif icmp:
            pc[key] = icmp
        rule["protocolConfig"] = pc
    elif icmp:
        raise _err(
            line,
            "type",
            icmp,
            "ICMP type/code need a protocol",
            "write 'icmp type 8' or 'icmpv6 type 128'",
        )
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": firewall},
        "spec": {
            "interfaces": list(interfaces),
            "ingress": [{"sourceCIDRs": cidrs, "rules": [rule]}],
        },
    }
    fw, errors, warnings = parse_firewall_checked(doc, f"rule '{line}'", node_forms=True)
    if errors or fw is None:
        raise ValidationError(errors)
    block = fw.ingress[0]
    admission = tuple(warnings)
    return RuleLine(
        fw.name,
        fw.interfaces,
        block.source_cidrs,
        block.rules[0],
        bool(ifaces),
        (*admission, *meaning_notes(RuleSet((fw,)))),
        admission,
    )


def format_rule_line(
    firewall: Firewall | str, interfaces: tuple[str, ...], cidrs: tuple[str, ...], rule: Rule
) -> str:
    """The inverse of parse_rule_line (for history, export hints and REPL echo)."""
    name = firewall if isinstance(firewall, str) else firewall.name
    parts = [rule.action.value.lower()]
    if rule.protocol is not None:
        parts.append(rule.protocol.value.lower())
        if rule.ports is not None:
            parts.append(str(rule.ports))
        if rule.icmp_type is not None:
            parts += ["type", str(rule.icmp_type)]
            if rule.icmp_code is not None:
                parts += ["code", str(rule.icmp_code)]
    parts += ["from", ",".join(cidrs), "on", ",".join(interfaces), "order", str(rule.order)]
    if name != DEFAULT_FIREWALL:
        parts += ["firewall", name]
    return " ".join(shlex.quote(p) for p in parts)
