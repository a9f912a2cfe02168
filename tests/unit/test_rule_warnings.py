"""A one-rule edit reports the rule line's own warnings (its admission and operator-parity notes,
engine.core.parity), as validate does for a file: in the apply's result, the dry run and the
impact preview, which the CLI, the REPL and the TUI form show (issue #10)."""

from __future__ import annotations

from pathlib import Path

from engine.engine import Engine
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig

ODD = "deny tcp 80-90 from 198.51.100.7/24 on eth0 order 150"


def make(tmp_path: Path) -> Engine:
    return Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(),
        session=None,
        kernel=FakeKernel({"lo": 1, "eth0": 2}),
    )


def kinds(warnings: tuple[str, ...] | list[str]) -> set[str]:
    found = set()
    for w in warnings:
        for kind, text in (
            ("host bits", "host bits set"),
            ("order", "orders 1-99"),
            ("range", "end port"),
            ("glob", "is a glob"),
            ("any", "has no protocol"),
        ):
            if text in w:
                found.add(kind)
    return found


def test_add_and_edit_results_carry_the_lines_warnings(tmp_path: Path) -> None:
    e = make(tmp_path)
    added = e.add_rule(ODD, confirm_timeout=0)
    assert kinds(added.warnings) == {"host bits", "order", "range"}
    (row,) = e.rule_rows()
    edited = e.edit_rule(
        row.rule_id, "deny from 198.51.100.0/24 on eth0 order 150", confirm_timeout=0
    )
    assert kinds(edited.warnings) == {"order", "any"}
    clean = e.add_rule("deny tcp 8080 from 192.0.2.0/24 on eth0 order 10", confirm_timeout=0)
    assert kinds(clean.warnings) == set()


def test_dry_run_and_preview_give_the_same_warnings_and_apply_nothing(tmp_path: Path) -> None:
    e = make(tmp_path)
    e.add_rule("deny tcp 8080 from 192.0.2.0/24 on eth0 order 10", confirm_timeout=0)
    generation = e.state().generation
    assert kinds(e.check_rule(ODD)) == {"host bits", "order", "range"}
    preview = e.preview_add(ODD)
    assert kinds(preview.warnings) == {"host bits", "order", "range"}
    assert preview.to_json()["warnings"] == list(preview.warnings)
    (row,) = e.rule_rows()
    assert kinds(
        e.preview_edit(row.rule_id, "deny tcp 8080-8090 from 192.0.2.0/24 order 10").warnings
    ) == {"range"}
    assert e.state().generation == generation


def test_a_line_without_on_is_not_warned_for_the_stand_in_glob(tmp_path: Path) -> None:
    e = make(tmp_path)
    e.add_rule("deny tcp 8080 from 192.0.2.0/24 on eth0 order 10", confirm_timeout=0)
    # no 'on': the rule takes its object's interfaces (eth0), not the parser's '*'
    assert "glob" not in kinds(e.check_rule("deny tcp 9000 from 192.0.2.0/24 order 20"))
    # its object's own glob is warned, because that is what the rule gets
    e.add_rule("deny tcp 23 from 203.0.113.0/24 on eth* order 10 firewall g", confirm_timeout=0)
    assert "glob" in kinds(e.check_rule("deny tcp 9000 from 203.0.113.0/24 order 20 firewall g"))
