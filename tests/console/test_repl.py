"""The REPL through prompt_toolkit's pipe input: commands, completion, help, errors, toolbar.

Every test runs against the real Engine: with nothing loaded (an unloaded pin root, a
temporary state directory and a fixed interface list), or, for what needs a loaded firewall (a
pending confirmation, counters, events, trace), on a FakeNode: the lab over the fake kernel.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import fragment_list_to_text
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from console.commands import EventFilter, UsageError
from console.repl import ReplCompleter, Toolbar, default_history_path, file_history, run_repl
from engine.core.crd import load_yaml
from engine.engine import Engine
from engine.errors import StateError
from engine.state.config import NodeConfig
from engine.views import (
    DropEvent,
    RuleRow,
    Status,
)
from tests.console.tuikit import make_node

pytestmark = pytest.mark.console

IFACES = {"lo": 1, "eth0": 2, "eth1": 3}
RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web}
spec:
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: TCP, tcp: {ports: "8000-8080"}}
      action: Deny
    - order: 20
      protocolConfig: {protocol: ICMP, icmp: {icmpType: 8}}
      action: Allow
"""


# ------------------------------------------------------------------ harness


def repl(engine: Any, text: str, history: Any = None) -> tuple[str, str, int]:
    """Type `text` into a REPL session; returns (stdout, stderr, exit code)."""
    out, err = io.StringIO(), io.StringIO()
    with create_pipe_input() as inp:
        inp.send_text(text)
        code = run_repl(
            engine,
            input=inp,
            output=DummyOutput(),
            out=out,
            err=err,
            history=history if history is not None else InMemoryHistory(),
        )
    return out.getvalue(), err.getvalue(), code


