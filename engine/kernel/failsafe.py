"""The fail-safe port table in the kernel: destination port -> bitmask of the protocols that
always pass on it (engine.core.failsafe decides which; this module reads and writes them)."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from engine.core.compiler import CompiledTables
from engine.kernel import bpfsys
from engine.kernel.abi import FAILSAFE_MAX_ENTRIES, FAILSAFE_PROTO_BITS
from engine.kernel.bpfsys import Map
from engine.kernel.mapped import MappedArray, nonzero_words, write_words

_U32 = struct.Struct("<I")


def wanted_failsafe(tables: CompiledTables) -> dict[int, int]:
    """port -> protocol bitmask that tables ask for."""
    masks: dict[int, int] = {}
    for proto, port in tables.failsafe_ports:
        masks[port] = masks.get(port, 0) | FAILSAFE_PROTO_BITS[proto]
    return masks


def failsafe_masks(failsafe: Map) -> dict[int, int]:
    """port -> protocol bitmask of the ports that have any (by syscall: the whole array)."""
    keys, values, count = failsafe.items()
    ports = struct.unpack(f"<{count}I", keys[: 4 * count])
    masks = struct.unpack(f"<{count}I", values[: 4 * count])
    return {port: mask for port, mask in zip(ports, masks, strict=True) if mask}


def _write_masks(failsafe: Map, masks: Mapping[int, int]) -> None:
    if not masks:
        return
    ports = sorted(masks)
    failsafe.update_batch(
        b"".join(_U32.pack(p) for p in ports), b"".join(_U32.pack(masks[p]) for p in ports)
    )


class FailsafePorts:
    """The fail-safe ports (port -> protocol bitmask) as words mapped into this process: this
    build's region of table_roots (engine.kernel.roots), or an older build's own array map
    when it allows mapping (BPF_F_MMAPABLE: reading all 65,536 entries by syscall costs ~19 ms
    per write); else read and written by syscalls (a map pinned by a still older build)."""

    def __init__(self, m: Map | None, words: memoryview | None = None) -> None:
        self._map = m
        self._mapped: MappedArray | None = None
        self._words = words
        if words is None and m is not None and m.info.flags & bpfsys.BPF_F_MMAPABLE:
            self._mapped = MappedArray(m, FAILSAFE_MAX_ENTRIES)
            self._words = self._mapped.words

    @property
    def is_mapped(self) -> bool:
        return self._words is not None

    def masks(self) -> dict[int, int]:
        """port -> protocol bitmask of the ports that have any."""
        words = self._words
        if words is None:
            assert self._map is not None
            return failsafe_masks(self._map)
        return {p: int(words[p]) for p in nonzero_words(words, FAILSAFE_MAX_ENTRIES)}

    def write(self, masks: Mapping[int, int]) -> None:
        if self._words is None:
            assert self._map is not None
            _write_masks(self._map, masks)
        else:
            write_words(self._words, masks)

    def close(self) -> None:
        """Unmaps what this opened (words handed in stay their owner's)."""
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None
        self._words = None
