"""Results of a pure per-block check, kept for the block object they were computed for.

An edit hands the engine the whole rule set again, but every block it did not touch is the same
(frozen) object as before: checks that walk every rule on every edit (the guard's fail-safe
test, the operator-parity notes) look those blocks up by identity instead, so an edit at 100,000
CIDRs costs what the changed blocks cost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from engine.core.model import IngressBlock

T = TypeVar("T")
LIMIT = 1 << 18  # blocks remembered; past it the memo starts over (a rule set is re-checked)


class BlockMemo(Generic[T]):
    """fn(block, context), remembered per block object and context (compared by value)."""

    def __init__(self, fn: Callable[[IngressBlock, Hashable], T]) -> None:
        self._fn = fn
        # id(block) -> (block, context, result): the block is held, so its id is not reused
        self._seen: dict[int, tuple[IngressBlock, Hashable, T]] = {}
        self._lock = threading.Lock()

    def __call__(self, block: IngressBlock, context: Hashable) -> T:
        hit = self._seen.get(id(block))
        if hit is not None and hit[0] is block and (hit[1] is context or hit[1] == context):
            return hit[2]
        result = self._fn(block, context)
        with self._lock:
            if len(self._seen) >= LIMIT:
                self._seen.clear()
            self._seen[id(block)] = (block, context, result)
        return result
