"""engine.state.store: atomic commits, stale-write refusal, history, corrupt files, pending, locking."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from dataclasses import replace
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from engine.core.compiler import assign_rule_ids
from engine.core.crd import load_yaml
from engine.core.export import firewall_to_dict
from engine.core.model import Action, Rule, RuleSet, add_rule
from engine.errors import StateError
from engine.state.packs import MAX_PACKS, forget_cached_packs
from engine.state.store import Pending, Store, StoredState, author

RULES = """
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web, labels: {team: edge}}
spec:
  nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
  interfaces: [eth0, "ens*"]
  ingress:
  - sourceCIDRs: [192.0.2.0/24, "2001:db8::/32"]
    rules:
    - {order: 10, action: Deny, protocolConfig: {protocol: TCP, tcp: {ports: "8000-8080"}}}
    - {order: 20, action: Allow, protocolConfig: {protocol: UDP, udp: {ports: 53}}}
    - {order: 30, action: Deny, protocolConfig: {protocol: SCTP, sctp: {ports: "1-65535"}}}
    - {order: 40, action: Deny}
  - sourceCIDRs: [198.51.100.0/24]
    rules:
    - {order: 5, action: Allow, protocolConfig: {protocol: ICMP, icmp: {icmpType: 8, icmpCode: 0}}}
    - {order: 6, action: Allow, protocolConfig: {protocol: ICMP, icmp: {icmpType: 3}}}
---
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: v6}
spec:
  interfaces: [eth1]
  ingress:
  - sourceCIDRs: ["2001:db8:1::/48"]
    rules:
    - {order: 1, action: Deny, protocolConfig: {protocol: ICMPv6, icmpv6: {icmpType: 128}}}
