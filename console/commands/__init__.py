"""The commands shared by the CLI and the REPL: the table, its parsers, and running one line.

One module per job: values (argument types), filters (the event filter), spec (what a command
is), context (where it prints, how it reaches the engine), edit / datapath / observe / lab /
help / shell (the handlers), table (the command table), parser (argparse from the table) and
run (dispatch). This package never imports console.repl; the CLI hands the REPL in.
"""

from console.commands.context import Context, report_error
from console.commands.filters import FILTER_EXAMPLE, FILTER_KEYS, EventFilter
from console.commands.help import EXIT_CODES, help_text
from console.commands.parser import build_parser
from console.commands.run import dispatch, run_parsed
from console.commands.spec import Arg, Command, arg
from console.commands.table import COMMANDS
from console.commands.usage import ArgParser, ParserExit, UsageError
from console.commands.values import ATTACH_MODES, MODES, PROTOCOLS

__all__ = [
    "ATTACH_MODES",
    "COMMANDS",
    "EXIT_CODES",
    "FILTER_EXAMPLE",
    "FILTER_KEYS",
    "MODES",
    "PROTOCOLS",
    "Arg",
    "ArgParser",
    "Command",
    "Context",
    "EventFilter",
    "ParserExit",
    "UsageError",
    "arg",
    "build_parser",
    "dispatch",
    "help_text",
    "report_error",
    "run_parsed",
]
