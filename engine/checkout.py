"""Where this checkout lives: the root `python -m` subprocesses import from, and bpf/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BPF_DIR = ROOT / "bpf"
