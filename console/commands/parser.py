"""The argparse parsers built from the command table: the CLI's (global options before or after
the command) and the REPL's (no connection options)."""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from console.commands.help import DESCRIPTION, examples_text, main_epilog
from console.commands.table import COMMANDS
from console.commands.usage import ArgParser


def add_output_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    default: Any = argparse.SUPPRESS if suppress else False
    p.add_argument("--json", action="store_true", default=default, help="machine-readable output")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="more detail; a traceback with errors",
    )


def add_connection_options(p: argparse.ArgumentParser, suppress: bool) -> None:
    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    g = p.add_argument_group("where the firewall is")
    g.add_argument(
        "--pin-root",
        default=d(None),
        metavar="DIR",
        help="bpffs directory of the firewall's pins (default /sys/fs/bpf/infw)",
    )
    g.add_argument(
        "--state-dir",
        default=d(None),
        metavar="DIR",
        help="desired state and history (default /var/lib/infw)",
    )
    g.add_argument(
        "--netns", default=d(None), metavar="NAME", help="work inside network namespace NAME"
    )
    g.add_argument(
        "--lab",
        action="store_true",
        default=d(False),
        help="the lab's firewall: its pins, state and namespace infw-node",
    )
    g.add_argument(
        "--node-labels",
        default=d(None),
        metavar="K=V,..",
        help="this node's labels for spec.nodeSelector (default: nodeLabels in the config)",
    )
    g.add_argument(
        "--read-only",
        action="store_true",
        default=d(False),
        help="look only: counters, rules, events; every change is refused",
    )


def build_parser(*, repl: bool = False, out: TextIO | None = None) -> ArgParser:
    """The CLI parser (global options before or after the command) or the REPL's (no connection options)."""
    prefix = "" if repl else "infw "
    fmt = argparse.RawDescriptionHelpFormatter
    parser = ArgParser(
        prog="" if repl else "infw",
        description=DESCRIPTION,
        epilog=main_epilog(COMMANDS),
        formatter_class=fmt,
        allow_abbrev=False,
    )
    parser.out = out
    parser.commands = COMMANDS
    if not repl:
        add_output_options(parser, suppress=False)
        add_connection_options(parser, suppress=False)
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", title="commands", parser_class=ArgParser
    )
    for cmd in COMMANDS.values():
        p = sub.add_parser(
            cmd.name,
            help=cmd.summary,
            description=cmd.summary,
            epilog=examples_text(cmd, prefix),
            formatter_class=fmt,
            allow_abbrev=False,
            prog=f"{prefix}{cmd.name}",
        )
        p.out = out
        for a in cmd.args:
            p.add_argument(*a.flags, **a.kwargs)
        add_output_options(p, suppress=not repl)
        if not repl:
            add_connection_options(p, suppress=True)
    return parser
