"""The running firewall's node-local switches: enforce or audit, and replies to the node's own
connections."""

from __future__ import annotations

from dataclasses import replace

from engine.base import EngineBase
from engine.core.guard import raise_if_refused
from engine.errors import StateError
from engine.kernel.abi import REPLIES_MAX_ENTRIES, Mode, NodeCounter
from engine.views import RepliesView


class Switches(EngineBase):
    """Mode and replies."""

    def set_mode(self, mode: str, *, force: bool = False) -> str:
        self._require_write("switch mode")
        if mode not in ("enforce", "audit"):
            raise StateError(f"unknown mode {mode!r}", "use 'enforce' or 'audit'")
        with self.store.lock():
            stored = self.state()
            if mode == "enforce" and stored.mode != "enforce":
                # Audit skipped the session check: enforcing must not start dropping our own SSH.
                refusals = self.guard().check_lockout(
                    self.node_split(stored.ruleset).enforced, stored.rule_ids, self.interfaces()
                )
                raise_if_refused(refusals, force)
            dp = self.datapath()
            dp.set_mode(Mode.AUDIT if mode == "audit" else Mode.ENFORCE)
            if stored.mode != mode:
                self._commit_setting(dp, stored, replace(stored, mode=mode), f"mode {mode}")
        return mode

    def replies(self) -> RepliesView:
        """Replies to the node's own connections: on or off, timeouts, the flow table."""
        dp = self.datapath(required=False) if self.loaded() else None
        settings = dp.replies() if dp is not None else self.config.replies
        node = dp.node_counters() if dp is not None else {}
        held = dp.replies_held() if dp is not None else 0
        recorded = int(node.get(NodeCounter.REPLY_RECORDED, (0, 0))[0])
        return RepliesView(
            enabled=settings.enabled,
            tcp_timeout=settings.tcp_timeout,
            udp_timeout=settings.udp_timeout,
            icmp_timeout=settings.icmp_timeout,
            held=held,
            capacity=REPLIES_MAX_ENTRIES,
            recorded=recorded,
            evicted=max(0, recorded - held),
            allowed=int(node.get(NodeCounter.REPLY_ALLOWED, (0, 0))[0]),
        )

    def set_replies(self, enabled: bool) -> RepliesView:
        """Let replies to the node's own connections pass a Deny (on) or not (off), on the
        running firewall, with config.yaml's timeouts. Node-local: the rule files are not
        touched; the setting lives in the firewall's pins, so a reload keeps it."""
        self._require_write("switch replies")
        self._require_root("attach the egress recorder")
        self.datapath().set_replies(replace(self.config.replies, enabled=enabled))
        return self.replies()
