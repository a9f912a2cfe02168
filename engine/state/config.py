"""Node configuration (/etc/infw/config.yaml): fail-safe list, confirm timeout, paths, rates.

A missing file means the defaults; a bad value is a ValidationError naming the file, the field
path and the value, exactly like a bad rule.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import netaddr

from engine.core.crd import _Collector as _Errors  # one error collector for rules and config
from engine.core.crd import _int_field, parse_port_range
from engine.core.failsafe import DEFAULT_FAILSAFE, MAX_FAILSAFE_PORTS, FailSafe, failsafe_ports
from engine.core.model import Protocol
from engine.core.replies import ReplySettings
from engine.core.yamlfile import load_all, read_text
from engine.errors import FieldError, ValidationError
from engine.kernel.abi import DEFAULT_FLOW_SAMPLE, DEFAULT_PIN_ROOT, MAX_FLOW_SAMPLE

DEFAULT_CONFIG_PATH = "/etc/infw/config.yaml"
MAX_CONFIRM_TIMEOUT = 86400.0
MAX_EVENT_RATE = 10_000_000

KEYS = (
    "failsafe",
    "confirmTimeout",
    "eventRate",
    "flowSample",
    "metricsListen",
    "stateDir",
    "pinRoot",
    "nodeLabels",
    "replies",
)
REPLY_KEYS = ("enabled", "tcpTimeout", "udpTimeout", "icmpTimeout")
MAX_REPLY_TIMEOUT = 7 * 86400.0


@dataclass(frozen=True)
class NodeConfig:
    failsafe: tuple[FailSafe, ...] = DEFAULT_FAILSAFE
    confirm_timeout: float = 60.0  # seconds an interactive apply waits for confirmation
    event_rate: int = 2000  # drop events per second per CPU the kernel emits at most
    flow_sample: int = DEFAULT_FLOW_SAMPLE  # flows: 1 in N packets sampled; 0 turns it off
    metrics_listen: str = "127.0.0.1:39301"
    state_dir: str = "/var/lib/infw"
    pin_root: str = DEFAULT_PIN_ROOT
    # The node's labels, for spec.nodeSelector; None: unknown, so every object applies.
    node_labels: Mapping[str, str] | None = field(default=None, hash=False)
    # replies to the node's own connections under a Deny: set when the firewall is loaded;
    # `infw replies on|off` changes the running firewall
    replies: ReplySettings = field(default_factory=ReplySettings)


def split_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:39301', '[::1]:39301', ':39301' or 'host:port' -> (host, port); ValueError."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError("write an IPv6 address as [addr]:port, e.g. [::1]:39301")
        try:
            netaddr.IPAddress(host, 6)
        except (netaddr.AddrFormatError, ValueError) as exc:
            raise ValueError(f"{host!r} is not an IPv6 address") from exc
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError("give host:port, e.g. 127.0.0.1:39301")
        if ":" in host:
            raise ValueError("write an IPv6 address in brackets, e.g. [::1]:39301")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port {port!r} is not a number 1-65535")
    return host, int(port)


def is_loopback(listen: str) -> bool:
    """Whether a listen address provably serves this host only (the metrics endpoint's default
    refuses anything else). Here, not beside the exporter, so a CLI that only checks an address
    does not import prometheus_client."""
    host, _ = split_listen(listen)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or "" (every address): not provably loopback


def _failsafe(e: _Errors, raw: object) -> tuple[FailSafe, ...] | None:
    if not isinstance(raw, list):
        e.add(
            "failsafe",
            raw,
            "must be a list of {protocol, ports, purpose}",
            'e.g. failsafe: [{protocol: TCP, ports: "22", purpose: SSH}]',
        )
        return None
    before = len(e.errors)
    out: list[FailSafe] = []
    for i, item in enumerate(raw):
        path = f"failsafe[{i}]"
        if not isinstance(item, dict):
            e.add(path, item, "must be a mapping with protocol, ports and purpose")
            continue
        for key in item:
            if key not in ("protocol", "ports", "purpose"):
                e.add(
                    f"{path}.{key}", item[key], "unknown field", "allowed: protocol, ports, purpose"
                )
        protocol: Protocol | None = None
        try:
            protocol = Protocol.parse(str(item.get("protocol", "")))
        except ValueError:
            e.add(f"{path}.protocol", item.get("protocol"), "must be TCP, UDP or SCTP")
        if protocol is not None and not protocol.has_ports:
            e.add(
                f"{path}.protocol",
                item.get("protocol"),
                "fail-safe entries are ports",
                "use TCP, UDP or SCTP",
            )
            protocol = None
        ports = None
        if "ports" not in item:
            e.add(f"{path}.ports", None, "missing", 'give a port "22" or a range "2379-2380"')
        else:
            try:
                ports = parse_port_range(item["ports"])
            except ValueError as exc:
                e.add(f"{path}.ports", item["ports"], str(exc))
        purpose = item.get("purpose", "")
        if not isinstance(purpose, str) or not purpose.strip():
            e.add(
                f"{path}.purpose",
                purpose,
                "must be a short text saying what the port is for",
                "e.g. purpose: SSH",
            )
        if (
            protocol is not None
            and ports is not None
            and isinstance(purpose, str)
            and purpose.strip()
        ):
            out.append(FailSafe(protocol, ports, purpose.strip()))
    if len(e.errors) != before:
        return None
    count = len(failsafe_ports(tuple(out)))
    if count > MAX_FAILSAFE_PORTS:
        e.add(
            "failsafe",
            count,
            f"more than {MAX_FAILSAFE_PORTS} ports in total",
            "list fewer or narrower ranges",
        )
        return None
    return tuple(out)


def _seconds(e: _Errors, path: str, raw: object, high: float) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        e.add(path, raw, f"must be a number of seconds 0..{high:g}")
        return None
    if not 0 <= raw <= high:
        e.add(path, raw, f"must be within 0..{high:g}")
        return None
    return float(raw)


def _abs_path(e: _Errors, path: str, raw: object) -> str | None:
    if not isinstance(raw, str) or not os.path.isabs(raw):
        e.add(path, raw, "must be an absolute path")
        return None
    return os.path.normpath(raw)


def parse_config(raw: object, document: str = DEFAULT_CONFIG_PATH) -> NodeConfig:
    """Validate a decoded config mapping; None (an empty file) means the defaults."""
    if raw is None:
        return NodeConfig()
    e = _Errors(document)
    if not isinstance(raw, dict):
        e.add("", raw, "the config must be a mapping", f"allowed keys: {', '.join(KEYS)}")
        raise ValidationError(e.errors)
    values: dict[str, Any] = {}
    for key in raw:
        if key not in KEYS:
            e.add(str(key), raw[key], "unknown field", f"allowed: {', '.join(KEYS)}")
    if "failsafe" in raw:
        values["failsafe"] = _failsafe(e, raw["failsafe"])
    if "confirmTimeout" in raw:
        values["confirm_timeout"] = _seconds(
            e, "confirmTimeout", raw["confirmTimeout"], MAX_CONFIRM_TIMEOUT
        )
    if "eventRate" in raw:
        values["event_rate"] = _int_field(e, "eventRate", raw["eventRate"], 0, MAX_EVENT_RATE)
    if "flowSample" in raw:
        values["flow_sample"] = _int_field(e, "flowSample", raw["flowSample"], 0, MAX_FLOW_SAMPLE)
    if "metricsListen" in raw:
        listen = raw["metricsListen"]
        try:
            if not isinstance(listen, str):
                raise ValueError("give host:port, e.g. 127.0.0.1:39301")
            split_listen(listen)
            values["metrics_listen"] = listen
        except ValueError as exc:
            e.add("metricsListen", listen, str(exc))
    if "stateDir" in raw:
        values["state_dir"] = _abs_path(e, "stateDir", raw["stateDir"])
    if "pinRoot" in raw:
        pin = _abs_path(e, "pinRoot", raw["pinRoot"])
        if pin is not None and not pin.startswith("/sys/fs/bpf/"):
            e.add(
                "pinRoot",
                raw["pinRoot"],
                "must be a directory under /sys/fs/bpf",
                f"pins live on the BPF filesystem, e.g. {DEFAULT_PIN_ROOT}",
            )
            pin = None
        values["pin_root"] = pin
    if raw.get("nodeLabels") is not None:  # null: unknown, like leaving it out
        values["node_labels"] = _labels(e, "nodeLabels", raw["nodeLabels"])
    if "replies" in raw:
        values["replies"] = _replies(e, raw["replies"])
    if e.errors:
        raise ValidationError(e.errors)
    return NodeConfig(**values)


def _replies(e: _Errors, raw: object) -> ReplySettings | None:
    if not isinstance(raw, dict):
        e.add(
            "replies",
            raw,
            f"must be a mapping of {', '.join(REPLY_KEYS)}",
            "e.g. replies: {enabled: true, udpTimeout: 30}",
        )
        return None
    for key in raw:
        if key not in REPLY_KEYS:
            e.add(f"replies.{key}", raw[key], "unknown field", f"allowed: {', '.join(REPLY_KEYS)}")
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        e.add("replies.enabled", enabled, "must be true or false")
        return None
    timeouts = {
        name: _seconds(e, f"replies.{key}", raw[key], MAX_REPLY_TIMEOUT)
        for key, name in (
            ("tcpTimeout", "tcp_timeout"),
            ("udpTimeout", "udp_timeout"),
            ("icmpTimeout", "icmp_timeout"),
        )
        if key in raw
    }
    if any(v is None for v in timeouts.values()):
        return None
    return ReplySettings(enabled, **{k: v for k, v in timeouts.items() if v is not None})


def _labels(e: _Errors, path: str, raw: object) -> dict[str, str] | None:
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        e.add(
            path,
            raw,
            "must be a mapping of label names to string values",
            "e.g. nodeLabels: {node-role.kubernetes.io/worker: '', zone: a}",
        )
        return None
    return dict(raw)


def parse_node_labels(text: str) -> dict[str, str]:
    """'k=v,k2=v2' (a console flag) -> labels; 'k' alone is k with an empty value."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        if not key.strip():
            raise ValidationError(
                [FieldError("--node-labels", "", text, "a label needs a name", "e.g. zone=a,edge")]
            )
        out[key.strip()] = value.strip()
    return out


def load_config(path: str = DEFAULT_CONFIG_PATH) -> NodeConfig:
    """Read the node config; a missing file gives the defaults."""
    if not os.path.exists(path):
        return NodeConfig()
    docs = [d for d in load_all(read_text(path), path) if d is not None]
    if len(docs) > 1:
        raise ValidationError(
            [FieldError(path, "", len(docs), "one YAML document expected", "merge the documents")]
        )
    raw = docs[0] if docs else None
    return parse_config(raw, path)


def config_to_dict(config: NodeConfig) -> dict[str, Any]:
    """The YAML shape of a config, for `infw config --json` and the UI."""
    return {
        "failsafe": [
            {"protocol": fs.protocol.value, "ports": str(fs.ports), "purpose": fs.purpose}
            for fs in config.failsafe
        ],
        "confirmTimeout": config.confirm_timeout,
        "eventRate": config.event_rate,
        "flowSample": config.flow_sample,
        "metricsListen": config.metrics_listen,
        "stateDir": config.state_dir,
        "pinRoot": config.pin_root,
        "nodeLabels": None if config.node_labels is None else dict(config.node_labels),
    }
