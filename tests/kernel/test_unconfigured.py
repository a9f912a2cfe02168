"""An interface with the program but no tables for its ifindex (#15): its packets pass, as with
no rules, but count as unconfigured, never as no match; a covered interface's misses stay no
match, also in a space (IPv6 here) the tables hold no prefix for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from engine.core.compiler import CompiledTables, compile_ruleset
from engine.core.model import Action, Firewall, IngressBlock, Rule, RuleSet
from engine.kernel import bpfsys
from engine.kernel.abi import NodeCounter, Reason
from tests.kernel.conftest import LO_IFINDEX

pytestmark = [pytest.mark.root, pytest.mark.kernel]

XDP_PASS = 2
V4 = bytes(Ether() / IP(src="192.0.2.40", dst="192.0.2.1") / UDP(dport=7001))
V6 = bytes(Ether() / IPv6(src="2001:db8::40", dst="2001:db8::1") / UDP(dport=7001))


def rules_on(interface: str) -> RuleSet:
    block = IngressBlock(("198.51.100.0/24",), (Rule(1, Action.DENY),))
    return RuleSet((Firewall("elsewhere", (interface,), (block,)),))


@pytest.fixture
def dp(datapath: Any, tables: CompiledTables) -> Iterator[Any]:
    yield datapath
    datapath.write_tables(tables, datapath.generation() + 1)


def counts(dp: Any) -> tuple[int, int]:
    node = dp.node_counters()
    return node[NodeCounter.UNCONFIGURED][0], node[NodeCounter.NO_MATCH][0]


def send(dp: Any, frame: bytes, repeat: int) -> int:
    return bpfsys.prog_test_run(dp.prog_fd, frame, repeat, LO_IFINDEX).retval


def test_no_tables_for_the_interface_passes_and_counts_as_unconfigured(dp: Any) -> None:
    dp.write_tables(compile_ruleset(rules_on("eth-not-here"), {"lo": LO_IFINDEX}), 900)
    assert LO_IFINDEX not in dp.table_ifindexes()
    unconf, nomatch = counts(dp)
    assert send(dp, V4, 5) == XDP_PASS and send(dp, V6, 2) == XDP_PASS
    assert counts(dp) == (unconf + 7, nomatch)
    # a trace still says why it passed: no rule decided it
    assert dp.test_run(V4, LO_IFINDEX)[1].reason == Reason.NO_MATCH

    dp.write_tables(compile_ruleset(rules_on("lo"), {"lo": LO_IFINDEX}), 901)
    assert LO_IFINDEX in dp.table_ifindexes()
    assert send(dp, V4, 3) == XDP_PASS and send(dp, V6, 4) == XDP_PASS  # v6: no v6 prefix
    assert counts(dp) == (unconf + 7, nomatch + 7)
