"""Desired state on disk (DESIGN §4): the current generation, every applied generation's history,
the pending-confirmation marker, and the lock that keeps two consoles from losing an edit.

Layout of the state directory (0700, files 0600, every write atomic: temp file, fsync, rename,
fsync of the directory). The rules are kept in the operator's CRD form inside JSON (PyYAML takes
seconds for 100,000 CIDRs where json takes 50 ms). A generation names its ingress blocks in
content-addressed packs (engine.state.packs), so a commit writes the blocks it changed and a
small index, not every CIDR again; a kill at any point leaves the old generation or the new one:
packs are written (and fsynced) before the index that names them, and state.json's rename is
the commit point.
    state.json              the current generation (the commit point)
    history/000042.json     every generation ever committed, with who and why
    blocks/<sha256>.json    packs of ingress blocks, never rewritten (format 2); a pack no
                            generation names (one taken back, or a commit killed before its
                            index) is removed by prune()
    pending.json            an apply waiting for confirmation (every console polls it)
    lock                    flock(2) target; holds the pid of the holder

Format 1 (every rule inline in each generation file) is still read; commits write format 2.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import getpass
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.core.blockmemo import BlockMemo
from engine.core.compiler import RuleKey
from engine.core.model import Firewall, RuleSet
from engine.core.textsafe import printable
from engine.errors import InfwError, PrivilegeError, StateError
from engine.state.packs import CorruptPack, Packs, block_from_dict

FORMAT = 2  # what commits write
READ_FORMATS = (1, 2)  # 1: every rule inline in each generation file
MODES = ("enforce", "audit")
ATTACH_MODES = ("auto", "native", "generic")
LOCK_TIMEOUT = 10.0
STATE_FILE = "state.json"
PENDING_FILE = "pending.json"
LOCK_FILE = "lock"
HISTORY_DIR = "history"


class ChangeKind(enum.StrEnum):
    """What made a generation: control flow asks this, never the summary's wording."""

    CHANGE = "change"  # an apply, edit, mode, attach or detach
    AUTO_REVERT = "auto-revert"  # an unconfirmed change put back (watchdog, reap, restore)
    ROLLBACK = "rollback"  # a pending change dropped on purpose by the operator


@dataclass(frozen=True)
class StoredState:
    generation: int
    ruleset: RuleSet
    rule_ids: dict[RuleKey, int]
    mode: str = "enforce"  # enforce | audit
    interfaces: tuple[str, ...] = ()  # names or globs the program is attached to
    attach_mode: str = "auto"  # auto | native | generic
    # Who made this generation and why; filled in by commit, ignored by ==.
    time: float = field(default=0.0, compare=False)
    author: str = field(default="", compare=False)
    summary: str = field(default="", compare=False)
    # The generation whose rules a revert or rollback brought back (kept through later mode or
    # attach generations), so the next revert steps back past it, not forward again.
    restores: int | None = field(default=None, compare=False)
    # The lowest rule id never handed out: ids are not reused (see assign_rule_ids).
    next_rule_id: int = field(default=1, compare=False)
    kind: ChangeKind = field(default=ChangeKind.CHANGE, compare=False)


@dataclass(frozen=True)
class HistoryEntry:
    generation: int
    time: float  # epoch seconds
    author: str
    summary: str
    kind: ChangeKind = ChangeKind.CHANGE


@dataclass(frozen=True)
class Pending:
    """An apply that reverts to previous_generation unless confirmed before deadline."""

    generation: int
    previous_generation: int
    deadline: float  # epoch seconds
    watchdog_pid: int
    author: str

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.deadline - (time.time() if now is None else now))


def author(environ: Mapping[str, str] = os.environ) -> str:
    """'alice@node1 via SSH 198.51.100.7': who is making a change, for the history."""
    user = environ.get("SUDO_USER") or environ.get("USER") or environ.get("LOGNAME")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = f"uid {os.getuid()}"
    text = f"{user}@{socket.gethostname()}"
    ssh = environ.get("SSH_CONNECTION", "").split()
    if ssh:
        text += f" via SSH {ssh[0]}"
    return printable(text)  # the environment is the caller's to forge


