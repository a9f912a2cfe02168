"""The Flows view: who is hitting the node, busiest first (k9s-style: `f` switches to it and
back). On a flow, `d` opens the rule form pre-filled to deny its source, `a` to allow its port,
`t` traces it; `/` filters. The engine's flows are sampled; the title says how accurate."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker

from console.flowtext import FLOW_HEADERS, flow_cells
from console.tui.calls import EngineClient, call_engine, error_line
from console.tui.facade import EngineLike
from console.tui.screens.rule_form import FormValues
from engine import Flow, FlowsView, InfwError, protocol_name

REFRESH_S = 1.0
VERDICT_STYLE = {"DENY": "bold red", "ALLOW": "green"}


@dataclass(frozen=True)
class FlowChoice:
    """What the operator asked for on a flow: "deny" (its source), "allow" (its port) or
    "trace"; the app opens the form or the trace dialog."""

    kind: str
    flow: Flow


def host_cidr(address: str) -> str:
    ip = ipaddress.ip_address(address)
    return f"{ip}/{32 if ip.version == 4 else 128}"


def flow_trace_fields(flow: Flow) -> tuple[str, str, str, str]:
    """(protocol, dport, icmp type, icmp code) for the trace dialog."""
    return _port_fields(flow)


def _port_fields(flow: Flow) -> tuple[str, str, str, str]:
    """(protocol, ports, icmp type, icmp code) of the form for this flow's match."""
    key = flow.key
    proto = protocol_name(key.ipproto)
    if proto.startswith("proto ") or key.nonfirst_fragment:
        return ("any" if proto.startswith("proto ") else proto), "", "", ""
    ports = "" if key.dport is None else str(key.dport)
    icmp_type = "" if key.icmp_type is None else str(key.icmp_type)
    icmp_code = "" if key.icmp_code is None else str(key.icmp_code)
    return proto, ports, icmp_type, icmp_code


def deny_source_values(flow: Flow, order: str) -> FormValues:
    """Deny everything from this flow's source on its interface."""
    return FormValues(
        interfaces=flow.key.interface, cidrs=host_cidr(flow.key.source), order=order, action="Deny"
    )


def allow_port_values(flow: Flow, order: str) -> FormValues:
    """Allow this flow's protocol and port (or ICMP type) from anywhere of its family."""
    proto, ports, icmp_type, icmp_code = _port_fields(flow)
    anywhere = "0.0.0.0/0" if ipaddress.ip_address(flow.key.source).version == 4 else "::/0"
    return FormValues(
        interfaces=flow.key.interface,
        cidrs=anywhere,
        order=order,
        protocol=proto,
        ports=ports,
        icmp_type=icmp_type,
        icmp_code=icmp_code,
        action="Allow",
    )


def flow_search_text(flow: Flow) -> str:
    s = flow.stats
    return " ".join((flow.key.text(), s.verdict_text(), f"rule {s.rule_id}")).lower()


class FlowsScreen(EngineClient, Screen[FlowChoice | None]):
    BINDINGS = [
        Binding("f", "back", "Rules"),
        Binding("escape", "back", "Rules", show=False),
        Binding("d", "choose('deny')", "Deny source"),
        Binding("a", "choose('allow')", "Allow port"),
        Binding("t", "choose('trace')", "Trace"),
        Binding("slash", "filter", "Filter"),
    ]

    def __init__(self, engine: EngineLike, clock: Callable[[], float]) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self.view: FlowsView | None = None
        self.filter_text = ""
        self.shown: list[Flow] = []
        self._reading: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        yield Static(" Flows", id="flows-title")
        table: DataTable[object] = DataTable(cursor_type="row", zebra_stripes=True)
        table.add_columns(*FLOW_HEADERS)
        yield table
        yield Input(placeholder="filter flows (enter keeps, esc clears)", id="flows-filter")
        yield Footer()

    def on_mount(self) -> None:
        self.refresh_flows()
        self.set_interval(REFRESH_S, self.refresh_flows, name="flows")
        self.query_one(DataTable).focus()

    def refresh_flows(self) -> None:
        """Ask the engine for the flows in a worker; a read still on its way is not doubled."""
        if self._reading is not None and not self._reading.is_finished:
            return
        self._reading = call_engine(
            self, "reading the flows", self.engine.flows, self._got_flows, self._flows_failed
        )

    def _got_flows(self, view: FlowsView) -> None:
        self.view = view
        self._show_flows()

    def _flows_failed(self, exc: InfwError | OSError) -> None:
        self.query_one("#flows-title", Static).update(f" Flows: {error_line(exc)}")

    def _show_flows(self) -> None:
        view = self.view
        if view is None:
            return
        wanted = self.filter_text.lower()
        self.shown = [f for f in view.flows if not wanted or wanted in flow_search_text(f)]
        table = self.query_one(DataTable)
        selected = self.selected()
        table.clear()
        now = self.clock()
        for i, flow in enumerate(self.shown):
            cells: list[object] = list(flow_cells(flow, now))
            verdict = str(cells[6])
            cells[6] = Text(verdict, style=VERDICT_STYLE.get(verdict.split()[0], ""))
            table.add_row(*cells, key=str(i))
        if selected is not None and selected in self.shown:
            table.move_cursor(row=self.shown.index(selected))
        title = f" Flows {len(self.shown)}/{view.total}  by pkts/s▼  │ {view.accuracy()}"
        if self.filter_text:
            title += f"  filter '{self.filter_text}'"
        if view.notes:
            title += "  │ " + "; ".join(view.notes)
        self.query_one("#flows-title", Static).update(title)

    def selected(self) -> Flow | None:
        table = self.query_one(DataTable)
        row = table.cursor_row
        return self.shown[row] if 0 <= row < len(self.shown) else None

    def action_back(self) -> None:
        self.dismiss(None)

    def action_choose(self, kind: str) -> None:
        flow = self.selected()
        if flow is None:
            self.notify("no flow selected", severity="warning", timeout=3)
            return
        self.dismiss(FlowChoice(kind, flow))

    def action_filter(self) -> None:
        bar = self.query_one("#flows-filter", Input)
        bar.value = self.filter_text
        bar.set_class(True, "-shown")
        bar.focus()

    @on(Input.Changed, "#flows-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._show_flows()

    @on(Input.Submitted, "#flows-filter")
    def _filter_done(self) -> None:
        self.query_one("#flows-filter", Input).set_class(False, "-shown")
        self.query_one(DataTable).focus()
