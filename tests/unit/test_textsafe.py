"""Untrusted text reaches no terminal raw (issue #15): printable(), the stored author and
summary, and a lock holder named with its pid, command, state and age."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.model import RuleSet
from engine.core.textsafe import printable
from engine.errors import StateError
from engine.state.store import Store, StoredState, author, describe_holder


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("alice", "alice"),
        ("eth0", "eth0"),
        ("\x1b[2J\x1b]0;owned\x07", "\\x1b[2J\\x1b]0;owned\\x07"),
        ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),
        ("x\x9by", "x\\x9by"),  # C1 CSI: one byte that acts like ESC [
        ("ab\u202edc", "ab\\u202edc"),  # bidi override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("bad\udcffbyte", "bad\\udcffbyte"),  # a surrogateescape'd file name byte
        ("café ✓", "café ✓"),  # ordinary non-ASCII stays readable
    ],
)
def test_printable_escapes_what_a_terminal_would_act_on(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_author_from_a_hostile_environment_is_escaped() -> None:
    env = {"SUDO_USER": "root\x1b[2J", "SSH_CONNECTION": "198.51.100.7\x1b]0;x\x07 1 2 3"}
    text = author(env)
    assert "\x1b" not in text and "\x07" not in text
    assert text.startswith("root\\x1b[2J@")


def test_history_stores_and_shows_escaped_summaries(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    state = StoredState(0, RuleSet(), {})
    store.commit(
        state, expected_generation=0, author="eve\x1b[31m", summary="apply x\n2 forged line"
    )
    entry = store.history()[0]
    assert entry.author == "eve\\x1b[31m" and entry.summary == "apply x\\x0a2 forged line"
    # an entry written raw by an older infw is escaped on the way out
    raw = (tmp_path / "history").glob("*.json")
    path = next(raw)
    path.write_text(path.read_text().replace("eve\\\\x1b[31m", "eve\\u001b[31m"))
    assert "\x1b" not in store.history()[0].author


def _hold_lock(tmp_path: Path, pid_text: str) -> int:
    store = Store(str(tmp_path))
    store._ensure_dirs()
    fd = os.open(store.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.ftruncate(fd, 0)
    os.pwrite(fd, pid_text.encode(), 0)
    return fd


def test_lock_error_names_a_stopped_holder(tmp_path: Path) -> None:
    code = (
        "import sys, time; from engine.state.store import Store; s = Store(sys.argv[1])\n"
        "with s.lock():\n    print('held', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout and proc.stdout.readline().strip() == "held"
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(StateError) as info, Store(str(tmp_path)).lock(timeout=0.1):
            pass
        text = str(info.value)
        assert f"pid {proc.pid}" in text and "STOPPED" in text and "import sys" in text
        assert f"kill -CONT {proc.pid}" in info.value.fix
    finally:
        proc.kill()
        proc.wait()


def test_lock_error_names_the_real_holder_not_the_stale_pid_in_the_file(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    fd = _hold_lock(tmp_path, gone + "\n")  # held here; the file names a pid long gone
    try:
        with pytest.raises(StateError) as info, Store(str(tmp_path)).lock(timeout=0.05):
            pass
        assert f"pid {os.getpid()} " in str(info.value) and gone not in str(info.value)
    finally:
        os.close(fd)


def test_lock_error_names_a_holder_that_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /proc/locks names nobody, the pid in the file is all there is; a gone one says so."""
    import engine.kernel.ringbuf as ringbuf

    monkeypatch.setattr(ringbuf, "lock_holders", lambda path: set())
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    fd = _hold_lock(tmp_path, gone + "\n")
    try:
        with pytest.raises(StateError) as info, Store(str(tmp_path)).lock(timeout=0.05):
            pass
        assert f"pid {gone}, which is no longer running" in str(info.value)
        assert "fuser" in info.value.fix
    finally:
        os.close(fd)


def test_holder_age_is_shown() -> None:
    who, _ = describe_holder(os.getpid(), time.time() - 185)
    assert f"pid {os.getpid()}" in who and "for 3m05s" in who
