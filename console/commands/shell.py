"""The repl command: the interactive console, started through the hook the CLI hands in."""

from __future__ import annotations

import argparse

from console.commands.context import Context
from console.commands.usage import UsageError


def cmd_repl(ctx: Context, args: argparse.Namespace) -> int:
    if ctx.in_repl:
        raise UsageError("already in the REPL", "type a command, 'help' for the list")
    if ctx.start_repl is None:
        raise UsageError("no interactive console here", "run 'infw' in a terminal")
    return ctx.start_repl(ctx.engine)