"""


def make_state(ruleset: RuleSet, **kw: object) -> StoredState:
    return StoredState(0, ruleset, assign_rule_ids(ruleset), **kw)  # type: ignore[arg-type]


def test_empty_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    assert store.load() is None
    assert store.history() == []
    assert store.get_pending() is None
    assert store.previous_generation(1) is None
    assert not (tmp_path / "state").exists()  # reading creates nothing


def test_commit_round_trips_and_is_private(tmp_path: Path) -> None:
    store = Store(tmp_path / "state")
    rs = load_yaml(RULES)
    state = make_state(rs, mode="audit", interfaces=("eth0", "ens*"), attach_mode="generic")
    new = store.commit(
        state, expected_generation=0, author="alice@node via SSH 1.2.3.4", summary="first"
    )
    assert new.generation == 1 and new.author == "alice@node via SSH 1.2.3.4"
    loaded = store.load()
    assert loaded == new
    assert loaded is not None
    assert loaded.ruleset == rs and loaded.ruleset.semantic_key() == rs.semantic_key()
    assert loaded.ruleset.firewalls[0].node_selector == {
        "matchLabels": {"node-role.kubernetes.io/worker": ""}
    }
    assert loaded.ruleset.firewalls[0].extra_metadata == {"labels": {"team": "edge"}}
    assert loaded.rule_ids == state.rule_ids
    assert all(isinstance(k[1], tuple) for k in loaded.rule_ids)
    assert (loaded.mode, loaded.interfaces, loaded.attach_mode) == (
        "audit",
        ("eth0", "ens*"),
        "generic",
    )
    assert loaded.summary == "first" and loaded.time > 0
    root = tmp_path / "state"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "history").stat().st_mode) == 0o700
    (pack,) = (root / "blocks").iterdir()
    assert stat.S_IMODE((root / "blocks").stat().st_mode) == 0o700
    for path in (root / "state.json", root / "history" / "000001.json", pack):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # no temp files left
    assert sorted(os.listdir(root)) == ["blocks", "history", "lock", "state.json"]
    assert store.load_generation(1) == new
    forget_cached_packs()  # as another process reads it: from the files alone
    again = Store(root).load()
    assert again == new and again.rule_ids == state.rule_ids
    assert again.ruleset.firewalls[0].extra_metadata == {"labels": {"team": "edge"}}
    assert (again.time, again.author, again.summary) == (new.time, new.author, new.summary)


def test_empty_ruleset_round_trips(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit(make_state(RuleSet()), expected_generation=0, author="a", summary="empty")
    loaded = store.load()
    assert loaded is not None and loaded.ruleset == RuleSet() and loaded.rule_ids == {}


def test_stale_generation_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rs = load_yaml(RULES)
    store.commit(make_state(rs), expected_generation=0, author="a", summary="one")
    store.commit(make_state(rs), expected_generation=1, author="b", summary="two")
    with pytest.raises(StateError) as info:
        store.commit(make_state(RuleSet()), expected_generation=1, author="c", summary="stale")
    assert "the rules changed under you (generation 2, you edited 1); reload and retry" in str(
        info.value
    )
    loaded = store.load()
    assert loaded is not None and loaded.generation == 2 and loaded.ruleset == rs


def test_history_and_generations(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rs = RuleSet()
    for gen in range(5):
        rs = add_rule(rs, "web", ("eth0",), ("10.0.0.0/8",), Rule(gen + 1, Action.DENY))
        store.commit(
            make_state(rs), expected_generation=gen, author=f"user{gen}", summary=f"edit {gen}"
        )
    entries = store.history()
    assert [e.generation for e in entries] == [5, 4, 3, 2, 1]
    assert entries[0].author == "user4" and entries[0].summary == "edit 4"
    assert entries[0].time >= entries[-1].time > 0
    assert [e.generation for e in store.history(limit=2)] == [5, 4]
    assert store.previous_generation(5) == 4
    assert store.previous_generation(1) is None
    assert store.load_generation(3).ruleset.rule_count() == 3
    with pytest.raises(StateError, match="generation 9 is not in the history"):
        store.load_generation(9)


def test_corrupt_state_is_reported_and_left_in_place(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit(make_state(load_yaml(RULES)), expected_generation=0, author="a", summary="one")
    store.commit(make_state(RuleSet()), expected_generation=1, author="a", summary="two")
    bad = b'{"format": 1, "generation": 2, "rules'
    (tmp_path / "state.json").write_bytes(bad)
    with pytest.raises(StateError) as info:
        store.load()
    assert str(tmp_path / "state.json") in info.value.message and "corrupt" in info.value.message
    assert info.value.fix
    with pytest.raises(StateError):
        store.commit(make_state(RuleSet()), expected_generation=2, author="a", summary="x")
    assert (tmp_path / "state.json").read_bytes() == bad  # never overwritten silently
    # Repair: the bad file is kept aside, the history's newest generation counts as current.
    new = store.commit(
        make_state(RuleSet()), expected_generation=2, author="a", summary="repair", repair=True
    )
    assert new.generation == 3
    aside = [p for p in os.listdir(tmp_path) if p.startswith("state.json.corrupt-")]
    assert len(aside) == 1 and (tmp_path / aside[0]).read_bytes() == bad
    loaded = store.load()
    assert loaded is not None and loaded.generation == 3


def test_structurally_wrong_state_is_corrupt(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit(make_state(load_yaml(RULES)), expected_generation=0, author="a", summary="one")
    raw = json.loads((tmp_path / "state.json").read_text())
    raw["firewalls"][0]["blocks"][0] = [7, 0]  # a pack the generation does not name
    (tmp_path / "state.json").write_text(json.dumps(raw))
    with pytest.raises(StateError, match="corrupt"):
        store.load()


def test_a_damaged_or_missing_pack_is_corrupt_not_misread(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit(make_state(load_yaml(RULES)), expected_generation=0, author="a", summary="one")
    (pack,) = (tmp_path / "blocks").iterdir()
    pack.write_text(pack.read_text().replace('"Deny"', '"Allow"'))  # valid JSON, other rules
    forget_cached_packs()
    with pytest.raises(StateError, match=f"corrupt: the block pack {pack} its content does not"):
        Store(tmp_path).load()
    pack.unlink()
    forget_cached_packs()
    with pytest.raises(StateError, match="cannot be read"):
        Store(tmp_path).load()


def test_a_pack_removed_by_hand_is_written_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    rs = load_yaml(RULES)
    store.commit(make_state(rs), expected_generation=0, author="a", summary="one")
    (pack,) = (tmp_path / "blocks").iterdir()
    pack.unlink()  # this process still knows its blocks; the next commit must not name it
    store.commit(make_state(rs), expected_generation=1, author="a", summary="two")
    forget_cached_packs()
    loaded = Store(tmp_path).load()
    assert loaded is not None and loaded.generation == 2 and loaded.ruleset == rs


def _format1(state: StoredState) -> dict[str, object]:
    """A generation file as infw wrote it before packs: every rule inline."""
    return {
        "format": 1,
        "generation": state.generation,
        "time": 1.0,
        "author": "old",
        "summary": "written by format 1",
        "restores": None,
        "kind": "change",
        "mode": state.mode,
        "interfaces": list(state.interfaces),
        "attach_mode": state.attach_mode,
        "rule_ids": [[[n, list(c), o], rid] for (n, c, o), rid in state.rule_ids.items()],
        "ruleset": [firewall_to_dict(fw) for fw in state.ruleset.firewalls],
    }


def test_format_1_state_is_read_and_migrated_on_write(tmp_path: Path) -> None:
    rs = load_yaml(RULES)
    old = replace(make_state(rs, mode="audit", interfaces=("eth0",)), generation=1)
    (tmp_path / "history").mkdir(mode=0o700)
    text = json.dumps(_format1(old))
    (tmp_path / "history" / "000001.json").write_text(text)
    (tmp_path / "state.json").write_text(text)
    store = Store(tmp_path)
    with store.lock():  # creates nothing: a read-only format 1 dir stays lockable
        pass
    assert not (tmp_path / "blocks").exists()
    loaded = store.load()
    assert loaded == old and loaded is not None and loaded.rule_ids == old.rule_ids
    assert loaded.next_rule_id == max(old.rule_ids.values()) + 1  # derived: format 1 had none
    assert [h.summary for h in store.history()] == ["written by format 1"]
    edited = add_rule(rs, "web", ("eth0", "ens*"), ("10.0.0.0/8",), Rule(1, Action.DENY))
    store.commit(
        StoredState(0, edited, assign_rule_ids(edited, loaded.rule_ids), mode="audit"),
        expected_generation=1,
        author="a",
        summary="edit",
    )
    assert json.loads((tmp_path / "state.json").read_text())["format"] == 2
    forget_cached_packs()
    store = Store(tmp_path)
    assert store.load_generation(1) == old  # the old generation file is left as it was
    new = store.load()
    assert new is not None and new.ruleset == edited and new.generation == 2
    assert {k: v for k, v in new.rule_ids.items() if k in old.rule_ids} == old.rule_ids


def test_ids_whose_keys_name_no_block_are_kept(tmp_path: Path) -> None:
    rs = load_yaml(RULES)
    ids = {**assign_rule_ids(rs), ("gone", ("10.0.0.0/8",), 3): 77}
    store = Store(tmp_path)
    store.commit(StoredState(0, rs, ids), expected_generation=0, author="a", summary="x")
    forget_cached_packs()
    loaded = Store(tmp_path).load()
    assert loaded is not None and loaded.rule_ids == ids


def test_an_edit_writes_only_the_block_it_changed(tmp_path: Path) -> None:
    rs = RuleSet()
    for i in range(40):
        rs = add_rule(rs, "web", ("eth0",), (f"10.{i}.0.0/16",), Rule(1, Action.DENY))
    store = Store(tmp_path)
    first = store.commit(make_state(rs), expected_generation=0, author="a", summary="x")
    edited = add_rule(rs, "web", ("eth0",), ("10.7.0.0/16",), Rule(2, Action.ALLOW))
    store.commit(
        StoredState(0, edited, assign_rule_ids(edited, first.rule_ids)),
        expected_generation=1,
        author="a",
        summary="y",
    )
    packs = sorted((tmp_path / "blocks").iterdir(), key=lambda p: p.stat().st_size)
    assert len(packs) == 2
    assert len(json.loads(packs[0].read_text())) == 1  # the edit's pack: the one changed block
    assert len(json.loads(packs[1].read_text())) == 40
    forget_cached_packs()
    store = Store(tmp_path)
    assert store.load_generation(1).ruleset == rs
    loaded = store.load()
    assert loaded is not None and loaded.ruleset == edited


def test_many_edits_fold_small_packs_and_keep_every_generation(tmp_path: Path) -> None:
    rs = RuleSet()
    for i in range(50):
        rs = add_rule(rs, "web", ("eth0",), (f"10.{i}.0.0/16",), Rule(1, Action.DENY))
    store = Store(tmp_path)
    state = store.commit(make_state(rs), expected_generation=0, author="a", summary="bulk")
    sets = {1: rs}
    for i in range(MAX_PACKS + 5):
        rs = add_rule(rs, "web", ("eth0",), (f"10.{i}.0.0/16",), Rule(2 + i, Action.ALLOW))
        state = store.commit(
            StoredState(0, rs, assign_rule_ids(rs, state.rule_ids)),
            expected_generation=state.generation,
            author="a",
            summary=f"edit {i}",
        )
        sets[state.generation] = rs
        named = json.loads((tmp_path / "state.json").read_text())["packs"]
        assert len(named) <= MAX_PACKS
    forget_cached_packs()
    store = Store(tmp_path)
    for generation, expected in sets.items():
        assert store.load_generation(generation).ruleset == expected


class _Killed(BaseException):
    """A kill -9 at one point of a commit: no handler below the test catches it."""


def _commit_steps(
    monkeypatch: pytest.MonkeyPatch, kill_at: int | None, unlink: bool = False
) -> list[str]:
    """Count (or kill at) the commit's durable steps: every fsync and rename (and unlink)."""
    steps: list[str] = []
    real_fsync, real_replace, real_unlink = os.fsync, os.replace, os.unlink

    def step(name: str) -> None:
        if kill_at is not None and len(steps) == kill_at:
            raise _Killed(name)
        steps.append(name)

    def fsync(fd: int) -> None:
        step("fsync")
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        step(f"rename {os.path.basename(dst)}")
        real_replace(src, dst)

    def remove(path: str | Path) -> None:
        step("unlink")
        real_unlink(path)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", rename)
    if unlink:
        monkeypatch.setattr(os, "unlink", remove)
    return steps


