"""The running firewall in the kernel: load (bcc), pin, attach, atomic table sync, counters,
events and test runs. The only module that talks to the kernel (through engine.kernel.bpfsys).

Everything lives under a pin root (/sys/fs/bpf/infw by default), so the firewall keeps running
and counting when every console has exited, and `Datapath.open` finds it again without
compiling.
"""

from __future__ import annotations

import array
import contextlib
import ctypes as ct
import fcntl
import mmap
import operator
import os
import platform
import re
import socket
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.checkout import BPF_DIR
from engine.core.compiler import CompiledTables, LpmEntry, SegmentEntry
from engine.core.model import Action as RuleAction
from engine.errors import DatapathError, PrivilegeError
from engine.kernel import bpfsys
from engine.kernel.abi import (
    ALL_MAPS,
    EVENTS_RINGBUF_PAGES,
    FAILSAFE_MAX_ENTRIES,
    FAILSAFE_PROTO_BITS,
    GEN_BIT,
    LIST_ROOTS_ENTRIES,
    LISTS_PER_GEN,
    MAP_CONFIG,
    MAP_EVENTS,
    MAP_FAILSAFE,
    MAP_LAST,
    MAP_LIST_ROOTS,
    MAP_NODE_STATS,
    MAP_NODES,
    MAP_RATELIMIT,
    MAP_RULE_STATS,
    MAP_SEG,
    MAP_SRC,
    MAP_SRC_ROOTS,
    NODE_COUNTERS,
    NODE_ENTRIES,
    NODES_PER_GEN,
    NODES_TOTAL,
    PROG_PIN,
    ROOT_IFINDEXES,
    RULE_STATS_ENTRIES,
    SEG_KEY_FIXED_BITS,
    SEG_MAX_ENTRIES,
    SRC_KEY_FIXED_BITS,
    SRC_MAX_ENTRIES,
    SRC_ROOTS_ENTRIES,
    TRACE_MAGIC,
    TRACE_UNANSWERED,
    Action,
    Config,
    Counter,
    DropEventRecord,
    LastVerdict,
    ListRoots,
    Mode,
    Node,
    NodeCounter,
    RateLimit,
    SegKey,
    SegVal,
    SrcKey,
    TraceMeta,
)
from engine.kernel.bpfsys import Map, RingBuffer

DEFAULT_PIN_ROOT = "/sys/fs/bpf/infw"
BPF_SOURCE = BPF_DIR / "infw.bpf.c"
PROG_NAME = "infw_xdp"  # the kernel keeps the function name; it marks older builds as ours
DEFAULT_EVENTS_PER_SEC = 1000
VERIFIER_TAIL_LINES = 30
# After the generation switch, packets already past their config read finish their lookups
# within microseconds; wait this long before deleting or overwriting the old generation under
# them. The wait is not on the writer's path: the old generation stays until the next write
# (or reclaim()), which waits out whatever is left of this since the last switch.
GRACE_S = 0.002
# Readers of a firewall's drop events hold a shared flock on a file here (see open_events):
# the ring buffer has one consumer position, so two readers each get only part of the events.
EVENTS_LOCK_DIR = "/run/infw"

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

_SRC_KEY = struct.Struct("<IB3xI16s")
_SEG_KEY = struct.Struct("<IIBB2s")
_SEG_VAL = struct.Struct("<II")
_U32 = struct.Struct("<I")
_ACTIONS = {RuleAction.ALLOW: Action.ALLOW, RuleAction.DENY: Action.DENY}


@dataclass(frozen=True)
class MapSpec:
    key_size: int
    value_size: int
    max_entries: int


# What each pinned map must look like, from engine.kernel.abi (the events ring has no key/value).
MAP_SPECS: dict[str, MapSpec] = {
    MAP_SRC: MapSpec(ct.sizeof(SrcKey), 4, SRC_MAX_ENTRIES),
    MAP_SEG: MapSpec(ct.sizeof(SegKey), ct.sizeof(SegVal), SEG_MAX_ENTRIES),
    MAP_FAILSAFE: MapSpec(4, 4, FAILSAFE_MAX_ENTRIES),
    MAP_RULE_STATS: MapSpec(4, ct.sizeof(Counter), RULE_STATS_ENTRIES),
    MAP_NODE_STATS: MapSpec(4, ct.sizeof(Counter), NODE_COUNTERS),
    MAP_CONFIG: MapSpec(4, ct.sizeof(Config), 1),
    MAP_RATELIMIT: MapSpec(4, ct.sizeof(RateLimit), 1),
    MAP_LAST: MapSpec(4, ct.sizeof(LastVerdict), 1),
    MAP_EVENTS: MapSpec(0, 0, EVENTS_RINGBUF_PAGES * 4096),
    MAP_NODES: MapSpec(4, ct.sizeof(Node), NODES_TOTAL),
    MAP_SRC_ROOTS: MapSpec(4, 4, SRC_ROOTS_ENTRIES),
    MAP_LIST_ROOTS: MapSpec(4, ct.sizeof(ListRoots), LIST_ROOTS_ENTRIES),
}


