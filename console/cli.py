"""`infw`: the command line. Commands come from console.commands (shared with the REPL).

Exit codes: 0 ok, 1 error, 2 usage/validation, 3 refused by the guard, 4 missing privileges,
5 pending confirmation expired. Errors go to stderr as "infw: error: <message> — <fix>".
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from console.commands import (
    COMMANDS,
    Context,
    ParserExit,
    UsageError,
    build_parser,
    report_error,
    run_parsed,
)
from engine import lab_connection

if TYPE_CHECKING:
    from engine import Engine


def connect(
    pin_root: str | None = None,
    state_dir: str | None = None,
    *,
    netns: str | None = None,
    lab: bool = False,
    read_only: bool = False,
    node_labels: str | None = None,
) -> Engine:
    """Open the Engine the options name (Engine.connect); the TUI's options mean the same."""
    from engine import ConnectOptions, Engine

    return Engine.connect(ConnectOptions(pin_root, state_dir, netns, lab, read_only, node_labels))


def _context(args: argparse.Namespace) -> Context:
    def open_engine() -> Engine:
        return connect(
            args.pin_root,
            args.state_dir,
            netns=args.netns,
            lab=args.lab,
            read_only=args.read_only,
            node_labels=getattr(args, "node_labels", None),
        )

    def open_lab() -> Engine:
        return connect(lab=True, read_only=args.read_only)

    chosen = ["--lab"] if args.lab else []
    for flag, value in (
        ("--netns", args.netns),
        ("--pin-root", args.pin_root),
        ("--state-dir", args.state_dir),
    ):
        if value and not args.lab:
            chosen += [flag, shlex.quote(value)]
    return Context(
        connect=open_engine,
        connect_lab=open_lab,
        selector=" ".join(chosen),
        start_repl=start_repl,
    )


def start_repl(engine: Engine) -> int:
    """The `repl` command: imported here, on first use, as prompt_toolkit is slow to load."""
    from console.repl import run_repl

    return run_repl(engine)


def _quiet_stdout() -> None:
    # The reader went away (`infw events -f | head`): further writes, including the
    # interpreter's final flush, must not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    ctx = Context(connect=connect, parser=parser)
    try:
        try:
            args = parser.parse_args(argv)
        except ParserExit as done:
            return done.status
        except UsageError as exc:
            ctx.json = "--json" in argv
            ctx.verbose = "-v" in argv or "--verbose" in argv
            return report_error(ctx, exc)
        from engine import rejoin_host_mounts

        # Under `ip netns exec` the pins are hidden; rejoin the host's mounts (single-threaded here).
        rejoin_host_mounts(getattr(args, "pin_root", None) or "/sys/fs/bpf/infw")
        run_ctx = _context(args)
        run_ctx.parser = parser
        if args.command is None:
            args.command = "repl"
        if args.command == "repl" and not sys.stdin.isatty():
            return run_script(run_ctx, sys.stdin)
        return run_parsed(run_ctx, args)
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except KeyboardInterrupt:
        sys.stderr.write("infw: interrupted\n")
        return 130


def run_script(ctx: Context, lines: Iterable[str]) -> int:
    """`infw < commands.txt`: one REPL line at a time; stops at the first failure (like set -e)."""
    from console.repl import execute_line, is_exit

    ctx.in_repl = True
    ctx.parser = build_parser(repl=True, out=ctx.out)
    for number, line in enumerate(lines, 1):
        if is_exit(line):
            break
        code = execute_line(ctx, line)
        if code:
            ctx.err.write(f"infw: stopped at line {number}: {line.strip()}\n")
            return code
    return 0


__all__ = ["COMMANDS", "connect", "lab_connection", "main"]

if __name__ == "__main__":
    sys.exit(main())
