"""XDP on network interfaces (netlink, in the caller's network namespace): which programs are
attached where, and attaching, replacing and detaching ours without touching foreign ones."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from engine.errors import DatapathError
from engine.kernel import bpfsys
from engine.kernel.loader import PROG_NAME

XDP_MODES = {"native": bpfsys.XDP_FLAGS_DRV_MODE, "generic": bpfsys.XDP_FLAGS_SKB_MODE}
# IFLA_XDP_ATTACHED: pyroute2 decodes it to a name (older versions leave the number)
_ATTACHED_MODES: dict[int | str, str] = {
    1: "native",
    2: "generic",
    3: "offload",
    4: "multi",
    "xdp": "native",
    "xdpgeneric": "generic",
    "xdpoffload": "offload",
    "xdpmulti": "multi",
}


@dataclass(frozen=True)
class XdpAttachment:
    ifname: str
    ifindex: int
    mode: str  # native, generic, offload
    prog_id: int


def ifindex_of(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise DatapathError(f"no interface named {ifname!r} in this network namespace") from exc


def scan_attached() -> list[XdpAttachment]:
    """Every XDP program attached in the current network namespace (netlink via pyroute2)."""
    from pyroute2 import IPRoute

    found: list[XdpAttachment] = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            xdp = link.get_attr("IFLA_XDP")
            if not xdp:
                continue
            ifname = link.get_attr("IFLA_IFNAME")
            attached = _ATTACHED_MODES.get(xdp.get_attr("IFLA_XDP_ATTACHED") or 0, "")
            if attached == "multi":  # several modes at once: each has its own id
                for attr, mode in (
                    ("IFLA_XDP_DRV_PROG_ID", "native"),
                    ("IFLA_XDP_SKB_PROG_ID", "generic"),
                    ("IFLA_XDP_HW_PROG_ID", "offload"),
                ):
                    if xdp.get_attr(attr):
                        found.append(XdpAttachment(ifname, link["index"], mode, xdp.get_attr(attr)))
            elif attached:
                prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") or 0
                found.append(XdpAttachment(ifname, link["index"], attached, prog_id))
    return found


def prog_name(prog_id: int) -> str:
    fd = bpfsys.prog_fd_by_id(prog_id)
    try:
        return bpfsys.prog_info(fd).name
    finally:
        os.close(fd)


def _safe_prog_name(prog_id: int) -> str:
    try:
        return prog_name(prog_id)
    except DatapathError:
        return "?"


def is_ours(prog_id: int, our_id: int) -> bool:
    """Our program, or an older build of it (the kernel keeps the function name)."""
    if prog_id == our_id:
        return True
    try:
        return prog_name(prog_id) == PROG_NAME
    except DatapathError:
        return False


def take_over(prog_fd: int, prog_id: int, old_fd: int) -> None:
    """Move every interface running the program old_fd onto prog_fd, each atomically."""
    old_id = bpfsys.prog_info(old_fd).id
    if old_id == prog_id:
        return
    for att in scan_attached():
        if att.prog_id == old_id and att.mode in XDP_MODES:
            bpfsys.xdp_attach(att.ifindex, prog_fd, XDP_MODES[att.mode], old_prog_fd=old_fd)


def attach(prog_fd: int, prog_id: int, ifname: str, mode: str = "auto", force: bool = False) -> str:
    """Attach to ifname; returns the mode used (native or generic). Replaces an older infw
    program atomically; a foreign program only with force."""
    if mode not in ("auto", *XDP_MODES):
        raise DatapathError(f"unknown XDP mode {mode!r}", "use native, generic or auto")
    ifindex = ifindex_of(ifname)
    current = [a for a in scan_attached() if a.ifindex == ifindex]
    if not current:
        return _attach_new(prog_fd, ifname, ifindex, mode)
    att = current[0]
    if att.prog_id == prog_id and mode in ("auto", att.mode):
        return att.mode
    if not force and not is_ours(att.prog_id, prog_id):
        raise DatapathError(
            f"{ifname} already runs a foreign XDP program (id {att.prog_id}, "
            f"{_safe_prog_name(att.prog_id)!r}, {att.mode} mode)",
            "detach it first, or pass --force to replace it",
        )
    if att.mode not in XDP_MODES:
        raise DatapathError(
            f"{ifname} runs an XDP program in {att.mode} mode",
            "detach it first (infw does not offload)",
        )
    if mode in ("auto", att.mode):
        old_fd = bpfsys.prog_fd_by_id(att.prog_id)
        try:  # atomic swap: the kernel checks the old program is still the one attached
            bpfsys.xdp_attach(ifindex, prog_fd, XDP_MODES[att.mode], old_prog_fd=old_fd)
        finally:
            os.close(old_fd)
        return att.mode
    # a mode change cannot be atomic: the kernel runs one mode at a time per device
    bpfsys.xdp_detach(ifindex, XDP_MODES[att.mode])
    return _attach_new(prog_fd, ifname, ifindex, mode)


def _attach_new(prog_fd: int, ifname: str, ifindex: int, mode: str) -> str:
    flags = bpfsys.XDP_FLAGS_UPDATE_IF_NOEXIST
    if mode != "auto":
        bpfsys.xdp_attach(ifindex, prog_fd, flags | XDP_MODES[mode])
        return mode
    try:
        bpfsys.xdp_attach(ifindex, prog_fd, flags | XDP_MODES["native"])
        return "native"
    except DatapathError as native_error:
        try:
            bpfsys.xdp_attach(ifindex, prog_fd, flags | XDP_MODES["generic"])
        except DatapathError as exc:
            raise DatapathError(
                f"cannot attach to {ifname} in native ({native_error}) or generic mode ({exc})"
            ) from exc
        return "generic"


def detach(prog_id: int, ifname: str) -> None:
    """Remove our program from ifname; a foreign program there is left alone (and named)."""
    ifindex = ifindex_of(ifname)
    for att in scan_attached():
        if att.ifindex != ifindex:
            continue
        if not is_ours(att.prog_id, prog_id):
            raise DatapathError(
                f"{ifname} runs a foreign XDP program (id {att.prog_id}), not infw's: left in place"
            )
        fd = bpfsys.prog_fd_by_id(att.prog_id)
        try:
            bpfsys.xdp_detach(ifindex, XDP_MODES[att.mode], old_prog_fd=fd)
        finally:
            os.close(fd)


# --- tc egress: the filter that records the node's own flows (replies on) ------------------

EGRESS_NAME = "infw_egress"  # the function name; tc shows it as the filter's name
EGRESS_PRIO = 49152  # infw's filter priority on clsact egress: one filter per interface
_CLSACT_EGRESS = "ffff:fff3"
_CLSACT_EGRESS_ID = 0xFFFFFFF3


def egress_attached(ifindex: int) -> bool:
    """Whether infw's egress filter is on ifindex."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            filters = ipr.get_filters(index=ifindex, parent=_CLSACT_EGRESS_ID)
        except (OSError, NetlinkError):  # NetlinkError is no OSError
            return False  # no clsact qdisc, or the interface is gone
    return any(
        f["info"] >> 16 == EGRESS_PRIO and (f.get_attr("TCA_OPTIONS") or {}) for f in filters
    )


