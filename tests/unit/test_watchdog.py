"""engine.state.watchdog: the confirm watchdog fires at its deadline, even when its console is gone."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import engine.state.watchdog as watchdog
from engine.errors import InfwError, StateError
from engine.state.store import Pending, Store

REPO = Path(__file__).resolve().parents[2]
LOG = logging.getLogger("test.watchdog")

HOOK = '''
import json, os, time
from engine.state.store import Store

def rollback(state_dir, pin_root, generation):
    """Stands in for Engine.rollback_pending: clear the marker, then record the call."""
    Store(state_dir).clear_pending(generation)
    tmp = os.path.join(state_dir, "rolled-back.tmp")
    with open(tmp, "w") as fh:
        json.dump({"generation": generation, "pin_root": pin_root, "time": time.time(),
                   "pid": os.getpid()}, fh)
    os.rename(tmp, os.path.join(state_dir, "rolled-back"))
'''

# The console: spawns the watchdog, publishes the marker (as Engine.apply does), reports the
# watchdog's pid, then hangs until it is killed.
PARENT = """
import sys, time
from engine.state.store import Pending, Store
from engine.state.watchdog import spawn_watchdog

state_dir, delay = sys.argv[1], float(sys.argv[2])
deadline = time.time() + delay
pid = spawn_watchdog(state_dir, "/sys/fs/bpf/infw-test", 7, deadline, None,
                     rollback_hook="fake_rollback:rollback")
Store(state_dir).set_pending(Pending(7, 6, deadline, pid, "tester"))
print(pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie may linger if init here does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: object, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def started() -> Iterator[list[int]]:
    """Pids of processes a test started; any still running are killed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def start_console(
    tmp_path: Path, delay: float, started: list[int]
) -> tuple[subprocess.Popen[str], int]:
    (tmp_path / "hooks").mkdir(exist_ok=True)
    (tmp_path / "hooks" / "fake_rollback.py").write_text(textwrap.dedent(HOOK))
    state = tmp_path / "state"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(tmp_path / "hooks")]))
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(state), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    started.append(parent.pid)
    assert parent.stdout is not None
    pid = int(parent.stdout.readline())
    started.append(pid)
    return parent, pid


def test_detached_watchdog_fires_after_its_console_is_killed(
    tmp_path: Path, started: list[int]
) -> None:
    parent, pid = start_console(tmp_path, 2.0, started)
    state = tmp_path / "state"
    assert alive(pid)
    # Not the console's child, and in a session of its own (whose leader has exited, so it can
    # never get a controlling terminal): neither a hangup nor a kill of the console's process
    # group reaches it.
    assert os.getsid(pid) not in (os.getsid(parent.pid), os.getsid(0))
    assert os.getpgid(pid) != os.getpgid(parent.pid)
    with open(f"/proc/{pid}/stat") as fh:
        assert int(fh.read().rsplit(")", 1)[1].split()[1]) != parent.pid  # ppid
    parent.kill()  # SIGKILL: no cleanup runs in the console
    parent.wait()
    os.kill(pid, signal.SIGHUP)  # an SSH hangup
    time.sleep(0.3)
    assert alive(pid)
    assert not (state / "rolled-back").exists()
    assert wait_for(lambda: (state / "rolled-back").exists(), 10)
    record = (state / "rolled-back").read_text()
    assert '"generation": 7' in record and "/sys/fs/bpf/infw-test" in record
    assert f'"pid": {pid}' in record
    assert Store(state).get_pending() is None
    assert wait_for(lambda: not alive(pid), 5)
    log = (state / "watchdog.log").read_text()
    assert "armed: generation 7 reverts to 6" in log
    assert "not confirmed" in log and "rollback done" in log


def test_confirmed_change_stops_the_watchdog_quietly(tmp_path: Path, started: list[int]) -> None:
    parent, pid = start_console(tmp_path, 3.0, started)
    state = tmp_path / "state"
    log = state / "watchdog.log"
    assert wait_for(lambda: log.exists() and "armed" in log.read_text(), 5)
    assert Store(state).clear_pending(7)  # `infw confirm`
    assert wait_for(lambda: not alive(pid), 5)
    parent.kill()
    parent.wait()
    assert not (state / "rolled-back").exists()
    assert "cleared or replaced" in (state / "watchdog.log").read_text()


# -- watch() in-process: the decisions, without processes ------------------------------------


def pend(store: Store, generation: int, deadline: float, pid: int | None = None) -> None:
    store.set_pending(
        Pending(generation, generation - 1, deadline, os.getpid() if pid is None else pid, "t")
    )


def test_watch_rolls_back_at_the_deadline(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pend(store, 3, time.time() + 0.3)
    calls: list[float] = []
    assert watchdog.watch(store, 3, time.time() + 99, lambda: calls.append(time.time()), LOG)
    assert len(calls) == 1


def test_watch_follows_an_extended_deadline(tmp_path: Path) -> None:
    store = Store(tmp_path)
    start = time.time()
    pend(store, 3, start + 0.3)
    calls: list[float] = []

    def extend() -> None:
        time.sleep(0.1)
        pend(store, 3, start + 0.8)

    import threading

    thread = threading.Thread(target=extend)
    thread.start()
    assert watchdog.watch(store, 3, start + 0.3, lambda: calls.append(time.time()), LOG)
    thread.join()
    assert calls and calls[0] >= start + 0.8


def test_watch_exits_when_replaced_by_another_watchdog_or_generation(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pend(store, 3, time.time() + 5, pid=999999)
    calls: list[float] = []
    original = watchdog.ARM_GRACE
    watchdog.ARM_GRACE = 0.3
    try:
        assert not watchdog.watch(store, 3, time.time() + 5, lambda: calls.append(0), LOG)
        pend(store, 4, time.time() + 5)
        assert not watchdog.watch(store, 3, time.time() + 5, lambda: calls.append(0), LOG)
    finally:
        watchdog.ARM_GRACE = original
    assert calls == []


def test_watch_retries_a_busy_rollback_while_still_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    pend(store, 3, time.time() + 0.1)
    attempts: list[int] = []
    monkeypatch.setattr(watchdog, "RETRY_DELAY", 0.01)

    def busy_then_ok() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise StateError("another infw is applying (pid 1); retry")

    assert watchdog.watch(store, 3, time.time() + 99, busy_then_ok, LOG)
    assert len(attempts) == 3


def test_spawn_reports_a_watchdog_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(InfwError, match=r"did not start: .*No module named 'no_such_hook'"):
        watchdog.spawn_watchdog(
            str(tmp_path), "/sys/fs/bpf/x", 1, time.time(), None, rollback_hook="no_such_hook:f"
        )
    with pytest.raises(InfwError, match="did not start"):
        watchdog.spawn_watchdog(
            str(tmp_path), "/sys/fs/bpf/x", 1, time.time(), "infw-no-such-netns"
        )


def test_a_state_dir_gone_or_replaced_is_no_confirmation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state dir unmounted, deleted or recreated while pending: its empty marker confirms
    nothing. The kernel is reverted from memory at the deadline, and the store records the
    rollback once the dir is back."""
    import threading

    monkeypatch.setattr(watchdog, "RETRY_DELAY", 0.05)
    home = tmp_path / "state"
    store = Store(home)
    pend(store, 3, time.time() + 0.6)
    done: list[str] = []
    result: list[bool] = []

    def run() -> None:
        result.append(
            watchdog.watch(
                store, 3, time.time() + 99, lambda: done.append("store"), LOG,
                lambda: done.append("kernel"),
            )
        )  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.3)  # armed
    home.rename(tmp_path / "away")
    home.mkdir()  # another, empty state dir at the same path: no marker in it
    time.sleep(0.6)  # past the deadline
    assert thread.is_alive(), "an empty state dir was taken for a confirmation"
    assert done == ["kernel"], "the kernel waits for no disk"
    home.rmdir()
    (tmp_path / "away").rename(home)  # the disk is back: the rollback is recorded
    thread.join(5)
    assert result == [True] and done == ["kernel", "store"]


