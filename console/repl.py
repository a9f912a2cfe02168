"""The interactive console: prompt_toolkit over the same command table as the CLI.

Completion knows commands, options, interfaces, rule ids, protocols, modes and files; history
persists across sessions; the bottom toolbar shows mode, generation, rule count and a pending
confirmation counting down. Errors are printed and the REPL carries on.
"""

from __future__ import annotations

import errno
import os
import shlex
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output
from prompt_toolkit.styles import Style

from console.commands import (
    COMMANDS,
    FILTER_KEYS,
    PROTOCOLS,
    Arg,
    Command,
    Context,
    UsageError,
    build_parser,
    dispatch,
    report_error,
)
from engine import Status, printable

if TYPE_CHECKING:
    from engine import Engine

EXIT_WORDS = ("exit", "quit")
RULE_KEYWORDS = ("from", "on", "order", "firewall")
ICMP_KEYWORDS = ("type", "code")
YAML_SUFFIXES = (".yaml", ".yml", ".json")

STYLE = Style.from_dict(
    {
        "bottom-toolbar": "noreverse bg:#303030 #d0d0d0",
        "bottom-toolbar.mode": "bold",
        "bottom-toolbar.audit": "bold bg:#875f00 #ffffff",
        "bottom-toolbar.pending": "bold bg:#af0000 #ffffff",
        "bottom-toolbar.error": "bg:#5f0000 #ffffff",
    }
)


def default_history_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "infw" / "history"


def file_history(path: Path | None = None, err: TextIO = sys.stderr) -> History:
    """The history file, only if it is a regular file of ours reached without a symlink: a
    planted link (root's REPL writing through /tmp/x -> /etc/...) or someone else's file would
    be written to with our rights, or feed us their lines."""
    path = path or default_history_path()
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, flags, 0o600)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        why = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
        err.write(f"note: no history across sessions ({printable(str(path))}: {why})\n")
        return InMemoryHistory()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
        err.write(
            f"note: no history across sessions ({printable(str(path))}: "
            "not a regular file owned by you)\n"
        )
        return InMemoryHistory()
    return FileHistory(str(path))


def is_exit(line: str) -> bool:
    return line.strip() in EXIT_WORDS


def execute_line(ctx: Context, line: str) -> int:
    """Run one REPL line; every error is printed, and its exit code returned."""
    line = line.strip()
    if not line or line.startswith("#"):
        return 0
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        return report_error(ctx, UsageError(f"cannot read the line: {exc}", "close the quote"))
    if argv[0] == "?":
        argv[0] = "help"
    return dispatch(ctx, argv)


# ------------------------------------------------------------------ completion


def _matching(
    current: str,
    candidates: Iterable[str],
    meta: Callable[[str], str] | None = None,
    replace: int | None = None,
) -> Iterator[Completion]:
    """Candidates starting with `current` (case-insensitive), replacing `replace` chars before the cursor."""
    low = current.lower()
    start = -(len(current) if replace is None else replace)
    for cand in candidates:
        if cand.lower().startswith(low):
            yield Completion(cand, start_position=start, display_meta=meta(cand) if meta else None)


