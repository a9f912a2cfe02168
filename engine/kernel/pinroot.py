"""The pin root: the bpffs directory that holds a firewall's program and maps.

/sys/fs/bpf is mode 1777, so anyone can create /sys/fs/bpf/infw before infw does (on a fresh
node or after a reboot). A pin root that someone else owns, or that others can write, lets them
remove the pins (orphaning the running firewall) or swap them: infw creates it 0700 and refuses
one it did not make that way, naming the command that fixes it.
"""

from __future__ import annotations

import os
import stat

from engine.errors import StateError

MODE = 0o700


def pin_root_problem(path: str) -> str | None:
    """Why the existing pin root at path is unsafe to use, or None (also None when absent)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot inspect it: {exc.strerror}"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != 0:
        return f"it is owned by uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"it is writable by others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _refusal(path: str, problem: str) -> StateError:
    return StateError(
        f"refusing pin root {path}: {problem}; whoever can write it can remove or replace "
        "the firewall's pins",
        f"if nothing of yours is pinned there, remove it (rm -r {path}) and let infw create it; "
        f"else chown root:root {path} && chmod 700 {path}",
    )


def check_pin_root(path: str) -> None:
    """Raise StateError when the existing pin root at path is unsafe (absent is fine)."""
    problem = pin_root_problem(path)
    if problem is not None:
        raise _refusal(path, problem)


def ensure_pin_root(path: str) -> None:
    """Create the pin root 0700 if it is missing, then check it."""
    try:
        os.mkdir(path, MODE)
    except FileExistsError:
        pass
    except FileNotFoundError as exc:
        raise StateError(
            f"cannot create pin root {path}: {os.path.dirname(path) or '.'} does not exist",
            "mount bpffs there (mount -t bpf bpf /sys/fs/bpf) or pick another --pin-root",
        ) from exc
    except PermissionError as exc:
        raise StateError(
            f"cannot create pin root {path}: permission denied", "run as root (sudo)"
        ) from exc
    check_pin_root(path)
