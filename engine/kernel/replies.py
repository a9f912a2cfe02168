"""The node's own outbound flows in the kernel (replies on): the settings map the programs
read, the LRU table tc egress fills, and writing flows into it (for tests and the lab)."""

from __future__ import annotations

import ctypes as ct
import struct
import time
from collections.abc import Iterable

from engine.core.replies import ReplyFlow, ReplySettings
from engine.kernel.abi import ReplyConfig, ReplyKey, ReplyVal
from engine.kernel.bpfsys import Map

_KEY0 = struct.Struct("<I").pack(0)
_NS = 1_000_000_000


def settings_of(cfg: ReplyConfig) -> ReplySettings:
    return ReplySettings(
        enabled=bool(cfg.enabled),
        tcp_timeout=cfg.tcp_ns / _NS,
        udp_timeout=cfg.udp_ns / _NS,
        icmp_timeout=cfg.icmp_ns / _NS,
    )


def read_settings(m: Map) -> ReplySettings:
    raw = m.lookup(_KEY0)
    return settings_of(ReplyConfig.from_buffer_copy(raw or bytes(ct.sizeof(ReplyConfig))))


def write_settings(m: Map, settings: ReplySettings) -> None:
    cfg = ReplyConfig(
        enabled=int(settings.enabled),
        tcp_ns=int(settings.tcp_timeout * _NS),
        udp_ns=int(settings.udp_timeout * _NS),
        icmp_ns=int(settings.icmp_timeout * _NS),
    )
    m.update(_KEY0, bytes(cfg))  # one array write: a packet sees the old or the new settings


def key_bytes(flow: ReplyFlow) -> bytes:
    return bytes(
        ReplyKey(
            ifindex=flow.ifindex,
            family=flow.family,
            l4proto=flow.ipproto,
            remote_port=flow.remote_port,
            local_port=flow.local_port,
            remote=(ct.c_uint8 * 16)(*flow.remote.to_bytes(16, "big")),
            local=(ct.c_uint8 * 16)(*flow.local.to_bytes(16, "big")),
        )
    )


def record(m: Map, flows: Iterable[ReplyFlow], age_s: float = 0.0) -> None:
    """Write flows as if the node sent their last packet age_s ago (bpf_ktime_get_ns is
    CLOCK_MONOTONIC)."""
    seen = time.monotonic_ns() - int(age_s * _NS)
    for flow in flows:
        m.update(key_bytes(flow), bytes(ReplyVal(seen_ns=max(0, seen))))


def _flow(key: ReplyKey) -> ReplyFlow:
    return ReplyFlow(
        ifindex=key.ifindex,
        family=key.family,
        ipproto=key.l4proto,
        remote=int.from_bytes(bytes(key.remote), "big"),
        local=int.from_bytes(bytes(key.local), "big"),
        remote_port=key.remote_port,
        local_port=key.local_port,
    )


def live_flows(m: Map, settings: ReplySettings) -> frozenset[ReplyFlow]:
    """The flows whose replies pass now (not expired): the table the reference takes."""
    keys, values, count = m.items()
    now = time.monotonic_ns()
    timeouts = {6: settings.tcp_timeout, 17: settings.udp_timeout}
    ksize, vsize = ct.sizeof(ReplyKey), ct.sizeof(ReplyVal)
    out: set[ReplyFlow] = set()
    for i in range(count):
        key = ReplyKey.from_buffer_copy(keys, i * ksize)
        seen = ReplyVal.from_buffer_copy(values, i * vsize).seen_ns
        if now - seen <= timeouts.get(key.l4proto, settings.icmp_timeout) * _NS:
            out.add(_flow(key))
    return frozenset(out)


def held(m: Map) -> int:
    """How many flows the table holds now (expired ones too, until the LRU drops them). Nothing
    deletes from it, so recorded - held is what the LRU evicted."""
    return m.items()[2]
