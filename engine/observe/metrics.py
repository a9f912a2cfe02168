"""Prometheus exporter (DESIGN §5): the operator's node metric names plus per-rule series.

Every scrape reads Engine.stats() afresh (no background poller), so the numbers are the
kernel's counters at scrape time. The four node metrics keep the operator's exact names and
types (gauges: the operator exports them as gauges, and a prometheus_client counter would
rename `..._bytes` to `..._bytes_total`); infw's own series are proper counters.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from engine.core.textsafe import printable
from engine.errors import InfwError
from engine.observe import metrics_http
from engine.state.config import is_loopback, split_listen

NODE_PREFIX = "ingressnodefirewall_node_packet"
UP_HELP = "1 when the last scrape could read the firewall's counters, 0 when it could not"
RULE_LABELS = ("rule_id", "firewall", "order", "interface", "action")


class EngineCollector:
    """A custom collector: one Engine.stats() (and status()) per scrape."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        # The engine (rate tracker, map reads) is not shared across scrape threads.
        self._lock = threading.Lock()
        self._last_reason: str | None = None

    def describe(self) -> list[Metric]:
        # Registering must not touch the kernel; the families are known at scrape time only.
        return []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                snap = self.engine.stats()
                status = self.engine.status()
            except (InfwError, OSError) as exc:
                # Unreachable is never healthy: no zero counters, a 0 and the reason instead.
                reason = printable(exc.message if isinstance(exc, InfwError) else str(exc))
                if reason != self._last_reason:  # once per change, not once per scrape
                    print(f"infw metrics: firewall unreachable: {reason}", file=sys.stderr)
                    self._last_reason = reason
                yield _gauge("infw_up", UP_HELP, 0)
                down = GaugeMetricFamily(
                    "infw_down_reason",
                    "Why infw_up is 0 (the value is always 1)",
                    labels=("reason",),
                )
                down.add_metric((reason[:200],), 1)
                yield down
                return
        self._last_reason = None
        yield _gauge("infw_up", UP_HELP, 1)
        t = snap.totals
        yield _gauge(
            f"{NODE_PREFIX}_allow_total",
            "The number of packets which results in an allow IP packet result",
            t.allowed[0],
        )
        yield _gauge(
            f"{NODE_PREFIX}_allow_bytes",
            "The number of bytes for packets which results in an allow IP packet result",
            t.allowed[1],
        )
        yield _gauge(
            f"{NODE_PREFIX}_deny_total",
            "The number of packets which results in a deny IP packet result",
            t.denied[0],
        )
        yield _gauge(
            f"{NODE_PREFIX}_deny_bytes",
            "The number of bytes for packets which results in an deny IP packet result",
            t.denied[1],
        )

        results = (
            ("allow", t.allowed),
            ("deny", t.denied),
            ("would_deny", t.would_deny),
            ("failsafe", t.failsafe),
            ("no_match", t.no_match),
            ("unparsed", t.unparsed),
            ("reply_allowed", t.reply_allowed),
            ("unconfigured", t.unconfigured),
        )
        packets = CounterMetricFamily(
            "infw_node_packets", "Packets seen by the firewall, by result", labels=("result",)
        )
        nbytes = CounterMetricFamily(
            "infw_node_bytes", "Bytes seen by the firewall, by result", labels=("result",)
        )
        for name, (p, b) in results:
            packets.add_metric((name,), p)
            nbytes.add_metric((name,), b)
        yield packets
        yield nbytes

        rule_packets = CounterMetricFamily(
            "ingressnodefirewall_rule_packets", "Packets decided by one rule", labels=RULE_LABELS
        )
        rule_bytes = CounterMetricFamily(
            "ingressnodefirewall_rule_bytes",
            "Bytes of packets decided by one rule",
            labels=RULE_LABELS,
        )
        for row in snap.rules:
            labels = (
                str(row.rule_id),
                row.firewall,
                str(row.order),
                ",".join(row.interfaces),
                row.action.lower(),
            )
            rule_packets.add_metric(labels, row.packets)
            rule_bytes.add_metric(labels, row.bytes)
        yield rule_packets
        yield rule_bytes

        for name, text, value in (
            ("infw_events_sent", "Drop events the kernel wrote to the ring buffer", t.events_sent),
            (
                "infw_events_suppressed",
                "Drop events the kernel rate limit held back",
                t.events_suppressed,
            ),
            (
                "infw_events_lost",
                "Drop events lost because the ring buffer was full",
                t.events_lost,
            ),
        ):
            yield CounterMetricFamily(name, text, value=value)
        yield _gauge("infw_generation", "The rule generation the datapath runs", snap.generation)
        yield _gauge(
            "infw_audit_mode",
            "1 in audit mode (nothing dropped), 0 when enforcing",
            1 if status.mode == "audit" else 0,
        )
        yield _gauge(
            "infw_loaded", "1 when the firewall program is loaded", 1 if status.loaded else 0
        )
        pending = status.pending
        yield _gauge(
            "infw_pending_confirm",
            "1 while an applied change awaits confirmation",
            0 if pending is None else 1,
        )
        yield _gauge(
            "infw_pending_confirm_seconds",
            "Seconds left before a pending change reverts",
            0 if pending is None else pending.remaining(time.time()),
        )


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


@dataclass
class MetricsServer:
    host: str
    port: int
    server: Any
    thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    engine: Any, listen: str = "127.0.0.1:39301", *, allow_public: bool = False
) -> MetricsServer:
    """Serve /metrics in a daemon thread (bounded: see metrics_http); port 0 picks a free port.

    A non-loopback address is refused unless `allow_public` (the CLI sets it only for an
    explicit --listen): counters and rule ids are not for everyone who can reach the node.
    """
    try:
        host, port = split_listen(listen)
    except ValueError as exc:
        raise InfwError(
            f"bad listen address {listen!r}: {exc}", "give HOST:PORT, e.g. 127.0.0.1:39301"
        ) from exc
    if not allow_public and not is_loopback(listen):
        raise InfwError(
            f"refusing to serve metrics on non-loopback {listen} implicitly",
            f"pass --listen {listen} explicitly to expose them to the network",
        )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))

    def render() -> tuple[bytes, str]:
        return generate_latest(registry), CONTENT_TYPE_LATEST

    try:
        server, thread = metrics_http.start(host or "0.0.0.0", port, render)
    except OSError as exc:
        raise InfwError(
            f"cannot listen on {listen}: {exc.strerror}",
            "pick another address or port with --listen HOST:PORT",
        ) from exc
    return MetricsServer(host or "0.0.0.0", server.server_address[1], server, thread)
