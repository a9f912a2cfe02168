"""Per-CPU {packets, bytes} counters: per rule id (rule_stats) and per node outcome
(node_stats), summed over CPUs."""

from __future__ import annotations

import array
import operator
import struct
from collections.abc import Iterable

from engine.kernel.abi import RULE_STATS_ENTRIES, NodeCounter
from engine.kernel.bpfsys import Map

_U32 = struct.Struct("<I")


def reset_rule_counters(m: Map, rule_ids: Iterable[int]) -> None:
    """Zero the counters of ids handed to new rules, so a reused id starts from nothing."""
    zero = bytes(m.value_size)  # value_size already spans every CPU's slot
    for rid in rule_ids:
        m.update(_U32.pack(rid), zero)


def rule_counters(m: Map, max_id: int | None = None) -> dict[int, tuple[int, int]]:
    """rule id -> (packets, bytes) summed over CPUs; rules never hit are left out.

    With max_id, only ids 0 .. max_id are read (the highest id in use, from the stored
    state): a refresh of 1,000 rules then copies 1,001 slots, not all 65,536.
    """
    limit = None if max_id is None else max(0, min(int(max_id), RULE_STATS_ENTRIES - 1)) + 1
    keys, values, count = m.items(limit)
    totals = sum_percpu(values, count, m.ncpus)
    out: dict[int, tuple[int, int]] = {}
    for i, (packets, nbytes) in enumerate(totals):
        if packets or nbytes:
            out[_U32.unpack_from(keys, i * 4)[0]] = (packets, nbytes)
    return out


def node_counters(m: Map) -> dict[NodeCounter, tuple[int, int]]:
    keys, values, count = m.items()
    totals = sum_percpu(values, count, m.ncpus)
    by_index = {_U32.unpack_from(keys, i * 4)[0]: totals[i] for i in range(count)}
    return {c: by_index.get(int(c), (0, 0)) for c in NodeCounter}


def sum_percpu(values: bytes, count: int, ncpus: int) -> list[tuple[int, int]]:
    """Sum per-CPU {packets, bytes} slots: values holds count entries of ncpus slots each."""
    words = array.array("Q")
    words.frombytes(values[: count * ncpus * 16])
    stride = 2 * ncpus
    # strided slices and map(add) keep the 65536-entry sum out of a Python-level loop
    packets: list[int] = list(words[0::stride])
    nbytes: list[int] = list(words[1::stride])
    for cpu in range(1, ncpus):
        packets = list(map(operator.add, packets, words[2 * cpu :: stride]))
        nbytes = list(map(operator.add, nbytes, words[2 * cpu + 1 :: stride]))
    return list(zip(packets, nbytes, strict=True))
