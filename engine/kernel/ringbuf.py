"""Drop events from the pinned ring buffer, and who else reads them.

The ring buffer has one consumer position: with two readers (the TUI and
`infw events --follow`, say) each sees only part of the events. Each reader holds a shared
flock on a file named after the pin root, so a reader can name the others from /proc/locks.
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import fcntl
import os
import re
from collections.abc import Callable

from engine.errors import DatapathError
from engine.kernel.abi import DropEventRecord
from engine.kernel.bpfsys import Map, RingBuffer

EVENTS_LOCK_DIR = "/run/infw"


def run_lock_path(pin_root: str, kind: str) -> str:
    """A lock file under /run/infw for the firewall pinned at pin_root (kind: events, agent)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.normpath(pin_root)).strip("-.") or "root"
    return os.path.join(EVENTS_LOCK_DIR, f"{kind}-{name}.lock")


def events_lock_path(pin_root: str) -> str:
    """The reader lock file of the firewall pinned at pin_root."""
    return run_lock_path(pin_root, "events")


def remove_events_lock(pin_root: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(events_lock_path(pin_root))


def lock_holders(path: str, proc_locks: str = "/proc/locks") -> set[int]:
    """Pids holding a flock (granted, not waiting) on the file at path, from /proc/locks."""
    try:
        st = os.stat(path)
        with open(proc_locks) as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    # "1: FLOCK  ADVISORY  READ  1234 00:1a:5678 0 EOF"; "1: -> FLOCK ..." is a waiter
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: set[int] = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        if fields[5] == wanted and fields[4].lstrip("-").isdigit() and int(fields[4]) > 0:
            pids.add(int(fields[4]))
    return pids


class DropEvents:
    """This process's reading of one firewall's drop events; close() stops reading."""

    def __init__(self, events: Map, pin_root: str) -> None:
        self._map = events
        self._pin_root = pin_root
        self._ring: RingBuffer | None = None
        self._reader_lock: int | None = None  # fd holding the events reader flock

    def open(self, callback: Callable[[DropEventRecord], None]) -> None:
        """Consume the ring buffer; poll() calls callback for each record. Also registers this
        process as a reader (held until close()), so other_reader_pid() elsewhere names it."""
        if self._ring is not None:
            self._ring.close()
        self._register_reader()
        size = ct.sizeof(DropEventRecord)

        def on_record(data: bytes) -> None:
            callback(DropEventRecord.from_buffer_copy(data[:size].ljust(size, b"\0")))

        self._ring = RingBuffer(self._map.fd, on_record)

    def _register_reader(self) -> None:
        if self._reader_lock is not None:
            return
        path = events_lock_path(self._pin_root)
        try:  # advisory: a reader that cannot register still reads
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: every reader holds it
        except OSError:
            os.close(fd)
            return
        self._reader_lock = fd

    def other_reader_pid(self) -> int | None:
        """The pid of another process reading these events, or None. This one is left out,
        and so are readers whose pid is not visible from here (another pid namespace)."""
        me = os.getpid()
        others = sorted(p for p in lock_holders(events_lock_path(self._pin_root)) if p != me)
        return others[0] if others else None

    def poll(self, timeout_ms: int = 100) -> int:
        if self._ring is None:
            raise DatapathError("events are not open", "call open_events() first")
        return self._ring.poll(timeout_ms)

    def close(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._reader_lock is not None:
            os.close(self._reader_lock)  # releases the flock
            self._reader_lock = None
