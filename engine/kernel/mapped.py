"""Array maps mapped into this process (BPF_F_MMAPABLE): one u64 word per u32 element, read
and written without a syscall per entry."""

from __future__ import annotations

import mmap
from collections.abc import Mapping

from engine.kernel.bpfsys import Map

_ZERO_PAGE = bytes(4096)
_ZERO_CHUNK = bytes(65536)


def map_words(m: Map, entries: int) -> tuple[mmap.mmap, memoryview]:
    """An mmapable array of u32 mapped as u64 words (array elements are 8-byte aligned)."""
    size = (entries * 8 + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    mem = mmap.mmap(m.fd, size)
    return mem, memoryview(mem).cast("Q")


def nonzero_words(words: memoryview, count: int) -> list[int]:
    """Indexes of the nonzero words among the first count. Zero regions are skipped by bytes
    comparisons (a memcmp each; comparing memoryviews goes element by element, ~100x slower),
    first per 64 KiB, then per page, so a mostly empty 2 MiB array costs a fraction of a ms."""
    nonzero: list[int] = []
    end = count * 8
    with words.cast("B") as raw:
        for chunk in range(0, end, len(_ZERO_CHUNK)):
            stop = min(chunk + len(_ZERO_CHUNK), end)
            if raw[chunk:stop].tobytes() == _ZERO_CHUNK[: stop - chunk]:
                continue
            for page in range(chunk, stop, len(_ZERO_PAGE)):
                last = min(page + len(_ZERO_PAGE), stop)
                if raw[page:last].tobytes() != _ZERO_PAGE[: last - page]:
                    nonzero.extend(i for i in range(page // 8, last // 8) if words[i])
    return nonzero


def write_words(words: memoryview, entries: Mapping[int, int]) -> None:
    for index, value in entries.items():
        words[index] = value  # an aligned store, seen by the program at once


def map_bytes(m: Map, entries: int, value_size: int) -> tuple[mmap.mmap, memoryview]:
    """An mmapable array whose values (a multiple of 8 bytes) lie back to back, as bytes."""
    size = (entries * value_size + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    mem = mmap.mmap(m.fd, size)
    return mem, memoryview(mem)


class MappedBytes:
    """One array map of 8-byte-multiple values mapped into this process until close()."""

    def __init__(self, m: Map, entries: int, value_size: int) -> None:
        self._mem, self.raw = map_bytes(m, entries, value_size)

    def close(self) -> None:
        self.raw.release()
        self._mem.close()


class MappedArray:
    """One array map mapped into this process until close()."""

    def __init__(self, m: Map, entries: int) -> None:
        self._mem, self.words = map_words(m, entries)

    def close(self) -> None:
        self.words.release()
        self._mem.close()