def describe_holder(pid: int | None, since: float, now: float | None = None) -> tuple[str, str]:
    """Who holds the lock, for the error: pid, command, state and for how long; and the fix.

    A stopped holder (SIGSTOP, a debugger) keeps the lock forever and a pid that is gone means
    the lock is held by something it left behind; both are said, with what to do."""
    held = _held_for((now or time.time()) - since)
    if not pid:
        return f"another process, for {held}", "wait for it to finish, then retry"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return (
            f"pid {pid}, which is no longer running, for {held}",
            f"a process it started still holds the lock: find it with 'fuser -v {LOCK_FILE}'",
        )
    state = stat.rsplit(")", 1)[1].split()[0] if ")" in stat else "?"
    command = printable(cmd.decode(errors="replace"))[:120] or "?"
    if state in ("T", "t"):
        return (
            f"pid {pid} '{command}', STOPPED, for {held}",
            f"resume it with 'kill -CONT {pid}' or end it with 'kill {pid}'",
        )
    return f"pid {pid} '{command}', for {held}", "wait for it to finish, then retry"


def _held_for(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


# flock(2) locks belong to an open file description, so a second open() of the lock file by the
# thread that holds it would deadlock against itself: the lock is re-entrant per thread. Other
# threads open their own descriptor and wait like any other process.
_HELD: dict[tuple[str, int], tuple[int, int]] = {}  # (lock path, thread) -> (fd, depth)
_HELD_GUARD = threading.Lock()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(path: Path, exc: OSError, doing: str) -> InfwError:
    if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        return PrivilegeError(
            f"cannot {doing} {path}: permission denied",
            "run as root (the state directory is root-only), or use --read-only",
        )
    return StateError(f"cannot {doing} {path}: {exc.strerror}", "check the disk and the path")


def _encode_ids(rule_ids: Mapping[RuleKey, int]) -> list[list[Any]]:
    return [[[name, list(cidrs), order], rid] for (name, cidrs, order), rid in rule_ids.items()]


def _decode_ids(raw: object) -> dict[RuleKey, int]:
    if not isinstance(raw, list):
        raise ValueError("rule_ids is not a list")
    out: dict[RuleKey, int] = {}
    for item in raw:
        (name, cidrs, order), rid = item
        if not (
            isinstance(name, str)
            and isinstance(cidrs, list)
            and isinstance(order, int)
            and isinstance(rid, int)
            and all(isinstance(c, str) for c in cidrs)
        ):
            raise ValueError(f"bad rule id entry {item!r}")
        out[(name, tuple(cidrs), order)] = rid
    return out


def _ruleset_from_docs(docs: object) -> RuleSet:
    """The inverse of firewall_to_dict for files this module wrote (root-only, so trusted):
    shapes are checked, values are not re-validated (netaddr would cost a second per 100k CIDRs)."""
    if not isinstance(docs, list):
        raise ValueError("ruleset is not a list of documents")
    firewalls: list[Firewall] = []
    for doc in docs:
        meta, spec = doc["metadata"], doc["spec"]
        blocks = [block_from_dict(block) for block in spec["ingress"]]
        interfaces = spec["interfaces"]
        if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
            raise ValueError(f"bad interfaces {interfaces!r}")
        extra = {k: v for k, v in meta.items() if k != "name"}
        firewalls.append(
            Firewall(
                str(meta["name"]),
                tuple(interfaces),
                tuple(blocks),
                dict(spec.get("nodeSelector") or {}),
                extra,
            )
        )
    return RuleSet(tuple(firewalls))


def _encode_state(state: StoredState, packs: Packs) -> dict[str, Any]:
    """Format 2: the blocks go to packs (only those not stored yet are written); the generation
    names them and keeps each block's rule ids beside its reference."""
    blocks = [block for fw in state.ruleset.firewalls for block in fw.ingress]
    refs = packs.store(blocks)
    names = list(dict.fromkeys(name for name, _ in refs))
    number = {name: i for i, name in enumerate(names)}
    rule_ids = state.rule_ids
    firewalls: list[dict[str, Any]] = []
    # Placed ids need no list of their own when no key can be placed twice (names, block
    # CIDRs within an object, orders within a block all distinct) and every id was placed.
    fws = state.ruleset.firewalls
    emitted, unique = 0, len({fw.name for fw in fws}) == len(fws)
    at = 0
    for fw in fws:
        ids: list[list[int]] = []
        keys: set[tuple[str, ...]] = set()
        for block in fw.ingress:
            skey = block.sorted_cidrs
            keys.add(skey)
            flat: list[int] = []
            for rule in block.rules:
                rid = rule_ids.get((fw.name, skey, rule.order))
                if rid is not None:
                    flat += (rule.order, rid)
            emitted += len(flat) // 2
            unique = unique and _ORDERS_UNIQUE(block, None)
            ids.append(flat)
        unique = unique and len(keys) == len(fw.ingress)
        out: dict[str, Any] = {"metadata": {"name": fw.name, **dict(fw.extra_metadata)}}
        if fw.node_selector:
            out["nodeSelector"] = dict(fw.node_selector)
        out["interfaces"] = list(fw.interfaces)
        out["blocks"] = [[number[name], index] for name, index in refs[at : at + len(fw.ingress)]]
        out["ids"] = ids
        firewalls.append(out)
        at += len(fw.ingress)
    return {
        **_encode_head(state),
        "packs": names,
        "firewalls": firewalls,
        # ids whose key names no block (a revert's old ids kept for their counters): as format 1
        "rule_ids": []
        if unique and emitted == len(rule_ids)
        else _encode_ids(_unplaced_ids(state)),
    }


_ORDERS_UNIQUE = BlockMemo(lambda block, _: len({r.order for r in block.rules}) == len(block.rules))


def _unplaced_ids(state: StoredState) -> dict[RuleKey, int]:
    placed = {
        (fw.name, b.sorted_cidrs, r.order)
        for fw in state.ruleset.firewalls
        for b in fw.ingress
        for r in b.rules
    }
    return {k: v for k, v in state.rule_ids.items() if k not in placed}


def _encode_head(state: StoredState) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "generation": state.generation,
        "time": state.time,
        "author": state.author,
        "summary": state.summary,
        "restores": state.restores,
        "next_rule_id": state.next_rule_id,
        "kind": state.kind.value,
        "mode": state.mode,
        "interfaces": list(state.interfaces),
        "attach_mode": state.attach_mode,
    }