class ReplCompleter(Completer):
    """Completes from the command table; values come from the engine (interfaces, rule ids)."""

    def __init__(self, engine: Callable[[], Any]) -> None:
        self._engine = engine
        self._files = PathCompleter(expanduser=True)
        self._yaml = PathCompleter(
            expanduser=True, file_filter=lambda p: os.path.isdir(p) or p.endswith(YAML_SUFFIXES)
        )

    # -- values from the engine; a failing engine just completes nothing

    def interfaces(self) -> list[str]:
        try:
            return sorted(self._engine().interfaces())
        except Exception:
            return []

    def rule_ids(self) -> dict[str, str]:
        try:
            rows = self._engine().rule_rows()
        except Exception:
            return {}
        return {
            str(r.rule_id): f"{r.action.upper()} {r.protocol} {r.match} from {','.join(r.cidrs)} "
            f"order {r.order}"
            for r in rows
        }

    # -- the dispatcher

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        text = document.text_before_cursor
        words = text.split()
        current = words.pop() if words and not text[-1:].isspace() else ""
        if not words:
            summaries = {n: c.summary for n, c in COMMANDS.items()}
            yield from _matching(
                current, [*COMMANDS, *EXIT_WORDS], lambda n: summaries.get(n, "leave")
            )
            return
        cmd = COMMANDS.get(words[0])
        if cmd is None:
            return
        rest = words[1:]
        if rest and rest[-1].startswith("-"):
            opt = cmd.option(rest[-1])
            if opt is not None and opt.takes_value:
                yield from self._values(opt, current, [], complete_event)
                return
        if current.startswith("-"):
            used = set(rest)
            flags = [f for a in cmd.args if not a.positional for f in a.flags if f.startswith("--")]
            flags += ["--json", "--verbose", "--help"]
            helps = {f: str(a.kwargs.get("help", "")) for a in cmd.args for f in a.flags}
            yield from _matching(
                current, [f for f in flags if f not in used], lambda f: helps.get(f, "")
            )
            return
        positional, before = self._positional(cmd, rest)
        if positional is not None:
            yield from self._values(positional, current, before, complete_event)

    @staticmethod
    def _positional(cmd: Command, rest: list[str]) -> tuple[Arg | None, list[str]]:
        """Which positional argument the cursor is in, and the words already given to it."""
        positionals = [a for a in cmd.args if a.positional]
        index, taken = 0, []
        skip = False
        for word in rest:
            if skip:
                skip = False
                continue
            if word.startswith("-"):
                opt = cmd.option(word)
                skip = opt is not None and opt.takes_value
                continue
            if index >= len(positionals):
                return None, []
            spec = positionals[index]
            if spec.kwargs.get("nargs") in ("+", "*"):
                taken.append(word)
            else:
                index += 1
        if index >= len(positionals):
            return None, []
        return positionals[index], taken

    def _values(
        self, spec: Arg, current: str, before: list[str], event: CompleteEvent
    ) -> Iterator[Completion]:
        kind = spec.complete
        if kind == "interfaces":
            yield from self._list_item(current, self.interfaces())
        elif kind == "rule_ids":
            ids = self.rule_ids()
            yield from _matching(current, ids, lambda i: ids.get(i, ""))
        elif kind == "protocols":
            yield from _matching(current, PROTOCOLS)
        elif kind == "choices":
            yield from _matching(current, spec.choices)
        elif kind == "commands":
            yield from _matching(current, COMMANDS)
        elif kind in ("files", "yaml_files"):
            paths = self._yaml if kind == "yaml_files" else self._files
            yield from paths.get_completions(Document(current, len(current)), event)
        elif kind == "filter":
            yield from self._filter(current)
        elif kind == "rule_line":
            yield from self._rule_line(current, before)

    def _list_item(self, current: str, names: list[str]) -> Iterator[Completion]:
        """Complete the last item of a comma-separated list (on eth0,et<Tab>)."""
        tail = current.rpartition(",")[2]
        yield from _matching(tail, names, replace=len(tail))

    def _filter(self, current: str) -> Iterator[Completion]:
        key, sep, value = current.partition("=")
        if not sep:
            yield from _matching(current, [f"{k}=" for k in FILTER_KEYS])
        elif key == "proto":
            yield from _matching(value, PROTOCOLS, replace=len(value))
        elif key == "iface":
            yield from _matching(value, self.interfaces(), replace=len(value))
        elif key == "verdict":
            yield from _matching(value, ("deny", "would-deny"), replace=len(value))
        elif key == "rule":
            ids = self.rule_ids()
            yield from _matching(value, ids, lambda i: ids.get(i, ""), replace=len(value))

    def _rule_line(self, current: str, before: list[str]) -> Iterator[Completion]:
        """allow|deny [proto [ports | type T [code C]]] from CIDR on IFACE order N [firewall NAME]."""
        if not before:
            yield from _matching(current, ("allow", "deny"))
            return
        prev = before[-1].lower()
        if prev == "on":
            yield from self._list_item(current, self.interfaces())
            return
        if prev in RULE_KEYWORDS or prev in ICMP_KEYWORDS:
            return  # a CIDR, order, name or number: nothing to offer
        used = {w.lower() for w in before}
        keywords = [k for k in RULE_KEYWORDS if k not in used]
        if len(before) == 1:
            yield from _matching(current, [p.lower() for p in PROTOCOLS] + keywords)
            return
        if len(before) >= 2 and before[1].lower() in ("icmp", "icmpv6"):
            keywords += [k for k in ICMP_KEYWORDS if k not in used]
        yield from _matching(current, keywords)


