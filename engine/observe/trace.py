"""`trace`: one built packet decided twice, by the reference classifier and by the loaded kernel
program (BPF_PROG_TEST_RUN, which counts nothing), with the deciding rule (DESIGN §5)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping

from engine.core.classify import PacketFields, Reason, classify, lookup, protocol_number
from engine.core.compiler import compile_ruleset
from engine.core.failsafe import FailSafe
from engine.core.frame import build_frame, parse_frame
from engine.core.model import Action, Protocol
from engine.core.replies import ReplyFlow, reply_flow
from engine.errors import RequestError, StateError
from engine.kernel.abi import Reason as KernelReason
from engine.kernel.seam import XDP_DROP, LoadedDatapath
from engine.state.store import StoredState
from engine.views import TraceRequest, TraceResult

KERNEL_REASONS: dict[int, str] = {
    KernelReason.FAILSAFE: Reason.FAILSAFE.value,
    KernelReason.RULE: Reason.RULE.value,
    KernelReason.NO_MATCH: Reason.NO_MATCH.value,
    KernelReason.UNPARSED: Reason.UNPARSED.value,
    KernelReason.REPLY: Reason.REPLY.value,
}


def check_trace(req: TraceRequest) -> None:
    """Refuse a packet that cannot exist (ports on ICMP, ICMP from an IPv6 source...), so the
    answer is never about a different packet than the one asked for."""
    try:
        proto = Protocol.parse(req.proto)
    except ValueError:
        raise RequestError(
            f"protocol {req.proto!r} is not one of TCP, UDP, SCTP, ICMP, ICMPv6",
            "give one of those",
            field="proto",
        ) from None
    if req.dport is not None and not proto.has_ports:
        raise RequestError(
            f"--dport does not apply to {proto.value}",
            "use --dport with TCP, UDP or SCTP",
            field="dport",
        )
    if req.icmp_type is not None and not proto.is_icmp:
        raise RequestError(
            f"--icmp-type does not apply to {proto.value}",
            "use --icmp-type with ICMP or ICMPv6",
            field="icmp_type",
        )
    if req.icmp_code is not None and req.icmp_type is None:
        raise RequestError(
            "--icmp-code needs --icmp-type", "e.g. --icmp-type 8 --icmp-code 0", field="icmp_code"
        )
    if proto.has_ports and req.dport is None and not req.fragment:
        raise RequestError(
            f"a {proto.value} packet needs a destination port",
            "add --dport N (1-65535)",
            field="dport",
        )
    v6 = ":" in req.src
    if (proto is Protocol.ICMP and v6) or (proto is Protocol.ICMPV6 and not v6):
        other = "ICMPv6" if proto is Protocol.ICMP else "ICMP"
        raise RequestError(
            f"{proto.value} does not travel from {req.src}",
            f"use --proto {other} for this source, or a source of the other IP family",
            field="proto",
        )
    if len(req.vlan) > 2:
        raise RequestError(
            f"{len(req.vlan)} VLAN tags given",
            "give at most two --vlan (802.1ad outer, then inner)",
            field="vlan",
        )
    if req.dst and (":" in req.dst) != v6:
        raise RequestError(
            "--src and --dst are of different IP families",
            "give two IPv4 or two IPv6 addresses",
            field="dst",
        )


def trace(
    stored: StoredState,
    ifaces: Mapping[str, int],
    failsafe: tuple[FailSafe, ...],
    datapath: LoadedDatapath | None,
    req: TraceRequest,
) -> TraceResult:
    """Decide req's packet by the reference and, when a firewall is loaded, by the kernel."""
    if req.interface not in ifaces:
        raise StateError(
            f"no interface {req.interface!r} here", f"interfaces: {', '.join(sorted(ifaces))}"
        )
    ipproto = protocol_number(req.proto)
    v6 = ":" in req.src
    dst = req.dst or ("2001:db8::1" if v6 else "192.0.2.1")
    frag = req.fragment
    pkt = PacketFields(
        req.src,
        ipproto,
        None if frag else req.dport,
        None if frag else req.icmp_type,
        None if frag else req.icmp_code,
        frag,
        dst,
    )
    frame = build_frame(
        req.src,
        dst,
        ipproto,
        dport=req.dport,
        sport=req.sport,
        icmp_type=req.icmp_type,
        icmp_code=req.icmp_code,
        vlan=req.vlan,
        nonfirst_fragment=frag,
    )
    parsed = parse_frame(frame).fields
    if parsed is not None:  # what a reply is matched on: the source port, the echo id
        pkt = dataclasses.replace(pkt, sport=parsed.sport, icmp_id=parsed.icmp_id)
    ifindex = ifaces[req.interface]
    notes: list[str] = []
    replies_on = datapath is not None and datapath.replies().enabled
    live: frozenset[ReplyFlow] | None = None
    if datapath is not None and replies_on:
        live = datapath.reply_flows()
    table: Collection[ReplyFlow] | None = live
    if req.reply:
        flow = reply_flow(ifindex, pkt)
        if flow is None:
            notes.append("this packet cannot be a reply (TCP/UDP, or an ICMP echo reply)")
        elif not replies_on:
            notes.append("replies are off here (`infw replies on`): a reply is decided as any")
        else:
            table = (live or frozenset()) | {flow}
            if live is not None and flow not in live:
                notes.append(
                    "the node has no such flow open now: the reference assumes one, the kernel "
                    "answers from its live table"
                )
    ref = classify(stored.ruleset, stored.rule_ids, req.interface, pkt, failsafe, table, ifindex)
    tables = compile_ruleset(stored.ruleset, ifaces, failsafe, stored.rule_ids)
    compiled = lookup(tables, ifindex, pkt, table)
    if (compiled.action, compiled.rule_id) != (ref.action, ref.rule_id):
        notes.append("the compiled tables disagree with the reference: please report this")
    # the kernel is held to the reference over its own live table
    same = lookup(tables, ifindex, pkt, live) if table is not live else compiled
    k_verdict = k_reason = None
    k_rule: int | None = None
    if datapath is not None:
        xdp_action, last, _ = datapath.test_run(frame, ifaces[req.interface])
        k_rule = int(last.rule_id) or None
        k_reason = KERNEL_REASONS.get(int(last.reason), "unknown")
        k_verdict = "DENY" if xdp_action == XDP_DROP else "ALLOW"
        if xdp_action != XDP_DROP and k_reason == "rule" and same.action is Action.DENY:
            k_verdict = "WOULD DENY"
        notes.append("the traced packet is marked: it counts nothing and logs no event")
    else:
        notes.append("no firewall is loaded: only the reference classifier answered")
    ref_verdict = ref.action.value.upper()
    same_verdict = same.action.value.upper()
    agree = k_verdict is None or (
        k_rule == same.rule_id
        and k_reason == same.reason.value
        and (k_verdict == same_verdict or (k_verdict == "WOULD DENY" and same_verdict == "DENY"))
    )
    return TraceResult(
        req.interface,
        len(frame),
        k_verdict,
        k_reason,
        k_rule,
        ref_verdict,
        ref.reason.value,
        ref.rule_id,
        ref.describe(),
        agree,
        tuple(notes),
    )
