"""Keep the bpffs pins reachable when infw runs under `ip netns exec`.

`ip netns exec` gives the command a private mount namespace with a fresh sysfs on /sys, so
/sys/fs/bpf is empty there (a new bpffs mount would be a new, empty instance too). The pins
live in the host's mount namespace; rejoining it keeps the network namespace we were given,
so interfaces are still the namespace's own (netlink does not depend on /sys).
"""

from __future__ import annotations

import ctypes
import os

BPF_FS_MAGIC = 0xCAFE4A11
CLONE_NEWNS = 0x00020000


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
    for pid in _ancestors():
        try:
            if os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino:
                continue
            fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
        except OSError:
            continue
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            if libc.setns(fd, CLONE_NEWNS) != 0:
                continue
        finally:
            os.close(fd)
        os.chdir("/")  # the old cwd belongs to the mount namespace we left
        if _is_bpffs(bpffs):
            return True
    return False


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
