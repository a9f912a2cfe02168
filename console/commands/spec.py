"""What a command is: its name, arguments (with what completes them in the REPL), examples, handler."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from console.commands.context import Context


@dataclass(frozen=True)
class Arg:
    """One argparse argument plus what completes its value in the REPL.

    complete: "interfaces", "rule_ids", "protocols", "files", "yaml_files", "commands",
    "rule_line", "filter", "choices" (argparse choices) or None.
    """

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any]
    complete: str | None = None

    @property
    def positional(self) -> bool:
        return not self.flags[0].startswith("-")

    @property
    def takes_value(self) -> bool:
        return self.kwargs.get("action") not in ("store_true", "store_false", "count")

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(str(c) for c in self.kwargs.get("choices") or ())


def arg(*flags: str, complete: str | None = None, **kwargs: Any) -> Arg:
    return Arg(flags, kwargs, "choices" if complete is None and "choices" in kwargs else complete)


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    run: Callable[[Context, argparse.Namespace], int]
    args: tuple[Arg, ...] = ()
    examples: tuple[tuple[str, str], ...] = ()  # (arguments after the command name, what it does)

    def option(self, flag: str) -> Arg | None:
        for a in self.args:
            if flag in a.flags:
                return a
        return None