def test_a_kill_at_any_step_of_a_commit_leaves_the_old_or_the_new_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = load_yaml(RULES)
    edited = add_rule(base, "web", ("eth0", "ens*"), ("203.0.113.0/24",), Rule(9, Action.DENY))

    def setup(root: Path) -> tuple[Store, StoredState]:
        store = Store(root)
        return store, store.commit(make_state(base), expected_generation=0, author="a", summary="x")

    store, first = setup(tmp_path / "count")
    steps = _commit_steps(monkeypatch, None)
    second = store.commit(
        StoredState(0, edited, assign_rule_ids(edited, first.rule_ids)),
        expected_generation=1,
        author="a",
        summary="y",
    )
    monkeypatch.undo()
    assert len(steps) >= 6, steps  # pack, history and state.json: each fsynced and renamed
    for kill_at in range(len(steps)):
        root = tmp_path / f"kill{kill_at}"
        store, first = setup(root)
        _commit_steps(monkeypatch, kill_at)
        with pytest.raises(_Killed):
            store.commit(
                StoredState(0, edited, assign_rule_ids(edited, first.rule_ids)),
                expected_generation=1,
                author="a",
                summary="y",
            )
        monkeypatch.undo()
        forget_cached_packs()  # what a new process finds on disk
        after = Store(root)
        loaded = after.load()
        assert loaded is not None
        assert loaded in (first, second), f"killed before {steps[kill_at]}: a mix"
        assert loaded.rule_ids == (first if loaded == first else second).rule_ids
        for generation in after.generations():  # a history entry never names a lost pack
            after.load_generation(generation)
        # and the store goes on: the next commit builds on what survived
        again = after.commit(
            StoredState(0, edited, assign_rule_ids(edited, loaded.rule_ids)),
            expected_generation=loaded.generation,
            author="a",
            summary="retry",
        )
        assert again.generation == loaded.generation + 1


