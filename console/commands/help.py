"""Help: the command list, one command's usage with examples, exit codes (CLI and REPL alike)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from console.commands.context import Context
from console.commands.spec import Command
from console.commands.usage import UsageError

EXIT_CODES = (
    (0, "ok"),
    (1, "error (the message says what failed and how to fix it)"),
    (2, "usage or validation error: nothing was changed"),
    (3, "refused by the safety guard (see --force where the refusal allows it)"),
    (4, "missing privileges (root: CAP_BPF and CAP_NET_ADMIN)"),
    (5, "a pending confirmation expired and the change was reverted"),
)


DESCRIPTION = (
    "infw: an XDP ingress firewall for this node, driven by IngressNodeFirewall rules.\n"
    "Every command takes --json. Without a command, infw starts the REPL."
)


def examples_text(cmd: Command, prefix: str) -> str:
    if not cmd.examples:
        return ""
    width = max(len(f"{prefix}{cmd.name} {a}".strip()) for a, _ in cmd.examples)
    lines = ["examples:"]
    for argv, what in cmd.examples:
        line = f"{prefix}{cmd.name} {argv}".strip()
        lines.append(f"  {line.ljust(width)}   # {what}")
    return "\n".join(lines)


def exit_codes_text() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {what}" for code, what in EXIT_CODES)


def main_epilog(commands: Mapping[str, Command]) -> str:
    lines = ["examples (one per command; 'infw COMMAND --help' shows more):"]
    picks = [
        (f"infw {c.name} {c.examples[0][0]}".strip(), c.examples[0][1]) for c in commands.values()
    ]
    width = max(len(line) for line, _ in picks)
    lines += [f"  {line.ljust(width)}   # {what}" for line, what in picks]
    lines += [
        "",
        "a first session (the lab needs root):",
        "  infw lab up                       # namespaces, traffic, the firewall attached",
        "  infw --lab apply examples/lab.yaml --confirm-timeout 0",
        "  infw --lab stats --watch          # counters moving; Ctrl-C stops",
        "  infw --lab events --follow        # what is dropped, live",
        "  infw lab down",
        "",
        exit_codes_text(),
    ]
    return "\n".join(lines)


def help_text(ctx: Context, topic: str | None) -> str:
    # The parser is built from the command table (console.commands.parser); reading the table
    # from it keeps help free of an import of the table, whose help command is this module's.
    parser = ctx.parser
    if parser is None:  # pragma: no cover - run_parsed always sets one
        raise UsageError("help needs the command parser", "run commands through dispatch")
    commands = parser.commands
    if topic is None:
        width = max(len(n) for n in commands)
        lines = ["commands:"]
        lines += [f"  {name.ljust(width)}  {cmd.summary}" for name, cmd in commands.items()]
        lines += [
            "",
            f"'{ctx.prefix}help COMMAND' (or '{ctx.prefix}COMMAND --help') explains one, with examples.",
        ]
        if ctx.in_repl:
            lines.append(
                "Tab completes commands, options, interfaces, rule ids and files; "
                "'exit', 'quit' or Ctrl-D leave (the firewall keeps running)."
            )
        else:
            lines += ["", exit_codes_text()]
        return "\n".join(lines)
    if topic not in commands:
        raise UsageError(f"no command {topic!r}", f"commands: {', '.join(commands)}")
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        choices = getattr(action, "choices", None)
        if isinstance(choices, dict) and topic in choices:
            return str(choices[topic].format_help()).rstrip()
    raise UsageError(f"no help for {topic!r}")  # pragma: no cover - every command has a parser


def cmd_help(ctx: Context, args: argparse.Namespace) -> int:
    ctx.out.write(help_text(ctx, args.topic) + "\n")
    return 0
