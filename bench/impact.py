"""Impact preview cost: 10,000 flows decided under 1,000 current and 1,000 proposed rules.

    python -m bench.impact

No kernel and no root: this is the pure preview (`engine.core.impact.preview_change`) that
`infw diff`, `--dry-run` and the TUI form's live impact line run, compile included.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import replace

from bench.result import Figure
from engine.core.classify import Reason
from engine.core.compiler import assign_rule_ids
from engine.core.flows import Flow, FlowKey, FlowStats
from engine.core.impact import preview_change
from engine.core.model import Action, Firewall, IngressBlock, PortRange, Protocol, Rule, RuleSet

FLOWS = 10_000
RULES = 1_000
BLOCKS = 100  # 100 source blocks x 10 rules
TARGET_S = 1.0  # the TUI form reruns the preview while the operator types
BASE = ipaddress.IPv4Address("198.18.0.0")


def bench_rules(rules: int = RULES, blocks: int = BLOCKS) -> RuleSet:
    """`blocks` /24 blocks of rules per /24, TCP and UDP port ranges, Allow and Deny."""
    per = rules // blocks
    out = []
    for b in range(blocks):
        cidr = f"{BASE + b * 256}/24"
        block_rules = tuple(
            Rule(
                order=i + 1,
                action=Action.DENY if (b + i) % 3 == 0 else Action.ALLOW,
                protocol=Protocol.TCP if i % 2 else Protocol.UDP,
                ports=PortRange(1000 + 10 * i, 1000 + 10 * i + 9),
            )
            for i in range(per)
        )
        out.append(IngressBlock((cidr,), block_rules))
    return RuleSet((Firewall("bench", ("eth0",), tuple(out)),))


def bench_flows(count: int = FLOWS, blocks: int = BLOCKS) -> list[Flow]:
    stats = FlowStats(100, 6400, 0.0, 1.0, Action.ALLOW, Reason.NO_MATCH, pps=1.0)
    return [
        Flow(
            FlowKey(
                "eth0",
                str(BASE + (i % blocks) * 256 + i // blocks % 256),
                6 if i % 2 else 17,
                1000 + i % 100,
            ),
            replace(stats, pps=float(i % 50)),
        )
        for i in range(count)
    ]


def proposed_change(current: RuleSet) -> RuleSet:
    """Flip every block's first rule: a change that moves many flows both ways."""
    fw = current.firewalls[0]
    blocks = []
    for block in fw.ingress:
        first, *rest = block.rules
        flipped = replace(
            first, action=Action.ALLOW if first.action is Action.DENY else Action.DENY
        )
        blocks.append(replace(block, rules=(flipped, *rest)))
    return RuleSet((replace(fw, ingress=tuple(blocks)),))


def measure(repeat: int = 3) -> tuple[float, int]:
    """Best wall time of `repeat` previews, and the number of flows whose verdict flips."""
    current = bench_rules()
    ids = assign_rule_ids(current)
    proposed = proposed_change(current)
    flows = bench_flows()
    best = float("inf")
    flips = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        preview = preview_change(current, ids, proposed, flows, interfaces={"eth0": 2})
        best = min(best, time.perf_counter() - t0)
        flips = preview.traffic.denied_total.flows + preview.traffic.allowed_total.flows
    return best, flips


def run_group() -> list[Figure]:
    seconds, flips = measure()
    return [
        Figure(
            "impact",
            f"preview: {FLOWS:,} flows x {RULES:,} rules",
            seconds,
            "s",
            compare="value",
            target=f"< {TARGET_S:g} s",
            met=seconds < TARGET_S,
            note=f"{flips:,} flows change verdict; both rule sets compiled",
        )
    ]


if __name__ == "__main__":
    for fig in run_group():
        print(f"{fig.case}: {fig.ours:.3f} {fig.unit} ({fig.note}; target {fig.target})")