def cflags(pin_root: str) -> list[str]:
    """The defines bpf/infw.bpf.c needs: where to pin, and the map sizes of engine.kernel.abi."""
    sizes = {
        "SRC_MAX_ENTRIES": SRC_MAX_ENTRIES,
        "SEG_MAX_ENTRIES": SEG_MAX_ENTRIES,
        "FAILSAFE_MAX_ENTRIES": FAILSAFE_MAX_ENTRIES,
        "RULE_STATS_ENTRIES": RULE_STATS_ENTRIES,
        "NODE_COUNTERS": NODE_COUNTERS,
        "EVENTS_RINGBUF_PAGES": EVENTS_RINGBUF_PAGES,
        "NODES_PER_GEN": NODES_PER_GEN,
        "NODES_TOTAL": NODES_TOTAL,
        "ROOT_IFINDEXES": ROOT_IFINDEXES,
        "SRC_ROOTS_ENTRIES": SRC_ROOTS_ENTRIES,
        "LISTS_PER_GEN": LISTS_PER_GEN,
        "LIST_ROOTS_ENTRIES": LIST_ROOTS_ENTRIES,
    }
    return [f'-DPIN_ROOT="{pin_root}"', "-Wno-macro-redefined"] + [
        f"-D{name}={value}" for name, value in sizes.items()
    ]


def _headers_problem() -> str | None:
    release = platform.release()
    base = Path("/lib/modules") / release
    for sub in ("build", "source"):
        if (base / sub / "include" / "linux" / "kconfig.h").exists():
            return None
    return f"kernel headers for {release} not found under {base}/build or {base}/source"