def _packs(root: Path) -> set[str]:
    return {p.name for p in (root / "blocks").iterdir()}


def _every_generation_loads(root: Path) -> StoredState | None:
    forget_cached_packs()  # what a new process finds on disk
    store = Store(root)
    for generation in store.generations():
        store.load_generation(generation)
    return store.load()


def test_uncommit_removes_the_packs_only_it_named(tmp_path: Path) -> None:
    base = load_yaml(RULES)
    edited = add_rule(base, "web", ("eth0", "ens*"), ("203.0.113.0/24",), Rule(9, Action.DENY))
    store = Store(tmp_path)
    first = store.commit(make_state(base), expected_generation=0, author="a", summary="x")
    kept = _packs(tmp_path)
    store.commit(
        StoredState(0, edited, assign_rule_ids(edited, first.rule_ids)),
        expected_generation=1,
        author="a",
        summary="never reached the kernel",
    )
    assert _packs(tmp_path) > kept  # the edited block went to a pack of its own
    store.uncommit(2)
    assert _packs(tmp_path) == kept, "the taken-back generation's pack is left behind"
    assert _every_generation_loads(tmp_path) == first
    # and the same edit again writes its pack again (this process must not name the old one)
    again = store.commit(
        StoredState(0, edited, assign_rule_ids(edited, first.rule_ids)),
        expected_generation=1,
        author="a",
        summary="y",
    )
    assert _every_generation_loads(tmp_path) == again