def _names(raw: object, what: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
        raise ValueError(f"{what} is not a list of names")
    return raw


def _decode_v2(raw: dict[str, Any], packs: Packs) -> tuple[RuleSet, dict[RuleKey, int]]:
    names = _names(raw["packs"], "packs")
    rule_ids: dict[RuleKey, int] = {}
    firewalls: list[Firewall] = []
    for f in raw["firewalls"]:
        meta = f["metadata"]
        name = str(meta["name"])
        blocks = tuple(packs.blocks(names[p])[i] for p, i in f["blocks"])
        ids = f["ids"]
        if len(ids) != len(blocks):
            raise ValueError(f"{name}: {len(ids)} id lists for {len(blocks)} blocks")
        for block, flat in zip(blocks, ids, strict=True):
            if not all(type(v) is int for v in flat) or len(flat) % 2:
                raise ValueError(f"{name}: bad rule ids {flat!r}")
            skey = block.sorted_cidrs
            for j in range(0, len(flat), 2):
                rule_ids[(name, skey, flat[j])] = flat[j + 1]
        firewalls.append(
            Firewall(
                name,
                tuple(_names(f["interfaces"], "interfaces")),
                blocks,
                dict(f.get("nodeSelector") or {}),
                {k: v for k, v in meta.items() if k != "name"},
            )
        )
    rule_ids.update(_decode_ids(raw["rule_ids"]))
    return RuleSet(tuple(firewalls)), rule_ids


def _decode_state(raw: object, packs: Packs) -> StoredState:
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if raw.get("format") not in READ_FORMATS:
        raise ValueError(
            f"unknown format {raw.get('format')!r} (this infw reads formats "
            f"{', '.join(map(str, READ_FORMATS))})"
        )
    generation = raw["generation"]
    if not isinstance(generation, int) or generation < 1:
        raise ValueError(f"bad generation {generation!r}")
    mode, attach_mode = raw["mode"], raw["attach_mode"]
    if mode not in MODES or attach_mode not in ATTACH_MODES:
        raise ValueError(f"bad mode {mode!r} or attach_mode {attach_mode!r}")
    interfaces = _names(raw["interfaces"], "interfaces")
    if raw["format"] == 1:
        ruleset, rule_ids = _ruleset_from_docs(raw["ruleset"]), _decode_ids(raw["rule_ids"])
    else:
        ruleset, rule_ids = _decode_v2(raw, packs)
    return StoredState(
        generation=generation,
        ruleset=ruleset,
        rule_ids=rule_ids,
        mode=mode,
        interfaces=tuple(interfaces),
        attach_mode=attach_mode,
        time=float(raw.get("time", 0.0)),
        author=str(raw.get("author", "")),
        summary=str(raw.get("summary", "")),
        restores=raw["restores"] if isinstance(raw.get("restores"), int) else None,
        next_rule_id=_next_rule_id(raw, rule_ids),
        kind=_decode_kind(raw.get("kind")),
    )


def _decode_kind(raw: object) -> ChangeKind:
    # Generations written before kinds existed (or by a newer infw with more kinds) are changes.
    try:
        return ChangeKind(str(raw))
    except ValueError:
        return ChangeKind.CHANGE


def _next_rule_id(raw: dict[str, Any], rule_ids: Mapping[RuleKey, int]) -> int:
    """Stored by newer builds; older state files: one past the highest id in use."""
    value = raw.get("next_rule_id")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return max(rule_ids.values(), default=0) + 1


class Store:
    """The state directory. Reads never lock; every write happens under `lock()`."""

    author = staticmethod(author)

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)
        self.state_path = self.root / STATE_FILE
        self.pending_path = self.root / PENDING_FILE
        self.lock_path = self.root / LOCK_FILE
        self.history_dir = self.root / HISTORY_DIR
        self.packs = Packs(self.root, self._write_pack)
        # The last text read or written per generation file and what it decodes to: an equal
        # text is the same generation (the packs it names never change), so polling consoles
        # and a commit's own checks decode nothing twice.
        self._decoded: dict[Path, tuple[str, StoredState]] = {}

    # -- files ---------------------------------------------------------------------------

    def _ensure_dirs(self) -> None:
        if self.history_dir.is_dir() and self.root.stat().st_mode & 0o077 == 0:
            return  # nothing to create or tighten (and a read-only state dir stays lockable)
        try:
            for path in (self.root, self.history_dir):
                path.mkdir(mode=0o700, parents=True, exist_ok=True)
                if path.stat().st_uid == os.getuid():
                    path.chmod(0o700)  # a directory created by hand may be wider
        except OSError as exc:
            raise _os_error(self.root, exc, "create") from exc

    def _write_pack(self, path: Path, text: str) -> None:
        # The pack directory is made when the first pack is written, not with the state dir:
        # a format 1 state dir (no packs yet) stays lockable when it is read-only.
        self._ensure_dirs()
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _os_error(path.parent, exc, "create") from exc
        self._write_text(path, text)

    def _write_json(self, path: Path, data: object) -> None:
        self._write_text(path, json.dumps(data) + "\n")  # dumps: only it runs the C encoder

    def _write_text(self, path: Path, text: str) -> None:
        """Atomic replace: a reader sees the old file or the new one, even after a crash."""
        self._ensure_dirs()
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise _os_error(path.parent, exc, "write to") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise _os_error(path, exc, "write") from exc

    def _read_text(self, path: Path) -> str | None:
        """None when the file does not exist; StateError when it cannot be read."""
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(path, exc, "read") from exc
        except UnicodeDecodeError as exc:
            raise self._corrupt(path, "not UTF-8 text") from exc

    def _parse_json(self, path: Path, text: str) -> object:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._corrupt(path, f"not valid JSON ({exc})") from exc

    def _read_json(self, path: Path) -> object | None:
        """None when the file does not exist; StateError when it cannot be read or parsed."""
        text = self._read_text(path)
        return None if text is None else self._parse_json(path, text)

    def _corrupt(self, path: Path, why: str) -> StateError:
        return StateError(
            f"state file {path} is corrupt: {why}; it was left untouched",
            f"inspect it; `infw history` lists the intact generations under {self.history_dir}, "
            "and a commit with repair (e.g. `infw revert --repair`) moves the bad file aside",
        )

    def _read_state(self, path: Path) -> StoredState | None:
        text = self._read_text(path)
        if text is None:
            return None
        known = self._decoded.get(path)
        if known is not None and known[0] == text:
            return known[1]
        raw = self._parse_json(path, text)
        try:
            state = _decode_state(raw, self.packs)
        except CorruptPack as exc:
            raise self._corrupt(path, f"the block pack {exc.path} {exc.why}") from exc
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            raise self._corrupt(path, f"unexpected content ({exc!r})") from exc
        assert isinstance(raw, dict)  # _decode_state checked it
        self._remember(path, text, state, raw.get("packs") or [])
        return state

    def _remember(self, path: Path, text: str, state: StoredState, packs: list[str]) -> None:
        if len(self._decoded) >= 4 and path not in self._decoded:
            self._decoded.clear()  # a few files at a time are read: state.json and a history entry
        self._decoded[path] = (text, state)
        if path == self.state_path:
            self.packs.retain(packs)

    def _history_path(self, generation: int) -> Path:
        return self.history_dir / f"{generation:06d}.json"

    def generations(self) -> list[int]:
        """Every generation in the history, ascending."""
        try:
            names = os.listdir(self.history_dir)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(self.history_dir, exc, "list") from exc
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    # -- lock ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
        """Exclusive across processes and threads (flock), re-entrant within a thread."""
        self._ensure_dirs()
        key = (str(self.lock_path.resolve()), threading.get_ident())
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None:
                _HELD[key] = (held[0], held[1] + 1)
        if held is None:
            fd = self._acquire(timeout)
            with _HELD_GUARD:
                _HELD[key] = (fd, 1)
        try:
            yield
        finally:
            with _HELD_GUARD:
                fd, depth = _HELD[key]
                if depth > 1:
                    _HELD[key] = (fd, depth - 1)
                else:
                    del _HELD[key]
                    os.close(fd)  # closing the last descriptor releases the flock

    def _acquire(self, timeout: float) -> int:
        writable = True
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            # flock needs no write access: on a read-only state dir the lock still keeps a
            # rollback (kernel first) from racing another console; the pid just isn't written.
            if exc.errno not in (errno.EROFS, errno.ENOSPC):
                raise _os_error(self.lock_path, exc, "open") from exc
            try:
                fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                raise _os_error(self.lock_path, exc, "open") from exc
            writable = False
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = self.lock_holder(fd)
                    since = os.fstat(fd).st_mtime  # the holder wrote its pid when it got it
                    os.close(fd)
                    who, fix = describe_holder(holder, since)
                    raise StateError(f"another infw is applying ({who}); retry", fix) from None
                time.sleep(0.02)
        if writable:
            with contextlib.suppress(OSError):  # a full disk: the pid is only a hint
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return fd

    def busy_holder(self) -> int | None:
        """The pid holding the lock right now (0 when its pid is unknown), None when it is free.
        Looks without taking it: nothing is written, so a read-only console may ask."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None  # never locked here
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return self.lock_holder(fd) or 0
        finally:
            os.close(fd)  # also releases the probe's flock when it got one
        return None

    def lock_holder(self, fd: int | None = None) -> int | None:
        """The pid holding the lock per /proc/locks; else the pid its last holder wrote (a
        holder that could not write it, e.g. on a read-only state dir, leaves an older pid)."""
        from engine.kernel.ringbuf import lock_holders  # the kernel's record, not a hint

        held = lock_holders(str(self.lock_path))
        if len(held) == 1:
            return held.pop()
        try:
            if fd is None:
                text = self.lock_path.read_text()
            else:
                text = os.pread(fd, 32, 0).decode(errors="replace")
        except OSError:
            return None
        text = text.strip()
        return int(text) if text.isdigit() else None

    # -- state and history -----------------------------------------------------------------

    def load(self) -> StoredState | None:
        """The current generation; None when nothing was ever committed."""
        state = self._read_state(self.state_path)
        if state is not None:
            return state
        # state.json is the commit point but history holds the same data: a lost state.json
        # (deleted by hand) falls back to the newest generation instead of restarting at 1.
        gens = self.generations()
        return self.load_generation(gens[-1]) if gens else None

    def commit(
        self,
        state: StoredState,
        *,
        expected_generation: int,
        author: str,
        summary: str,
        repair: bool = False,
        kind: ChangeKind = ChangeKind.CHANGE,
    ) -> StoredState:
        """Store `state` as generation expected_generation + 1, or refuse a stale edit.

        With repair, a corrupt state.json is moved aside (state.json.corrupt-<time>-<pid>) and
        the newest generation in the history counts as the current one (pass that number as
        expected_generation: `generations()[-1]`)."""
        if state.mode not in MODES:
            raise StateError(f"unknown mode {state.mode!r}", f"use one of {', '.join(MODES)}")
        if state.attach_mode not in ATTACH_MODES:
            raise StateError(
                f"unknown attach mode {state.attach_mode!r}",
                f"use one of {', '.join(ATTACH_MODES)}",
            )
        with self.lock():
            try:
                current_gen = self._stored_generation()
                corrupt = False
            except StateError:
                if not repair:
                    raise
                gens = self.generations()
                current_gen, corrupt = (gens[-1] if gens else 0), True
            if current_gen != expected_generation:
                raise StateError(
                    f"the rules changed under you (generation {current_gen}, "
                    f"you edited {expected_generation}); reload and retry",
                    "reload to see the other change, then make yours again",
                )
            if corrupt:
                self._set_aside_corrupt()
            # Any history file above the current generation is from a commit that never reached
            # state.json (a crash between the two writes): it was never in force, so reuse it.
            generation = expected_generation + 1
            top = max(state.rule_ids.values(), default=0) + 1
            new = replace(
                state,
                generation=generation,
                time=time.time(),
                author=printable(author),
                summary=printable(summary),  # summaries embed file names
                kind=kind,
                next_rule_id=max(state.next_rule_id, top),
            )
            new = replace(new, rule_ids=dict(new.rule_ids))  # the caller's dict stays the caller's
            encoded = _encode_state(new, self.packs)  # writes the blocks not stored yet
            text = json.dumps(encoded) + "\n"
            self._write_text(self._history_path(generation), text)
            try:
                self._write_text(self.state_path, text)  # the commit point
            except InfwError:
                # Never committed: no history entry may claim it was (a full disk fails here).
                with contextlib.suppress(OSError):
                    os.unlink(self._history_path(generation))
                self._prune_quietly()  # and the packs only it named go (frees the disk too)
                raise
            self._remember(self.state_path, text, new, encoded["packs"])
            return new

    def uncommit(self, generation: int) -> None:
        """Take back a commit whose change never reached the kernel (the kernel refused it, or
        the watchdog would not start): state.json goes back to the generation before, and
        generation's history entry is removed, so history shows no change that never was."""
        with self.lock():
            if self._stored_generation() != generation:
                raise StateError(
                    f"cannot take back generation {generation}: the store moved on",
                    "run `infw status` to see what is in force",
                )
            older = [g for g in self.generations() if g < generation]
            if older:
                text = self._history_path(older[-1]).read_text(encoding="utf-8")
                self._write_text(self.state_path, text)
            else:
                try:
                    os.unlink(self.state_path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise _os_error(self.state_path, exc, "remove") from exc
            try:
                os.unlink(self._history_path(generation))
                _fsync_dir(self.history_dir)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _os_error(self._history_path(generation), exc, "remove") from exc
            self._prune_quietly()  # the packs only the taken-back generation named

    def prune(self) -> list[str]:
        """Remove the packs no generation names (state.json or any history entry) and pack
        temp files a killed write left; returns the packs removed. Under the lock, so no commit
        is between writing a pack and writing the index that names it. A kill at any point
        removes only unnamed files: every generation still loads. When some generation's index
        cannot be read it might name any pack, and nothing is removed."""
        with self.lock():
            try:
                present = sorted(os.listdir(self.packs.dir))
            except FileNotFoundError:
                return []
            except OSError as exc:
                raise _os_error(self.packs.dir, exc, "list") from exc
            named = self._named_packs()
            if named is None:
                return []
            removed: list[str] = []
            for entry in present:
                name = entry[: -len(".json")]
                unnamed_pack = entry.endswith(".json") and not entry.startswith(".")
                if (unnamed_pack and name not in named) or (
                    entry.startswith(".") and entry.endswith(".tmp")  # no write is under way
                ):
                    path = self.packs.dir / entry
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise _os_error(path, exc, "remove") from exc
                    if unnamed_pack:
                        removed.append(name)
            if removed:
                self.packs.forget(removed)
                _fsync_dir(self.packs.dir)
            return removed

    def _named_packs(self) -> set[str] | None:
        """Every pack some generation names; None when an index cannot be read."""
        named: set[str] = set()
        paths = [self.state_path, *(self._history_path(g) for g in self.generations())]
        for path in paths:
            try:
                text = self._read_text(path)
                raw = None if text is None else json.loads(text)
            except (InfwError, ValueError):
                return None
            if raw is None:
                continue  # no state.json (yet, or lost): the history holds every generation
            packs = raw.get("packs", []) if isinstance(raw, dict) else None  # format 1: none
            if not isinstance(packs, list) or not all(isinstance(p, str) for p in packs):
                return None
            named.update(packs)
        return named

    def _prune_quietly(self) -> None:
        """prune() as housekeeping after a change that already succeeded or failed on its own:
        a pack left behind costs disk only, so its removal failing changes nothing."""
        with contextlib.suppress(InfwError, OSError):
            self.prune()

    def _stored_generation(self) -> int:
        """The current generation without decoding the rules (commit runs this every time)."""
        path = self.state_path
        text = self._read_text(path)
        if text is None:
            gens = self.generations()
            if not gens:
                return 0
            path = self._history_path(gens[-1])
            text = self._read_text(path)
        known = self._decoded.get(path)
        if known is not None and known[0] == text:
            return known[1].generation
        raw = self._parse_json(path, text) if text is not None else None
        generation = raw.get("generation") if isinstance(raw, dict) else None
        if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
            raise self._corrupt(path, f"no valid generation ({generation!r})")
        return generation

    def _set_aside_corrupt(self) -> None:
        """Keep a corrupt state.json for inspection, under a name nothing else writes."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.state_path.with_name(f"{STATE_FILE}.corrupt-{stamp}-{os.getpid()}")
        try:
            if self.state_path.exists():
                os.replace(self.state_path, aside)
                _fsync_dir(self.root)
        except OSError as exc:
            raise _os_error(self.state_path, exc, "move aside") from exc

    def load_generation(self, generation: int) -> StoredState:
        state = self._read_state(self._history_path(generation))
        if state is None:
            have = self.generations()
            span = f"{have[0]}..{have[-1]}" if have else "none"
            raise StateError(
                f"generation {generation} is not in the history ({self.history_dir})",
                f"generations kept: {span}",
            )
        return state

    def previous_generation(self, generation: int) -> int | None:
        older = [g for g in self.generations() if g < generation]
        return older[-1] if older else None

    def history(self, limit: int = 50) -> list[HistoryEntry]:
        """Newest first. Unreadable entries are shown as such rather than hidden."""
        out: list[HistoryEntry] = []
        for gen in reversed(self.generations()):
            if len(out) >= limit:
                break
            try:
                raw = self._read_json(self._history_path(gen))
            except StateError as exc:
                out.append(HistoryEntry(gen, 0.0, "", f"(unreadable: {exc.message})"))
                continue
            if not isinstance(raw, dict):
                out.append(HistoryEntry(gen, 0.0, "", "(unreadable: not a JSON object)"))
                continue
            out.append(
                HistoryEntry(
                    gen,
                    float(raw.get("time", 0.0)),
                    printable(str(raw.get("author", ""))),  # written before this was escaped
                    printable(str(raw.get("summary", ""))),
                    _decode_kind(raw.get("kind")),
                )
            )
        return out

    # -- pending confirmation ------------------------------------------------------------

    def set_pending(self, pending: Pending) -> None:
        with self.lock():
            self._write_json(
                self.pending_path,
                {
                    "generation": pending.generation,
                    "previous_generation": pending.previous_generation,
                    "deadline": pending.deadline,
                    "watchdog_pid": pending.watchdog_pid,
                    "author": pending.author,
                },
            )

    def get_pending(self) -> Pending | None:
        raw = self._read_json(self.pending_path)
        if raw is None:
            return None
        try:
            assert isinstance(raw, dict)
            return Pending(
                generation=int(raw["generation"]),
                previous_generation=int(raw["previous_generation"]),
                deadline=float(raw["deadline"]),
                watchdog_pid=int(raw["watchdog_pid"]),
                author=str(raw["author"]),
            )
        except (AssertionError, KeyError, TypeError, ValueError) as exc:
            raise self._corrupt(self.pending_path, f"unexpected content ({exc!r})") from exc

    def clear_pending(self, expected_generation: int | None = None) -> bool:
        """Remove the marker (only if it names expected_generation, when given).

        True when this call removed it: of a confirm and a watchdog racing, exactly one wins."""
        with self.lock():
            if expected_generation is not None:
                try:
                    pending = self.get_pending()
                except StateError:
                    return False  # unreadable: only an unconditional clear removes it
                if pending is None or pending.generation != expected_generation:
                    return False
            try:
                os.unlink(self.pending_path)
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise _os_error(self.pending_path, exc, "remove") from exc
            _fsync_dir(self.root)
            return True
