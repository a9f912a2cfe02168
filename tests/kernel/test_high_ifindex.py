"""An interface whose ifindex is past the arrays' roots (65,536 of them; a long-lived node's
veths climb there) is filtered exactly, through the kernel LPM tries, and the change that puts
it there says so: the compiled tables carry the slow-path note apply shows."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from engine.core.classify import lookup
from engine.core.compiler import CompiledTables, slow_path_note
from engine.core.frame import parse_frame
from engine.kernel import abi as layout
from tests.kernel.conftest import RULES_YAML, _ip, compile_rules, in_netns

BIG = layout.ROOT_IFINDEXES + 4464  # 70,000
XDP_DROP, XDP_PASS = 1, 2


@pytest.fixture
def big_ns() -> Iterator[str]:
    name = f"infw{os.getpid()}h"
    with contextlib.suppress(subprocess.CalledProcessError):
        _ip("netns", "del", name)
    _ip("netns", "add", name)
    try:
        _ip(
            "-n",
            name,
            "link",
            "add",
            "infwh0",
            "index",
            str(BIG),
            "type",
            "veth",
            "peer",
            "name",
            "infwh1",
        )
        _ip("-n", name, "link", "set", "infwh0", "up")
        yield name
    finally:
        _ip("netns", "del", name)


def frame(src: str, dport: int) -> bytes:
    return bytes(Ether() / IP(src=src, dst="192.0.2.1") / TCP(dport=dport))


@pytest.fixture
def dp(datapath: Any, tables: CompiledTables) -> Iterator[Any]:
    """The session firewall, given back its standard tables afterwards."""
    yield datapath
    datapath.write_tables(tables, datapath.generation() + 1)


def test_rules_on_an_interface_past_the_roots_decide_through_the_tries(
    dp: Any, big_ns: str
) -> None:
    yaml_text = RULES_YAML.replace("interfaces: [lo]", "interfaces: [infwh0]")
    tables = compile_rules(yaml_text, {"infwh0": BIG})
    note = slow_path_note(tables)
    assert note is not None and "source prefix" in note
    dp.write_tables(tables, dp.generation() + 1)
    cases = [("192.0.2.7", 8005, XDP_DROP), ("192.0.2.7", 9000, XDP_PASS)]
    cases += [
        ("198.51.100.7", 8005, XDP_PASS),
        ("192.0.2.7", 8080, XDP_DROP),
        ("192.0.2.7", 22, XDP_PASS),
    ]
    for src, dport, action in cases:
        f = frame(src, dport)
        with in_netns(big_ns):
            got, last, _ = dp.test_run(f, BIG)
        fields = parse_frame(f).fields
        assert fields is not None
        ref = lookup(tables, BIG, fields)
        assert (got, last.rule_id) == (action, ref.rule_id or 0), (src, dport)
