"""The commit-confirmed watchdog: a process apart from the console that restores the previous
rule set when a pending apply is not confirmed in time (DESIGN §4).

It is its own session leader, reparented to init, with no terminal and SIGHUP ignored, so a
console killed with SIGKILL or an SSH session that drops does not take it down.

    spawn_watchdog(...)  -> pid        (called by the engine after setting the pending marker)
    python -m engine.state.watchdog ...      (what runs)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from engine.checkout import ROOT
from engine.errors import InfwError
from engine.state.store import Pending, Store

POLL = 0.2  # seconds between looks at the pending marker
ARM_GRACE = 2.0  # the engine writes the marker before spawning; a missing one means confirmed
RETRY_FOR = 60.0  # keep retrying a failed rollback (e.g. the lock is busy) this long
RETRY_DELAY = 1.0
LOG_FILE = "watchdog.log"

RollbackHook = Callable[[str, str, int], None]

_PACKAGE_ROOT = str(ROOT)


MODULE = "engine.state.watchdog"


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
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
    if state in ("Z", "X", "x"):
        return "gone"
    return "stopped" if state in ("T", "t") else "alive"


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
    rollback_hook: str | None = None,
) -> int:
    """Start a detached watchdog for `generation`; returns its pid.

    The child forks once more and the middle process exits at once, so the watchdog is not our
    child (no zombie, not in our process group or session). rollback_hook ("module:function",
    called as function(state_dir, pin_root, generation)) replaces Engine.rollback_pending:
    tests use it."""
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
    ]
    if netns:
        cmd += ["--netns", netns]
    if rollback_hook:
        cmd += ["--rollback-hook", rollback_hook]
    env = dict(os.environ)
    # `-m engine.state.watchdog` must import this very checkout, installed or not.
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


def _daemonize(log_path: Path) -> None:
    """Fork; the parent prints the child's pid and exits. The child keeps stdio on the log."""
    pid = os.fork()
    if pid:
        sys.stdout.write(f"{pid}\n")
        sys.stdout.flush()
        os._exit(0)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)


def _load_hook(spec: str) -> RollbackHook:
    module, _, name = spec.partition(":")
    func: RollbackHook = getattr(importlib.import_module(module), name)
    return func


def _engine_rollback(state_dir: str, pin_root: str, generation: int) -> Callable[[], None]:
    """Engine.rollback_pending, prepared at the start: the previous rule set is read and the
    firewall's fds are opened now, so that the revert needs neither the disk nor the pins."""
    from engine.engine import Engine  # pulls in the kernel layer: only in the watchdog

    engine = Engine(pin_root=pin_root, state_dir=state_dir)
    engine.prepare_rollback(generation)

    def rollback() -> None:
        engine.rollback_pending(generation)

    return rollback


def _still_mine(pending: Pending | None, generation: int) -> bool:
    return (
        pending is not None
        and pending.generation == generation
        and pending.watchdog_pid in (0, os.getpid())
    )


def watch(
    store: Store,
    generation: int,
    deadline: float,
    rollback: Callable[[], None],
    log: logging.Logger,
) -> bool:
    """Wait for the deadline; roll back if the marker still names this generation and watchdog.

    The marker's deadline wins over the argument, so a console can extend the wait by
    rewriting it. Returns True when a rollback ran."""
    started = time.monotonic()
    armed = False
    while True:
        try:
            pending = store.get_pending()
        except InfwError as exc:
            log.warning("cannot read the pending marker: %s", exc)
            pending = None
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
    while True:
        try:
            rollback()
            log.info("generation %d: rollback done", generation)
            return True
        except InfwError as exc:
            # Most likely the lock is held by a console mid-apply: try again while still pending.
            if time.monotonic() > give_up:
                log.error("generation %d: rollback failed, giving up: %s", generation, exc)
                raise
            log.warning("generation %d: rollback failed, retrying: %s", generation, exc)
        time.sleep(RETRY_DELAY)
        try:
            if not _still_mine(store.get_pending(), generation):
                log.info("generation %d: confirmed or replaced while retrying; exiting", generation)
                return False
        except InfwError as exc:
            log.warning("cannot read the pending marker: %s", exc)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m engine.state.watchdog", description="infw commit-confirmed watchdog"
    )
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--pin-root", required=True)
    parser.add_argument("--generation", type=int, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="epoch seconds")
    parser.add_argument("--netns", default=None)
    parser.add_argument("--rollback-hook", default=None, help="module:function, for tests")
    parser.add_argument("--daemonize", action="store_true")
    return parser.parse_args(argv)


def _on_term(signum: int, frame: FrameType | None) -> None:
    logging.getLogger("infw.watchdog").warning(
        "terminated by signal %d before the deadline: no rollback will happen", signum
    )
    sys.exit(128 + signum)


def _prepare(args: argparse.Namespace) -> Callable[[], None]:
    """Everything that can fail early, done before detaching so that the console hears of it:
    the namespace must exist, and the rollback must have what it needs."""
    if args.netns:
        from engine.kernel.netns import enter

        # Interfaces, and so the attached program, are per netns; enter never creates one.
        enter(args.netns)
    if args.rollback_hook:
        hook = _load_hook(args.rollback_hook)
        return lambda: hook(args.state_dir, args.pin_root, args.generation)
    return _engine_rollback(args.state_dir, args.pin_root, args.generation)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The console holds SIGINT/SIGTERM while it applies, and a child inherits that mask.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    log_path = Path(args.state_dir) / LOG_FILE
    try:
        rollback = _prepare(args)
    except Exception as exc:
        print(f"infw watchdog: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.daemonize:
        _daemonize(log_path)
    signal.signal(signal.SIGTERM, _on_term)
    logging.basicConfig(
        filename=str(log_path),
        level=logging.INFO,
        format=f"%(asctime)s watchdog[{os.getpid()}] %(levelname)s %(message)s",
    )
    log = logging.getLogger("infw.watchdog")
    log.info(
        "started for generation %d, deadline %s%s",
        args.generation,
        time.ctime(args.deadline),
        f", netns {args.netns}" if args.netns else "",
    )

    try:
        watch(Store(args.state_dir), args.generation, args.deadline, rollback, log)
    except Exception:
        log.exception("generation %d: watchdog failed", args.generation)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
