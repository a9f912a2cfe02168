"""Drop events from the pinned ring buffer, sampled into a bounded buffer for a console."""

from __future__ import annotations

from collections.abc import Callable

from engine.kernel.abi import DropEventRecord
from engine.kernel.seam import LoadedDatapath
from engine.observe.events import EventBuffer, decode_event, monotonic_to_epoch
from engine.views import DropEvent


class EventSource:
    """Drop events from the pinned ring buffer, sampled into a bounded buffer."""

    def __init__(
        self,
        datapath: LoadedDatapath,
        interfaces: Callable[[], dict[str, int]],
        max_per_second: int,
    ) -> None:
        self.buffer = EventBuffer(max_per_second=max_per_second)
        self._interfaces = interfaces
        self._ifnames = {v: k for k, v in interfaces().items()}
        self._datapath = datapath
        self._clock_offset = monotonic_to_epoch()
        datapath.open_events(self._on_record)

    def _on_record(self, record: DropEventRecord) -> None:
        if record.ifindex not in self._ifnames:
            self._ifnames = {v: k for k, v in self._interfaces().items()}
            # Remember a vanished interface too, so a flood from it costs one netlink dump.
            self._ifnames.setdefault(record.ifindex, f"if{record.ifindex}")
        self.buffer.add(decode_event(record, self._ifnames, self._clock_offset))

    def other_reader(self) -> int | None:
        """The pid of another console reading drop events: the ring buffer has one consumer
        position, so each reader then sees only part of the events."""
        pid = self._datapath.other_reader_pid()
        return int(pid) if pid else None

    def poll(self, timeout_ms: int = 100) -> list[DropEvent]:
        self._clock_offset = monotonic_to_epoch()  # once per batch, not per event
        self._datapath.poll_events(timeout_ms)
        return self.buffer.drain()
