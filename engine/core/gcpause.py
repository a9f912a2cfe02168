"""Cyclic GC held off while big, cycle-free structures are built (admission, compile, apply).

With 100,000 prefixes in a rule set the process holds millions of objects, and every full
collection pass walks all of them (~100 ms); reading a big file or compiling it triggers
several. Nothing built there makes reference cycles (refcounting frees it), so collection can
wait until the work is done: after an edit is live, or when a one-shot CLI process exits.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic-GC pass inside (nests: only the outermost turns it back on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
