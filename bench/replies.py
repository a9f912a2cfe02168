"""Replies to the node's own connections (#16): what they cost per packet, in one run.

The allow path must not change (the flow table is looked up only where a rule denies), so an
allowed packet with replies on is measured against the same packet with replies off; the deny
path's extra lookup is reported as a ratio too, for a denied packet with no such flow and for a
reply that passes. Settings flip between rounds and every round is measured interleaved with
the XDP_PASS floor, so drift hits both sides alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from bench.datapath import BENCH_CPU, LO, REPEAT, RUNS, XDP_DROP, XDP_PASS, udp4
from bench.result import Figure, not_measured
from bench.rulesets import BLOCK_V4, rules_hit_at_last
from bench.testrun import floor_program, measure_interleaved, pinned_on_cpu
from engine.core.frame import parse_frame
from engine.core.model import Action
from engine.core.replies import ReplySettings, reply_flow

GROUP = "replies"
ALLOW_TARGET = "allow path ≤ 1.05x with replies off"


def _medians(
    dp: object, subjects: dict[str, tuple[int, bytes]], enabled: bool, rounds: int
) -> tuple[dict[str, float], dict[str, int]]:
    per: dict[str, list[float]] = {name: [] for name in subjects}
    actions: dict[str, int] = {}
    for _ in range(rounds):
        dp.set_replies(ReplySettings(enabled=enabled))  # type: ignore[attr-defined]
        timings = measure_interleaved(subjects, REPEAT, 1)
        for name, t in timings.items():
            per[name].append(t.median_ns)
            actions[name] = t.action
    return {name: statistics.median(v) for name, v in per.items()}, actions


def measure(progress: Callable[[str], None] = print) -> list[Figure]:
    from bench.pins import loaded_datapath
    from engine.core.compiler import compile_ruleset
    from engine.kernel import replies
    from engine.kernel.abi import MAP_REPLIES

    allow_frame, deny_frame = udp4(), udp4()
    fields = parse_frame(deny_frame).fields
    assert fields is not None
    flow = reply_flow(LO["lo"], fields)
    assert flow is not None
    with pinned_on_cpu(BENCH_CPU), floor_program() as floor_fd, loaded_datapath("rp") as dp:
        results: dict[str, tuple[float, float, int]] = {}  # name -> (ours, floor, action)
        for label, rule_action in (("allow", Action.ALLOW), ("deny", Action.DENY)):
            tables = compile_ruleset(rules_hit_at_last(1, rule_action, (BLOCK_V4,)), LO)
            dp.write_tables(tables, dp.generation() + 1)
            frame = allow_frame if rule_action is Action.ALLOW else deny_frame
            subjects = {"floor": (floor_fd, frame), label: (dp.prog_fd, frame)}
            for enabled in (False, True):
                m = dp.maps[MAP_REPLIES]
                for key in list(m.keys()):
                    m.delete(key)
                cases = [("", subjects)]
                if label == "deny" and enabled:  # also a reply the table holds
                    cases.append((" reply", subjects))
                for suffix, subj in cases:
                    if suffix:
                        replies.record(m, [flow])
                    med, acts = _medians(dp, subj, enabled, RUNS)
                    name = f"{label}, replies {'on' if enabled else 'off'}{suffix}"
                    results[name] = (med[label], med["floor"], acts[label])
                    progress(f"  {name}: {med[label]:.0f} ns (floor {med['floor']:.0f})")
        dp.set_replies(ReplySettings())
    expect = {
        "allow, replies off": XDP_PASS,
        "allow, replies on": XDP_PASS,
        "deny, replies off": XDP_DROP,
        "deny, replies on": XDP_DROP,
        "deny, replies on reply": XDP_PASS,
    }
    figures: list[Figure] = []
    for name, base, target in (
        ("allow, replies on", "allow, replies off", ALLOW_TARGET),
        ("deny, replies on", "deny, replies off", "reported (a lookup that misses)"),
        ("deny, replies on reply", "deny, replies off", "reported (a lookup that hits)"),
    ):
        ours, ours_floor, action = results[name]
        ref, ref_floor, _ = results[base]
        if action != expect[name]:
            figures.append(
                not_measured(GROUP, name, f"XDP action {action}, expected {expect[name]}")
            )
            continue
        over, ref_over = ours - ours_floor, ref - ref_floor
        figures.append(
            Figure(
                GROUP,
                name,
                ours,
                "ns",
                reference=ref,
                reference_name=base,
                compare="ratio",
                target=target,
                met=ours / ref <= 1.05 if name.startswith("allow") else None,
                note=f"{over:+.0f} ns over floor vs {ref_over:+.0f} ns",
            )
        )
    return figures


def run_group() -> list[Figure]:
    try:
        return measure()
    except Exception as exc:
        return [not_measured(GROUP, "replies cases", f"{type(exc).__name__}: {exc}")]
