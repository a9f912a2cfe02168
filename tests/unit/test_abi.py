"""engine/kernel/abi.py is the one home of the kernel constants: bpf/ defines none of them
itself and checks for every one the loader passes."""

from __future__ import annotations

import re

from engine.checkout import BPF_DIR
from engine.kernel import abi
from engine.kernel.loader import cflags


def bpf_text() -> str:
    return "\n".join(p.read_text() for p in sorted(BPF_DIR.iterdir()) if p.suffix in (".c", ".h"))


def test_the_program_checks_for_every_define_the_loader_passes() -> None:
    checked = set(re.findall(r"!defined\((\w+)\)", bpf_text()))
    assert checked == {"PIN_ROOT", *abi.c_defines()}


def test_bpf_defines_no_abi_constant_of_its_own() -> None:
    own = set(re.findall(r"^\s*#define\s+(\w+)", bpf_text(), re.MULTILINE))
    assert own & set(abi.c_defines()) == set()


def test_loader_passes_each_constant_with_its_python_value() -> None:
    flags = cflags("/sys/fs/bpf/x")
    passed = {
        m[1]: int(m[2], 16) for f in flags if (m := re.fullmatch(r"-D(\w+)=(0x[0-9a-f]+)U", f))
    }
    assert passed == abi.c_defines()
    assert passed["GEN_BIT"] == 1 << 31 and passed["CLASS_OTHER"] == 5
    assert passed["NC_EVENTS_LOST"] == abi.NodeCounter.EVENTS_LOST