@contextlib.contextmanager
def _captured_stderr() -> Iterator[Callable[[], str]]:
    """bcc and libbpf print compiler errors and the verifier log on fd 2: keep them for the
    error message instead of spraying them over a console."""
    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)

        def read() -> str:
            tmp.seek(0)
            return tmp.read().decode(errors="replace")

        try:
            yield read
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _tail(text: str, lines: int = VERIFIER_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def compile_program(
    pin_root: str, source_path: str | Path = BPF_SOURCE, extra_cflags: Sequence[str] = ()
) -> Any:
    """Compile with bcc (creating or reusing the pinned maps); returns the bcc.BPF object."""
    try:
        from bcc import BPF
    except ImportError as exc:
        raise DatapathError(f"bcc is not importable ({exc})", bpfsys.INSTALL_HINT) from exc
    problem = _headers_problem()
    if problem:
        raise DatapathError(
            problem,
            "run `make bootstrap` (it installs linux-headers-amd64 "
            "and links them for the running kernel)",
        )
    os.makedirs(pin_root, exist_ok=True)
    with _captured_stderr() as log:
        try:
            return BPF(
                src_file=str(source_path).encode(), cflags=[*cflags(pin_root), *extra_cflags]
            )
        except Exception as exc:  # bcc raises bare Exception for compile errors
            _raise_if_unprivileged(exc, log())
            raise DatapathError(
                f"bcc could not compile {source_path}: {exc}\n{_tail(log())}",
                "see the compiler output above",
            ) from exc


def _raise_if_unprivileged(exc: Exception, log: str) -> None:
    # bcc reports errno only as text: EPERM is "Operation not permitted" (the verifier's own
    # refusals are EACCES, "Permission denied", and are not a privilege problem)
    if os.geteuid() != 0 or "Operation not permitted" in f"{exc}{log}":
        raise PrivilegeError(
            f"not allowed to load BPF programs ({exc})", bpfsys.PRIVILEGE_HINT
        ) from exc


def _load_function(bpf: Any) -> Any:
    from bcc import BPF

    with _captured_stderr() as log:
        try:
            return bpf.load_func(PROG_NAME, BPF.XDP)
        except Exception as exc:
            _raise_if_unprivileged(exc, log())
            raise DatapathError(
                f"the verifier rejected {PROG_NAME}: {exc}\n{_tail(log())}",
                "the last lines of the verifier log are shown above",
            ) from exc


def _ifindex(ifname: str) -> int:
    try:
        return socket.if_nametoindex(ifname)
    except OSError as exc:
        raise DatapathError(f"no interface named {ifname!r} in this network namespace") from exc


@dataclass(frozen=True)
class XdpAttachment:
    ifname: str
    ifindex: int
    mode: str  # native, generic, offload
    prog_id: int


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


class Datapath:
    """One loaded firewall, found by its pin root. Holds fds only; close() releases them."""

    def __init__(self, pin_root: str, prog_fd: int, maps: dict[str, Map], bpf: Any = None) -> None:
        self.pin_root = pin_root
        self.prog_fd = prog_fd
        self.maps = maps
        self._bpf = bpf  # kept while alive: bcc closes its fds when collected
        self._info = bpfsys.prog_info(prog_fd)
        self._ring: RingBuffer | None = None
        self._reader_lock: int | None = None  # fd holding the events reader flock
        self._roots_mem: mmap.mmap | None = None
        self._roots: memoryview | None = None
        self._failsafe: _FailsafePorts | None = None
        # monotonic time of this handle's last generation switch (None: not known here)
        self._switched_at: float | None = None
        _check_layout(maps)

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, pin_root: str = DEFAULT_PIN_ROOT) -> Datapath | None:
        """Attach to a loaded firewall through its pins, without compiling; None if absent."""
        if not os.path.exists(os.path.join(pin_root, PROG_PIN)):
            return None
        return cls(pin_root, bpfsys.obj_get(os.path.join(pin_root, PROG_PIN)), _open_maps(pin_root))

    @classmethod
    def load(
        cls, pin_root: str = DEFAULT_PIN_ROOT, source_path: str | Path = BPF_SOURCE
    ) -> Datapath:
        """Compile and load, reusing pinned maps (rules and counters survive a reload), pin the
        program, and move every interface running the previous build onto the new one."""
        _check_existing_pins(pin_root)
        fresh = not os.path.exists(os.path.join(pin_root, MAP_CONFIG))
        bpf = compile_program(pin_root, source_path)
        fn = _load_function(bpf)
        old_path = os.path.join(pin_root, PROG_PIN)
        old_fd = bpfsys.obj_get(old_path) if os.path.exists(old_path) else None
        try:
            # pin under a temporary name, then rename over the old pin: the path never vanishes
            tmp_path = os.path.join(pin_root, f"{PROG_PIN}_new_{os.getpid()}")  # bpffs: no dots
            bpfsys.obj_pin(fn.fd, tmp_path)
            os.rename(tmp_path, old_path)
            dp = cls(pin_root, bpfsys.obj_get(old_path), _open_maps(pin_root), bpf)
            if fresh:
                dp._write_config(events_per_sec=DEFAULT_EVENTS_PER_SEC)
            if old_fd is not None:
                dp._take_over(old_fd)
        finally:
            if old_fd is not None:
                os.close(old_fd)
        return dp

    def close(self) -> None:
        if self._failsafe is not None:
            self._failsafe.close()
            self._failsafe = None
        if self._roots is not None:
            self._roots.release()
            self._roots = None
        if self._roots_mem is not None:
            self._roots_mem.close()
            self._roots_mem = None
        if self._ring is not None:
            self._ring.close()
            self._ring = None
        if self._reader_lock is not None:
            os.close(self._reader_lock)  # releases the flock
            self._reader_lock = None
        for m in self.maps.values():
            m.close()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def prog_id(self) -> int:
        return self._info.id

    def unload(self) -> None:
        """Detach our program everywhere in this namespace and remove every pin."""
        for att in self.attached_here():
            if att.prog_id == self.prog_id:
                self.detach(att.ifname)
        self.close()
        with contextlib.suppress(OSError):
            os.unlink(events_lock_path(self.pin_root))
        for name in (PROG_PIN, *ALL_MAPS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.pin_root, name))
        with contextlib.suppress(OSError):
            os.rmdir(self.pin_root)

    def _take_over(self, old_fd: int) -> None:
        old_id = bpfsys.prog_info(old_fd).id
        if old_id == self.prog_id:
            return
        for att in scan_attached():
            if att.prog_id == old_id and att.mode in XDP_MODES:
                bpfsys.xdp_attach(
                    att.ifindex, self.prog_fd, XDP_MODES[att.mode], old_prog_fd=old_fd
                )

    # ----------------------------------------------------------------- attach

    def attached_here(self) -> list[XdpAttachment]:
        return scan_attached()

    def attached(self) -> list[tuple[str, int, str, int, bool]]:
        """(ifname, ifindex, mode, prog_id, ours) for every XDP program in this namespace."""
        return [
            (a.ifname, a.ifindex, a.mode, a.prog_id, a.prog_id == self.prog_id)
            for a in scan_attached()
        ]

    def _is_ours(self, prog_id: int) -> bool:
        if prog_id == self.prog_id:
            return True
        try:
            return prog_name(prog_id) == PROG_NAME  # an older build of ours
        except DatapathError:
            return False

    def attach(self, ifname: str, mode: str = "auto", force: bool = False) -> str:
        """Attach to ifname; returns the mode used (native or generic). Replaces an older infw
        program atomically; a foreign program only with force."""
        if mode not in ("auto", *XDP_MODES):
            raise DatapathError(f"unknown XDP mode {mode!r}", "use native, generic or auto")
        ifindex = _ifindex(ifname)
        current = [a for a in scan_attached() if a.ifindex == ifindex]
        if not current:
            return self._attach_new(ifname, ifindex, mode)
        att = current[0]
        if att.prog_id == self.prog_id and mode in ("auto", att.mode):
            return att.mode
        if not force and not self._is_ours(att.prog_id):
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
                bpfsys.xdp_attach(ifindex, self.prog_fd, XDP_MODES[att.mode], old_prog_fd=old_fd)
            finally:
                os.close(old_fd)
            return att.mode
        # a mode change cannot be atomic: the kernel runs one mode at a time per device
        bpfsys.xdp_detach(ifindex, XDP_MODES[att.mode])
        return self._attach_new(ifname, ifindex, mode)

    def _attach_new(self, ifname: str, ifindex: int, mode: str) -> str:
        flags = bpfsys.XDP_FLAGS_UPDATE_IF_NOEXIST
        if mode != "auto":
            bpfsys.xdp_attach(ifindex, self.prog_fd, flags | XDP_MODES[mode])
            return mode
        try:
            bpfsys.xdp_attach(ifindex, self.prog_fd, flags | XDP_MODES["native"])
            return "native"
        except DatapathError as native_error:
            try:
                bpfsys.xdp_attach(ifindex, self.prog_fd, flags | XDP_MODES["generic"])
            except DatapathError as exc:
                raise DatapathError(
                    f"cannot attach to {ifname} in native ({native_error}) or generic mode ({exc})"
                ) from exc
            return "generic"

    def detach(self, ifname: str) -> None:
        """Remove our program from ifname; a foreign program there is left alone (and named)."""
        ifindex = _ifindex(ifname)
        for att in scan_attached():
            if att.ifindex != ifindex:
                continue
            if not self._is_ours(att.prog_id):
                raise DatapathError(
                    f"{ifname} runs a foreign XDP program (id {att.prog_id}), "
                    "not infw's: left in place"
                )
            fd = bpfsys.prog_fd_by_id(att.prog_id)
            try:
                bpfsys.xdp_detach(ifindex, XDP_MODES[att.mode], old_prog_fd=fd)
            finally:
                os.close(fd)

    # ----------------------------------------------------------------- config

    def config(self) -> Config:
        raw = self.maps[MAP_CONFIG].lookup(_U32.pack(0))
        return Config.from_buffer_copy(raw or bytes(ct.sizeof(Config)))

    def _write_config(self, **fields: int) -> Config:
        cfg = self.config()
        for name, value in fields.items():
            setattr(cfg, name, value)
        # one array update: the program reads active_gen once per packet
        self.maps[MAP_CONFIG].update(_U32.pack(0), bytes(cfg))
        return cfg

    def set_mode(self, mode: Mode) -> None:
        self._write_config(mode=int(mode))

    def set_event_rate(self, per_sec: int) -> None:
        """Drop events per second per CPU; 0 stops events (they are counted as suppressed)."""
        self._write_config(events_per_sec=max(0, int(per_sec)))

    def generation(self) -> int:
        return int(self.config().generation)

    def set_generation(self, generation: int) -> None:
        """Record a stored generation that changed no tables (attach, detach, mode), so the
        kernel and the store name the same generation. Callers hold the store lock."""
        self._write_config(generation=int(generation))

    # ----------------------------------------------------------------- tables

    def write_tables(self, tables: CompiledTables, generation: int) -> None:
        """Make tables live atomically for packets: empty the inactive generation (what the
        previous write left behind), fill it (array tries, and the LPM tries for what does not
        fit), then switch config.active_gen in one write. The generation switched away from
        stays as it is until the next write or reclaim(), so the call returns right after the
        switch. On failure before the switch, the inactive generation is emptied again and the
        active one is untouched."""
        src, seg = self.maps[MAP_SRC], self.maps[MAP_SEG]
        roots = self._src_roots()
        active = self.config().active_gen & 1
        inactive = active ^ 1
        fast = tables.fast
        self._empty_generation(inactive)
        new_roots = {
            _root_index(inactive, ifindex, space): entry
            for (ifindex, space), entry in fast.src_roots.items()
        }

        src_keys, src_vals = _src_image(fast.lpm, inactive)
        seg_keys, seg_vals = _seg_image(fast.segments, inactive)
        failsafe = self._failsafe_ports()
        old_masks = failsafe.masks()
        new_masks = _wanted_failsafe(tables)
        # fail-safe ports are not generation-tagged: add new ones before the switch, drop
        # stale ones after it, so no packet ever loses a fail-safe it had or will have
        grown = {
            p: old_masks.get(p, 0) | m for p, m in new_masks.items() if m & ~old_masks.get(p, 0)
        }
        try:
            failsafe.write(grown)
            # nodes and list roots of the inactive half are unreachable until its src roots
            # point at them, and the src roots until the switch
            _write_nodes(self.maps[MAP_NODES], fast.nodes, fast.node_count, inactive)
            _write_list_roots(self.maps[MAP_LIST_ROOTS], fast.list_roots, inactive)
            seg.update_batch(seg_keys, seg_vals)
            src.update_batch(src_keys, src_vals)
            _write_u32s(roots, new_roots)
            self._write_config(active_gen=inactive, generation=generation)
        except BaseException:
            src.delete_batch(src_keys)
            seg.delete_batch(seg_keys)
            _write_u32s(roots, dict.fromkeys(new_roots, 0))
            failsafe.write({p: old_masks.get(p, 0) for p in grown})
            raise
        self._switched_at = time.monotonic()
        # The program looks up the fail-safe port before it reads active_gen: a packet that no
        # longer finds a dropped port reads the new generation, so this needs no grace.
        current = {**old_masks, **grown}
        failsafe.write(
            {
                p: new_masks.get(p, 0)
                for p in set(current) | set(new_masks)
                if new_masks.get(p, 0) != current.get(p, 0)
            }
        )

    def reclaim(self) -> None:
        """Empty the generation the last switch left inactive (write_tables does this first
        anyway): frees its LPM entries now rather than at the next write."""
        self._empty_generation((self.config().active_gen & 1) ^ 1)

    def _empty_generation(self, gen: int) -> None:
        """Delete gen's LPM entries and zero its source roots (its nodes and list roots are
        unreachable without them), after the grace period since the switch away from it."""
        src, seg = self.maps[MAP_SRC], self.maps[MAP_SEG]
        roots = self._src_roots()
        src_keys = _split_src(src)[gen]
        seg_keys = _split_seg(seg)[gen]
        root_idx = _split_roots(roots)[gen]
        self._wait_grace()
        # roots first: from then on nothing of gen is reachable
        _write_u32s(roots, dict.fromkeys(root_idx, 0))
        src.delete_batch(src_keys)
        seg.delete_batch(seg_keys)

    def _wait_grace(self) -> None:
        """Sleep out what is left of GRACE_S since the last switch. A switch made through
        another handle (another process) is not timed here: assume it was just now."""
        if self._switched_at is None:
            self._switched_at = time.monotonic()
        left = self._switched_at + GRACE_S - time.monotonic()
        if left > 0:
            time.sleep(left)

    def _failsafe_ports(self) -> _FailsafePorts:
        if self._failsafe is None:
            self._failsafe = _FailsafePorts(self.maps[MAP_FAILSAFE])
        return self._failsafe

    def _src_roots(self) -> memoryview:
        """src_roots mapped into this process (BPF_F_MMAPABLE), one word per entry: an array
        map keeps its elements 8-byte aligned, so each u32 sits in the low half of a u64."""
        if self._roots is None:
            self._roots_mem, self._roots = _map_words(self.maps[MAP_SRC_ROOTS], SRC_ROOTS_ENTRIES)
        return self._roots

    # ----------------------------------------------------------------- counters

    def reset_rule_counters(self, rule_ids: Iterable[int]) -> None:
        """Zero the counters of ids handed to new rules, so a reused id starts from nothing."""
        m = self.maps[MAP_RULE_STATS]
        zero = bytes(m.value_size)  # value_size already spans every CPU's slot
        for rid in rule_ids:
            m.update(_U32.pack(rid), zero)

    def rule_counters(self, max_id: int | None = None) -> dict[int, tuple[int, int]]:
        """rule id -> (packets, bytes) summed over CPUs; rules never hit are left out.

        With max_id, only ids 0 .. max_id are read (the highest id in use, from the stored
        state): a refresh of 1,000 rules then copies 1,001 slots, not all 65,536.
        """
        m = self.maps[MAP_RULE_STATS]
        limit = None if max_id is None else max(0, min(int(max_id), RULE_STATS_ENTRIES - 1)) + 1
        keys, values, count = m.items(limit)
        totals = _sum_percpu(values, count, m.ncpus)
        out: dict[int, tuple[int, int]] = {}
        for i, (packets, nbytes) in enumerate(totals):
            if packets or nbytes:
                out[_U32.unpack_from(keys, i * 4)[0]] = (packets, nbytes)
        return out

    def node_counters(self) -> dict[NodeCounter, tuple[int, int]]:
        m = self.maps[MAP_NODE_STATS]
        keys, values, count = m.items()
        totals = _sum_percpu(values, count, m.ncpus)
        by_index = {_U32.unpack_from(keys, i * 4)[0]: totals[i] for i in range(count)}
        return {c: by_index.get(int(c), (0, 0)) for c in NodeCounter}

    # ----------------------------------------------------------------- events

    def open_events(self, callback: Callable[[DropEventRecord], None]) -> None:
        """Consume the pinned ring buffer; poll_events() calls callback for each record.

        Also registers this process as a reader (a shared flock on events_lock_path, held until
        close()), so other_reader_pid() in another reader names this one.
        """
        if self._ring is not None:
            self._ring.close()
        self._register_reader()
        size = ct.sizeof(DropEventRecord)

        def on_record(data: bytes) -> None:
            callback(DropEventRecord.from_buffer_copy(data[:size].ljust(size, b"\0")))

        self._ring = RingBuffer(self.maps[MAP_EVENTS].fd, on_record)

    def _register_reader(self) -> None:
        if self._reader_lock is not None:
            return
        path = events_lock_path(self.pin_root)
        try:  # advisory: a reader that cannot register still reads
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: every reader holds it
        except OSError:
            os.close(fd)
            return
        self._reader_lock = fd

    def other_reader_pid(self) -> int | None:
        """The pid of another process reading this firewall's drop events, or None.

        The ring buffer has one consumer position: with two readers (the TUI and
        `infw events --follow`, say) each sees only part of the events. Readers are the
        processes holding the flock open_events takes (found in /proc/locks); this one is left
        out, and so are readers whose pid is not visible from here (another pid namespace).
        """
        me = os.getpid()
        others = sorted(p for p in lock_holders(events_lock_path(self.pin_root)) if p != me)
        return others[0] if others else None

    def poll_events(self, timeout_ms: int = 100) -> int:
        if self._ring is None:
            raise DatapathError("events are not open", "call open_events() first")
        return self._ring.poll(timeout_ms)

    # ----------------------------------------------------------------- test run

    def test_run(
        self, frame: bytes, ifindex: int | None = None, repeat: int = 1
    ) -> tuple[int, LastVerdict, int]:
        """Trace: run the loaded program on frame as if it arrived on ifindex: (xdp action, the
        program's own account of its verdict, mean ns per run).

        The frame carries trace metadata (TraceMeta), so the program counts it nowhere, emits
        no event and writes its verdict into the metadata, which comes back with the frame.
        Nothing here writes a map: a trace is safe beside an apply in another process, and
        beside other traces.
        """
        meta = TraceMeta(magic=TRACE_MAGIC, xdp_action=TRACE_UNANSWERED)
        result = bpfsys.prog_test_run(self.prog_fd, frame, repeat, ifindex, meta=bytes(meta))
        size = ct.sizeof(TraceMeta)
        answer = TraceMeta.from_buffer_copy(result.data_out[:size].ljust(size, b"\xff"))
        if answer.magic != TRACE_MAGIC or answer.xdp_action == TRACE_UNANSWERED:
            raise DatapathError(
                f"the loaded program (id {self.prog_id}) is an older build that does not "
                "answer traces: it ran the packet as a real one (counted, and an event if denied)",
                "run `infw reload` to load the current build (rules and counters are kept)",
            )
        verdict = LastVerdict(
            reason=answer.reason, rule_id=answer.rule_id, xdp_action=answer.xdp_action
        )
        return result.retval, verdict, result.duration_ns


