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
    """The fail-safe array (port -> protocol bitmask), mapped into this process when the map
    allows it (BPF_F_MMAPABLE: reading all 65,536 entries by syscall costs ~19 ms per write),
    else read and written by syscalls (a map pinned by an older build, reused as it is)."""

    def __init__(self, m: Map) -> None:
        self._map = m
        self._mapped: MappedArray | None = None
        if m.info.flags & bpfsys.BPF_F_MMAPABLE:
            self._mapped = MappedArray(m, FAILSAFE_MAX_ENTRIES)

    @property
    def is_mapped(self) -> bool:
        return self._mapped is not None

    def masks(self) -> dict[int, int]:
        """port -> protocol bitmask of the ports that have any."""
        if self._mapped is None:
            return failsafe_masks(self._map)
        words = self._mapped.words
        return {p: int(words[p]) for p in nonzero_words(words, FAILSAFE_MAX_ENTRIES)}

    def write(self, masks: Mapping[int, int]) -> None:
        if self._mapped is None:
            _write_masks(self._map, masks)
        else:
            write_words(self._mapped.words, masks)

    def close(self) -> None:
        if self._mapped is not None:
            self._mapped.close()
            self._mapped = None