def test_prune_removes_what_killed_commits_left_and_nothing_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    first = store.commit(
        make_state(load_yaml(RULES)), expected_generation=0, author="a", summary="x"
    )
    kept = _packs(tmp_path)
    for i in range(3):  # each killed right after its pack's fsync and rename
        edited = add_rule(
            first.ruleset, "web", ("eth0",), (f"203.0.{113 + i}.0/24",), Rule(9, Action.DENY)
        )
        steps = _commit_steps(monkeypatch, 2)
        with pytest.raises(_Killed):
            store.commit(
                StoredState(0, edited, assign_rule_ids(edited, first.rule_ids)),
                expected_generation=1,
                author="a",
                summary="killed",
            )
        monkeypatch.undo()
        assert steps[0] == "fsync" and steps[1].startswith("rename ") and len(steps) == 2
    (tmp_path / "blocks" / f".{'d' * 64}.json.abc.tmp").write_text("half a pack")
    assert len(_packs(tmp_path)) == len(kept) + 4
    assert len(Store(tmp_path).prune()) == 3
    assert _packs(tmp_path) == kept
    assert _every_generation_loads(tmp_path) == first
    assert Store(tmp_path).prune() == []


def test_prune_removes_nothing_when_an_index_cannot_be_read(tmp_path: Path) -> None:
    store = Store(tmp_path)
    first = store.commit(
        make_state(load_yaml(RULES)), expected_generation=0, author="a", summary="x"
    )
    (tmp_path / "blocks" / f"{'0' * 64}.json").write_text("[]")  # named by nobody
    (tmp_path / "history" / "000001.json").write_text("{not json")
    assert store.prune() == []
    assert len(_packs(tmp_path)) == 2
    assert first is not None


