"""What the kernel LPM tries serve instead of the arrays is said before it lands: compiling
names the source prefixes and rule lists left to the tries, and apply, the dry run and the
impact preview carry it as a warning (the fallback is several times slower a packet)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.core.compiler import compile_ruleset, slow_path_note
from engine.core.model import Action, PortRange, Protocol, Rule
from engine.engine import Engine
from engine.kernel import abi
from engine.kernel.fake import FakeKernel
from tests.unit.strategies import NODE_INTERFACES
from tests.unit.test_apply_attaches import RULES
from tests.unit.test_apply_attaches import make as make_engine
from tests.unit.test_compiler import single_block

RULE = "deny tcp 8080 from 192.0.2.0/24 on {iface} order 10"


def test_tables_that_fit_the_arrays_have_no_note() -> None:
    rs = single_block(("10.0.0.0/8",), (Rule(1, Action.DENY, Protocol.TCP, PortRange(80, 80)),))
    assert slow_path_note(compile_ruleset(rs, NODE_INTERFACES)) is None


def test_a_budget_the_tables_overflow_names_what_goes_to_the_tries() -> None:
    rs = single_block(
        ("10.0.0.0/8", "2001:db8::/32", "2001:db8:1::/48"),
        (Rule(1, Action.DENY, Protocol.TCP, PortRange(80, 80)),),
    )
    tables = dataclasses.replace(compile_ruleset(rs, NODE_INTERFACES), node_budget=1)
    note = slow_path_note(tables)
    assert note is not None
    assert "cannot hold 1 source prefix and 1 rule list (" in note
    assert "kernel LPM tries" in note and "merge CIDRs" in note


def make(tmp_path: Path, ifindex: int) -> Engine:
    return make_engine(tmp_path, FakeKernel({"lo": 1, "big0": ifindex}))


def slow(warnings: tuple[str, ...] | list[str]) -> list[str]:
    return [w for w in warnings if w.startswith("slow path:")]


def test_an_interface_beyond_the_root_arrays_is_warned_on_apply_and_dry_run(
    tmp_path: Path,
) -> None:
    # an ifindex past the arrays' roots (a long-lived node's) is served by the LPM tries
    e = make(tmp_path, abi.ROOT_IFINDEXES + 5)
    assert slow(e.check_rule(RULE.format(iface="big0")))
    assert slow(e.preview_add(RULE.format(iface="big0")).warnings)
    added = e.add_rule(RULE.format(iface="big0"), confirm_timeout=0)
    assert slow(added.warnings) == [
        "slow path: the fast arrays cannot hold 1 source prefix (they take 8,192 trie nodes "
        "and 65,536 rule lists a generation, interfaces up to ifindex 65,535); the kernel LPM "
        "tries serve them, several times slower a packet; merge CIDRs into wider prefixes or "
        "put rules in fewer lists"
    ]


def test_a_small_ifindex_gets_no_slow_path_warning(tmp_path: Path) -> None:
    e = make(tmp_path, 7)
    assert slow(e.add_rule(RULE.format(iface="big0"), confirm_timeout=0).warnings) == []


FILE = RULES.replace("IFACES", "big0")  # one Deny of 8080/tcp from 192.0.2.0/24


def test_diff_of_a_file_carries_the_warnings_apply_gives(tmp_path: Path) -> None:
    # `infw diff FILE` and `apply --dry-run FILE` show what apply would warn of, not only the
    # flows: the same slow-path warning, and nothing applied
    e = make(tmp_path, abi.ROOT_IFINDEXES + 5)
    path = tmp_path / "web.yaml"
    path.write_text(FILE)
    generation = e.state().generation
    preview = e.preview_file(str(path))
    assert len(slow(preview.warnings)) == 1
    assert e.state().generation == generation
    applied = e.apply_file(str(path), confirm_timeout=0)
    assert slow(applied.warnings) == slow(preview.warnings)
