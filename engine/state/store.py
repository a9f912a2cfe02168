"""Desired state on disk (DESIGN §4): the current generation, every applied generation's history,
the pending-confirmation marker, and the lock that keeps two consoles from losing an edit.

Layout of the state directory (0700, files 0600, every write atomic: temp file, fsync, rename,
fsync of the directory). The rules are kept as the operator's CRD documents (firewall_to_dict)
inside JSON, which is YAML too: PyYAML takes seconds for 100,000 CIDRs where json takes 50 ms.
    state.json              the current generation (the commit point)
    history/000042.json     every generation ever committed, with who and why
    pending.json            an apply waiting for confirmation (every console polls it)
    lock                    flock(2) target; holds the pid of the holder
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

from engine.core.compiler import RuleKey
from engine.core.crd import firewall_to_dict, parse_port_range
from engine.core.model import Action, Firewall, IngressBlock, Protocol, Rule, RuleSet
from engine.core.textsafe import printable
from engine.errors import InfwError, PrivilegeError, StateError

FORMAT = 1
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


def _rule_from_dict(raw: dict[str, Any]) -> Rule:
    protocol = ports = icmp_type = icmp_code = None
    pc = raw.get("protocolConfig")
    if pc is not None:
        protocol = Protocol(pc["protocol"])
        sub = pc.get(protocol.crd_key) or {}
        if "ports" in sub:
            ports = parse_port_range(sub["ports"])
        icmp_type, icmp_code = sub.get("icmpType"), sub.get("icmpCode")
    for value in (raw["order"], icmp_type, icmp_code):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"bad number {value!r} in rule {raw!r}")
    return Rule(raw["order"], Action(raw["action"]), protocol, ports, icmp_type, icmp_code)


def _ruleset_from_docs(docs: object) -> RuleSet:
    """The inverse of firewall_to_dict for files this module wrote (root-only, so trusted):
    shapes are checked, values are not re-validated (netaddr would cost a second per 100k CIDRs)."""
    if not isinstance(docs, list):
        raise ValueError("ruleset is not a list of documents")
    firewalls: list[Firewall] = []
    for doc in docs:
        meta, spec = doc["metadata"], doc["spec"]
        blocks: list[IngressBlock] = []
        for block in spec["ingress"]:
            cidrs = block["sourceCIDRs"]
            if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
                raise ValueError(f"bad sourceCIDRs {cidrs!r}")
            blocks.append(
                IngressBlock(tuple(cidrs), tuple(_rule_from_dict(r) for r in block["rules"]))
            )
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


def _encode_state(state: StoredState) -> dict[str, Any]:
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
        "rule_ids": _encode_ids(state.rule_ids),
        "ruleset": [firewall_to_dict(fw) for fw in state.ruleset.firewalls],
    }


def _decode_state(raw: object) -> StoredState:
    if not isinstance(raw, dict):
        raise ValueError("not a JSON object")
    if raw.get("format") != FORMAT:
        raise ValueError(f"unknown format {raw.get('format')!r} (this infw reads format {FORMAT})")
    generation = raw["generation"]
    if not isinstance(generation, int) or generation < 1:
        raise ValueError(f"bad generation {generation!r}")
    mode, attach_mode = raw["mode"], raw["attach_mode"]
    if mode not in MODES or attach_mode not in ATTACH_MODES:
        raise ValueError(f"bad mode {mode!r} or attach_mode {attach_mode!r}")
    interfaces = raw["interfaces"]
    if not isinstance(interfaces, list) or not all(isinstance(i, str) for i in interfaces):
        raise ValueError("interfaces is not a list of names")
    return StoredState(
        generation=generation,
        ruleset=_ruleset_from_docs(raw["ruleset"]),
        rule_ids=_decode_ids(raw["rule_ids"]),
        mode=mode,
        interfaces=tuple(interfaces),
        attach_mode=attach_mode,
        time=float(raw.get("time", 0.0)),
        author=str(raw.get("author", "")),
        summary=str(raw.get("summary", "")),
        restores=raw["restores"] if isinstance(raw.get("restores"), int) else None,
        next_rule_id=_next_rule_id(raw),
        kind=_decode_kind(raw.get("kind")),
    )


def _decode_kind(raw: object) -> ChangeKind:
    # Generations written before kinds existed (or by a newer infw with more kinds) are changes.
    try:
        return ChangeKind(str(raw))
    except ValueError:
        return ChangeKind.CHANGE


def _next_rule_id(raw: dict[str, Any]) -> int:
    """Stored by newer builds; older state files: one past the highest id in use."""
    value = raw.get("next_rule_id")
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return max(_decode_ids(raw["rule_ids"]).values(), default=0) + 1


class Store:
    """The state directory. Reads never lock; every write happens under `lock()`."""

    author = staticmethod(author)

    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir)
        self.state_path = self.root / STATE_FILE
        self.pending_path = self.root / PENDING_FILE
        self.lock_path = self.root / LOCK_FILE
        self.history_dir = self.root / HISTORY_DIR

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

    def _read_json(self, path: Path) -> object | None:
        """None when the file does not exist; StateError when it cannot be read or parsed."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _os_error(path, exc, "read") from exc
        except UnicodeDecodeError as exc:
            raise self._corrupt(path, "not UTF-8 text") from exc
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self._corrupt(path, f"not valid JSON ({exc})") from exc

    def _corrupt(self, path: Path, why: str) -> StateError:
        return StateError(
            f"state file {path} is corrupt: {why}; it was left untouched",
            f"inspect it; `infw history` lists the intact generations under {self.history_dir}, "
            "and a commit with repair (e.g. `infw revert --repair`) moves the bad file aside",
        )

    def _read_state(self, path: Path) -> StoredState | None:
        raw = self._read_json(path)
        if raw is None:
            return None
        try:
            return _decode_state(raw)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._corrupt(path, f"unexpected content ({exc!r})") from exc

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
        """The pid written by the current (or last) holder of the lock, if any."""
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
            text = json.dumps(_encode_state(new)) + "\n"
            self._write_text(self._history_path(generation), text)
            try:
                self._write_text(self.state_path, text)  # the commit point
            except InfwError:
                # Never committed: no history entry may claim it was (a full disk fails here).
                with contextlib.suppress(OSError):
                    os.unlink(self._history_path(generation))
                raise
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

    def _stored_generation(self) -> int:
        """The current generation without decoding the rules (commit runs this every time)."""
        path = self.state_path
        raw = self._read_json(path)
        if raw is None:
            gens = self.generations()
            if not gens:
                return 0
            path = self._history_path(gens[-1])
            raw = self._read_json(path)
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