# ------------------------------------------------------------------ toolbar


class Toolbar:
    """The bottom line: node, mode, generation, rules, interfaces and a pending countdown.

    Status is read at most once a second; the countdown is recomputed on every redraw.
    """

    def __init__(
        self, engine: Callable[[], Any], clock: Callable[[], float] = time.time, ttl: float = 1.0
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._ttl = ttl
        self._read_at = float("-inf")
        self.status: Status | None = None
        self.error: str | None = None

    def refresh(self) -> None:
        now = self._clock()
        if now - self._read_at < self._ttl:
            return
        self._read_at = now
        try:
            self.status, self.error = self._engine().status(), None
        except Exception as exc:
            self.error = getattr(exc, "message", None) or str(exc)

    def __call__(self) -> FormattedText:
        self.refresh()
        st = self.status
        if st is None:
            return FormattedText(
                [("class:bottom-toolbar.error", f" status unavailable: {self.error} ")]
            )
        parts: list[tuple[str, str]] = [("class:bottom-toolbar", f" {st.node} ")]
        if st.mode == "audit":
            parts.append(("class:bottom-toolbar.audit", " AUDIT (drops nothing) "))
        else:
            parts.append(("class:bottom-toolbar.mode", " ENFORCE "))
        ifaces = ",".join(v.name for v in st.interfaces) or "no interface"
        loaded = ifaces if st.loaded else "NOT LOADED"
        parts.append(
            ("class:bottom-toolbar", f" gen {st.generation} │ {st.rule_count} rules │ {loaded} ")
        )
        if st.read_only:
            parts.append(("class:bottom-toolbar", "│ read-only "))
        if st.pending is not None:
            left = st.pending.remaining(self._clock())
            parts.append(
                (
                    "class:bottom-toolbar.pending",
                    f" PENDING gen {st.pending.generation}: 'confirm' within {left:.0f}s or it reverts ",
                )
            )
        if self.error:
            parts.append(("class:bottom-toolbar.error", f" {self.error} "))
        return FormattedText(parts)


# ------------------------------------------------------------------ the loop


def prompt_text(engine: Any) -> str:
    netns = getattr(engine, "netns", None)
    return f"infw({netns})> " if netns else "infw> "


def run_repl(
    engine: Engine | Any,
    *,
    input: Input | None = None,
    output: Output | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    history: History | None = None,
) -> int:
    """Read commands until exit/quit/Ctrl-D. `input`/`output` let tests drive it with a pipe."""
    out = out or sys.stdout
    err = err or sys.stderr
    ctx = Context(
        connect=lambda: engine,
        out=out,
        err=err,
        in_repl=True,
        parser=build_parser(repl=True, out=out),
    )
    ctx._engine = engine
    toolbar = Toolbar(lambda: engine)
    session: PromptSession[str] = PromptSession(
        prompt_text(engine),
        completer=ReplCompleter(lambda: engine),
        complete_while_typing=False,
        auto_suggest=AutoSuggestFromHistory(),
        history=history if history is not None else file_history(err=err),
        bottom_toolbar=toolbar,
        refresh_interval=1.0,
        style=STYLE,
        input=input,
        output=output,
    )
    out.write(
        "infw console: 'help' lists commands, Tab completes, 'exit' or Ctrl-D leaves "
        "(the firewall keeps running)\n"
    )
    out.flush()
    while True:
        try:
            line = session.prompt()
        except KeyboardInterrupt:
            continue  # Ctrl-C clears the line, as in a shell
        except EOFError:
            break
        if is_exit(line):
            break
        try:
            execute_line(ctx, line)
        except KeyboardInterrupt:
            err.write("interrupted\n")
    _say_goodbye(ctx)
    return 0


def _say_goodbye(ctx: Context) -> None:
    try:
        pending = ctx.engine.status().pending
    except Exception:
        pending = None
    if pending is not None:
        left = pending.remaining(time.time())
        ctx.err.write(
            f"warning: generation {pending.generation} is still pending: it reverts in {left:.0f}s "
            "unless you run 'infw confirm'\n"
        )
    ctx.out.write("bye: the firewall keeps running\n")
    ctx.out.flush()
