"""The trace dialog: what happens to a packet from S to port P on I, asked of kernel and reference."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, Select, Static

from console.tui.calls import EngineClient, call_engine, error_line
from console.tui.facade import EngineLike
from console.tui.widgets.cells import verdict_text
from engine import InfwError, TraceRequest, TraceResult, printable

TRACE_PROTOCOLS = ("TCP", "UDP", "SCTP", "ICMP", "ICMPv6")


def _number(text: str, name: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{name} must be a number, got {text!r}")
    return int(text)


def render_trace(result: TraceResult) -> Text:
    """Both answers side by side; a disagreement is spelled out, not only coloured."""
    out = Text()

    def verdict_line(who: str, verdict: str | None, reason: str | None, rule: int | None) -> None:
        out.append(f"{who:<11}", style="bold")
        if verdict is None:
            out.append("(no program loaded)\n", style="dim")
            return
        out.append_text(verdict_text(verdict))
        by = f" by rule {rule}" if rule else ""
        # the reason says why when no rule decided (fail-safe, no match, unparsed); "rule" is
        # already said by "by rule N"
        why = f" ({reason})" if reason and not (rule and reason == "rule") else ""
        out.append(f"{by}{why}\n")

    verdict_line("kernel", result.kernel_verdict, result.kernel_reason, result.kernel_rule_id)
    verdict_line(
        "reference", result.reference_verdict, result.reference_reason, result.reference_rule_id
    )
    out.append(f"\n{result.explanation}\n")
    if result.agree:
        out.append("✓ kernel and reference agree", style="bold green")
    else:
        out.append(
            "✗ DISAGREE: the kernel and the reference classifier decided differently",
            style="bold white on red",
        )
    out.append(f"\nframe: {result.frame_len} bytes on {printable(result.interface)}", style="dim")
    for note in result.notes:
        out.append(f"\nnote: {note}", style="dim")
    return out


@dataclass(frozen=True)
class TracePacket:
    """The fields of the dialog, as text (a flow from the Flows view fills them)."""

    src: str
    proto: str
    dport: str = ""
    icmp_type: str = ""
    icmp_code: str = ""


def _row(label: str, field: Widget) -> Horizontal:
    """One line of the dialog: the field's label, then the field."""
    return Horizontal(Label(label), field, classes="row")


def _field(value: str, placeholder: str, id: str) -> Input:
    return Input(value, placeholder=placeholder, compact=True, id=id)


class TraceDialog(EngineClient, ModalScreen[None]):
    BINDINGS = [Binding("escape", "close", "Close"), Binding("ctrl+t", "trace", "Trace")]

    def __init__(
        self,
        engine: EngineLike,
        interfaces: list[str],
        default_interface: str | None = None,
        packet: TracePacket | None = None,
    ) -> None:
        super().__init__()
        self.packet = packet  # given (a flow to trace): filled in and traced at once
        self.engine = engine
        self.interface_names = interfaces
        self.default_interface = default_interface if default_interface in interfaces else None
        self.result: TraceResult | None = None

    def compose(self) -> ComposeResult:
        packet = self.packet or TracePacket("", "TCP")
        options = [(name, name) for name in self.interface_names]
        with Vertical():
            yield Static(
                "Trace a packet: kernel program (test run) and reference classifier",
                classes="title",
            )
            yield _row(
                "Interface",
                Select(
                    options,
                    value=self.default_interface
                    or (self.interface_names[0] if self.interface_names else Select.NULL),
                    allow_blank=not self.interface_names,
                    compact=True,
                    id="t-iface",
                ),
            )
            yield _row("Source", _field(packet.src, "198.51.100.7 or 2001:db8::7", "t-src"))
            yield _row(
                "Protocol",
                Select(
                    [(p, p) for p in TRACE_PROTOCOLS],
                    value=packet.proto,
                    allow_blank=False,
                    compact=True,
                    id="t-proto",
                ),
            )
            yield _row("Dest port", _field(packet.dport, "e.g. 80", "t-dport"))
            yield _row("ICMP type", _field(packet.icmp_type, "e.g. 8", "t-type"))
            yield _row("ICMP code", _field(packet.icmp_code, "e.g. 0", "t-code"))
            with Horizontal(id="trace-buttons"):
                yield Button("Trace (enter)", variant="primary", id="trace")
                yield Button("Close (esc)", id="close")
            yield Static(id="trace-result")

    def on_mount(self) -> None:
        self.query_one("#t-src", Input).focus()
        if self.packet is not None:
            self.action_trace()

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#trace")
    @on(Input.Submitted)
    def action_trace(self) -> None:
        out = self.query_one("#trace-result", Static)
        iface = self.query_one("#t-iface", Select).value
        proto = str(self.query_one("#t-proto", Select).value)
        src = self.query_one("#t-src", Input).value.strip()
        if not isinstance(iface, str):
            out.update(Text("✗ choose an interface", style="bold red"))
            return
        if not src:
            out.update(Text("✗ give a source address", style="bold red"))
            return
        try:
            icmp = proto in ("ICMP", "ICMPv6")
            dport = None if icmp else _number(self.query_one("#t-dport", Input).value, "dest port")
            icmp_type = (
                _number(self.query_one("#t-type", Input).value, "ICMP type") if icmp else None
            )
            icmp_code = (
                _number(self.query_one("#t-code", Input).value, "ICMP code") if icmp else None
            )
        except ValueError as exc:
            out.update(Text(f"✗ {exc}", style="bold red"))
            return
        out.update(Text("… tracing", style="italic"))
        call_engine(
            self,
            "tracing the packet",
            partial(
                self.engine.trace_packet,
                TraceRequest(iface, src, proto, dport, icmp_type, icmp_code),
            ),
            self._traced,
            self._failed,
        )

    def _traced(self, result: TraceResult) -> None:
        self.result = result
        self.query_one("#trace-result", Static).update(render_trace(result))

    def _failed(self, exc: InfwError | OSError) -> None:
        self.query_one("#trace-result", Static).update(
            Text(f"✗ {error_line(exc)}", style="bold red")
        )
