"""Shared fixtures for end-to-end tests: the lab (engine.lab) in network namespaces."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from engine.lab.world import LabInfo, lab_down, lab_status, lab_up, stop_traffic

ROOT_REASON = "needs root: network namespaces, veth pairs and raw sockets"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    """A quiet lab (no traffic processes: only the packets a test sends arrive), for one module.

    Torn down at the end of the module, also when a test fails. The lab has fixed names, so
    e2e modules must not run in parallel (no pytest-xdist across them).
    """
    require_root()
    try:
        lab_up(traffic=False)
        stop_traffic()  # a lab left running by someone else may have traffic
        info = lab_status()
        assert info.up, info.problems
        yield info
    finally:
        lab_down()


@pytest.fixture(scope="module")
def fresh_lab() -> Iterator[LabInfo]:
    """Like `lab`, but built from nothing: a lab left up by someone else (with their firewall
    attached to its interfaces, which the guard rightly calls foreign) is taken down first."""
    require_root()
    try:
        lab_down()
        info = lab_up(traffic=False)
        assert info.up, info.problems
        yield info
    finally:
        lab_down()


@pytest.fixture(scope="module")
def lab_with_traffic() -> Iterator[LabInfo]:
    """The lab with its steady traffic mix (20 packets/s per client, 10 minutes at most)."""
    require_root()
    try:
        info = lab_up(rate=20.0, traffic=True, duration=600.0)
        assert info.up, info.problems
        yield info
    finally:
        lab_down()


# ---- a private firewall in the lab's node namespace (test_engine_*.py / test_safety_*.py) ----

PROJECT = Path(__file__).resolve().parents[2]
_T = TypeVar("_T")


def firewall_skip_reason() -> str | None:
    """Why a real firewall cannot be loaded here, or None."""
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_NET_ADMIN, netns)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is missing: apt-get install python3-bpfcc, venv with --system-site-packages"
    from engine.kernel.loader import headers_problem

    return headers_problem()


def _pids_mentioning(*needles: str) -> list[int]:
    """Live processes whose command line contains one of `needles` (not this one)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z" and any(n in cmdline for n in needles):
            found.append(int(entry))
    return found


class LabFirewall:
    """A firewall of the test's own (pin root /sys/fs/bpf/infw-e2e-<pid>-N, state in tmp_path)
    on the lab's node. The test process stays in the host namespace: `node()` runs a call in a
    thread inside infw-node, `script()` runs Python in a child that enters it itself."""

    _serial = 0

    def __init__(self, state_dir: Path) -> None:
        LabFirewall._serial += 1
        self.pin_root = f"/sys/fs/bpf/infw-e2e-{os.getpid()}-{LabFirewall._serial}"
        self.state_dir = str(state_dir)
        self._engines: list[Any] = []
        self._children: list[subprocess.Popen[str]] = []

    def engine(self, **kwargs: Any) -> Any:
        from engine.engine import Engine
        from engine.state.config import NodeConfig

        kwargs.setdefault("config", NodeConfig(event_rate=100_000))
        eng = Engine(self.pin_root, self.state_dir, session=None, **kwargs)
        self._engines.append(eng)
        return eng

    def node(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """fn(*args, **kwargs) in a thread inside the node namespace; its result or exception."""
        from engine.lab.world import NODE_NS, in_namespace

        box: dict[str, Any] = {}

        def run() -> None:
            try:
                with in_namespace(NODE_NS):
                    box["result"] = fn(*args, **kwargs)
            except BaseException as exc:  # re-raised in the caller
                box["error"] = exc

        worker = threading.Thread(target=run, name="in-infw-node")
        worker.start()
        worker.join()
        if "error" in box:
            raise box["error"]
        result: _T = box["result"]
        return result

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
        env["INFW_E2E_PIN_ROOT"] = self.pin_root
        env["INFW_E2E_STATE_DIR"] = self.state_dir
        return env

    def spawn(self, code: str, *args: str) -> subprocess.Popen[str]:
        """Start `python -c code args...`; `ENGINE_PREAMBLE` gives it PIN_ROOT, STATE_DIR and
        engine() (an Engine on this firewall, in infw-node). Killed at teardown if still alive."""
        proc = subprocess.Popen(
            [sys.executable, "-c", ENGINE_PREAMBLE + code, *args],
            cwd=PROJECT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._children.append(proc)
        return proc

    def script(self, code: str, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        proc = self.spawn(code, *args)
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err

    def leftover_processes(self) -> list[int]:
        """Processes still naming this firewall (watchdogs, scripts)."""
        return _pids_mentioning(self.pin_root, self.state_dir)

    def cleanup(self) -> None:
        from engine.lab.world import NODE_NS

        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        for pid in self.leftover_processes():  # watchdogs our engines spawned
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for eng in self._engines:
            dp = eng._datapath
            eng._datapath = None
            if dp is not None:
                with contextlib.suppress(Exception):
                    dp.close()
        if os.path.exists(os.path.join(self.pin_root, "prog")):
            from engine.kernel.datapath import Datapath

            def unload() -> None:
                dp = Datapath.open(self.pin_root)
                if dp is not None:
                    dp.unload()

            if os.path.exists(os.path.join("/run/netns", NODE_NS)):
                with contextlib.suppress(Exception):
                    self.node(unload)
        if os.path.exists(self.pin_root):
            shutil.rmtree(self.pin_root, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.rmdir(self.pin_root)


ENGINE_PREAMBLE = """
import json, os, signal, sys, time
PIN_ROOT = os.environ["INFW_E2E_PIN_ROOT"]
STATE_DIR = os.environ["INFW_E2E_STATE_DIR"]

def engine():
    from engine.state.config import NodeConfig
    from engine.engine import Engine
    return Engine(PIN_ROOT, STATE_DIR, config=NodeConfig(event_rate=100_000), netns="infw-node")
"""


@pytest.fixture
def lab_firewall(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LabFirewall]:
    """A LabFirewall for one test; its processes, pins and state are removed even on failure.
    Use with the `lab` or `fresh_lab` fixture (the lab must be up)."""
    reason = firewall_skip_reason()
    if reason:
        pytest.skip(reason)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)  # no operator session to guard here
    tmp_path: Path = request.getfixturevalue("tmp_path")
    fw = LabFirewall(tmp_path / "state")
    try:
        yield fw
    finally:
        fw.cleanup()
        shutil.rmtree(fw.state_dir, ignore_errors=True)
