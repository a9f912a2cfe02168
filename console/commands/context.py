"""Where a command prints and how it reaches the engine (one Context per CLI run or REPL session)."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from console import render
from engine import InfwError

if TYPE_CHECKING:
    from console.commands.usage import ArgParser
    from engine import Engine


@dataclass
class Context:
    """Where a command prints and how it reaches the engine; one per CLI run or REPL session."""

    connect: Callable[[], Engine]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    in_repl: bool = False
    json: bool = False
    verbose: bool = False
    parser: ArgParser | None = None
    # Connecting to the lab (for `lab up`, which attaches the lab's firewall).
    connect_lab: Callable[[], Engine] | None = None
    # The options that chose this firewall (--lab, --pin-root ...), repeated in the hints we
    # print, so 'infw confirm' reaches the same firewall as the command that suggested it.
    selector: str = ""
    # Starts the interactive console on an engine (the `repl` command). The CLI hands it in, so
    # this package never imports console.repl, which imports this package.
    start_repl: Callable[[Engine], int] | None = None
    _engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.connect()
        return self._engine

    @property
    def prefix(self) -> str:
        """How the user types a command here: 'infw confirm' in a shell, 'confirm' in the REPL."""
        if self.in_repl:
            return ""
        return f"infw {self.selector} " if self.selector else "infw "

    @property
    def style(self) -> render.Style:
        return render.Style(not self.json and render.wants_color(self.out))

    def emit(self, data: Any, text: str | Callable[[], str]) -> None:
        """Print `data` as JSON with --json, else the text form."""
        if self.json:
            self.out.write(json.dumps(data, default=str) + "\n")
        else:
            body = text() if callable(text) else text
            if body:
                self.out.write(body + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A remark for a human (stderr, so it never mixes with --json data)."""
        self.err.write(text + "\n")
        self.err.flush()

    def progress(self) -> render.ProgressLine:
        return render.ProgressLine(self.err, spinner=render.wants_color(self.err))


def report_error(ctx: Context, exc: BaseException) -> int:
    """Print an error the one way both consoles do; returns the exit code."""
    if isinstance(exc, InfwError):
        for line in render.error_lines(exc):
            ctx.err.write(line + "\n")
        if ctx.json:
            ctx.out.write(json.dumps(render.error_json(exc), default=str) + "\n")
        code = exc.exit_code
    else:
        ctx.err.write(
            f"infw: error: unexpected {type(exc).__name__}: {exc} — "
            f"{'see the traceback below' if ctx.verbose else 'run with -v for the traceback'}\n"
        )
        code = 1
    if ctx.verbose:
        ctx.err.write("".join(traceback.format_exception(exc)))
    ctx.err.flush()
    ctx.out.flush()
    return code