def test_a_kill_at_any_step_of_a_prune_leaves_every_generation_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def setup(root: Path) -> tuple[StoredState, set[str]]:
        store = Store(root)
        base = load_yaml(RULES)
        state = store.commit(make_state(base), expected_generation=0, author="a", summary="x")
        edited = add_rule(base, "web", ("eth0",), ("203.0.113.0/24",), Rule(9, Action.DENY))
        state = store.commit(
            StoredState(0, edited, assign_rule_ids(edited, state.rule_ids)),
            expected_generation=1,
            author="a",
            summary="y",
        )
        kept = _packs(root)
        for i in range(3):  # packs named by nobody, as killed commits leave them
            (root / "blocks" / f"{str(i) * 64}.json").write_text("[]")
        return state, kept

    setup(tmp_path / "count")
    steps = _commit_steps(monkeypatch, None, unlink=True)
    Store(tmp_path / "count").prune()
    monkeypatch.undo()
    assert steps.count("unlink") == 3 and "fsync" in steps, steps
    for kill_at in range(len(steps)):
        root = tmp_path / f"kill{kill_at}"
        current, kept = setup(root)
        _commit_steps(monkeypatch, kill_at, unlink=True)
        with pytest.raises(_Killed):
            Store(root).prune()
        monkeypatch.undo()
        assert _every_generation_loads(root) == current, f"killed before {steps[kill_at]}"
        assert kept <= _packs(root)
        Store(root).prune()  # the next prune finishes the job
        assert _packs(root) == kept


def test_lost_state_file_falls_back_to_history(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.commit(make_state(RuleSet()), expected_generation=0, author="a", summary="one")
    store.commit(make_state(load_yaml(RULES)), expected_generation=1, author="a", summary="two")
    os.unlink(tmp_path / "state.json")
    loaded = store.load()
    assert loaded is not None and loaded.generation == 2
    assert (
        store.commit(
            make_state(RuleSet()), expected_generation=2, author="a", summary="three"
        ).generation
        == 3
    )


def test_pending_set_get_clear(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pending = Pending(
        generation=4,
        previous_generation=3,
        deadline=time.time() + 60,
        watchdog_pid=1234,
        author="alice",
    )
    store.set_pending(pending)
    assert store.get_pending() == pending
    assert 59 < pending.remaining() <= 60
    assert Store(tmp_path).get_pending() == pending  # another console sees it
    assert store.clear_pending(expected_generation=5) is False
    assert store.get_pending() == pending
    assert store.clear_pending(expected_generation=4) is True
    assert store.get_pending() is None
    assert store.clear_pending(expected_generation=4) is False
    store.set_pending(pending)
    assert store.clear_pending() is True
    assert store.clear_pending() is False


def test_lock_is_reentrant_in_process_and_exclusive_across(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with store.lock(), store.lock(), Store(tmp_path).lock():
        # The lock is held: a commit from this process still goes through...
        store.commit(make_state(RuleSet()), expected_generation=0, author="a", summary="x")
        # ...while another process times out with the holder's pid.
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        proc = ctx.Process(target=_try_lock, args=(str(tmp_path), queue))
        proc.start()
        message = queue.get(timeout=30)
        proc.join(timeout=30)
    assert message.startswith(f"another infw is applying (pid {os.getpid()} '")
    assert message.endswith("s); retry")  # ... the holder's command line, for Ns
    with store.lock(timeout=0.1):  # released
        pass


def test_lock_excludes_other_threads(tmp_path: Path) -> None:
    import threading

    store = Store(tmp_path)
    results: list[str] = []

    def other() -> None:
        try:
            with store.lock(timeout=0.2):
                results.append("acquired")
        except StateError as exc:
            results.append(exc.message)

    with store.lock():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert len(results) == 1
    assert results[0].startswith(f"another infw is applying (pid {os.getpid()} '")
    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert results[-1] == "acquired"


def _try_lock(state_dir: str, queue: Queue[str]) -> None:
    try:
        with Store(state_dir).lock(timeout=0.3):
            queue.put("acquired")
    except StateError as exc:
        queue.put(exc.message)


def _editor(state_dir: str, name: str, count: int, start: Barrier, conflicts: Queue[int]) -> None:
    """Read, edit, commit; on a stale generation reload and retry (what a console does)."""
    store = Store(state_dir)
    stale = 0
    start.wait(60)  # both editors begin together
    for i in range(count):
        while True:
            current = store.load()
            time.sleep(0.002)  # the operator thinks: the other editor gets its chance
            gen = 0 if current is None else current.generation
            rs = RuleSet() if current is None else current.ruleset
            rs = add_rule(rs, name, ("eth0",), ("10.0.0.0/8",), Rule(i + 1, Action.DENY))
            ids = assign_rule_ids(rs, None if current is None else current.rule_ids)
            try:
                store.commit(
                    StoredState(0, rs, ids),
                    expected_generation=gen,
                    author=name,
                    summary=f"{name} {i}",
                )
                break
            except StateError as exc:
                if "changed under you" not in exc.message and "another infw" not in exc.message:
                    raise
                stale += 1
    conflicts.put(stale)


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    count = 15
    start, conflicts = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_editor, args=(str(tmp_path), name, count, start, conflicts))
        for name in ("alpha", "beta")
    ]
    for proc in procs:
        proc.start()
    stale = [conflicts.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=120)
        assert proc.exitcode == 0
    assert sum(stale) > 0  # the editors really did collide, and the store refused the stale ones
    final = Store(tmp_path).load()
    assert final is not None
    assert final.generation == 2 * count
    for name in ("alpha", "beta"):
        fw = final.ruleset.firewall(name)
        assert fw is not None
        assert [r.order for r in fw.ingress[0].rules] == list(range(1, count + 1))
    assert len(set(final.rule_ids.values())) == 2 * count
    assert [e.generation for e in Store(tmp_path).history(limit=100)] == list(
        range(2 * count, 0, -1)
    )


def test_author_from_environment() -> None:
    text = author(
        {"SUDO_USER": "alice", "USER": "root", "SSH_CONNECTION": "198.51.100.7 1 192.0.2.1 22"}
    )
    assert text.startswith("alice@") and text.endswith(" via SSH 198.51.100.7")
    assert " via SSH" not in author({"USER": "bob"})
    assert author({"USER": "bob"}).startswith("bob@")
    assert Store.author({"USER": "carol"}).startswith("carol@")


def test_bad_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="unknown mode"):
        Store(tmp_path).commit(
            make_state(RuleSet(), mode="loud"), expected_generation=0, author="a", summary="x"
        )


