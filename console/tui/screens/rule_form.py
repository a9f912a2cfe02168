"""The rule form: every field of one rule, validated as you type by the engine's own rule parser.

The form builds the one-line rule form (engine.ruleline) from its fields, so what it accepts is
exactly what the REPL and CLI accept; each FieldError is shown under the field it names. Once the
line parses, the engine judges the edit as a dry run a moment after the last keystroke
(Engine.preview_add / preview_edit: the same conflict checks and guard as the real apply, which
applies nothing): its refusals appear under their field, its impact on the flows seen and its
warnings (parity with the operator, as the CLI prints them) under the fields.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import ModalScreen
from textual.timer import Timer
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from console.tui.calls import EngineClient, call_engine, error_line
from console.tui.facade import EngineLike
from engine import (
    DEFAULT_FIREWALL,
    ORDER_MAX,
    ApplyResult,
    FieldError,
    GuardRefusal,
    InfwError,
    Protocol,
    RuleRow,
    ValidationError,
    parse_rule_line,
)

PROTOCOLS = ("any", "TCP", "UDP", "SCTP", "ICMP", "ICMPv6")
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
ICMP_PROTOCOLS = ("ICMP", "ICMPv6")
FIELDS = (
    "firewall",
    "interfaces",
    "cidrs",
    "order",
    "protocol",
    "ports",
    "icmp_type",
    "icmp_code",
    "action",
)
LABELS = {
    "firewall": "Firewall",
    "interfaces": "Interfaces",
    "cidrs": "Source CIDRs",
    "order": "Order",
    "protocol": "Protocol",
    "ports": "Ports",
    "icmp_type": "ICMP type",
    "icmp_code": "ICMP code",
    "action": "Action",
}
GENERAL = "general"
REQUIRED = ("cidrs", "interfaces", "order")
GUARD_DELAY = 0.3  # seconds after the last keystroke before the guard's dry run
GUARD_GROUP = "guard-dry-run"
WAITING = "impact: waiting for a complete rule"


def field_for_path(path: str) -> str:
    """Which form field a FieldError path (YAML path or rule-line keyword) concerns."""
    p = path.lower()
    if p in ("from",) or "sourcecidrs" in p:
        return "cidrs"
    if p == "on" or "interfaces" in p:
        return "interfaces"
    if "metadata.name" in p or p == "firewall":
        return "firewall"
    if p == "type" or p.endswith("icmptype"):
        return "icmp_type"
    if p == "code" or p.endswith("icmpcode"):
        return "icmp_code"
    if p.endswith(".ports"):
        return "ports"
    if p == "order" or p.endswith(".order"):
        return "order"
    if p.endswith(".action"):
        return "action"
    if "protocolconfig" in p:
        return "protocol"
    return GENERAL


def field_for_refusal(name: str | None, message: str) -> str:
    """Which field a guard refusal concerns: its own .field when it names one, else its text."""
    if name:
        mapped = field_for_path(name)
        if mapped != GENERAL:
            return mapped
        for key in FIELDS:
            if key.replace("_", "") in name.lower().replace("_", ""):
                return key
        if "port" in name.lower():
            return "ports"
        if "cidr" in name.lower() or "source" in name.lower():
            return "cidrs"
    text = message.lower()
    if "fail-safe" in text or "failsafe" in text or "port" in text:
        return "ports"
    if "session" in text or "ssh" in text or "lock" in text:
        return "cidrs"
    if "interface" in text or "xdp" in text:
        return "interfaces"
    return GENERAL


@dataclass(frozen=True)
class FormValues:
    firewall: str = DEFAULT_FIREWALL
    interfaces: str = ""
    cidrs: str = ""
    order: str = ""
    protocol: str = "any"
    ports: str = ""
    icmp_type: str = ""
    icmp_code: str = ""
    action: str = "Deny"

    @classmethod
    def from_row(cls, row: RuleRow) -> FormValues:
        rule = row.rule
        return cls(
            firewall=row.firewall,
            interfaces=", ".join(row.interfaces),
            cidrs=", ".join(row.cidrs),
            order=str(row.order),
            protocol=rule.protocol.value if rule.protocol else "any",
            ports=str(rule.ports) if rule.ports is not None else "",
            icmp_type="" if rule.icmp_type is None else str(rule.icmp_type),
            icmp_code="" if rule.icmp_code is None else str(rule.icmp_code),
            action=rule.action.value,
        )


def free_order(used: Iterable[int], step: int = 5) -> int:
    """An order for a new rule that no rule uses yet, ahead of the existing ones (lower wins):
    the largest multiple of `step` below the lowest order in use (5 when the first rule is at
    10), else the lowest unused order; 10 on an empty rule set."""
    taken = set(used)
    if not taken:
        return 10
    below = (min(taken) - 1) // step * step
    if below >= 1:
        return below
    return next(n for n in range(1, ORDER_MAX + 1) if n not in taken)


def _items(text: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", text.strip()) if item]


def build_line(v: FormValues, placeholders: Iterable[str] = ()) -> str:
    """The rule line for these values; fields in `placeholders` get a neutral valid stand-in so
    that the other fields can be checked before the operator has filled everything in."""
    stand_in = set(placeholders)
    parts = [v.action.lower() or "deny"]
    if v.protocol != "any":
        parts.append(v.protocol.lower())
        if v.protocol in PORT_PROTOCOLS and v.ports.strip():
            parts.append(v.ports.strip())
        if v.protocol in ICMP_PROTOCOLS:
            if v.icmp_type.strip():
                parts += ["type", v.icmp_type.strip()]
            if v.icmp_code.strip():
                parts += ["code", v.icmp_code.strip()]
    cidrs = _items(v.cidrs)
    if not cidrs and "cidrs" in stand_in:
        cidrs = ["::/0" if v.protocol == "ICMPv6" else "0.0.0.0/0"]
    if cidrs:
        parts += ["from", ",".join(cidrs)]
    ifaces = _items(v.interfaces)
    if not ifaces and "interfaces" in stand_in:
        ifaces = ["*"]
    if ifaces:
        parts += ["on", ",".join(ifaces)]
    order = v.order.strip() or ("1" if "order" in stand_in else "")
    if order:
        parts += ["order", order]
    if v.firewall.strip() and v.firewall.strip() != DEFAULT_FIREWALL:
        parts += ["firewall", v.firewall.strip()]
    return " ".join(shlex.quote(p) for p in parts)


def check_values(
    v: FormValues, touched: set[str] | None = None
) -> tuple[str, dict[str, list[str]]]:
    """Validate through engine.core.ruleline; returns the line and the messages per field.

    Empty required fields the operator has not touched yet are not reported (and get a stand-in
    so the rest is still checked); `touched=None` means report everything (on submit).
    """
    empty = {name for name in REQUIRED if not getattr(v, name).strip()}
    quiet = empty if touched is None else empty - touched
    quiet = set() if touched is None else quiet
    errors: dict[str, list[str]] = {}
    for name in sorted(empty - quiet):
        errors.setdefault(name, []).append("required")
    line = build_line(v, placeholders=empty)
    try:
        parse_rule_line(line)
    except ValidationError as exc:
        for fe in exc.errors:
            errors.setdefault(field_for_path(fe.path), []).append(describe(fe))
    return build_line(v), errors


def shown_warnings(line: str, warnings: Iterable[str]) -> list[str]:
    """Each warning once, without the rule line it quotes (the form shows that line already)."""
    prefix = f"rule '{line}': "
    out: list[str] = []
    for w in warnings:
        text = w.removeprefix(prefix)
        if text not in out:
            out.append(text)
    return out


def describe(fe: FieldError) -> str:
    text = f"{fe.problem} (got {fe.value!r})" if fe.value not in (None, "") else fe.problem
    return f"{text}; {fe.fix}" if fe.fix and not fe.fix.startswith("syntax:") else text


def place_refusals(
    exc: GuardRefusal, prefix: str = "refused: ", other_rule_ids: Iterable[int] = ()
) -> dict[str, list[str]]:
    """Each refusal's reason and fix, keyed by the form field it concerns.

    A refusal about another rule (one of `other_rule_ids`, say a rule forced in earlier) is not
    about any field of this form: it goes to the general line, where its text names the rule."""
    others = set(other_rule_ids)
    placed: dict[str, list[str]] = {}
    details = list(getattr(exc, "refusals", None) or [])
    if not details:
        name = field_for_refusal(getattr(exc, "field", None), exc.message)
        return {name: [f"{prefix}{exc.message}" + (f" — {exc.fix}" if exc.fix else "")]}
    for r in details:
        message = str(getattr(r, "message", r))
        fix = str(getattr(r, "fix", "") or "")
        rule_id = getattr(r, "rule_id", None)
        if rule_id is not None and rule_id in others:
            name = GENERAL
        else:
            name = field_for_refusal(getattr(r, "field", None), message)
        placed.setdefault(name, []).append(f"{prefix}{message}" + (f" — {fix}" if fix else ""))
    return placed


def refusable(exc: GuardRefusal) -> bool:
    """Whether Force may override this refusal (every one of its reasons must allow it)."""
    details = list(getattr(exc, "refusals", None) or [])
    return bool(getattr(exc, "refusable", True)) and all(
        bool(getattr(r, "refusable", True)) for r in details
    )


class RuleForm(EngineClient, ModalScreen[ApplyResult | None]):
    """Add or edit one rule; applies commit-confirmed and shows refusals next to their field."""

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "submit", "Apply"),
    ]

    def __init__(
        self,
        engine: EngineLike,
        *,
        row: RuleRow | None = None,
        initial: FormValues | None = None,
        confirm_timeout: float = 60.0,
        other_rule_ids: Iterable[int] = (),
        guard_delay: float = GUARD_DELAY,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.row = row
        self.initial = initial or (FormValues.from_row(row) if row else FormValues())
        self.confirm_timeout = confirm_timeout
        self.applying = False  # an Apply is with the engine (it may wait for the state lock)
        self.other_rule_ids = frozenset(other_rule_ids)
        self.guard_delay = guard_delay
        self.touched: set[str] = set()
        self.errors: dict[str, list[str]] = {}
        self.refusal: GuardRefusal | None = None
        # The guard's dry run: the line it judged and what it said, per field.
        self.guard_line: str | None = None
        self.guard_notes: dict[str, list[str]] = {}
        self._guard_wanted: str | None = None
        # What the change does to the traffic seen lately (Engine.preview), for the guard's line.
        self.impact = ""
        # What the dry run warned of (as the CLI prints them): shown under the impact line.
        self.warnings: list[str] = []
        self._guard_timer: Timer | None = None

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        v = self.initial
        title = f"Edit rule {self.row.rule_id}" if self.row else "Add rule"
        title += "   (enter applies · esc cancels · tab next field)"
        with VerticalScroll():
            yield Static(title, classes="title")
            yield from self._row(
                "firewall",
                Input(v.firewall, placeholder=DEFAULT_FIREWALL, compact=True, id="f-firewall"),
            )
            yield from self._row(
                "interfaces",
                Input(v.interfaces, placeholder="eth0, ens*", compact=True, id="f-interfaces"),
            )
            yield from self._row(
                "cidrs",
                Input(
                    v.cidrs, placeholder="192.0.2.0/24, 2001:db8::/32", compact=True, id="f-cidrs"
                ),
            )
            yield from self._row(
                "order",
                Input(v.order, placeholder="1-65535 (lower wins)", compact=True, id="f-order"),
            )
            yield from self._row(
                "protocol",
                Select(
                    [(p, p) for p in PROTOCOLS],
                    value=v.protocol,
                    allow_blank=False,
                    compact=True,
                    id="f-protocol",
                ),
            )
            yield from self._row(
                "ports", Input(v.ports, placeholder="80 or 8000-8080", compact=True, id="f-ports")
            )
            yield from self._row(
                "icmp_type", Input(v.icmp_type, placeholder="0-255", compact=True, id="f-icmp_type")
            )
            yield from self._row(
                "icmp_code", Input(v.icmp_code, placeholder="0-255", compact=True, id="f-icmp_code")
            )
            yield from self._row(
                "action",
                Select(
                    [("Deny", "Deny"), ("Allow", "Allow")],
                    value=v.action,
                    allow_blank=False,
                    compact=True,
                    id="f-action",
                ),
            )
            yield Static(id="preview")
            yield Static(WAITING, id="impact")
            yield Static(id="warnings")
            yield Static(id="general-error")
            with Horizontal(id="buttons"):
                label = (
                    f"Apply (confirm within {self.confirm_timeout:.0f}s)"
                    if self.confirm_timeout
                    else "Apply"
                )
                yield Button(label, variant="primary", id="apply")
                yield Button("Force (override the guard)", variant="error", id="force")
                yield Button("Cancel", id="cancel")

    def _row(self, name: str, widget: Input | Select[str]) -> ComposeResult:
        with Horizontal(classes="row", id=f"row-{name}"):
            yield Label(LABELS[name])
            yield widget
        yield Static(classes="field-error", id=f"e-{name}")

    def on_mount(self) -> None:
        self._sync_enabled()
        self.validate()
        self.query_one("#f-cidrs" if self.row is None else "#f-order", Input).focus()

    # ------------------------------------------------------------------ values

    def values(self) -> FormValues:
        def text(name: str) -> str:
            return self.query_one(f"#f-{name}", Input).value

        def choice(name: str) -> str:
            value = self.query_one(f"#f-{name}", Select).value
            return str(value) if isinstance(value, str) else ""

        protocol = choice("protocol") or "any"
        return FormValues(
            firewall=text("firewall"),
            interfaces=text("interfaces"),
            cidrs=text("cidrs"),
            order=text("order"),
            protocol=protocol,
            ports=text("ports") if protocol in PORT_PROTOCOLS else "",
            icmp_type=text("icmp_type") if protocol in ICMP_PROTOCOLS else "",
            icmp_code=text("icmp_code") if protocol in ICMP_PROTOCOLS else "",
            action=choice("action") or "Deny",
        )

    def _sync_enabled(self) -> None:
        protocol = self.values().protocol
        self.query_one("#f-ports", Input).disabled = protocol not in PORT_PROTOCOLS
        for name in ("icmp_type", "icmp_code"):
            self.query_one(f"#f-{name}", Input).disabled = protocol not in ICMP_PROTOCOLS

    # ------------------------------------------------------------------ validation

    def validate(self, final: bool = False) -> str | None:
        """Check the fields; returns the rule line when it is valid.

        A complete line that parses is also put to the guard (a dry run, debounced); until the
        answer comes the previous one stays, so the fields do not jump while typing."""
        values = self.values()
        line, errors = check_values(values, None if final else self.touched)
        self.errors = errors
        complete = not errors and all(getattr(values, name).strip() for name in REQUIRED)
        if not complete:
            # what the engine said was about an earlier line: it says nothing of this one
            self._cancel_guard()
            self.guard_line, self.guard_notes = None, {}
            if self.warnings:
                self.warnings = []
                self._show_warnings()
            if self.impact:
                self.impact = ""
                self.query_one("#impact", Static).update(WAITING)
        elif line != self.guard_line and line != self._guard_wanted:
            self._schedule_guard(line)
        for name in (*FIELDS, GENERAL):
            self._show_error(name, errors.get(name, []) + self.guard_notes.get(name, []))
        self.query_one("#preview", Static).update(f"rule: {line}")
        return None if errors else line

    # ------------------------------------------------------------------ the guard's dry run

    def _cancel_guard(self) -> None:
        if self._guard_timer is not None:
            self._guard_timer.stop()
            self._guard_timer = None
        self._guard_wanted = None

    def _schedule_guard(self, line: str) -> None:
        self._cancel_guard()
        self._guard_wanted = line
        self._guard_timer = self.set_timer(self.guard_delay, partial(self._start_guard, line))

    def _start_guard(self, line: str) -> None:
        self._guard_timer = None
        if line != self._guard_wanted:
            return
        self.run_worker(
            partial(self.dry_run, line),
            name=line,
            group=GUARD_GROUP,
            exclusive=True,
            thread=True,
            exit_on_error=False,
        )

    def dry_run(self, line: str) -> tuple[str, dict[str, list[str]], str, list[str]]:
        """What the real apply would say to this line, asked of the engine; runs in a worker
        thread, applies nothing: its refusals per field, the impact on the flows seen lately,
        and the warnings (where the rule means something else in the operator, say)."""
        rule_id = self.row.rule_id if self.row is not None else None
        try:
            # the edit's conflicts, the guard and the node, as the apply checks them; the
            # warnings are the line's own admission and parity notes, then the check's
            if rule_id is None:
                preview = self.engine.preview_add(line)
            else:
                preview = self.engine.preview_edit(rule_id, line)
        except GuardRefusal as exc:
            return line, place_refusals(exc, "guard would refuse: ", self.other_rule_ids), "", []
        except ValidationError as exc:
            notes: dict[str, list[str]] = {}
            for fe in exc.errors:
                notes.setdefault(field_for_path(fe.path), []).append(describe(fe))
            return line, notes, "", []
        except (InfwError, OSError):
            return line, {}, "", []  # the guard could not judge it now; Apply will say why
        return line, {}, preview.summary(), shown_warnings(line, preview.warnings)

    @on(Worker.StateChanged)
    def _guard_answered(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != GUARD_GROUP or event.state is not WorkerState.SUCCESS:
            return
        result = worker.result
        if not isinstance(result, tuple):
            return
        line, notes, impact, warnings = result
        if line != self._guard_wanted:
            return  # the fields changed since: a newer dry run is on its way
        self._guard_wanted = None
        self.guard_line, self.guard_notes = line, notes
        self.impact = impact
        self.warnings = warnings
        self.query_one("#impact", Static).update(
            f"impact: {impact}" if impact else "impact: (the guard refuses this rule)"
        )
        self._show_warnings()
        self.validate()

    def _show_warnings(self) -> None:
        target = self.query_one("#warnings", Static)
        target.set_class(bool(self.warnings), "-shown")
        target.update("\n".join(f"⚠ warning: {w}" for w in self.warnings))

    def _show_error(self, name: str, messages: list[str]) -> None:
        target = self.query_one("#general-error" if name == GENERAL else f"#e-{name}", Static)
        target.set_class(bool(messages), "-shown")
        target.update("\n".join(f"✗ {m}" for m in messages))

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("f-") and event.input.has_focus:
            self.touched.add(event.input.id[2:])
        self._clear_refusal()
        self.validate()

    @on(Select.Changed)
    def _select_changed(self, event: Select.Changed) -> None:
        self._sync_enabled()
        self._clear_refusal()
        self.validate()

    @on(Input.Submitted)
    def _input_submitted(self) -> None:
        self.action_submit()

    def _clear_refusal(self) -> None:
        self.refusal = None
        self.query_one("#force", Button).set_class(False, "-shown")

    # ------------------------------------------------------------------ submit

    @on(Button.Pressed, "#apply")
    def _apply_pressed(self) -> None:
        self.action_submit()

    @on(Button.Pressed, "#force")
    def _force_pressed(self) -> None:
        self.submit(force=True)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        self.submit(force=False)

    def submit(self, *, force: bool) -> None:
        self.touched.update(FIELDS)
        line = self.validate(final=True)
        if line is None:
            return
        # The engine answers for itself now: a dry run still on its way must not overwrite it.
        self._cancel_guard()
        self.guard_line, self.guard_notes = None, {}
        if self.applying:
            return  # the first Apply is still with the engine
        kwargs = {"confirm_timeout": self.confirm_timeout, "force": force}
        if self.row is None:
            what = "adding the rule"
            call = partial(self.engine.add_rule, line, **kwargs)
        else:
            what = f"editing rule {self.row.rule_id}"
            call = partial(self.engine.edit_rule, self.row.rule_id, line, **kwargs)
        self.applying = True
        call_engine(self, what, call, self._applied, self._refused)

    def _applied(self, result: ApplyResult) -> None:
        self.applying = False
        if self.impact:
            # The apply step says what the change does to the traffic seen, as it lands.
            self.app.notify(self.impact, title="impact on the flows seen", timeout=10)
        self.dismiss(result)

    def _refused(self, exc: InfwError | OSError) -> None:
        self.applying = False
        if isinstance(exc, GuardRefusal):
            self.show_refusal(exc)
            return
        if isinstance(exc, ValidationError):
            for fe in exc.errors:
                self.errors.setdefault(field_for_path(fe.path), []).append(describe(fe))
            for name, messages in self.errors.items():
                self._show_error(name, messages)
            return
        self._show_error(GENERAL, [error_line(exc)])

    def show_refusal(self, exc: GuardRefusal) -> None:
        """Put each refusal next to the field it concerns, with its reason and fix."""
        self.refusal = exc
        placed = place_refusals(exc, "refused: ", self.other_rule_ids)
        for name in FIELDS:  # the fields were valid (or Apply would not have been tried)
            self._show_error(name, placed.get(name, []))
        can_force = refusable(exc)
        self.query_one("#force", Button).set_class(can_force, "-shown")
        general = placed.get(GENERAL, [])
        if can_force:
            general.append(
                "the guard refused this change; Force applies it anyway (still commit-confirmed)"
            )
        elif not general:
            general.append("the guard refused this change and it cannot be forced")
        self._show_error(GENERAL, general)


__all__ = [
    "FormValues",
    "Protocol",
    "RuleForm",
    "build_line",
    "check_values",
    "field_for_path",
    "free_order",
    "place_refusals",
]
