"""The Engine facade: the one door between the consoles and the firewall (DESIGN §1).

Edits flow console -> Engine -> guard -> store -> compiler -> datapath; observation flows
kernel -> datapath -> stats/events -> console. Consoles hold no firewall logic.

Engine composes one class per job, each in the layer it belongs to: engine.base (plumbing),
engine.state.edits (the edit transaction), engine.state.rule_edits, engine.state.confirm,
engine.observe.snapshot, engine.lifecycle (attach, detach, the agent's sweep, restore,
reload), engine.switches (mode, replies), engine.observe.tracing and engine.observe.flowview;
what is left here is rule files, metrics and opening.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from engine.base import Progress as Progress
from engine.base import no_progress
from engine.core import crd
from engine.core.impact import ImpactPreview
from engine.core.model import RuleSet
from engine.core.yamlfile import read_stdin
from engine.kernel.abi import DEFAULT_PIN_ROOT as DEFAULT_PIN_ROOT
from engine.kernel.seam import Kernel
from engine.lifecycle import Lifecycle
from engine.observe.event_source import EventSource as EventSource
from engine.observe.flowview import FlowViews
from engine.observe.tracing import Tracing
from engine.state.confirm import CommitConfirm
from engine.switches import Switches
from engine.views import ApplyResult

if TYPE_CHECKING:
    from engine.connect import ConnectOptions


class Engine(FlowViews, CommitConfirm, Lifecycle, Switches, Tracing):
    """Everything a console can do to the node's firewall."""

    @staticmethod
    def admit_rules(path: str, stdin: TextIO | None = None) -> crd.Admission:
        """A rule file through the operator's admission ("-" reads stdin): rules and warnings."""
        if path == "-":
            text = (stdin or sys.stdin).read() if stdin is not None else read_stdin()
            return crd.admit_yaml(text, "<stdin>")
        return crd.admit_file(path)

    @classmethod
    def read_rules(cls, path: str, stdin: TextIO | None = None) -> RuleSet:
        """A rule file (YAML, one or more IngressNodeFirewall documents); "-" reads stdin."""
        return cls.admit_rules(path, stdin).ruleset

    def validate_file(self, path: str, stdin: TextIO | None = None) -> tuple[RuleSet, list[str]]:
        """Read and check a rule file against this node and the guard; applies nothing. The
        warnings say where the file means something else here than in the operator."""
        admitted = self.admit_rules(path, stdin)
        _, warnings = self.check(admitted.ruleset)
        return admitted.ruleset, [*admitted.warnings, *warnings]

    def apply_file(self, path: str, stdin: TextIO | None = None, **kwargs: Any) -> ApplyResult:
        """apply() the rules of a file ("-": stdin); the history names the file."""
        admitted = self.admit_rules(path, stdin)
        name = "stdin" if path == "-" else os.path.basename(path)
        kwargs.setdefault("summary", f"apply {name}")
        result = self.apply(admitted.ruleset, **kwargs)
        return replace(result, warnings=(*admitted.warnings, *result.warnings))

    def preview_file(self, path: str, stdin: TextIO | None = None, **kwargs: Any) -> ImpactPreview:
        """`infw diff FILE` and `apply --dry-run`: the file checked as apply would, previewed."""
        # the warnings apply would give (parity notes, the slow path), as the rule edits' do
        ruleset, warnings = self.validate_file(path, stdin)
        return replace(self.preview(ruleset, **kwargs), warnings=tuple(warnings))

    def serve_metrics(self, listen: str | None = None, *, allow_public: bool = False) -> Any:
        """The Prometheus exporter on listen (default: the config's metrics_listen), in a
        daemon thread; a non-loopback address only with allow_public."""
        from engine.observe.metrics import serve_metrics

        return serve_metrics(self, listen or self.config.metrics_listen, allow_public=allow_public)

    def lock_holder(self) -> int | None:
        """The pid of the console holding the store lock right now (0: unknown), or None."""
        return self.store.busy_holder()

    @staticmethod
    def connect(options: ConnectOptions, *, kernel: Kernel | None = None) -> Engine:
        """The Engine a console's options name (--pin-root, --state-dir, --netns, --lab)."""
        from engine.connect import connect

        return connect(options, kernel=kernel)

    @staticmethod
    def open_lab(
        read_only: bool = False, progress: Progress = no_progress, *, kernel: Kernel | None = None
    ) -> Engine:
        """The lab's engine, bringing the lab and its firewall up when needed."""
        from engine.connect import open_lab

        return open_lab(read_only, progress, kernel=kernel)

    def is_lab(self) -> bool:
        """This engine looks at the lab's firewall."""
        from engine.lab.world import LAB_PIN_ROOT

        return os.path.normpath(self.pin_root) == os.path.normpath(LAB_PIN_ROOT)

    def start_lab_firewall(self, progress: Progress = no_progress) -> list[str]:
        """Give the lab its example rules and attach them, unless a firewall runs already;
        returns the interfaces ours runs on."""
        from engine.lab.firewall import start_lab_firewall

        return start_lab_firewall(self, progress)
