"""Helpers shared by the test suites (independent of the code under test on purpose)."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(check: Callable[[], object], timeout: float, step: float = 0.05) -> bool:
    """Poll check until it is true or timeout passes; one last look at the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return bool(check())


def traffic_pids() -> list[int]:
    """Live lab traffic processes, found in /proc rather than through engine.lab.world."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"engine.lab.traffic" in cmdline and state != "Z":
            pids.append(int(entry))
    return pids


def lab_namespaces() -> list[str]:
    """The lab's network namespaces that exist, by the lab's own names only ("infw-node" and
    "infw-c<N>"), found in /run/netns: other tests' namespaces (infw-clitest-<pid>, a fault
    node's) running beside this one are not the lab's."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return []
    return sorted(n for n in names if re.fullmatch(r"infw-node|infw-c[0-9]{1,2}", n))
