"""Error types the console renders: each carries what was wrong, where, and how to fix it."""

from __future__ import annotations

import reprlib
from dataclasses import dataclass

# A value in an error is shown bounded: a hostile file's value can be a list of millions.
_VALUE_REPR = reprlib.Repr()
_VALUE_REPR.maxlevel, _VALUE_REPR.maxlist, _VALUE_REPR.maxdict = 3, 6, 6
_VALUE_REPR.maxstring = 320  # a whole bad object name (253) still shows
_VALUE_REPR.maxother = 80
SHOWN_ERRORS = 20  # a file with a million bad rules prints 20 and a count, not a million lines


class InfwError(Exception):
    """Base of every error infw reports to a user."""

    exit_code = 1

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message

    def lines(self) -> list[str]:
        """The message as lines for a console: a first line, then any reasons under it."""
        return self.message.splitlines() or [""]


@dataclass(frozen=True)
class FieldError:
    """One bad value: which document, which field path, what value, why and the fix."""

    document: str
    path: str
    value: object
    problem: str
    fix: str = ""

    def __str__(self) -> str:
        where = f"{self.document}: {self.path}" if self.path else self.document
        text = f"{where}: {self.problem} (got {_VALUE_REPR.repr(self.value)})"
        return f"{text}; {self.fix}" if self.fix else text


class ValidationError(InfwError):
    """Input (YAML, rule line, config) is invalid; nothing was applied."""

    exit_code = 2

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = tuple(errors)
        count = len(self.errors)
        head = "1 error" if count == 1 else f"{count} errors"
        super().__init__(f"invalid input, nothing applied ({head}):")
        self.message = "\n".join(self.lines())

    def lines(self) -> list[str]:
        """The head line, then the first SHOWN_ERRORS errors and how many more there are."""
        shown = [f"  - {e}" for e in self.errors[:SHOWN_ERRORS]]
        more = len(self.errors) - SHOWN_ERRORS
        tail = [f"  ... and {more:,} more"] if more > 0 else []
        return [self.args[0], *shown, *tail]

    def __str__(self) -> str:
        return self.message


class LimitError(ValidationError):
    """A size limit (rules per source, sources, interfaces) would be exceeded."""


class GuardRefusal(InfwError):
    """The safety guard refused a change; --force overrides only refusable checks."""

    exit_code = 3

    def __init__(self, message: str, fix: str = "", *, rule: str = "", refusable: bool = True):
        super().__init__(message, fix)
        self.rule = rule
        self.refusable = refusable


class DatapathError(InfwError):
    """The kernel refused an operation (load, verifier, attach, map update)."""


class PrivilegeError(InfwError):
    """The process lacks a capability it needs (CAP_BPF, CAP_NET_ADMIN)."""

    exit_code = 4


class RequestError(InfwError):
    """A request that cannot be carried out as asked (a trace packet that cannot exist, an
    option that does not apply): nothing was done. `field` names the option at fault."""

    exit_code = 2

    def __init__(self, message: str, fix: str = "", *, field: str = "") -> None:
        super().__init__(message, fix)
        self.field = field


class StateError(InfwError):
    """Stored state is missing, corrupt, locked or stale."""


class FirewallUnreachable(StateError):
    """There is no datapath to read (no pins, hidden or unreadable): counters are unknown, and
    a caller must say so instead of showing zeros."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(f"firewall unreachable: {reason}", fix)
        self.reason = reason


class ConfirmExpired(InfwError):
    """A pending commit-confirmed change expired and was reverted."""

    exit_code = 5
