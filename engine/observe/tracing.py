"""The Engine's trace calls over engine.observe.trace (kept apart: trace.py is imported by the
flows reader the Engine's base holds, so it must not import the base)."""

from __future__ import annotations

from engine.base import EngineBase
from engine.observe import trace as observe_trace
from engine.views import TraceRequest, TraceResult


class Tracing(EngineBase):
    """Packets decided by the reference and the kernel."""

    def trace(
        self,
        interface: str,
        src: str,
        proto: str,
        dport: int | None = None,
        icmp_type: int | None = None,
        icmp_code: int | None = None,
        *,
        dst: str | None = None,
        vlan: tuple[int, ...] = (),
        fragment: bool = False,
        sport: int = 40000,
        reply: bool = False,
    ) -> TraceResult:
        """Decide a built packet twice: the reference classifier and the loaded kernel program
        (reply: explain it as a reply to a connection the node opened)."""
        req = TraceRequest(
            interface,
            src,
            proto,
            dport,
            icmp_type,
            icmp_code,
            dst,
            tuple(vlan),
            fragment,
            sport,
            reply,
        )
        return self._trace(req)

    @staticmethod
    def check_trace(req: TraceRequest) -> None:
        """Refuse (RequestError) a packet that cannot exist: ports on ICMP, ICMP from IPv6..."""
        observe_trace.check_trace(req)

    def trace_packet(self, req: TraceRequest) -> TraceResult:
        """check_trace, then trace: what the CLI, the REPL and the TUI dialog ask."""
        observe_trace.check_trace(req)
        return self._trace(req)

    def _trace(self, req: TraceRequest) -> TraceResult:
        dp = self.datapath() if self.loaded() else None
        # Only the objects for this node decide its packets, here as in the kernel.
        mine = self._for_this_node(self.state())
        return observe_trace.trace(mine, self.interfaces(), self.config.failsafe, dp, req)
