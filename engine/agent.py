"""The node agent (`infw agent`, the shipped systemd unit): keeps the firewall on the interfaces
it was attached to with no console running (DESIGN §4, issue #15).

An interface that appears, comes back from another namespace, is recreated or renamed into a
stored attach pattern gets the program and the tables for its (new) ifindex within a second;
a pending change whose watchdog died or hangs is taken back after its deadline plus the grace.
It listens to netlink link events and also sweeps once a second, so a missed event costs at
most that second. One agent per firewall: it holds a lock under /run/infw that status reads.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import threading
from collections.abc import Callable
from typing import Any

from engine.errors import InfwError, StateError
from engine.kernel.ringbuf import lock_holders, run_lock_path
from engine.state.watchdog import is_stopped
from engine.views import Problem

SWEEP_PERIOD = 1.0  # seconds between sweeps when no link event comes
SETTLE = 0.05  # link events come in bursts (new link, then up, then addresses): sweep once

log = logging.getLogger("infw.agent")


def agent_pid(pin_root: str) -> int | None:
    """The pid of the agent following the firewall at pin_root, None when none runs."""
    holders = lock_holders(run_lock_path(pin_root, "agent"))
    return min(holders) if holders else None


def agent_health(pin_root: str) -> tuple[str, Problem | None]:
    """The agent as `status` shows it ("running pid N", "" when none runs), and a problem when
    it holds its lock but cannot act: a stopped (SIGSTOP, traced) agent follows nothing, and
    no other agent can start while it holds the lock."""
    pid = agent_pid(pin_root)
    if pid is None:
        return "", None
    if not is_stopped(pid):
        return f"running pid {pid}", None
    return f"stopped pid {pid}", Problem(
        "agent",
        f"the agent (pid {pid}) is stopped: it follows no interface and takes over nothing, "
        "and holds the lock another agent would need",
        f"kill -CONT {pid} (or systemctl restart infw-agent)",
    )


def _take_lock(pin_root: str) -> int:
    path = run_lock_path(pin_root, "agent")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateError(
            f"an agent already follows the firewall at {pin_root} (pid {agent_pid(pin_root)})",
            "one agent per firewall is enough; stop the other one first",
        ) from None
    return fd


def _link_events(ipr: Any) -> bool:
    """Drain pending netlink messages; True when one was about a link."""
    seen = False
    for msg in ipr.get():
        seen = seen or str(msg.get("event", "")).endswith("LINK")
    return seen


def run(engine: Any, stop: threading.Event, say: Callable[[str], None] = log.info) -> None:
    """Follow until stop is set. engine: an Engine on the firewall to keep (not read-only)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.rtnl import RTMGRP_LINK

    lock = _take_lock(engine.pin_root)
    try:
        with IPRoute() as ipr:
            ipr.bind(groups=RTMGRP_LINK)
            say(f"following interfaces for the firewall at {engine.pin_root}")
            while not stop.is_set():
                sweep(engine, say)
                ready, _, _ = select.select([ipr.fileno()], [], [], SWEEP_PERIOD)
                if ready:
                    _link_events(ipr)
                    stop.wait(SETTLE)
                    while select.select([ipr.fileno()], [], [], 0)[0]:
                        _link_events(ipr)
    finally:
        os.close(lock)


def sweep(engine: Any, say: Callable[[str], None]) -> None:
    """One look: what follow() did is said; a failure is said and retried at the next sweep."""
    try:
        for action in engine.follow_interfaces():
            say(action)
    except InfwError as exc:
        say(f"cannot follow now: {exc}")
