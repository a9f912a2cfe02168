"""Operator-parity notes for single-rule edits (issue #10): what `add`/`edit` touch gets the
notes an apply of the whole file prints about it, and nothing about the rules it left alone."""

from __future__ import annotations

from pathlib import Path

from engine.core.model import RuleSet, add_rule, remove_rule
from engine.core.parity import changed_rules, meaning_notes
from engine.core.ruleline import parse_rule_line
from engine.engine import Engine
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig


def with_lines(ruleset: RuleSet, *lines: str) -> RuleSet:
    for line in lines:
        p = parse_rule_line(line)
        ruleset = add_rule(ruleset, p.firewall, p.interfaces, p.cidrs, p.rule)
    return ruleset


STORED = with_lines(
    RuleSet(),
    "deny tcp 1000-2000 from 192.168.0.0/16 on eth0 order 1 firewall web",
    "deny tcp 443 from 192.168.1.0/24 on eth0 order 2 firewall web",
    "deny tcp 80 from 10.0.0.0/8 on eth0 order 3 firewall web",
)


def test_an_added_rule_gets_its_notes_only() -> None:
    new = with_lines(STORED, "deny udp 5000-5010 from 172.16.0.0/12 on eth0 order 4 firewall web")
    notes = meaning_notes(new, changed_rules(STORED, new))
    assert len(notes) == 1 and "5000-5010" in notes[0], notes
    whole = " ".join(meaning_notes(new))  # what apply of the whole file prints
    assert "1000-2000" in whole and "192.168.1.0/24 inside 192.168.0.0/16" in whole


def test_a_rule_nested_in_a_stored_prefix_is_named_with_it() -> None:
    new = with_lines(STORED, "deny tcp 22 from 10.1.0.0/16 on eth0 order 5 firewall web")
    (note,) = meaning_notes(new, changed_rules(STORED, new))
    assert "10.1.0.0/16 inside 10.0.0.0/8" in note
    assert "192.168.1.0/24" not in note, "a pair the edit did not touch"


def test_a_wider_prefix_added_over_stored_ones_names_them() -> None:
    new = with_lines(STORED, "deny tcp 22 from 192.0.0.0/2 on eth0 order 6 firewall web")
    (note,) = meaning_notes(new, changed_rules(STORED, new))
    assert "192.168.0.0/16 inside 192.0.0.0/2" in note


def test_nesting_on_another_interface_is_not_a_note() -> None:
    new = with_lines(STORED, "deny tcp 22 from 10.1.0.0/16 on eth9 order 1 firewall other")
    assert meaning_notes(new, changed_rules(STORED, new)) == []


def test_edit_names_the_edited_rule_delete_names_nothing() -> None:
    edited = remove_rule(STORED, "web", ("10.0.0.0/8",), 3)
    edited = with_lines(edited, "deny tcp 80-81 from 10.0.0.0/8 on eth0 order 3 firewall web")
    focus = changed_rules(STORED, edited)
    assert [(name, rule.order) for name, _, rule in focus] == [("web", 3)]
    (note,) = meaning_notes(edited, focus)
    assert "80-81" in note
    deleted = remove_rule(STORED, "web", ("192.168.0.0/16",), 1)
    assert changed_rules(STORED, deleted) == frozenset()
    assert meaning_notes(deleted, frozenset()) == []


# ------------------------------------------------------------- through the engine (add/edit)


def engine_with(tmp_path: Path, *lines: str) -> Engine:
    engine = Engine(
        str(tmp_path / "pins"), str(tmp_path / "state"), config=NodeConfig(), session=None,
        kernel=FakeKernel(),
    )  # fmt: skip
    engine.attach(["eth0"])
    for line in lines:
        engine.add_rule(line, confirm_timeout=0)
    return engine


def test_add_prints_what_apply_of_the_same_rules_prints_about_the_rule(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, "deny tcp 80 from 10.0.0.0/8 on eth0 order 3 firewall web")
    line = "deny tcp 1000-2000 from 10.1.0.1/16 on eth0 order 4 firewall web"
    added = engine.add_rule(line, confirm_timeout=0).warnings
    text = "\n".join(added)
    assert "10.1.0.1/16 has host bits set" in text
    assert "ports 1000-2000" in text
    assert "10.1.0.0/16 inside 10.0.0.0/8" in text
    # the same notes as apply of the whole file that holds these rules
    path = tmp_path / "web.yaml"
    path.write_text(engine.export_yaml().replace("10.1.0.0/16", "10.1.0.1/16"))
    _, applied = engine.validate_file(str(path))
    for note in added:
        body = note.split(": ", 2)[-1] if note.startswith("rule '") else note
        assert any(body in w for w in applied), (note, applied)


def test_edit_and_the_forms_dry_run_carry_the_notes_of_the_edited_rule(tmp_path: Path) -> None:
    engine = engine_with(
        tmp_path,
        "deny tcp 80 from 10.0.0.0/8 on eth0 order 3 firewall web",
        "deny tcp 7000-7010 from 192.168.0.0/16 on eth0 order 1 firewall web",
    )
    rid = next(r.rule_id for r in engine.rule_rows() if r.order == 3)
    dry = engine.check_rule("deny tcp 80-81 from 10.0.0.0/8 order 3", rid)
    edited = engine.edit_rule(rid, "deny tcp 80-81 from 10.0.0.0/8 order 3", confirm_timeout=0)
    for warnings in (dry, list(edited.warnings)):
        text = "\n".join(warnings)
        assert "ports 80-81" in text and "7000-7010" not in text, warnings
        # 'on' left out: the rule takes its object's interfaces, and no warning about a '*'
        assert "'*' is a glob" not in text, warnings
    assert engine.delete_rule(rid, confirm_timeout=0).warnings == ()