def attach_egress(ifindex: int, prog_fd: int) -> None:
    """Put (or replace) infw's egress filter on ifindex, adding a clsact qdisc if none."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            ipr.tc("add", "clsact", ifindex)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise DatapathError(
                    f"cannot add a clsact qdisc to ifindex {ifindex}: {exc}"
                ) from exc
        try:
            ipr.tc(
                "replace-filter",
                "bpf",
                ifindex,
                ":1",
                fd=prog_fd,
                name=EGRESS_NAME,
                parent=_CLSACT_EGRESS,
                classid=1,
                direct_action=True,
                prio=EGRESS_PRIO,
            )
        except NetlinkError as exc:
            raise DatapathError(
                f"cannot attach the egress filter to ifindex {ifindex}: {exc}",
                "replies need tc (clsact) egress on the interface",
            ) from exc


def detach_egress(ifindex: int) -> None:
    """Remove infw's egress filter from ifindex; the clsact qdisc stays (others may use it)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    if not egress_attached(ifindex):
        return
    with IPRoute() as ipr:
        try:
            ipr.tc("del-filter", "bpf", ifindex, ":1", parent=_CLSACT_EGRESS, prio=EGRESS_PRIO)
        except NetlinkError as exc:
            if exc.code not in (errno.ENOENT, errno.EINVAL):
                raise DatapathError(
                    f"cannot remove the egress filter from ifindex {ifindex}: {exc}"
                ) from exc
