"""A reload onto the pins of a build that kept its trie nodes one per map element (up to
aaa687a): the new program's single-element trie_nodes starts empty, so the live tables'
nodes are copied into it before any packet reaches the new program. Checked with packets:
the verdicts under the older program, right after the reload (nothing rewritten yet), and
after the next write; unload then removes both maps."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.core.compiler import CompiledTables
from engine.kernel import bpfsys, loader
from engine.kernel.abi import MAP_LEGACY_NODES, MAP_NODES
from engine.kernel.datapath import Datapath
from tests.kernel.conftest import LO_IFINDEX, PIN_BASE
from tests.kernel.test_datapath import CASES

pytestmark = [pytest.mark.root, pytest.mark.kernel]

LEGACY_COMMIT = "aaa687a"  # the last build with one element per trie node
REPO = Path(__file__).resolve().parents[2]


def legacy_source(into: Path) -> Path:
    for name in ("infw.bpf.c", "maps.h", "parsing.h"):
        shown = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{LEGACY_COMMIT}:bpf/{name}"],
            capture_output=True,
            check=False,
        )
        if shown.returncode:
            pytest.skip(f"needs the git history of {LEGACY_COMMIT} (a full clone)")
        (into / name).write_bytes(shown.stdout)
    return into / "infw.bpf.c"


def verdicts(dp: Datapath) -> dict[str, int]:
    return {
        name: bpfsys.prog_test_run(dp.prog_fd, bytes(frame), 1, LO_IFINDEX).retval
        for name, (frame, *_) in CASES.items()
    }


def test_reload_onto_per_node_pins_keeps_every_verdict(
    tables: CompiledTables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = os.path.join(PIN_BASE, "legacy-nodes")
    expected = {name: action for name, (_, action, *_) in CASES.items()}
    with monkeypatch.context() as m:  # that build's loader made no trie_nodes
        m.setattr(loader, "ensure_node_image", lambda pin_root: None)
        dp = Datapath.load(root, legacy_source(tmp_path))
    try:
        assert MAP_NODES not in dp.maps and MAP_LEGACY_NODES in dp.maps
        dp.write_tables(tables, 1)  # through the per-node map, as that build wrote them
        assert verdicts(dp) == expected
        dp.close()
        dp = Datapath.load(root)
        assert MAP_NODES in dp.maps
        assert verdicts(dp) == expected, "the copied nodes decide as the old ones did"
        dp.write_tables(tables, 2)
        assert verdicts(dp) == expected
    finally:
        dp.unload()
    assert not os.path.exists(root)
