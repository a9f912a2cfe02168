"""Thin ctypes layer over libbcc (and the libbpf it links) plus the raw bpf() syscall.

Only the modules of engine.kernel use it. It works on pinned objects by file descriptor, so a
console can read and write a running firewall without compiling anything. Every failure raises
DatapathError, or PrivilegeError when the kernel says EPERM/EACCES.
"""

from __future__ import annotations

import ctypes as ct
import errno
import functools
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

from engine.errors import DatapathError, PrivilegeError

LIBBCC = "libbcc.so.0"
INSTALL_HINT = (
    "install bcc with `apt-get install python3-bpfcc` and create the venv with "
    "`python3 -m venv --system-site-packages` (or run `make bootstrap`)"
)
PRIVILEGE_HINT = "run as root, or grant the process CAP_BPF and CAP_NET_ADMIN"

# bpf(2) commands and map types used here (include/uapi/linux/bpf.h).
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
SYS_BPF = 321  # x86_64
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
PERCPU_MAP_TYPES = frozenset(
    {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
)
BPF_ANY = 0
BPF_NOEXIST = 1
BPF_F_MMAPABLE = 1 << 10  # map flag: an array userspace can mmap

# XDP attach flags (include/uapi/linux/if_link.h).
XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_META_MAX = 32  # bytes of XDP metadata BPF_PROG_TEST_RUN accepts in front of a frame
# BPF_PROG_TEST_RUN flag (kernel >= 5.18): frames the program returns XDP_TX/XDP_REDIRECT for are
# really transmitted, so a test run becomes a packet generator.
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
TEST_XDP_MAX_BATCH = 256  # the kernel's bound on batch_size for live frames

# Batch operations: errors that mean "this map type has none", so a loop is used instead.
_NO_BATCH = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})
_BATCH_CHUNK = 65536

RingCallback = ct.CFUNCTYPE(ct.c_int, ct.c_void_p, ct.c_void_p, ct.c_int)


def raise_errno(what: str, err: int) -> NoReturn:
    """Turn a kernel errno into the error type the console renders."""
    text = f"{what}: {os.strerror(err)} (errno {err})"
    if err in (errno.EPERM, errno.EACCES):
        raise PrivilegeError(text, PRIVILEGE_HINT)
    raise DatapathError(text)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        # libbpf returns -errno and sets errno; bcc's wrappers return -1 and set errno.
        raise_errno(what, ct.get_errno() or -rc)
    return rc


