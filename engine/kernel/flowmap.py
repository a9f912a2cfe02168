"""The kernel's flows map (an LRU hash of sampled flows) to and from engine.core.flows.

The program keeps samples; the rate N comes from the config word at read time, so counts are
scaled by the rate in force now (a rate change mixes old and new samples until they age out).
"""

from __future__ import annotations

import ctypes as ct
import ipaddress
from collections.abc import Mapping

from engine.core.classify import ICMP_PROTOS, L4_PORT_PROTOS, Decision
from engine.core.classify import Reason as RefReason
from engine.core.flows import FlowKey, FlowStats, stats_from_samples
from engine.core.model import Action as RuleAction
from engine.kernel.abi import FLOW_FLAG_NONFIRST, Action, FlowRecKey, FlowRecVal, Reason

_REASONS: dict[int, RefReason] = {
    Reason.FAILSAFE: RefReason.FAILSAFE,
    Reason.RULE: RefReason.RULE,
    Reason.NO_MATCH: RefReason.NO_MATCH,
    Reason.REPLY: RefReason.REPLY,
}
_MAPPED_V4 = b"\0" * 10 + b"\xff\xff"


def _address(raw: bytes) -> str:
    if raw[:12] == _MAPPED_V4:
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def decode_key(key: FlowRecKey, ifnames: Mapping[int, str]) -> FlowKey:
    nonfirst = bool(key.flags & FLOW_FLAG_NONFIRST)
    proto, value = int(key.l4proto), int(key.value)
    dport = value if proto in L4_PORT_PROTOS and not nonfirst else None
    icmp = proto in ICMP_PROTOS and not nonfirst
    return FlowKey(
        ifnames.get(int(key.ifindex), f"if{int(key.ifindex)}"),
        _address(bytes(key.addr)),
        proto,
        dport,
        value >> 8 if icmp else None,
        value & 0xFF if icmp else None,
        nonfirst,
    )


def encode_key(key: FlowKey, ifindex: int) -> FlowRecKey:
    """The map key the program writes for a packet of this flow (the fake kernel uses it)."""
    ip = ipaddress.ip_address(key.source)
    raw = _MAPPED_V4 + ip.packed if ip.version == 4 else ip.packed
    if key.dport is not None:
        value = key.dport
    elif key.icmp_type is not None:
        value = key.icmp_type << 8 | (key.icmp_code or 0)
    else:
        value = 0
    return FlowRecKey(
        ifindex=ifindex,
        l4proto=key.ipproto,
        flags=FLOW_FLAG_NONFIRST if key.nonfirst_fragment else 0,
        value=value,
        addr=(ct.c_uint8 * 16)(*raw),
    )


def decode_value(val: FlowRecVal, rate: int, clock_offset: float) -> FlowStats:
    """Scale the samples by rate; kernel times (monotonic ns) become epoch seconds."""
    reason = _REASONS.get(int(val.reason), RefReason.NO_MATCH)
    # val.action is the deciding rule's; a reply got past its Deny, so the flow passed (as the
    # reference classifier decides it: ALLOW, reason reply, that rule)
    denied = int(val.action) in (Action.DENY, Action.WOULD_DENY) and reason is not RefReason.REPLY
    action = RuleAction.DENY if denied else RuleAction.ALLOW
    rule_id = int(val.rule_id) or None
    return stats_from_samples(
        int(val.packets),
        int(val.bytes),
        val.first_ns / 1e9 + clock_offset,
        val.last_ns / 1e9 + clock_offset,
        Decision(action, reason, rule_id),
        rate,
    )


def decode_records(
    keys: bytes,
    values: bytes,
    count: int,
    ifnames: Mapping[int, str],
    rate: int,
    clock_offset: float,
) -> dict[FlowKey, FlowStats]:
    ksize, vsize = ct.sizeof(FlowRecKey), ct.sizeof(FlowRecVal)
    out: dict[FlowKey, FlowStats] = {}
    for i in range(count):
        k = FlowRecKey.from_buffer_copy(keys, i * ksize)
        v = FlowRecVal.from_buffer_copy(values, i * vsize)
        if v.packets:
            out[decode_key(k, ifnames)] = decode_value(v, rate, clock_offset)
    return out
