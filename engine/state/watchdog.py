"""The commit-confirmed watchdog: a process apart from the console that restores the previous
rule set when a pending apply is not confirmed in time (DESIGN §4).

It is its own session leader, reparented to init, with no terminal and SIGHUP ignored, so a
console killed with SIGKILL or an SSH session that drops does not take it down.

    spawn_watchdog(...)  -> pid        (called by the engine after setting the pending marker)
    python -m engine.state.watchdogd ...     (what runs: the detached process, kept apart so
                                              that this module never imports the engine)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from engine.checkout import ROOT
from engine.errors import InfwError, StateError
from engine.state.store import Pending, Store

POLL = 0.2  # seconds between looks at the pending marker
ARM_GRACE = 2.0  # the engine writes the marker before spawning; a missing one means confirmed
RETRY_FOR = 60.0  # keep retrying a failed rollback (e.g. the lock is busy) this long
RETRY_DELAY = 1.0
LOG_FILE = "watchdog.log"

RollbackHook = Callable[[str, str, int], None]

_PACKAGE_ROOT = str(ROOT)


MODULE = "engine.state.watchdogd"  # the process; process_state and find look for it


def run_state(pid: int) -> str | None:
    """The kernel's one-letter state of pid (R, S, D, T stopped, t traced, Z...), None when
    there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_stopped(pid: int) -> bool:
    """SIGSTOPped or traced: it exists, holds what it holds, and does nothing."""
    return run_state(pid) in ("T", "t")


def process_state(pid: int) -> str:
    """What pid is: "alive" (a watchdog that can act), "stopped" (a watchdog that is SIGSTOPped
    or traced: it exists but will not act), or "gone" (dead, a zombie, or some other process
    that reused the pid)."""
    if pid <= 0:
        return "gone"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            if MODULE.encode() not in fh.read():
                return "gone"
    except OSError:
        return "gone"
    state = run_state(pid)
    if state in (None, "Z", "X", "x"):
        return "gone"
    return "stopped" if is_stopped(pid) else "alive"


def find(state_dir: str, generation: int) -> int:
    """The pid of the watchdog of generation in state_dir, found in /proc (0: none): for a
    marker that could not record the pid (a full disk)."""
    want = [b"--state-dir", str(state_dir).encode(), b"--generation", str(generation).encode()]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if MODULE.encode() in args and all(w in args for w in want):
            return int(entry)
    return 0


def is_running(pid: int) -> bool:
    """True when pid is a live watchdog that can act (not stopped, not a reused pid)."""
    return process_state(pid) == "alive"


def stop(pid: int) -> None:
    """Kill a watchdog that is being taken over (SIGKILL also ends a stopped one)."""
    if process_state(pid) != "gone":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def spawn_watchdog(
    state_dir: str,
    pin_root: str,
    generation: int,
    deadline: float,
    netns: str | None,
    *,
    node_labels: Mapping[str, str] | None = None,
    rollback_hook: str | None = None,
) -> int:
    """Start a detached watchdog for `generation`; returns its pid.

    The child forks once more and the middle process exits at once, so the watchdog is not our
    child (no zombie, not in our process group or session). node_labels are the console's (a
    --node-labels flag wins over the config's): the revert compiles this node's objects only,
    as the change did; None means unknown (every object applies). rollback_hook
    ("module:function", called as function(state_dir, pin_root, generation)) replaces
    Engine.rollback_pending: tests use it."""
    Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        MODULE,
        "--daemonize",
        "--state-dir",
        str(state_dir),
        "--pin-root",
        str(pin_root),
        "--generation",
        str(generation),
        "--deadline",
        repr(float(deadline)),
        "--node-labels-json",
        json.dumps(None if node_labels is None else dict(node_labels)),
    ]
    if netns:
        cmd += ["--netns", netns]
    if rollback_hook:
        cmd += ["--rollback-hook", rollback_hook]
    env = dict(os.environ)
    # `-m engine.state.watchdogd` must import this very checkout, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        env=env,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = proc.stdout.readline().decode().strip()
        # Only a failed start has something to say here; the watchdog itself writes to its log.
        errors = b"" if line.isdigit() else proc.stderr.read()
    finally:
        proc.stdout.close()
        proc.stderr.close()
        proc.wait()
    if not line.isdigit():
        why = errors.decode(errors="replace").strip().splitlines()
        raise InfwError(
            "the confirm watchdog did not start" + (f": {why[-1]}" if why else ""),
            "without it an unconfirmed apply cannot revert itself; fix the cause, or apply "
            "with --confirm-timeout 0 if you accept that",
        )
    return int(line)