@functools.cache
def lib() -> ct.CDLL:
    """libbcc with our own prototypes (a private handle: bcc's module-level one is left alone)."""
    try:
        handle = ct.CDLL(LIBBCC, use_errno=True)
    except OSError as exc:
        raise DatapathError(f"cannot load {LIBBCC} ({exc})", INSTALL_HINT) from exc
    vp, i32, u32 = ct.c_void_p, ct.c_int, ct.c_uint32
    protos: dict[str, tuple[type | None, list[type]]] = {
        "bpf_obj_get": (i32, [ct.c_char_p]),
        "bcc_create_map": (i32, [i32, ct.c_char_p, i32, i32, i32, i32]),
        "bpf_obj_pin": (i32, [i32, ct.c_char_p]),
        "bpf_obj_get_info": (i32, [i32, vp, ct.POINTER(u32)]),
        "bpf_prog_get_fd_by_id": (i32, [u32]),
        "bpf_map_get_fd_by_id": (i32, [u32]),
        "bpf_prog_get_next_id": (i32, [u32, ct.POINTER(u32)]),
        "bpf_lookup_elem": (i32, [i32, vp, vp]),
        "bpf_update_elem": (i32, [i32, vp, vp, ct.c_ulonglong]),
        "bpf_delete_elem": (i32, [i32, vp]),
        "bpf_get_next_key": (i32, [i32, vp, vp]),
        "bpf_update_batch": (i32, [i32, vp, vp, ct.POINTER(u32)]),
        "bpf_delete_batch": (i32, [i32, vp, ct.POINTER(u32)]),
        "bpf_lookup_batch": (i32, [i32, vp, vp, vp, vp, ct.POINTER(u32)]),
        "bpf_new_ringbuf": (vp, [i32, RingCallback, vp]),
        "bpf_poll_ringbuf": (i32, [vp, i32]),
        "bpf_consume_ringbuf": (i32, [vp]),
        "bpf_free_ringbuf": (None, [vp]),
        "bpf_xdp_attach": (i32, [i32, i32, u32, vp]),
        "bpf_xdp_detach": (i32, [i32, u32, vp]),
        "bpf_xdp_query_id": (i32, [i32, i32, ct.POINTER(u32)]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(handle, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return handle


def _syscall(cmd: int, attr: ct.Structure | ct.Array[ct.c_ubyte], what: str) -> int:
    libc = _libc()
    rc = int(libc.syscall(SYS_BPF, cmd, ct.byref(attr), ct.sizeof(attr)))
    if rc < 0:
        raise_errno(what, ct.get_errno())
    return rc


@functools.cache
def _libc() -> ct.CDLL:
    libc = ct.CDLL(None, use_errno=True)
    libc.syscall.restype = ct.c_long
    return libc


@functools.cache
def possible_cpus() -> int:
    """Per-CPU maps hold one slot per possible CPU (not online), e.g. '0-3,8-11'."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    total = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        total += (int(high) if high else int(low)) - int(low) + 1
    return total


# --- objects ---------------------------------------------------------------------------------


def obj_get(path: str) -> int:
    """Open a pinned map or program; the caller owns the fd."""
    return _check(lib().bpf_obj_get(path.encode()), f"open pinned {path}")


def create_pinned_array(path: str, value_size: int, entries: int, flags: int = 0) -> None:
    """Create an array map (u32 keys) and pin it at path; the pin holds it, no fd is kept."""
    name = os.path.basename(path)[:15].encode()  # BPF_OBJ_NAME_LEN - 1
    fd = _check(
        lib().bcc_create_map(BPF_MAP_TYPE_ARRAY, name, 4, value_size, entries, flags),
        f"create map {name.decode()} ({value_size} B x {entries})",
    )
    try:
        obj_pin(fd, path)
    finally:
        os.close(fd)


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pin {path}")


def prog_fd_by_id(prog_id: int) -> int:
    return _check(lib().bpf_prog_get_fd_by_id(prog_id), f"open program id {prog_id}")


def map_fd_by_id(map_id: int) -> int:
    return _check(lib().bpf_map_get_fd_by_id(map_id), f"open map id {map_id}")


def prog_ids() -> list[int]:
    """The id of every BPF program loaded on the machine (bpftool prog list)."""
    ids: list[int] = []
    current = ct.c_uint32(0)
    while True:
        nxt = ct.c_uint32(0)
        if lib().bpf_prog_get_next_id(current.value, ct.byref(nxt)) < 0:
            err = ct.get_errno()
            if err == errno.ENOENT:
                return ids
            raise_errno("list BPF programs", err)
        ids.append(nxt.value)
        current = nxt


def prog_map_ids(fd: int) -> list[int]:
    """The ids of the maps a program uses (bpf_prog_info.map_ids)."""
    count = 64
    ids = (ct.c_uint32 * count)()
    buf = (ct.c_ubyte * 224)()
    struct.pack_into("<IQ", buf, 52, count, ct.addressof(ids))  # nr_map_ids, map_ids
    length = ct.c_uint32(224)
    _check(lib().bpf_obj_get_info(fd, buf, ct.byref(length)), "read program maps")
    (got,) = struct.unpack_from("<I", bytes(buf), 52)
    return list(ids[: min(got, count)])


def _obj_info(fd: int, size: int, what: str) -> bytes:
    buf = (ct.c_ubyte * size)()
    length = ct.c_uint32(size)
    _check(lib().bpf_obj_get_info(fd, buf, ct.byref(length)), what)
    return bytes(buf)


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    tag: str  # hex
    name: str
    verified_insns: int = 0  # instructions the verifier processed (kernel >= 5.16; 0 before)


def map_info(fd: int) -> MapInfo:
    raw = _obj_info(fd, 88, "read map info")  # struct bpf_map_info, up to name
    mtype, mid, ksize, vsize, entries, flags = struct.unpack_from("<6I", raw, 0)
    return MapInfo(mtype, mid, ksize, vsize, entries, flags, _cstr(raw[24:40]))


def prog_info(fd: int) -> ProgInfo:
    raw = _obj_info(fd, 224, "read program info")  # struct bpf_prog_info, past name
    ptype, pid = struct.unpack_from("<2I", raw, 0)
    (verified,) = struct.unpack_from("<I", raw, 216)  # bpf_prog_info.verified_insns
    return ProgInfo(ptype, pid, raw[8:16].hex(), _cstr(raw[64:80]), verified)


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


# --- maps ------------------------------------------------------------------------------------


class Map:
    """A map by fd, with keys and values as bytes (pack them with engine.kernel.abi's structs).

    For per-CPU maps a value is all CPUs' slots, each rounded up to 8 bytes, back to back.
    """

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        info = map_info(fd)
        self.info = info
        self.key_size = info.key_size
        self.percpu = info.type in PERCPU_MAP_TYPES
        self.slot_size = (info.value_size + 7) & ~7 if self.percpu else info.value_size
        self.ncpus = possible_cpus() if self.percpu else 1
        self.value_size = self.slot_size * self.ncpus
        self._batch_ok = True

    @classmethod
    def open_pinned(cls, path: str) -> Map:
        return cls(obj_get(path), os.path.basename(path))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _what(self, op: str) -> str:
        return f"{op} in map {self.name}"

    def lookup(self, key: bytes) -> bytes | None:
        kbuf = ct.create_string_buffer(key, self.key_size)
        vbuf = ct.create_string_buffer(self.value_size)
        if lib().bpf_lookup_elem(self.fd, kbuf, vbuf) < 0:
            err = ct.get_errno()
            if err == errno.ENOENT:
                return None
            raise_errno(self._what("lookup"), err)
        return vbuf.raw

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        kbuf = ct.create_string_buffer(key, self.key_size)
        vbuf = ct.create_string_buffer(value, self.value_size)
        _check(lib().bpf_update_elem(self.fd, kbuf, vbuf, flags), self._what("update"))

    def delete(self, key: bytes) -> bool:
        """False when the key was absent."""
        kbuf = ct.create_string_buffer(key, self.key_size)
        if lib().bpf_delete_elem(self.fd, kbuf) < 0:
            err = ct.get_errno()
            if err == errno.ENOENT:
                return False
            raise_errno(self._what("delete"), err)
        return True

    def keys(self) -> Iterator[bytes]:
        """Every key; a key deleted meanwhile may restart the walk (LPM tries do), so callers
        that delete collect first."""
        cur = ct.create_string_buffer(self.key_size)
        nxt = ct.create_string_buffer(self.key_size)
        prev: ct.Array[ct.c_char] | None = None
        while True:
            if lib().bpf_get_next_key(self.fd, prev, nxt) < 0:
                err = ct.get_errno()
                if err == errno.ENOENT:
                    return
                raise_errno(self._what("walk keys"), err)
            key = nxt.raw
            yield key
            ct.memmove(cur, nxt, self.key_size)
            prev = cur

    def update_batch(self, keys: bytes, values: bytes, flags: int = BPF_ANY) -> None:
        """Write len(keys)//key_size entries; one syscall per chunk where the kernel can.

        On error, some of the entries may have been written: the caller cleans up.
        """
        count = len(keys) // self.key_size
        if len(values) != count * self.value_size:
            raise ValueError(f"{self.name}: {count} keys but {len(values)} value bytes")
        kbuf = (ct.c_char * max(len(keys), 1)).from_buffer_copy(keys or b"\0")
        vbuf = (ct.c_char * max(len(values), 1)).from_buffer_copy(values or b"\0")
        kaddr, vaddr = ct.addressof(kbuf), ct.addressof(vbuf)
        done = 0
        if self._batch_ok and flags == BPF_ANY:
            while done < count:
                n = min(_BATCH_CHUNK, count - done)
                cnt = ct.c_uint32(n)
                rc = lib().bpf_update_batch(
                    self.fd,
                    kaddr + done * self.key_size,
                    vaddr + done * self.value_size,
                    ct.byref(cnt),
                )
                if rc < 0:
                    err = ct.get_errno() or -rc
                    if err in _NO_BATCH and done == 0 and cnt.value == 0:
                        self._batch_ok = False
                        break
                    raise_errno(self._what(f"batch update at entry {done + cnt.value}"), err)
                done += n
        update = lib().bpf_update_elem
        for i in range(done, count):
            rc = update(self.fd, kaddr + i * self.key_size, vaddr + i * self.value_size, flags)
            if rc < 0:
                raise_errno(self._what(f"update entry {i}"), ct.get_errno() or -rc)

    def delete_batch(self, keys: bytes) -> None:
        """Delete every key given; keys already absent are not an error."""
        count = len(keys) // self.key_size
        if not count:
            return
        kbuf = (ct.c_char * len(keys)).from_buffer_copy(keys)
        kaddr = ct.addressof(kbuf)
        if self._batch_ok:
            done = 0
            while done < count:
                n = min(_BATCH_CHUNK, count - done)
                cnt = ct.c_uint32(n)
                rc = lib().bpf_delete_batch(self.fd, kaddr + done * self.key_size, ct.byref(cnt))
                if rc < 0:
                    # ENOENT stops a batch at a missing key: skip it and go on
                    err = ct.get_errno() or -rc
                    if err == errno.ENOENT:
                        done += cnt.value + 1
                        continue
                    if err in _NO_BATCH and done == 0 and cnt.value == 0:
                        self._batch_ok = False
                        break
                    raise_errno(self._what("batch delete"), err)
                done += n
            else:
                return
        delete = lib().bpf_delete_elem
        for i in range(count):
            if delete(self.fd, kaddr + i * self.key_size) < 0:
                err = ct.get_errno()
                if err != errno.ENOENT:
                    raise_errno(self._what(f"delete entry {i}"), err)

    def items(self, limit: int | None = None) -> tuple[bytes, bytes, int]:
        """All entries as (keys, values, count), packed back to back; batched where possible.

        With limit, at most that many entries in the map's own order (for an array: the
        indexes 0 .. limit-1), so a caller that needs the first few does not copy them all.
        """
        if limit is not None and limit <= 0:
            return b"", b"", 0
        if self._batch_ok:
            got = self._lookup_all_batched(limit)
            if got is not None:
                return got
        keys: list[bytes] = []
        for k in self.keys():
            if limit is not None and len(keys) >= limit:
                break
            keys.append(k)
        values = [self.lookup(k) or bytes(self.value_size) for k in keys]
        return b"".join(keys), b"".join(values), len(keys)

    def _lookup_all_batched(self, limit: int | None = None) -> tuple[bytes, bytes, int] | None:
        wanted = self.info.max_entries if limit is None else min(limit, self.info.max_entries)
        chunk = min(wanted, _BATCH_CHUNK) or 1
        kbuf = ct.create_string_buffer(chunk * self.key_size)
        vbuf = ct.create_string_buffer(chunk * self.value_size)
        # the batch cursor is opaque to userspace: 8 bytes covers every map type used here
        in_batch = ct.create_string_buffer(max(self.key_size, 8))
        out_batch = ct.create_string_buffer(max(self.key_size, 8))
        keys: list[bytes] = []
        values: list[bytes] = []
        first = True
        got = 0
        while True:
            cnt = ct.c_uint32(min(chunk, wanted - got) if limit is not None else chunk)
            rc = lib().bpf_lookup_batch(
                self.fd, None if first else in_batch, out_batch, kbuf, vbuf, ct.byref(cnt)
            )
            err = (ct.get_errno() or -rc) if rc < 0 else 0
            if rc < 0 and err not in (errno.ENOENT,):
                if err in _NO_BATCH and first:
                    self._batch_ok = False
                    return None
                raise_errno(self._what("batch lookup"), err)
            # string_at copies only what came back (.raw would copy the whole buffer first)
            keys.append(ct.string_at(kbuf, cnt.value * self.key_size))
            values.append(ct.string_at(vbuf, cnt.value * self.value_size))
            got += cnt.value
            if rc < 0 or (limit is not None and got >= wanted):  # ENOENT: the last chunk
                break
            ct.memmove(in_batch, out_batch, len(out_batch))
            first = False
        key_bytes = b"".join(keys)
        return key_bytes, b"".join(values), len(key_bytes) // self.key_size


# --- ring buffer -----------------------------------------------------------------------------


class RingBuffer:
    """Consumes a (pinned) BPF ring buffer by fd; the callback gets each record's bytes."""

    def __init__(self, fd: int, callback: Callable[[bytes], None]) -> None:
        self._user_cb = callback
        self._error: BaseException | None = None
        self._cb = RingCallback(self._on_record)  # keep a reference: libbcc holds the pointer
        ptr = lib().bpf_new_ringbuf(fd, self._cb, None)
        if not ptr:
            raise_errno("open the events ring buffer", ct.get_errno() or errno.EINVAL)
        self._rb: int | None = ptr

    def _on_record(self, _ctx: int | None, data: int | None, size: int) -> int:
        try:
            self._user_cb(ct.string_at(data or 0, size))
        except BaseException as exc:  # re-raised in poll(): a C callback must not raise
            self._error = exc
            return -1
        return 0

    def poll(self, timeout_ms: int) -> int:
        """Wait up to timeout_ms for records and consume them; returns how many."""
        if self._rb is None:
            raise DatapathError("the events ring buffer is closed")
        rc = lib().bpf_poll_ringbuf(self._rb, timeout_ms)
        self._raise_callback_error()
        if rc < 0 and ct.get_errno() != errno.EINTR:
            raise_errno("poll the events ring buffer", ct.get_errno() or -rc)
        return max(rc, 0)

    def consume(self) -> int:
        if self._rb is None:
            raise DatapathError("the events ring buffer is closed")
        rc = lib().bpf_consume_ringbuf(self._rb)
        self._raise_callback_error()
        return max(rc, 0)

    def _raise_callback_error(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            raise exc

    def close(self) -> None:
        if self._rb is not None:
            lib().bpf_free_ringbuf(self._rb)
            self._rb = None


# --- BPF_PROG_TEST_RUN -----------------------------------------------------------------------


class XdpMd(ct.Structure):
    """struct xdp_md as BPF_PROG_TEST_RUN takes it for ctx_in (offsets relative to the frame)."""

    _fields_ = [
        (name, ct.c_uint32)
        for name in (
            "data",
            "data_end",
            "data_meta",
            "ingress_ifindex",
            "rx_queue_index",
            "egress_ifindex",
        )
    ]


class _TestRunAttr(ct.Structure):
    """The `test` member of union bpf_attr."""

    _fields_ = [
        ("prog_fd", ct.c_uint32),
        ("retval", ct.c_uint32),
        ("data_size_in", ct.c_uint32),
        ("data_size_out", ct.c_uint32),
        ("data_in", ct.c_uint64),
        ("data_out", ct.c_uint64),
        ("repeat", ct.c_uint32),
        ("duration", ct.c_uint32),
        ("ctx_size_in", ct.c_uint32),
        ("ctx_size_out", ct.c_uint32),
        ("ctx_in", ct.c_uint64),
        ("ctx_out", ct.c_uint64),
        ("flags", ct.c_uint32),
        ("cpu", ct.c_uint32),
        ("batch_size", ct.c_uint32),
        ("_pad", ct.c_uint32 * 9),
    ]


@dataclass(frozen=True)
class TestRunResult:
    retval: int
    duration_ns: int  # mean per run, as the kernel reports it
    data_out: bytes


def prog_test_run(
    prog_fd: int, data: bytes, repeat: int = 1, ifindex: int | None = None, meta: bytes = b""
) -> TestRunResult:
    """Run an XDP program on one frame in the kernel; ifindex sets ctx ingress_ifindex
    (it must name an existing device; without it the kernel uses loopback, ifindex 1).

    meta (a multiple of 4 bytes, at most 32) goes in front of the frame as XDP metadata
    (ctx data_meta .. data); data_out then starts with the metadata as the program left it.
    """
    if len(meta) % 4 or len(meta) > XDP_META_MAX:
        raise DatapathError(
            f"XDP metadata must be a multiple of 4 bytes, at most {XDP_META_MAX}: got {len(meta)}"
        )
    payload = meta + data
    data_in = ct.create_string_buffer(payload, len(payload))
    out_size = len(payload) + 4096  # room for a program that grows the frame
    data_out = ct.create_string_buffer(out_size)
    attr = _test_run_attr(prog_fd, data_in, len(payload), repeat)
    attr.data_size_out = out_size
    attr.data_out = ct.addressof(data_out)
    # the kernel wants data_meta 0 and data_end the whole input; data is where the frame starts
    ctx = XdpMd(data=len(meta), data_end=len(payload), ingress_ifindex=ifindex or 0)
    if ifindex is not None or meta:
        attr.ctx_in = ct.addressof(ctx)
        attr.ctx_size_in = ct.sizeof(ctx)
    _syscall(BPF_PROG_TEST_RUN, attr, "BPF_PROG_TEST_RUN")
    return TestRunResult(attr.retval, attr.duration, data_out.raw[: attr.data_size_out])


def prog_test_run_live(
    prog_fd: int, data: bytes, repeat: int, ifindex: int, batch_size: int = 0
) -> int:
    """Run an XDP program `repeat` times with BPF_F_TEST_XDP_LIVE_FRAMES: every frame it returns
    XDP_TX for leaves through device `ifindex` (resolved in the caller's network namespace),
    XDP_REDIRECT goes where the program redirects it. Returns the kernel's mean ns per frame.

    batch_size (0: the kernel's default, 64) is how many frames are built and flushed at once.
    The kernel refuses data_out and ctx_out in this mode, so nothing comes back but the time.
    """
    if not 0 <= batch_size <= TEST_XDP_MAX_BATCH:
        raise DatapathError(
            f"live-frames batch_size must be 0..{TEST_XDP_MAX_BATCH}: got {batch_size}"
        )
    data_in = ct.create_string_buffer(data, len(data))
    attr = _test_run_attr(prog_fd, data_in, len(data), repeat)
    ctx = XdpMd(data=0, data_end=len(data), ingress_ifindex=ifindex)
    attr.ctx_in = ct.addressof(ctx)
    attr.ctx_size_in = ct.sizeof(ctx)
    attr.flags = BPF_F_TEST_XDP_LIVE_FRAMES
    attr.batch_size = batch_size
    _syscall(BPF_PROG_TEST_RUN, attr, f"BPF_PROG_TEST_RUN (live frames out of ifindex {ifindex})")
    return int(attr.duration)


def _test_run_attr(
    prog_fd: int, data_in: ct.Array[ct.c_char], size: int, repeat: int
) -> _TestRunAttr:
    # the caller keeps data_in (and any ctx) alive until the syscall returns
    return _TestRunAttr(
        prog_fd=prog_fd,
        data_size_in=size,
        data_in=ct.addressof(data_in),
        repeat=max(repeat, 1),
    )


# --- XDP attach (netlink through libbpf, in the caller's network namespace) -------------------


class _XdpAttachOpts(ct.Structure):
    _fields_ = [("sz", ct.c_size_t), ("old_prog_fd", ct.c_int), ("_pad", ct.c_int)]


def xdp_attach(ifindex: int, prog_fd: int, flags: int, old_prog_fd: int | None = None) -> None:
    """Attach; with old_prog_fd the kernel swaps atomically only if that program is the one
    attached (XDP_FLAGS_REPLACE), so there is no gap and no race with another loader."""
    opts = _XdpAttachOpts(sz=ct.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd or 0)
    if old_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
    rc = lib().bpf_xdp_attach(ifindex, prog_fd, flags, ct.byref(opts))
    _check(rc, f"attach XDP program to ifindex {ifindex}")


def xdp_detach(ifindex: int, flags: int, old_prog_fd: int | None = None) -> None:
    opts = _XdpAttachOpts(sz=ct.sizeof(_XdpAttachOpts), old_prog_fd=old_prog_fd or 0)
    if old_prog_fd is not None:
        flags |= XDP_FLAGS_REPLACE
    _check(
        lib().bpf_xdp_detach(ifindex, flags, ct.byref(opts)), f"detach XDP from ifindex {ifindex}"
    )


def xdp_query_id(ifindex: int, flags: int) -> int:
    """The id of the program attached in the mode flags name (0: none)."""
    prog_id = ct.c_uint32(0)
    _check(
        lib().bpf_xdp_query_id(ifindex, flags, ct.byref(prog_id)), f"query XDP on ifindex {ifindex}"
    )
    return prog_id.value
