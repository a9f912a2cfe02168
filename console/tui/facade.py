"""What the TUI needs of an engine: engine.Engine's public calls, stated as a Protocol.

The console is typed against this, not against the Engine class: the TUI sees only the calls
it makes (tests run it on the real Engine over engine.kernel.fake's FakeKernel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from engine import (
    ApplyResult,
    DropEvent,
    FlowsView,
    HistoryView,
    ImpactPreview,
    InterfaceView,
    PendingDrops,
    RuleRow,
    StatsSnapshot,
    Status,
    TraceRequest,
    TraceResult,
)


class EventCountsLike(Protocol):
    sampled_out: int


class EventBufferLike(Protocol):
    @property
    def counts(self) -> EventCountsLike: ...


class EventSourceLike(Protocol):
    @property
    def buffer(self) -> EventBufferLike: ...

    def poll(self, timeout_ms: int = 100) -> list[DropEvent]: ...

    def other_reader(self) -> int | None: ...


class ConfigLike(Protocol):
    @property
    def failsafe(self) -> tuple[Any, ...]: ...

    @property
    def confirm_timeout(self) -> float: ...


class EngineLike(Protocol):
    @property
    def config(self) -> ConfigLike: ...

    @property
    def read_only(self) -> bool: ...

    def status(self) -> Status: ...

    def stats(self) -> StatsSnapshot: ...

    def rule_rows(self) -> Sequence[RuleRow]: ...

    def open_events(self, max_per_second: int = 200) -> EventSourceLike: ...

    def reorder_target(self, rule_id: int, delta: int) -> int: ...

    def reorder_rule(self, rule_id: int, delta: int, **kwargs: Any) -> ApplyResult: ...

    def trace_packet(self, req: TraceRequest) -> TraceResult: ...

    def add_rule(self, line: str, **kwargs: Any) -> ApplyResult: ...

    def edit_rule(self, rule_id: int, line: str, **kwargs: Any) -> ApplyResult: ...

    def delete_rule(self, rule_id: int, **kwargs: Any) -> ApplyResult: ...

    def confirm(self) -> int: ...

    def revert(self, **kwargs: Any) -> ApplyResult: ...

    def history(self, limit: int = 50) -> list[HistoryView]: ...

    def set_mode(self, mode: str) -> str: ...

    def attach(
        self,
        patterns: Sequence[str],
        *,
        mode: str = "auto",
        force: bool = False,
        progress: Callable[[str], None] = ...,
    ) -> list[InterfaceView]: ...

    def detach(self, patterns: Sequence[str] | None = None) -> list[str]: ...

    def export_yaml(self) -> str: ...

    def interfaces(self) -> dict[str, int]: ...

    def preview_add(self, line: str, **kwargs: Any) -> ImpactPreview: ...

    def preview_edit(self, rule_id: int, line: str, **kwargs: Any) -> ImpactPreview: ...

    def flows(self) -> FlowsView: ...

    def pending_drops(self, snapshot: StatsSnapshot) -> PendingDrops | None: ...