def _commit_forever(state_dir: str, started: Queue[int]) -> None:
    """Commit until killed: generation g holds exactly g rules, spread over many blocks, so
    kills land in pack writes, folds, history and state.json writes alike."""
    store = Store(state_dir)
    current = store.load()
    gen = 0 if current is None else current.generation
    rs = RuleSet() if current is None else current.ruleset
    ids = {} if current is None else current.rule_ids
    started.put(gen)
    while True:
        cidr = f"10.{gen % 40}.0.0/16"
        rs = add_rule(rs, "web", ("eth0",), (cidr,), Rule(gen + 1, Action.DENY))
        ids = assign_rule_ids(rs, ids)
        gen = store.commit(
            StoredState(0, rs, ids), expected_generation=gen, author="k", summary=f"g{gen + 1}"
        ).generation


def test_kill_9_during_commits_leaves_whole_generations(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    last = 0
    for delay in (0.15, 0.4, 0.05, 0.25):
        started: Queue[int] = ctx.Queue()
        proc = ctx.Process(target=_commit_forever, args=(str(tmp_path), started))
        proc.start()
        assert started.get(timeout=60) == last  # it goes on from what survived
        time.sleep(delay)
        proc.kill()
        proc.join(timeout=30)
        forget_cached_packs()
        store = Store(tmp_path)
        loaded = store.load()
        assert loaded is not None and loaded.generation >= last
        assert loaded.ruleset.rule_count() == loaded.generation  # never a mix of two
        assert len(loaded.rule_ids) == loaded.generation
        for generation in store.generations()[-5:]:
            assert store.load_generation(generation).ruleset.rule_count() == generation
        last = loaded.generation
    assert last > 20  # the kills came mid-stream, many commits in
