"""Which objects select this node: `spec.nodeSelector` against the node's labels (DESIGN §2).

The operator's controller turns an object's LabelSelector into a node list; on one node the same
question is whether its labels satisfy the selector. Labels come from the node config
(`nodeLabels` in /etc/infw/config.yaml) or a console flag; with none known, every object applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.core.model import Firewall, RuleSet


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics: matchLabels and every matchExpression must hold; an empty
    selector selects every node. An unknown operator selects nothing (the controller's error)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(str(key)) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op = str(expr.get("key")), expr.get("operator")
        values = [str(v) for v in expr.get("values") or []]
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            ok = False
        if not ok:
            return False
    return True


@dataclass(frozen=True)
class NodeSplit:
    """The objects this node enforces, and the ones stored for other nodes."""

    enforced: RuleSet
    other_nodes: tuple[Firewall, ...] = ()
    labels_known: bool = True

    def notes(self) -> list[str]:
        out = [
            f"{fw.name}: not for this node (nodeSelector {_selector_text(fw)}): stored, not enforced"
            for fw in self.other_nodes
        ]
        if not self.labels_known and any(fw.node_selector for fw in self.enforced.firewalls):
            out.append(
                "node labels unknown: every object applies, whatever its nodeSelector "
                "(set nodeLabels in /etc/infw/config.yaml or pass --node-labels)"
            )
        return out


def _selector_text(fw: Firewall) -> str:
    labels = fw.node_selector.get("matchLabels") or {}
    parts = [f"{k}={v}" for k, v in labels.items()]
    parts += [
        f"{e.get('key')} {e.get('operator')} {','.join(map(str, e.get('values') or []))}".strip()
        for e in fw.node_selector.get("matchExpressions") or []
    ]
    return ", ".join(parts) or "{}"


def split_for_node(ruleset: RuleSet, labels: Mapping[str, str] | None) -> NodeSplit:
    """labels None: unknown, so every object applies (and the split says so)."""
    if labels is None:
        return NodeSplit(ruleset, (), labels_known=False)
    mine = tuple(fw for fw in ruleset.firewalls if selects(fw.node_selector, labels))
    others = tuple(fw for fw in ruleset.firewalls if fw not in mine)
    return NodeSplit(RuleSet(mine), others)
