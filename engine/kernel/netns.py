"""The one home for setns(2): entering network namespaces, and keeping the bpffs pins reachable
when infw runs under `ip netns exec`.

setns(2) with CLONE_NEWNET is per thread; with CLONE_NEWNS it needs a single-threaded process.

`ip netns exec` gives the command a private mount namespace with a fresh sysfs on /sys, so
/sys/fs/bpf is empty there (a new bpffs mount would be a new, empty instance too). The pins
live in the host's mount namespace; rejoining it keeps the network namespace we were given,
so interfaces are still the namespace's own (netlink does not depend on /sys).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator

BPF_FS_MAGIC = 0xCAFE4A11
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"  # where `ip netns` names namespaces
THREAD_NETNS = "/proc/thread-self/ns/net"  # /proc/self names the thread-group leader


def setns_fd(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling thread (CLONE_NEWNET) or process (CLONE_NEWNS) into fd's namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def open_netns(name: str) -> int:
    """A descriptor of named namespace `name` (or a path); never creates one, so a typo is an
    error instead of a new, empty namespace."""
    path = name if "/" in name else os.path.join(NETNS_DIR, name)
    return os.open(path, os.O_RDONLY | os.O_CLOEXEC)


def enter(name: str) -> int:
    """Move the calling thread into network namespace `name` for good; returns its inode."""
    fd = open_netns(name)
    try:
        setns_fd(fd)
        return os.fstat(fd).st_ino
    finally:
        os.close(fd)


def current_inode() -> int:
    return os.stat(THREAD_NETNS).st_ino


@contextlib.contextmanager
def inside(name: str) -> Iterator[int]:
    """The block runs with the calling thread in network namespace `name`, then returns to the
    one it was in (sockets, links and attaches made meanwhile belong to `name`)."""
    home = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    try:
        inode = enter(name)
        try:
            yield inode
        finally:
            setns_fd(home)
    finally:
        os.close(home)


def _is_bpffs(path: str) -> bool:
    return _statfs_type(path) == BPF_FS_MAGIC


def _statfs_type(path: str) -> int:
    class Statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]

    libc = ctypes.CDLL(None, use_errno=True)
    buf = Statfs()
    if libc.statfs(path.encode(), ctypes.byref(buf)) != 0:
        return 0
    return int(buf.f_type) & 0xFFFFFFFF


def rejoin_host_mounts(pin_root: str) -> bool:
    """If the pin root's bpffs is hidden by a private mount namespace, join PID 1's.

    Returns True when it switched. Must run before the process starts threads.
    """
    bpffs = os.path.dirname(pin_root.rstrip("/")) or "/"
    if _is_bpffs(bpffs):
        return False
    # setns(CLONE_NEWNS) moves the cwd to the new namespace's root; relative paths must keep
    # meaning the caller's directory (`cd dir; ip netns exec NS infw validate rules.yaml`).
    try:
        cwd: int | None = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        cwd = None
    try:
        for pid in _ancestors():
            try:
                if os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
                    continue
                fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                setns_fd(fd, CLONE_NEWNS)
            except OSError:
                continue
            finally:
                os.close(fd)
            if cwd is not None:
                os.fchdir(cwd)
            if _is_bpffs(bpffs):
                return True
        return False
    finally:
        if cwd is not None:
            os.close(cwd)


def _ancestors() -> list[int]:
    """Our parent chain, nearest first (the shell that ran `ip netns exec` sees the host mounts);
    PID 1 last. Some sandboxes refuse PID 1's namespace, hence the walk."""
    chain: list[int] = []
    pid = os.getppid()
    while pid > 1 and len(chain) < 64:
        chain.append(pid)
        try:
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    chain.append(1)
    return chain