# --------------------------------------------------------------------- helpers


def events_lock_path(pin_root: str) -> str:
    """The reader lock file of the firewall pinned at pin_root."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", os.path.normpath(pin_root)).strip("-.") or "root"
    return os.path.join(EVENTS_LOCK_DIR, f"events-{name}.lock")


def lock_holders(path: str, proc_locks: str = "/proc/locks") -> set[int]:
    """Pids holding a flock (granted, not waiting) on the file at path, from /proc/locks."""
    try:
        st = os.stat(path)
        with open(proc_locks) as f:
            lines = f.read().splitlines()
    except OSError:
        return set()
    # "1: FLOCK  ADVISORY  READ  1234 00:1a:5678 0 EOF"; "1: -> FLOCK ..." is a waiter
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids: set[int] = set()
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->" or fields[1] != "FLOCK":
            continue
        if fields[5] == wanted and fields[4].lstrip("-").isdigit() and int(fields[4]) > 0:
            pids.add(int(fields[4]))
    return pids


def _safe_prog_name(prog_id: int) -> str:
    try:
        return prog_name(prog_id)
    except DatapathError:
        return "?"


def _open_maps(pin_root: str) -> dict[str, Map]:
    maps: dict[str, Map] = {}
    try:
        for name in ALL_MAPS:
            path = os.path.join(pin_root, name)
            if not os.path.exists(path):
                raise DatapathError(
                    f"{path} is missing: the pins under {pin_root} are incomplete",
                    "run `infw detach` to remove them, then attach again",
                )
            maps[name] = Map.open_pinned(path)
    except BaseException:
        for m in maps.values():
            m.close()
        raise
    return maps


def _check_layout(maps: Mapping[str, Map]) -> None:
    for name, spec in MAP_SPECS.items():
        info = maps[name].info
        got = MapSpec(info.key_size, info.value_size, info.max_entries)
        if got != spec:
            raise DatapathError(
                f"pinned map {name} has layout {got}, this infw expects {spec}",
                "an older infw build is loaded: run `infw detach` to unload it, then attach again",
            )


def _check_existing_pins(pin_root: str) -> None:
    """bcc reuses a pinned map whatever its layout; refuse before compiling instead."""
    present = [n for n in ALL_MAPS if os.path.exists(os.path.join(pin_root, n))]
    if not present:
        return
    maps = {n: Map.open_pinned(os.path.join(pin_root, n)) for n in present}
    try:
        if len(present) != len(ALL_MAPS):
            missing = sorted(set(ALL_MAPS) - set(present))
            raise DatapathError(
                f"pins under {pin_root} are incomplete (missing {', '.join(missing)})",
                "run `infw detach` to remove them, then attach again",
            )
        _check_layout(maps)
    finally:
        for m in maps.values():
            m.close()


def _split_src(src: Map) -> tuple[bytes, bytes]:
    """The src_lpm keys of generation 0 and of generation 1 (the gen byte follows prefixlen)."""
    keys, _, count = src.items()
    size = src.key_size
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for i in range(count):
        key = keys[i * size : (i + 1) * size]
        parts[key[4] & 1].append(key)
    return b"".join(parts[0]), b"".join(parts[1])


def _split_seg(seg: Map) -> tuple[bytes, bytes]:
    """The seg_lpm keys of generation 0 and 1 (generation 1's list ids carry GEN_BIT)."""
    keys, _, count = seg.items()
    size = seg.key_size
    parts: tuple[list[bytes], list[bytes]] = ([], [])
    for i in range(count):
        key = keys[i * size : (i + 1) * size]
        parts[1 if _U32.unpack_from(key, 4)[0] & GEN_BIT else 0].append(key)
    return b"".join(parts[0]), b"".join(parts[1])


def _wanted_failsafe(tables: CompiledTables) -> dict[int, int]:
    masks: dict[int, int] = {}
    for proto, port in tables.failsafe_ports:
        masks[port] = masks.get(port, 0) | FAILSAFE_PROTO_BITS[proto]
    return masks


class _FailsafePorts:
    """The fail-safe array (port -> protocol bitmask), mapped into this process when the map
    allows it (BPF_F_MMAPABLE: reading all 65,536 entries by syscall costs ~19 ms per write),
    else read and written by syscalls (a map pinned by an older build, reused as it is)."""

    def __init__(self, m: Map) -> None:
        self._map = m
        self._mem: mmap.mmap | None = None
        self._words: memoryview | None = None
        if m.info.flags & bpfsys.BPF_F_MMAPABLE:
            self._mem, self._words = _map_words(m, FAILSAFE_MAX_ENTRIES)

    def masks(self) -> dict[int, int]:
        """port -> protocol bitmask of the ports that have any."""
        words = self._words
        if words is None:
            return _failsafe_masks(self._map)
        return {p: int(words[p]) for p in _nonzero_words(words, FAILSAFE_MAX_ENTRIES)}

    def write(self, masks: Mapping[int, int]) -> None:
        if self._words is None:
            _write_masks(self._map, masks)
        else:
            _write_u32s(self._words, masks)

    def close(self) -> None:
        if self._words is not None:
            self._words.release()
            self._words = None
        if self._mem is not None:
            self._mem.close()
            self._mem = None


def _map_words(m: Map, entries: int) -> tuple[mmap.mmap, memoryview]:
    """An mmapable array of u32 mapped as u64 words (array elements are 8-byte aligned)."""
    size = (entries * 8 + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    mem = mmap.mmap(m.fd, size)
    return mem, memoryview(mem).cast("Q")


def _failsafe_masks(failsafe: Map) -> dict[int, int]:
    """port -> protocol bitmask of the ports that have any (by syscall: the whole array)."""
    keys, values, count = failsafe.items()
    ports = struct.unpack(f"<{count}I", keys[: 4 * count])
    masks = struct.unpack(f"<{count}I", values[: 4 * count])
    return {port: mask for port, mask in zip(ports, masks, strict=True) if mask}


def _write_masks(failsafe: Map, masks: Mapping[int, int]) -> None:
    if not masks:
        return
    ports = sorted(masks)
    failsafe.update_batch(
        b"".join(_U32.pack(p) for p in ports), b"".join(_U32.pack(masks[p]) for p in ports)
    )


def _list_id(list_id: int, gen: int) -> int:
    if list_id & GEN_BIT:
        raise DatapathError(f"rule list id {list_id} collides with the generation bit")
    return list_id | GEN_BIT if gen else list_id


def _root_index(gen: int, ifindex: int, space: int) -> int:
    return (gen * 2 + space) * ROOT_IFINDEXES + ifindex


_ZERO_PAGE = bytes(4096)
_ZERO_CHUNK = bytes(65536)


def _nonzero_words(words: memoryview, count: int) -> list[int]:
    """Indexes of the nonzero words among the first count. Zero regions are skipped by bytes
    comparisons (a memcmp each; comparing memoryviews goes element by element, ~100x slower),
    first per 64 KiB, then per page, so a mostly empty 2 MiB array costs a fraction of a ms."""
    nonzero: list[int] = []
    end = count * 8
    with words.cast("B") as raw:
        for chunk in range(0, end, len(_ZERO_CHUNK)):
            stop = min(chunk + len(_ZERO_CHUNK), end)
            if raw[chunk:stop].tobytes() == _ZERO_CHUNK[: stop - chunk]:
                continue
            for page in range(chunk, stop, len(_ZERO_PAGE)):
                last = min(page + len(_ZERO_PAGE), stop)
                if raw[page:last].tobytes() != _ZERO_PAGE[: last - page]:
                    nonzero.extend(i for i in range(page // 8, last // 8) if words[i])
    return nonzero


def _split_roots(roots: memoryview) -> tuple[list[int], list[int]]:
    """Indexes of the nonzero src_roots entries of generation 0 and of generation 1."""
    nonzero = _nonzero_words(roots, SRC_ROOTS_ENTRIES)
    half = 2 * ROOT_IFINDEXES
    return [i for i in nonzero if i < half], [i for i in nonzero if i >= half]


def _write_u32s(roots: memoryview, entries: Mapping[int, int]) -> None:
    for index, value in entries.items():
        roots[index] = value  # an aligned store, seen by the program at once


def _write_nodes(m: Map, nodes: bytes, count: int, gen: int) -> None:
    if count > NODES_PER_GEN:
        raise DatapathError(f"{count} trie nodes exceed the {NODES_PER_GEN} of a generation")
    idx = array.array("I", range(gen * NODES_PER_GEN, gen * NODES_PER_GEN + count))
    m.update_batch(idx.tobytes(), nodes[: count * NODE_ENTRIES * 4])


def _write_list_roots(m: Map, list_roots: Mapping[int, tuple[int, ...]], gen: int) -> None:
    if not list_roots:
        return
    ids = sorted(list_roots)
    idx = array.array("I", (gen * LISTS_PER_GEN + i for i in ids))
    vals = array.array("I", (e for i in ids for e in list_roots[i]))
    m.update_batch(idx.tobytes(), vals.tobytes())


def _src_image(lpm: Sequence[LpmEntry], gen: int) -> tuple[bytes, bytes]:
    keys = b"".join(
        _SRC_KEY.pack(
            SRC_KEY_FIXED_BITS + e.prefix.length, gen, e.ifindex, e.prefix.value.to_bytes(16, "big")
        )
        for e in lpm
    )
    values = b"".join(_U32.pack(_list_id(e.list_id, gen)) for e in lpm)
    return keys, values


def _seg_image(segments: Sequence[SegmentEntry], gen: int) -> tuple[bytes, bytes]:
    keys = b"".join(
        _SEG_KEY.pack(
            SEG_KEY_FIXED_BITS + s.length,
            _list_id(s.list_id, gen),
            s.proto,
            int(s.nonfirst),
            s.value.to_bytes(2, "big"),
        )
        for s in segments
    )
    values = b"".join(_SEG_VAL.pack(s.rule_id, _ACTIONS[s.action]) for s in segments)
    return keys, values


def _sum_percpu(values: bytes, count: int, ncpus: int) -> list[tuple[int, int]]:
    """Sum per-CPU {packets, bytes} slots: values holds count entries of ncpus slots each."""
    words = array.array("Q")
    words.frombytes(values[: count * ncpus * 16])
    stride = 2 * ncpus
    # strided slices and map(add) keep the 65536-entry sum out of a Python-level loop
    packets: list[int] = list(words[0::stride])
    nbytes: list[int] = list(words[1::stride])
    for cpu in range(1, ncpus):
        packets = list(map(operator.add, packets, words[2 * cpu :: stride]))
        nbytes = list(map(operator.add, nbytes, words[2 * cpu + 1 :: stride]))
    return list(zip(packets, nbytes, strict=True))
