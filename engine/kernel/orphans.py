"""infw's own programs found by name when their pins are gone, and pinned again (adopted).

Removing the files under a pin root does not unload anything: an attached program keeps
running, and keeps its maps, with no path left to reach them. Those programs are found like
`bpftool prog list` finds them (program ids through bpf(), the name the kernel keeps), and their
maps through the program's own map ids, so `attach`/`restore`/`apply` can pin them again and
`status` can say that the firewall runs orphaned instead of "not loaded".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Collection

from engine.errors import DatapathError, PrivilegeError
from engine.kernel import bpfsys
from engine.kernel.abi import ALL_MAPS, LEGACY_IMAGE_MAPS, PROG_PIN
from engine.kernel.links import prog_name, scan_attached
from engine.kernel.loader import PROG_NAME
from engine.kernel.pinroot import ensure_pin_root
from engine.kernel.seam import Orphan

BPFFS = "/sys/fs/bpf"


def find_orphans(pinned_prog_id: int | None, names: Collection[str] | None = None) -> list[Orphan]:
    """infw programs attached here (to one of `names`, when given) other than the pinned one."""
    by_prog: dict[int, list[str]] = {}
    named: dict[int, bool] = {}
    pinned = pinned_prog_ids()  # another firewall's program (another --pin-root) is no orphan
    for att in scan_attached():
        if att.prog_id == pinned_prog_id or (names is not None and att.ifname not in names):
            continue
        if att.prog_id in pinned:
            continue
        if att.prog_id not in named:
            try:
                named[att.prog_id] = prog_name(att.prog_id) == PROG_NAME
            except DatapathError:
                named[att.prog_id] = False  # unloaded meanwhile
        if named[att.prog_id]:
            by_prog.setdefault(att.prog_id, []).append(att.ifname)
    return [Orphan(pid, tuple(sorted(ifs))) for pid, ifs in sorted(by_prog.items())]


def pinned_prog_ids(bpffs: str = BPFFS) -> set[int]:
    """Ids of the infw programs pinned anywhere under bpffs (one or two levels down, where pin
    roots live): those belong to a firewall, whatever their pin root."""
    found: set[int] = set()
    try:
        tops = [os.path.join(bpffs, n) for n in os.listdir(bpffs)]
    except OSError:
        return found
    dirs = [d for d in tops if os.path.isdir(d)]
    for top in list(dirs):
        with contextlib.suppress(OSError):
            dirs += [p for n in os.listdir(top) if os.path.isdir(p := os.path.join(top, n))]
    for d in dirs:
        path = os.path.join(d, PROG_PIN)
        if not os.path.exists(path):
            continue
        try:
            fd = bpfsys.obj_get(path)
        except (DatapathError, PrivilegeError):
            continue
        try:
            found.add(bpfsys.prog_info(fd).id)
        except DatapathError:
            pass
        finally:
            os.close(fd)
    return found


def adopt(pin_root: str, prog_id: int) -> None:
    """Pin program prog_id and its maps under pin_root, where nothing is pinned: after this,
    Datapath.open(pin_root) finds the running firewall with its rules and counters."""
    ensure_pin_root(pin_root)
    present = [n for n in (PROG_PIN, *ALL_MAPS) if os.path.exists(os.path.join(pin_root, n))]
    if present:
        raise DatapathError(
            f"cannot adopt program {prog_id}: {pin_root} already holds {', '.join(present)}",
            "attach again: infw replaces an older program of its own without --force",
        )
    prog_fd = bpfsys.prog_fd_by_id(prog_id)
    map_fds: dict[str, int] = {}
    try:
        for map_id in bpfsys.prog_map_ids(prog_fd):
            fd = bpfsys.map_fd_by_id(map_id)
            name = bpfsys.map_info(fd).name
            if name in ALL_MAPS and name not in map_fds:
                map_fds[name] = fd
            else:
                os.close(fd)
        # a build has each image (trie_nodes, table_roots) or the maps it replaced: the
        # other kind is not missing
        absent = {n for n, into in LEGACY_IMAGE_MAPS.items() if into in map_fds}
        absent |= {into for n, into in LEGACY_IMAGE_MAPS.items() if n in map_fds}
        missing = sorted(set(ALL_MAPS) - set(map_fds) - absent)
        if missing:
            raise DatapathError(
                f"program {prog_id} is not a complete infw build (no {', '.join(missing)})",
                "detach it (ip link set dev IFACE xdp off) and attach again",
            )
        pinned: list[str] = []
        try:
            for name in map_fds:
                path = os.path.join(pin_root, name)
                bpfsys.obj_pin(map_fds[name], path)
                pinned.append(path)
            # the program last: its pin is what marks a firewall as loaded
            bpfsys.obj_pin(prog_fd, os.path.join(pin_root, PROG_PIN))
        except BaseException:
            for path in pinned:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
    finally:
        for fd in map_fds.values():
            os.close(fd)
        os.close(prog_fd)
