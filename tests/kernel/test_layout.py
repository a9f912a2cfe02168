"""engine/kernel/abi.py against bpf/infw.bpf.c: bcc turns each map's C key and value types into
ctypes structs; every field's name, offset and size must match the Python mirror."""

from __future__ import annotations

import ctypes as ct
import os
from collections.abc import Iterator
from typing import Any

import pytest

from engine.kernel import abi as layout
from tests.kernel.conftest import PIN_BASE

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture(scope="module")
def bpf(kernel_ready: None) -> Iterator[Any]:
    from engine.kernel.loader import compile_program

    root = os.path.join(PIN_BASE, "layout")
    b = compile_program(root, extra_cflags=["-DINFW_LAYOUT_CHECK"])
    try:
        yield b
    finally:
        b.cleanup()
        for name in os.listdir(root):
            os.unlink(os.path.join(root, name))
        os.rmdir(root)


def fields(struct: type[ct.Structure]) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every named field; bcc's own padding fields are skipped."""
    out = []
    for name, *_ in struct._fields_:
        if name.startswith("__pad"):
            continue
        desc = getattr(struct, name)
        out.append((name, desc.offset, desc.size))
    return out


def assert_same(c_type: Any, py_type: Any) -> None:
    assert ct.sizeof(c_type) == ct.sizeof(py_type), f"{py_type.__name__}: size differs"
    if issubclass(py_type, ct.Structure):
        assert fields(c_type) == fields(py_type), f"{py_type.__name__}: fields differ"


@pytest.mark.parametrize(
    ("table", "key", "leaf"),
    [
        (layout.MAP_SRC, layout.SrcKey, ct.c_uint32),
        (layout.MAP_SEG, layout.SegKey, layout.SegVal),
        (layout.MAP_RULE_STATS, ct.c_uint32, layout.Counter),
        (layout.MAP_NODE_STATS, ct.c_uint32, layout.Counter),
        (layout.MAP_CONFIG, ct.c_uint32, layout.Config),
        (layout.MAP_RATELIMIT, ct.c_uint32, layout.RateLimit),
        (
            layout.MAP_NODES,
            ct.c_uint32,
            layout.Node,
        ),  # declared as one node; pins.MAP_SPECS has its size
        (layout.MAP_ROOTS, ct.c_uint32, ct.c_uint64),  # declared as one root word
        (layout.MAP_FLOWS, layout.FlowRecKey, layout.FlowRecVal),
        (layout.MAP_REPLIES, layout.ReplyKey, layout.ReplyVal),
        (layout.MAP_REPLY_CONFIG, ct.c_uint32, layout.ReplyConfig),
        (layout.MAP_HOSTS, layout.HostKey, ct.c_uint32),
        ("layout_drop_event", ct.c_uint32, layout.DropEventRecord),
        ("layout_trace_meta", ct.c_uint32, layout.TraceMeta),
        ("layout_list_roots", ct.c_uint32, layout.ListRoots),
        ("layout_host_region", ct.c_uint32, layout.HostRegion),
        ("layout_host4_bucket", ct.c_uint32, layout.Host4Bucket),
        ("layout_host6_bucket", ct.c_uint32, layout.Host6Bucket),
    ],
)
def test_map_types_match_layout(bpf: Any, table: str, key: Any, leaf: Any) -> None:
    t = bpf[table.encode()]
    assert_same(t.Key, key)
    assert_same(getattr(t, "sLeaf", t.Leaf), leaf)  # per-CPU tables: sLeaf is one CPU's value


def test_map_sizes_match_layout(bpf: Any) -> None:
    from engine.kernel.bpfsys import Map
    from engine.kernel.pins import MAP_SPECS

    root = os.path.join(PIN_BASE, "layout")
    for name, spec in MAP_SPECS.items():
        if name in layout.LEGACY_IMAGE_MAPS:
            continue  # only older builds pin these (tests/kernel/test_upgrade_nodes.py)
        m = Map.open_pinned(os.path.join(root, name))
        try:
            assert (m.info.key_size, m.info.value_size, m.info.max_entries) == (
                spec.key_size,
                spec.value_size,
                spec.max_entries,
            ), name
        finally:
            m.close()


@pytest.mark.parametrize("name", [layout.MAP_ROOTS, layout.MAP_NODES])
def test_mapped_arrays_are_mmapable(bpf: Any, name: str) -> None:
    from engine.kernel.bpfsys import Map

    m = Map.open_pinned(os.path.join(PIN_BASE, "layout", name))
    try:
        assert m.info.flags & 0x400, f"{name} lacks BPF_F_MMAPABLE (the datapath maps it)"
    finally:
        m.close()


def test_lpm_tries_are_not_preallocated(bpf: Any) -> None:
    from engine.kernel.bpfsys import Map

    root = os.path.join(PIN_BASE, "layout")
    for name in (layout.MAP_SRC, layout.MAP_SEG):
        m = Map.open_pinned(os.path.join(root, name))
        try:
            assert m.info.flags & 1, f"{name} lacks BPF_F_NO_PREALLOC"
        finally:
            m.close()


@pytest.mark.parametrize("name", ["GEN_BIT", "REASON_RULE", "CLASS_OTHER"])
def test_program_refuses_to_compile_without_the_abi(kernel_ready: None, name: str) -> None:
    """The constants come only from engine/kernel/abi.py: without one, bcc stops at the #error
    (a -U after the loader's -D takes it away again)."""
    from engine.errors import DatapathError
    from engine.kernel.loader import compile_program

    root = os.path.join(PIN_BASE, "noabi")
    try:
        with pytest.raises(DatapathError, match="constants are missing"):
            compile_program(root, extra_cflags=[f"-U{name}"])
    finally:
        for leftover in os.listdir(root):
            os.unlink(os.path.join(root, leftover))
        os.rmdir(root)