def completions(engine: Any, text: str) -> list[str]:
    completer = ReplCompleter(lambda: engine)
    return [c.text for c in completer.get_completions(Document(text, len(text)), CompleteEvent())]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The real engine with nothing loaded: rules go to the store only."""
    yield Engine(
        f"/sys/fs/bpf/infw-repltest-{os.getpid()}",
        str(tmp_path / "state"),
        config=NodeConfig(),
        interfaces=lambda: dict(IFACES),
        session=None,
    )


@pytest.fixture
def with_rules(engine: Engine, tmp_path: Path) -> Engine:
    engine.apply(load_yaml(RULES), confirm_timeout=0)
    return engine


# ------------------------------------------------------------------ commands through the REPL


def test_status_and_rules_against_the_real_engine(with_rules: Engine) -> None:
    out, err, code = repl(with_rules, "status\nrules\nexit\n")
    assert code == 0
    assert "generation  1" in out and "rules 2" in out
    assert "NOT LOADED" in out
    assert "8000-8080" in out and "DENY" in out and "ALLOW" in out
    assert "bye: the firewall keeps running" in out
    # nothing is loaded: the rules come from the store, and the console says so
    assert err.startswith("note: stored rules, no counters (firewall unreachable: ")


def test_add_edit_delete_change_the_store(engine: Engine) -> None:
    out, err, _ = repl(
        engine, "add deny tcp 9000 from 192.0.2.0/24 on eth0 order 10\nrules --json\nexit\n"
    )
    assert "applied generation 1" in out, err
    rows = json.loads(next(line for line in out.splitlines() if line.startswith("[")))
    assert [(r["order"], r["match"], r["action"]) for r in rows] == [(10, "9000", "Deny")]
    rid = rows[0]["id"]
    out, err, _ = repl(
        engine, f"edit {rid} allow udp 53 from 192.0.2.0/24 on eth0 order 10\nhistory\nexit\n"
    )
    assert "applied generation 2" in out, err
    assert engine.rule_rows()[0].protocol == "UDP"
    assert f"edit rule {rid}" in out
    out, err, _ = repl(engine, f"delete {engine.rule_rows()[0].rule_id}\nexit\n")
    assert "applied generation 3" in out, err
    assert engine.rule_rows() == []


def test_add_and_its_dry_run_print_the_parity_warnings(engine: Engine) -> None:
    line = "deny tcp 80-90 from 198.51.100.7/24 on eth0 order 150"
    out, err, _ = repl(engine, f"add --dry-run {line}\nexit\n")
    assert "dry run: nothing was applied" in out + err and engine.rule_rows() == []
    for text in ("has host bits set", "orders 1-99", "end port"):
        assert any(text in ln for ln in out.splitlines() if ln.startswith("warning:")), text
    out, err, _ = repl(engine, f"add {line}\nexit\n")
    assert "applied generation 1" in out, err
    warned = [ln for ln in out.splitlines() if "warning:" in ln]
    assert any("host bits set" in ln for ln in warned) and any("end port" in ln for ln in warned)


def test_bad_input_prints_the_error_and_the_repl_continues(with_rules: Engine) -> None:
    before = with_rules.export_yaml()
    script = (
        "stauts\n"  # unknown command
        "add deny tcp 99999 from 192.0.2.0/24 on eth0 order 5\n"  # validation
        "add deny tcp 22 from 192.0.2.0/24 on eth0 order 5\n"  # the guard: fail-safe port
        "delete 999\n"  # unknown id
        "delete x\n"  # not a number
        "mode sideways\n"
        "trace --iface eth0\n"  # missing options
        "events --filter color=red\n"
        "validate /nonexistent.yaml\n"
        "add 'unclosed\n"
        "status\n"  # still alive
        "exit\n"
    )
    out, err, code = repl(with_rules, script)
    assert code == 0
    assert "unknown command 'stauts'" in err and "'status'" in err
    assert "ports" in err and "99999" in err
    assert "22/tcp (SSH)" in err and "--force" in err
    assert "no rule with id 999" in err
    assert "rule id 'x' is not a positive number" in err
    assert "invalid choice: 'sideways'" in err
    assert "required" in err and "--src" in err
    assert "unknown key 'color'" in err
    assert "cannot read file" in err
    assert "cannot read the line" in err
    assert all(line.startswith(("infw: error: ", "  - ")) for line in err.splitlines())
    assert "generation  1" in out  # the last status ran
    assert with_rules.export_yaml() == before  # nothing changed


def test_help_lists_commands_and_explains_one(engine: Engine) -> None:
    out, _, _ = repl(engine, "help\nhelp trace\nadd --help\n? mode\nexit\n")
    for name in ("status", "rules", "add", "apply", "trace", "events", "metrics", "lab"):
        assert f"  {name} " in out
    assert "usage: trace" in out and "--icmp-type" in out and "examples:" in out
    assert "trace --iface eth0 --src 192.0.2.7 --proto TCP --dport 8080" in out
    assert "usage: add" in out and "deny tcp 8000-8080 from 192.0.2.0/24 on eth0 order 10" in out
    assert "usage: mode" in out
    assert "infw trace" not in out  # REPL examples are written as typed in the REPL


def test_quit_and_ctrl_d_leave(engine: Engine) -> None:
    assert repl(engine, "quit\n")[2] == 0
    out, _, code = repl(engine, "\x04")
    assert code == 0 and "bye" in out


def test_history_is_kept_in_a_file(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "history"
    repl(engine, "status\nexit\n", history=FileHistory(str(path)))
    assert "status" in path.read_text()


def test_history_file_through_a_symlink_or_not_ours_is_not_used(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "history"
    link.symlink_to(target)
    err = io.StringIO()
    assert isinstance(file_history(link, err), InMemoryHistory)
    assert "it is a symlink" in err.getvalue()
    mine = tmp_path / "mine"
    assert isinstance(file_history(mine, io.StringIO()), FileHistory)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o600
    if os.geteuid() == 0:  # someone else's file: not read, not written
        os.chown(mine, 65534, 65534)
        err = io.StringIO()
        assert isinstance(file_history(mine, err), InMemoryHistory)
        assert "not a regular file owned by you" in err.getvalue()


def test_default_history_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_history_path() == tmp_path / ".local" / "state" / "infw" / "history"


# ------------------------------------------------------------------ with a loaded firewall (FakeNode)


def test_pending_apply_shows_the_repl_confirm_command_and_the_goodbye_warning() -> None:
    node = make_node()
    out, err, _ = repl(node.engine, "add deny tcp 9 from 192.0.2.0/24 order 3 firewall lab\nexit\n")
    assert "pending: run 'confirm' within" in out, err
    assert "still pending" in err and "infw confirm" in err
    assert node.engine.pending() is not None
    out, err, _ = repl(node.engine, "confirm\nexit\n")
    assert "confirmed generation 3" in out and "still pending" not in err
    assert node.engine.pending() is None


def test_stats_events_and_trace_render() -> None:
    node = make_node()
    node.advance(1.0)
    node.other_console().set_mode("audit")
    node.advance(1.0)
    out, _, _ = repl(
        node.engine,
        "stats\nevents\nevents --json\ntrace --iface infw-n1 --src 192.0.2.7 "
        "--proto tcp --dport 8080\nexit\n",
    )
    totals = node.engine.stats().totals
    assert re.search(rf"denied +{totals.denied[0]} ", out)
    assert re.search(rf"would deny \(audit\) +{totals.would_deny[0]} ", out)
    assert re.search(r"192\.0\.2\.\d+:40\d+ -> 192\.0\.2\.1:8080", out)
    assert "WOULD DENY" in out and "vlan 100" in out
    assert "kernel and reference agree" in out
    (call,) = node.called("trace_packet")
    req = call[1][0]
    assert (req.interface, req.src, req.proto, req.dport) == ("infw-n1", "192.0.2.7", "TCP", 8080)


def test_trace_disagreement_is_loud() -> None:
    node = make_node()
    node.disagree()
    out, err, _ = repl(
        node.engine, "trace --iface infw-n1 --src 192.0.2.7 --proto TCP --dport 8080\nexit\n"
    )
    assert "MISMATCH" in out and "MISMATCH" in err


DENIED = DropEvent(
    0.0, "eth0", 1, "DENY", "TCP", "192.0.2.7", "192.0.2.1", 40000, 8080, None, None, 0, 74
)
AUDITED = DropEvent(
    0.0, "eth1", 2, "WOULD DENY", "ICMP", "198.51.100.9", "192.0.2.1", None, None, 8, 0, 100, 98
)


def test_event_filter() -> None:
    node = make_node()
    node.other_console().set_mode("audit")
    node.advance(1.0)
    udp = next(r.rule_id for r in node.engine.rule_rows() if r.match == "5000-5010")
    out, _, _ = repl(node.engine, f"events --filter rule={udp} --filter verdict=would-deny\nexit\n")
    assert "198.51.100." in out and ":5000" in out and "192.0.2.1:8080" not in out
    flt = EventFilter.parse("proto=TCP src=192.0.2.0/24 iface=eth* dport=8000-8100")
    assert flt(DENIED) and not flt(AUDITED)
    with pytest.raises(UsageError):
        EventFilter.parse("src=not-a-net")


def test_toolbar_shows_mode_generation_rules_and_countdown() -> None:
    node = make_node()
    node.other_console().add_rule("deny tcp 9 from 192.0.2.0/24 order 3 firewall lab")
    start = node.clock()
    now = [start]
    bar = Toolbar(lambda: node.engine, clock=lambda: now[0])
    text = fragment_list_to_text(bar())
    assert "ENFORCE" in text and "gen 3" in text and "9 rules" in text and "infw-n1" in text
    assert "PENDING gen 3" in text and "within 60s" in text
    now[0] = start + 10
    assert "within 50s" in fragment_list_to_text(bar())
    node.other_console().set_mode("audit", force=True)
    now[0] = start + 12
    assert "AUDIT" in fragment_list_to_text(bar())


def test_toolbar_survives_a_failing_engine() -> None:
    class Broken:
        def status(self) -> Status:
            raise StateError("state is corrupt", "see the log")

    text = fragment_list_to_text(Toolbar(lambda: Broken())())
    assert "status unavailable" in text and "state is corrupt" in text


# ------------------------------------------------------------------ completion


def test_complete_commands(engine: Engine) -> None:
    assert "status" in completions(engine, "st") and "stats" in completions(engine, "st")
    assert "exit" in completions(engine, "ex") and "export" in completions(engine, "ex")
    assert len(completions(engine, "")) > 20


def test_complete_options_interfaces_and_values(engine: Engine) -> None:
    assert "--follow" in completions(engine, "events --f")
    assert "--filter" in completions(engine, "events --f")
    assert completions(engine, "attach e") == ["eth0", "eth1"]
    assert completions(engine, "attach --mode ") == ["auto", "native", "generic"]
    assert completions(engine, "trace --iface l") == ["lo"]
    assert "ICMPv6" in completions(engine, "trace --iface eth0 --proto I")
    assert completions(engine, "mode ") == ["enforce", "audit"]
    assert completions(engine, "lab d") == ["down"]
    assert completions(engine, "help tr") == ["trace"]
    assert "proto=" in completions(engine, "events --filter p")
    assert completions(engine, "events --filter proto=U") == ["UDP"]


def test_complete_rule_ids(with_rules: Engine) -> None:
    ids = sorted(str(r.rule_id) for r in with_rules.rule_rows())
    assert sorted(completions(with_rules, "delete ")) == ids
    assert sorted(completions(with_rules, "edit ")) == ids
    completer = ReplCompleter(lambda: with_rules)
    metas = [
        c.display_meta_text for c in completer.get_completions(Document("delete "), CompleteEvent())
    ]
    assert any("8000-8080" in m for m in metas)


def test_complete_rule_lines(engine: Engine) -> None:
    assert completions(engine, "add ") == ["allow", "deny"]
    assert "tcp" in completions(engine, "add deny ") and "from" in completions(engine, "add deny ")
    assert completions(engine, "add deny tcp 80 from 192.0.2.0/24 on e") == ["eth0", "eth1"]
    assert completions(engine, "add deny tcp 80 from 192.0.2.0/24 on eth0,e") == ["eth0", "eth1"]
    assert "order" in completions(engine, "add deny tcp 80 from 192.0.2.0/24 on eth0 ")
    assert "type" in completions(engine, "add allow icmp from 192.0.2.0/24 ")
    assert completions(engine, "add deny tcp 80 from ") == []  # a CIDR: nothing to guess
    assert completions(engine, "edit 3 ") == ["allow", "deny"]


def test_complete_file_paths(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    got = completions(engine, "apply ")
    assert "rules.yaml" in got and "sub" in got and "notes.txt" not in got
    assert "notes.txt" in completions(engine, "export -o ")
    assert completions(engine, "validate ru") == ["les.yaml"]


def test_completion_with_a_failing_engine_offers_nothing() -> None:
    class Broken:
        def interfaces(self) -> dict[str, int]:
            raise OSError("netlink is gone")

        def rule_rows(self) -> list[RuleRow]:
            raise StateError("corrupt")

    assert completions(Broken(), "attach ") == []
    assert completions(Broken(), "delete ") == []


def test_unwritable_history_falls_back_to_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = io.StringIO()
    history = file_history(blocker / "infw" / "history", err=err)
    assert isinstance(history, InMemoryHistory)
    assert "no history across sessions" in err.getvalue()