def _still_mine(pending: Pending | None, generation: int) -> bool:
    return (
        pending is not None
        and pending.generation == generation
        and pending.watchdog_pid in (0, os.getpid())
    )


def _lock_stuck(store: Store) -> bool:
    """The store lock is held by a process that is stopped: it will not let go, and a revert
    that waits for it would keep the unconfirmed rules live for as long as it stays stopped."""
    from engine.kernel.ringbuf import lock_holders  # /proc/locks: the real holders, not a hint

    return any(is_stopped(pid) for pid in lock_holders(str(store.lock_path)))


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class _Marker:
    """The pending marker as the watchdog judges it. Only a marker cleared or replaced in the
    state dir the change was recorded in means confirmed (or reverted, or superseded): a dir
    that cannot be read, or that is gone or another one now (unmounted, deleted, recreated),
    confirms nothing, and the last marker seen stands."""

    def __init__(self, store: Store, log: logging.Logger) -> None:
        self.store = store
        self.log = log
        self.home = _identity(store.root)
        self.last: Pending | None = None
        self._said = ""

    def home_lost(self) -> bool:
        return _identity(self.store.root) != self.home

    def read(self) -> Pending | None:
        if self.last is not None and self.home_lost():
            self._say(f"the state dir {self.store.root} is gone or another one: still pending")
            return self.last
        try:
            pending = self.store.get_pending()
        except InfwError as exc:
            self._say(f"cannot read the pending marker ({exc}): still pending")
            return self.last
        self.last = pending
        return pending

    def _say(self, text: str) -> None:
        if text != self._said:  # once per kind, not every poll
            self.log.warning(text)
            self._said = text


def watch(
    store: Store,
    generation: int,
    deadline: float,
    rollback: Callable[[], None],
    log: logging.Logger,
    revert_kernel: Callable[[], None] | None = None,
) -> bool:
    """Wait for the deadline; roll back if the marker still names this generation and watchdog.

    The marker's deadline wins over the argument, so a console can extend the wait by
    rewriting it. revert_kernel puts the previous rules in the kernel from memory alone: used
    when the rollback cannot go through the store (its dir unreadable, gone or replaced) and no
    console holds the lock, so a disk that fails never keeps the unconfirmed rules live.
    Returns True when a rollback ran."""
    marker = _Marker(store, log)
    started = time.monotonic()
    armed = False
    while True:
        pending = marker.read()
        if _still_mine(pending, generation):
            assert pending is not None
            if not armed:
                log.info(
                    "armed: generation %d reverts to %d at %s unless confirmed",
                    generation,
                    pending.previous_generation,
                    time.ctime(pending.deadline),
                )
            armed = True
            deadline = pending.deadline
        elif armed:
            log.info(
                "generation %d: pending marker cleared or replaced (%s); exiting",
                generation,
                pending,
            )
            return False
        elif time.monotonic() - started > ARM_GRACE:
            log.info("generation %d: never armed (marker %s); exiting", generation, pending)
            return False
        remaining = deadline - time.time()
        if remaining <= 0 and armed:
            break
        time.sleep(min(POLL, max(remaining, 0.01)))
    log.warning(
        "generation %d not confirmed by %s: restoring the previous rule set",
        generation,
        time.ctime(deadline),
    )
    give_up = time.monotonic() + RETRY_FOR
    kernel_back = False

    def from_memory(why: object) -> None:
        nonlocal kernel_back
        if revert_kernel is None or kernel_back:
            return
        try:
            revert_kernel()
            kernel_back = True
            log.warning(
                "generation %d: the store cannot take the rollback now (%s): the kernel runs "
                "the previous rules again, from memory; the store is behind until it can",
                generation,
                why,
            )
        except InfwError as exc:
            log.error("generation %d: kernel revert failed: %s", generation, exc)

    while True:
        try:
            if marker.home_lost():
                raise StateError(
                    f"the state dir {store.root} is gone or another one",
                    "mount it back (or restore it); the next infw command records the revert",
                )
            if _lock_stuck(store):
                from_memory("the store lock is held by a stopped process")
            rollback()
            log.info("generation %d: rollback done", generation)
            return True
        except InfwError as exc:
            # A console holding the lock (mid-apply) is waited for; anything else is the disk
            # or a holder that will not let go, and the kernel must not wait for either.
            if store.busy_holder() is None or _lock_stuck(store):
                from_memory(exc)
            if time.monotonic() > give_up:
                log.error("generation %d: rollback failed, giving up: %s", generation, exc)
                raise
            log.warning("generation %d: rollback failed, retrying: %s", generation, exc)
        time.sleep(RETRY_DELAY)
        if not _still_mine(marker.read(), generation):
            log.info("generation %d: confirmed or replaced while retrying; exiting", generation)
            return False
