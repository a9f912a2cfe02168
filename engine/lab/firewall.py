"""The lab's firewall: what `infw lab up` and `infw-tui --lab` attach in the lab's node
namespace (the example rules on the node's veths), and where it is pinned and stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.checkout import ROOT
from engine.lab.world import LAB_PIN_ROOT, LAB_STATE_DIR, NODE_NS

if TYPE_CHECKING:
    from engine.engine import Engine

LAB_RULES = str(ROOT / "examples" / "lab.yaml")
LAB_ATTACH = "infw-n*"  # the node ends of the clients' veths
# The lab's clients send a few packets a second: sample 1 in 4 so its flows show within
# seconds, at a cost a real node's default (1 in 32) avoids.
LAB_FLOW_SAMPLE = 4


def lab_connection() -> tuple[str, str, str]:
    """(pin root, state dir, netns) of the lab's firewall: what --lab means, for every console."""
    return LAB_PIN_ROOT, LAB_STATE_DIR, NODE_NS


def start_lab_firewall(engine: Engine, progress: Callable[[str], None]) -> list[str]:
    """A lab without a firewall gets the example rules, attached; returns the interfaces ours
    runs on (a running one is left as it is)."""
    from engine.core import crd

    if engine.loaded():
        return [v.name for v in engine.status().interfaces if v.ours]
    progress(f"applying {LAB_RULES}")
    engine.apply(crd.load_file(LAB_RULES), confirm_timeout=0, summary="lab rules")
    attached = [v.name for v in engine.attach([LAB_ATTACH], progress=progress)]
    engine.set_flow_sample(LAB_FLOW_SAMPLE)
    return attached
