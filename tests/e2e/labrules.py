"""The lab's firewall documents for e2e tests: one IngressNodeFirewall on the node's lab links,
written from its ingress blocks, so that a test states only the rules it is about."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

LAB_LINKS = "infw-n*"  # the node's end of each client link
CLIENT_NETS = ("192.0.2.0/24", "198.51.100.0/24")  # client c1's network, then c2's


@dataclass(frozen=True)
class PortRule:
    """One rule of an ingress block: protocol TCP or UDP, one port, Allow or Deny."""

    order: int
    protocol: str
    port: int
    action: str

    def yaml(self) -> str:
        proto = self.protocol
        return (
            f"    - order: {self.order}\n"
            f"      protocolConfig: {{protocol: {proto}, {proto.lower()}: {{ports: {self.port}}}}}\n"
            f"      action: {self.action}\n"
        )


def lab_firewall(name: str, *blocks: tuple[Sequence[str], Sequence[PortRule]]) -> str:
    """The document (YAML) of firewall `name` on the lab links: each block is (source CIDRs,
    its rules), in the order given."""
    text = (
        "\napiVersion: ingressnodefirewall.openshift.io/v1alpha1\n"
        "kind: IngressNodeFirewall\n"
        f"metadata: {{name: {name}}}\n"
        "spec:\n"
        f'  interfaces: ["{LAB_LINKS}"]\n'
        "  ingress:\n"
    )
    for cidrs, rules in blocks:
        text += f"  - sourceCIDRs: [{', '.join(cidrs)}]\n    rules:\n"
        text += "".join(rule.yaml() for rule in rules)
    return text
