"""Running one command: parse the line, call its handler, report any error the one way."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from console.commands.context import Context, report_error
from console.commands.parser import build_parser
from console.commands.table import COMMANDS
from console.commands.usage import ParserExit, UsageError


def dispatch(ctx: Context, argv: Sequence[str]) -> int:
    """Parse one command line and run it; errors are reported, never raised."""
    ctx.json = "--json" in argv
    ctx.verbose = "-v" in argv or "--verbose" in argv
    try:
        parser = ctx.parser or build_parser(repl=ctx.in_repl, out=ctx.out)
        ctx.parser = parser
        args = parser.parse_args(list(argv))
    except ParserExit as done:
        return done.status
    except UsageError as exc:
        return report_error(ctx, exc)
    return run_parsed(ctx, args)


def run_parsed(ctx: Context, args: argparse.Namespace) -> int:
    ctx.json = bool(getattr(args, "json", False))
    ctx.verbose = bool(getattr(args, "verbose", False))
    cmd = COMMANDS[args.command]
    if ctx.parser is None:
        # help reads the command table from the parser; a context made without one gets it here.
        ctx.parser = build_parser(repl=ctx.in_repl)
    try:
        return cmd.run(ctx, args)
    except (BrokenPipeError, KeyboardInterrupt):
        raise
    except Exception as exc:  # anything else is reported; -v adds the traceback
        return report_error(ctx, exc)