def test_an_unreadable_marker_is_no_confirmation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    pend(store, 3, time.time() + 0.4)
    real = store.get_pending
    reads: list[int] = []

    def failing() -> Pending | None:
        reads.append(1)
        if len(reads) > 1:
            raise StateError("cannot read pending.json: Input/output error", "check the disk")
        return real()

    monkeypatch.setattr(store, "get_pending", failing)
    calls: list[int] = []
    assert watchdog.watch(store, 3, time.time() + 99, lambda: calls.append(1), LOG)
    assert calls == [1]


def test_a_stopped_lock_holder_does_not_hold_the_kernel_revert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console (or the agent) SIGSTOPped while it holds the store lock: the rollback cannot
    take the lock, and the kernel is reverted from memory instead of waiting for it."""
    monkeypatch.setattr(watchdog, "RETRY_FOR", 0.5)
    monkeypatch.setattr(watchdog, "RETRY_DELAY", 0.05)
    store = Store(tmp_path)
    pend(store, 3, time.time() + 0.2)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, signal
            fd = os.open({str(store.lock_path)!r}, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.kill(os.getpid(), signal.SIGSTOP)
        """)]
    )  # fmt: skip
    try:
        assert wait_for(lambda: watchdog.is_stopped(holder.pid), 5.0)
        reverted: list[int] = []

        def rollback() -> None:
            with store.lock(timeout=0.1):
                raise AssertionError("the lock is held")

        with pytest.raises(StateError, match="another infw is applying"):
            watchdog.watch(store, 3, time.time() + 99, rollback, LOG, lambda: reverted.append(1))
        assert reverted == [1], "the kernel waited for a stopped lock holder"
    finally:
        holder.kill()
        holder.wait()
