"""The commit-confirmed watchdog's detached process: `python -m engine.state.watchdogd`.

engine.state.watchdog starts it (spawn_watchdog), finds and judges it, and holds its waiting
logic (watch); this module adds what only the process does: detach, enter the namespace, take
what a revert needs at its start, and call Engine.rollback_pending at the deadline. Kept apart
so that the engine and the watchdog module don't import each other.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from engine.state.store import Store
from engine.state.watchdog import LOG_FILE, MODULE, RollbackHook, watch

# the rollback through the store, and the kernel-only revert from memory (None: a test hook)
Actions = tuple[Callable[[], None], Callable[[], None] | None]


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


def _engine_rollback(
    state_dir: str, pin_root: str, generation: int, labels: dict[str, str] | None
) -> Actions:
    """Engine.rollback_pending, prepared at the start: the previous rule set is read and the
    firewall's fds are opened now, so that the revert needs neither the disk nor the pins.
    labels: the console's node labels, so the revert compiles the objects the change did."""
    from dataclasses import replace

    from engine.engine import Engine  # pulls in the kernel layer: only in the watchdog
    from engine.state.config import load_config

    config = replace(load_config(), node_labels=labels)
    engine = Engine(pin_root=pin_root, state_dir=state_dir, config=config)
    engine.prepare_rollback(generation)

    def rollback() -> None:
        engine.rollback_pending(generation)

    def revert_kernel() -> None:
        engine.revert_held(generation)

    return rollback, revert_kernel


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"python -m {MODULE}", description="infw commit-confirmed watchdog"
    )
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--pin-root", required=True)
    parser.add_argument("--generation", type=int, required=True)
    parser.add_argument("--deadline", type=float, required=True, help="epoch seconds")
    parser.add_argument("--netns", default=None)
    parser.add_argument(
        "--node-labels-json", default="null", help="the console's node labels (null: unknown)"
    )
    parser.add_argument("--rollback-hook", default=None, help="module:function, for tests")
    parser.add_argument("--daemonize", action="store_true")
    return parser.parse_args(argv)


def _on_term(signum: int, frame: FrameType | None) -> None:
    logging.getLogger("infw.watchdog").warning(
        "terminated by signal %d before the deadline: no rollback will happen", signum
    )
    sys.exit(128 + signum)


def _prepare(args: argparse.Namespace) -> Actions:
    """Everything that can fail early, done before detaching so that the console hears of it:
    the namespace must exist, and the rollback must have what it needs."""
    if args.netns:
        from engine.kernel.netns import enter

        # Interfaces, and so the attached program, are per netns; enter never creates one.
        enter(args.netns)
    if args.rollback_hook:
        hook = _load_hook(args.rollback_hook)
        return lambda: hook(args.state_dir, args.pin_root, args.generation), None
    labels = json.loads(args.node_labels_json)
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        raise ValueError(f"--node-labels-json: a mapping of strings, not {labels!r}")
    return _engine_rollback(args.state_dir, args.pin_root, args.generation, labels)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # The console holds SIGINT/SIGTERM while it applies, and a child inherits that mask.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    log_path = Path(args.state_dir) / LOG_FILE
    try:
        rollback, revert_kernel = _prepare(args)
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
        watch(Store(args.state_dir), args.generation, args.deadline, rollback, log, revert_kernel)
    except Exception:
        log.exception("generation %d: watchdog failed", args.generation)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
