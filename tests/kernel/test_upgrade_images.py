"""A reload onto the pins of an older build that kept its trie nodes one per map element (up
to aaa687a) or its roots one per element of three maps (src_roots, list_roots, host_regions;
up to 3e92919): the new program's single-element trie_nodes and table_roots start empty, so
the live tables are copied into them before any packet reaches the new program. Checked with
packets: the verdicts under the older program, right after the reload (nothing rewritten
yet), and after the next write; the copied maps are unpinned once nothing runs the older
program, and unload removes the rest."""

from __future__ import annotations

import ctypes as ct
import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from engine.core.compiler import CompiledTables, compile_ruleset
from engine.core.crd import load_yaml
from engine.core.frame import build_frame
from engine.core.model import Action, Firewall, IngressBlock, PortRange, Protocol, Rule
from engine.kernel import bpfsys, loader, pins
from engine.kernel.abi import LEGACY_IMAGE_MAPS, MAP_NODES, MAP_ROOTS, NodeImage
from engine.kernel.datapath import Datapath
from tests.kernel.conftest import LO_IFINDEX, PIN_BASE, RULES_YAML
from tests.kernel.test_datapath import CASES

pytestmark = [pytest.mark.root, pytest.mark.kernel]

REPO = Path(__file__).resolve().parents[2]
XDP_DROP, XDP_PASS = 1, 2
# older build -> the images its loader created before compiling
OLDER_BUILDS = {
    "aaa687a": {},  # the last build with one element per trie node
    "3e92919": {MAP_NODES: ct.sizeof(NodeImage)},  # the last with per-root maps
}
# sources held in the exact-prefix tables (cuckoo regions), beside the standard rule set
HOSTS = tuple(f"198.18.0.{i}/32" for i in range(1, 200))
HOST_FRAMES = {
    "listed host": (build_frame("198.18.0.7", "10.0.0.1", 17, dport=9), XDP_DROP),
    "other host": (build_frame("198.18.0.250", "10.0.0.1", 17, dport=9), XDP_PASS),
}


def older_source(commit: str, into: Path) -> Path:
    for name in ("infw.bpf.c", "maps.h", "parsing.h"):
        shown = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{commit}:bpf/{name}"],
            capture_output=True,
            check=False,
        )
        if shown.returncode:
            pytest.skip(f"needs the git history of {commit} (a full clone)")
        (into / name).write_bytes(shown.stdout)
    return into / "infw.bpf.c"


def verdicts(dp: Datapath) -> dict[str, int]:
    frames = {name: bytes(frame) for name, (frame, *_) in CASES.items()}
    frames |= {name: frame for name, (frame, _) in HOST_FRAMES.items()}
    return {
        name: bpfsys.prog_test_run(dp.prog_fd, frame, 1, LO_IFINDEX).retval
        for name, frame in frames.items()
    }


def with_hosts() -> CompiledTables:
    """The standard rule set with a block of hosts on lo, which the exact-prefix tables hold."""
    ruleset = load_yaml(RULES_YAML)
    hosts = Firewall(
        "hosts",
        ("lo",),
        (IngressBlock(HOSTS, (Rule(5, Action.DENY, Protocol.UDP, PortRange(9, 9)),)),),
    )
    ruleset = dataclasses.replace(ruleset, firewalls=(*ruleset.firewalls, hosts))
    # a budget of one node leaves the hosts no room in the trie
    return dataclasses.replace(compile_ruleset(ruleset, {"lo": LO_IFINDEX}), node_budget=1)


@pytest.mark.parametrize("commit", sorted(OLDER_BUILDS))
def test_reload_onto_older_pins_keeps_every_verdict(
    kernel_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, commit: str
) -> None:
    root = os.path.join(PIN_BASE, f"older-{commit}")
    tables = with_hosts()
    expected = {name: action for name, (_, action, *_) in CASES.items()}
    expected |= {name: action for name, (_, action) in HOST_FRAMES.items()}
    with monkeypatch.context() as m:  # what that build's loader created before compiling
        m.setattr(loader, "IMAGES", OLDER_BUILDS[commit])
        dp = Datapath.load(root, older_source(commit, tmp_path))
    try:
        assert MAP_ROOTS not in dp.maps
        assert (MAP_NODES in dp.maps) == (MAP_NODES in OLDER_BUILDS[commit])
        dp.write_tables(tables, 1)  # through the per-element maps, as that build wrote them
        assert dp.tables.last_hosts is not None and dp.tables.last_hosts.regions
        assert verdicts(dp) == expected
        legacy = [n for n in LEGACY_IMAGE_MAPS if pins.pinned(root, n)]
        assert legacy
        dp.close()
        dp = Datapath.load(root)
        assert MAP_NODES in dp.maps and MAP_ROOTS in dp.maps
        assert verdicts(dp) == expected, "the copied tables decide as the old ones did"
        assert not [n for n in legacy if pins.pinned(root, n)], "copied maps stay pinned"
        dp.write_tables(tables, 2)
        assert verdicts(dp) == expected
    finally:
        dp.unload()
    assert not os.path.exists(root)
