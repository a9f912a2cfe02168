"""Pin roots of the benchmarks' own firewalls (/sys/fs/bpf/infw-bench-*), and their removal."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BPFFS = "/sys/fs/bpf"
PREFIX = "infw-bench"


def pin_root(tag: str) -> str:
    return os.path.join(BPFFS, f"{PREFIX}-{tag}")


def remove_pins(root: str) -> None:
    """Unlink every pin under one of our roots (pins hold programs and maps alive)."""
    if not os.path.basename(root).startswith(PREFIX):
        raise ValueError(f"{root} is not a benchmark pin root")
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(os.path.join(root, name))
    with contextlib.suppress(OSError):
        os.rmdir(root)


def leftover_pin_roots() -> list[str]:
    if not os.path.isdir(BPFFS):
        return []
    return sorted(os.path.join(BPFFS, n) for n in os.listdir(BPFFS) if n.startswith(PREFIX))


@contextmanager
def loaded_datapath(tag: str) -> Iterator[Any]:
    """A freshly compiled firewall pinned under its own root; unloaded and unpinned afterwards."""
    from engine.kernel.datapath import Datapath

    root = pin_root(tag)
    remove_pins(root)
    dp = None
    try:
        dp = Datapath.load(root)
        yield dp
    finally:
        try:
            if dp is not None:
                dp.unload()
        finally:
            remove_pins(root)
