"""How a command line goes wrong: the usage error, and argparse made to raise instead of exit."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from engine import InfwError

if TYPE_CHECKING:
    from console.commands.spec import Command


class UsageError(InfwError):
    """The command line itself is wrong (unknown option, bad value): nothing was done."""

    exit_code = 2


class ParserExit(Exception):
    """argparse wanted to exit (after --help); the REPL must survive it."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ArgParser(argparse.ArgumentParser):
    """argparse that raises instead of exiting and prints help to a chosen stream."""

    out: TextIO | None = None
    # The command table this parser was built from (the top-level parser only): unknown
    # commands are matched against it, and help lists it.
    commands: Mapping[str, Command] = {}

    def error(self, message: str) -> NoReturn:
        if self.prog:
            usage = f"see '{self.prog} --help' for usage and examples"
        else:
            usage = "type 'help' for the list of commands"
        unknown = re.match(r"argument COMMAND: invalid choice: '([^']*)'", message)
        if unknown:
            close = difflib.get_close_matches(unknown.group(1), list(self.commands), n=2)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise UsageError(f"unknown command {unknown.group(1)!r}", hint + usage)
        where = self.prog.removeprefix("infw").strip()
        raise UsageError(f"{where}: {message}" if where else message, usage)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            (self.out or sys.stderr).write(message)
        raise ParserExit(status)

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            (self.out or sys.stdout).write(message)
