"""infw engine: the one door for consoles (DESIGN §1). Consoles import from here only:

    from engine import Engine, ConnectOptions, InfwError, Status, ...

Names load on first use, so `import engine` pulls in neither bcc nor pyroute2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names as _HOMES, for type checkers (a unit test compares)
    from engine.base import Progress
    from engine.connect import ConnectOptions
    from engine.core.crd import parse_port_range
    from engine.core.flows import Flow, protocol_name
    from engine.core.impact import ImpactPreview
    from engine.core.model import ORDER_MAX, ORDER_MIN, Action, Protocol, RuleSet
    from engine.core.replay import ReplayReport
    from engine.core.ruleline import DEFAULT_FIREWALL, format_rule_line, parse_rule_line
    from engine.core.textsafe import printable
    from engine.engine import Engine
    from engine.errors import (
        ConfirmExpired,
        DatapathError,
        FieldError,
        FirewallUnreachable,
        GuardRefusal,
        InfwError,
        LimitError,
        PrivilegeError,
        RequestError,
        StateError,
        ValidationError,
    )
    from engine.kernel.abi import DEFAULT_PIN_ROOT
    from engine.kernel.netns import rejoin_host_mounts
    from engine.lab.firewall import LAB_RULES, lab_connection
    from engine.lab.world import LabInfo, lab_down, lab_status, lab_up
    from engine.observe.event_source import EventSource
    from engine.observe.flows import FlowsView, PendingDrops
    from engine.state.config import NodeConfig, is_loopback, split_listen
    from engine.views import (
        ApplyResult,
        DropEvent,
        HistoryView,
        InterfaceView,
        NodeTotals,
        PendingView,
        RepliesView,
        RuleRow,
        StatsSnapshot,
        Status,
        TraceRequest,
        TraceResult,
    )

_HOMES: dict[str, tuple[str, ...]] = {
    "engine.base": ("Progress",),
    "engine.connect": ("ConnectOptions",),
    "engine.core.crd": ("parse_port_range",),
    "engine.core.flows": ("Flow", "protocol_name"),
    "engine.core.impact": ("ImpactPreview",),
    "engine.core.model": ("ORDER_MAX", "ORDER_MIN", "Action", "Protocol", "RuleSet"),
    "engine.core.replay": ("ReplayReport",),
    "engine.core.ruleline": ("DEFAULT_FIREWALL", "format_rule_line", "parse_rule_line"),
    "engine.core.textsafe": ("printable",),
    "engine.engine": ("Engine",),
    "engine.errors": (
        "ConfirmExpired",
        "DatapathError",
        "FieldError",
        "FirewallUnreachable",
        "GuardRefusal",
        "InfwError",
        "LimitError",
        "PrivilegeError",
        "RequestError",
        "StateError",
        "ValidationError",
    ),
    "engine.kernel.abi": ("DEFAULT_PIN_ROOT",),
    "engine.kernel.netns": ("rejoin_host_mounts",),
    "engine.lab.firewall": ("LAB_RULES", "lab_connection"),
    # the lab's namespaces, veths and traffic: not the firewall, so no Engine call builds them
    "engine.lab.world": ("LabInfo", "lab_down", "lab_status", "lab_up"),
    "engine.observe.event_source": ("EventSource",),
    "engine.observe.flows": ("FlowsView", "PendingDrops"),
    "engine.state.config": ("NodeConfig", "is_loopback", "split_listen"),
    "engine.views": (
        "ApplyResult",
        "DropEvent",
        "HistoryView",
        "InterfaceView",
        "NodeTotals",
        "PendingView",
        "RepliesView",
        "RuleRow",
        "StatsSnapshot",
        "Status",
        "TraceRequest",
        "TraceResult",
    ),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once: later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return __all__
