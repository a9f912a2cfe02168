"""#11 as a user meets it: the CLI (`--json`, in the lab's node namespace, a real process per
command) on a firewall of the test's own, with real packets from the lab's clients. Flows show
what was sent with verdict and rule; `diff` of a Deny names exactly the flows it will drop,
with the rule id the apply then gives; after the apply exactly those are dropped; while the
change is pending, `status` says what its Deny has dropped; and captures written here with
scapy (VLAN, QinQ, IPv6 extension headers, fragments, ICMP, truncated frames, pcapng) replay
through the loaded program with kernel == reference."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
)
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, wrpcap

from engine.lab.world import NODE_NS, LabInfo, send_packets
from tests.e2e.labrules import CLIENT_NETS, PortRule, lab_firewall

pytestmark = [pytest.mark.root, pytest.mark.e2e]

ALLOW_443_AND_53 = (
    CLIENT_NETS,
    [PortRule(20, "TCP", 443, "Allow"), PortRule(30, "UDP", 53, "Allow")],
)
ALLOW = lab_firewall("web", ALLOW_443_AND_53)
# the same, plus a Deny of 443/tcp from client c1's network only
DENY_C1 = lab_firewall(
    "web", ([CLIENT_NETS[0]], [PortRule(10, "TCP", 443, "Deny")]), ALLOW_443_AND_53
)


def cli(fw: Any, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """infw as an operator runs it on the lab's node: `ip netns exec infw-node infw ...`."""
    cmd = ["ip", "netns", "exec", NODE_NS, sys.executable, "-m", "console.cli"]
    cmd += ["--pin-root", fw.pin_root, "--state-dir", fw.state_dir, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=fw.env())
    if ok:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc


def cli_json(fw: Any, *args: str) -> Any:
    return json.loads(cli(fw, *args, "--json").stdout)


def flow_map(fw: Any, *args: str) -> dict[tuple[str, str, str, int | None], dict[str, Any]]:
    return {
        (f["interface"], f["source"], f["protocol"], f["dport"]): f
        for f in cli_json(fw, "flows", *args)["flows"]
    }


def wait_flow(fw: Any, key: tuple[str, str, str, int | None], packets: int) -> dict[str, Any]:
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        f = flow_map(fw).get(key)
        if f is not None and f["packets"] >= packets:
            return f
        time.sleep(0.2)
    raise AssertionError(f"{key}: fewer than {packets} packets in 'infw flows'")


def rule_id(fw: Any, order: int) -> int:
    return next(r["id"] for r in cli_json(fw, "rules") if r["order"] == order)


def test_flows_diff_apply_and_pending_from_the_cli(
    fresh_lab: LabInfo, lab_firewall: Any, tmp_path: Path
) -> None:
    c1, c2 = fresh_lab.clients[0], fresh_lab.clients[1]
    allow, deny = tmp_path / "allow.yaml", tmp_path / "deny.yaml"
    allow.write_text(ALLOW)
    deny.write_text(DENY_C1)
    cli(lab_firewall, "apply", str(allow), "--confirm-timeout", "0")
    # N is the config's (32) until changed live; status says which one runs
    assert (
        cli_json(lab_firewall, "status")["flow_sample"]
        == cli_json(lab_firewall, "status")["flow_sample_config"]
    )
    cli(lab_firewall, "flows", "--sample", "1")  # exact counts, so the test can compare
    status = cli_json(lab_firewall, "status")
    assert status["flow_sample"] == 1 and status["interfaces"]
    assert "every packet counted" in cli(lab_firewall, "status").stdout

    k1 = (c1.ifname_node, c1.v4, "TCP", 443)
    k2 = (c2.ifname_node, c2.v4, "TCP", 443)
    k53 = (c1.ifname_node, c1.v4, "UDP", 53)
    send_packets(c1.ns, c1.node_v4, "tcp", dport=443, count=6)
    send_packets(c2.ns, c2.node_v4, "tcp", dport=443, count=5)
    send_packets(c1.ns, c1.node_v4, "udp", dport=53, count=4)
    allow_443, allow_53 = rule_id(lab_firewall, 20), rule_id(lab_firewall, 30)
    f1 = wait_flow(lab_firewall, k1, 6)
    assert (f1["verdict"], f1["rule_id"], f1["samples"]) == ("Allow", allow_443, f1["packets"])
    assert wait_flow(lab_firewall, k2, 5)["rule_id"] == allow_443
    assert wait_flow(lab_firewall, k53, 4)["rule_id"] == allow_53
    # the filters a user reaches for
    assert set(flow_map(lab_firewall, "--iface", c2.ifname_node)) == {k2}
    assert flow_map(lab_firewall, "--verdict", "deny") == {}
    assert len(flow_map(lab_firewall, "--top", "1")) == 1
    text = cli(lab_firewall, "flows").stdout
    assert "every packet counted (exact)" in text and c1.v4 in text

    # the preview names c1's 443 flow, and nothing else, with the id the apply will give
    diff = cli_json(lab_firewall, "diff", str(deny))
    (added,) = diff["diff"]["added"]
    assert [(f["source"], f["dport"]) for f in diff["traffic"]["newly_denied"]] == [(c1.v4, 443)]
    assert diff["traffic"]["newly_denied"][0]["after"]["rule_id"] == added["id"]
    assert diff["traffic"]["newly_allowed"] == [] and diff["traffic"]["denied_total"]["flows"] == 1
    dry = cli(lab_firewall, "apply", "--dry-run", str(deny))
    assert (
        "DENY  newly:" in dry.stdout and c1.v4 in dry.stdout and "nothing was applied" in dry.stderr
    )
    assert rule_id(lab_firewall, 20) == allow_443 and len(cli_json(lab_firewall, "rules")) == 2

    # apply it (pending): exactly the previewed flow is dropped, and status says so
    before = flow_map(lab_firewall)
    cli(lab_firewall, "apply", str(deny), "--confirm-timeout", "120")
    assert rule_id(lab_firewall, 10) == added["id"]
    send_packets(c1.ns, c1.node_v4, "tcp", dport=443, count=6)
    send_packets(c2.ns, c2.node_v4, "tcp", dport=443, count=5)
    send_packets(c1.ns, c1.node_v4, "udp", dport=53, count=4)
    now1 = wait_flow(lab_firewall, k1, before[k1]["packets"] + 6)
    assert (now1["verdict"], now1["rule_id"]) == ("Deny", added["id"])
    now2 = wait_flow(lab_firewall, k2, before[k2]["packets"] + 5)
    assert (now2["verdict"], now2["rule_id"]) == ("Allow", allow_443)
    wait_flow(lab_firewall, k53, before[k53]["packets"] + 4)
    denied = flow_map(lab_firewall, "--verdict", "deny")
    assert set(denied) == {k1}
    st = cli(lab_firewall, "status", "--json", ok=False)
    pending = json.loads(st.stdout)
    assert pending["pending"] is not None
    assert pending["pending_drops"]["rule_ids"] == [added["id"]]
    assert 6 <= pending["pending_drops"]["packets"] <= 7  # a SYN may be retransmitted once
    text = cli(lab_firewall, "status", ok=False).stdout
    assert f"its Deny rules {added['id']} have counted" in text
    cli(lab_firewall, "confirm")


def capture_frames(c1: Any) -> list[Any]:
    """One of each shape #11 names, from client c1 to the node."""
    eth = Ether(src="02:00:00:00:00:11", dst="02:00:00:00:00:01")
    v4 = IP(src=c1.v4, dst=c1.node_v4)
    v6 = IPv6(src=c1.v6, dst=c1.node_v6)
    frags = fragment(v4 / UDP(dport=53) / (b"x" * 64), fragsize=32)  # first + non-first
    return [
        eth / v4 / TCP(dport=443),
        eth / v4 / TCP(dport=8080),
        eth / v4 / UDP(dport=53),
        eth / v4 / ICMP(type=8),
        eth / Dot1Q(vlan=7) / v4 / TCP(dport=443),
        eth / Dot1AD(vlan=100) / Dot1Q(vlan=7) / v4 / TCP(dport=443),
        eth / v6 / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / TCP(dport=443),
        eth / v6 / IPv6ExtHdrFragment(offset=0, m=1, id=9) / TCP(dport=443),
        eth / v6 / IPv6ExtHdrFragment(offset=8, m=0, id=9) / (b"y" * 16),
        eth / v6 / ICMPv6EchoRequest(),
        *[eth / f for f in frags],
        Ether(bytes(eth / v4 / TCP(dport=443))[:38]),  # cut inside the TCP header
        Ether(bytes(eth / v4)[:24]),  # cut inside the IP header
    ]


def test_captures_replay_with_kernel_equal_to_reference(
    fresh_lab: LabInfo, lab_firewall: Any, tmp_path: Path
) -> None:
    c1 = fresh_lab.clients[0]
    deny = tmp_path / "deny.yaml"
    deny.write_text(DENY_C1)
    cli(lab_firewall, "apply", str(deny), "--confirm-timeout", "0")
    frames = capture_frames(c1)
    pcap, pcapng = tmp_path / "c.pcap", tmp_path / "c.pcapng"
    wrpcap(str(pcap), frames)
    with PcapNgWriter(str(pcapng)) as w:
        for f in frames:
            w.write(f)
    deny_id = rule_id(lab_firewall, 10)
    for path in (pcap, pcapng):
        report = cli_json(lab_firewall, "trace", "--pcap", str(path), "--iface", c1.ifname_node)
        assert report["kernel_ran"] and report["agree"], report["mismatches"]
        assert report["mismatches"] == [] and report["frames"] == len(frames)
        assert report["kernel_skipped"] == 0, "every frame is at least an Ethernet header"
        denied = {k: v["frames"] for k, v in report["rows"].items() if v["verdict"] == "Deny"}
        # 443/tcp from c1 over IPv4: plain, VLAN, QinQ, and the frame cut after the TCP ports
        # (the ports are all the rule reads); the IPv6 ones are not in the IPv4 Deny's CIDR
        assert denied == {f"rule {deny_id}": 4}, report["rows"]
        assert report["rows"]["unparsed"]["frames"] == 1, "the frame cut inside the IP header"
    # the same frames as `tcpdump -i any` writes them: Linux cooked SLL and SLL2 headers in
    # place of Ethernet (the VLAN tags stay in the payload, behind an 802.1Q/802.1ad protocol)
    for cooked in (CookedLinux, CookedLinuxV2):
        path = tmp_path / f"{cooked.__name__}.pcap"
        wrpcap(
            str(path),
            [
                cooked(proto=int.from_bytes(bytes(f)[12:14], "big")) / Raw(bytes(f)[14:])
                for f in frames
            ],
        )
        report = cli_json(lab_firewall, "trace", "--pcap", str(path), "--iface", c1.ifname_node)
        assert report["kernel_ran"] and report["agree"], (cooked.__name__, report["mismatches"])
        assert report["frames"] == len(frames) and report["kernel_skipped"] == 0
        denied = {k: v["frames"] for k, v in report["rows"].items() if v["verdict"] == "Deny"}
        assert denied == {f"rule {deny_id}": 4}, (cooked.__name__, report["rows"])
    # and the same capture as the traffic of an impact preview: deleting the Deny frees them
    gone = cli_json(
        lab_firewall,
        "delete",
        "--dry-run",
        str(deny_id),
        "--pcap",
        str(pcap),
        "--iface",
        c1.ifname_node,
    )
    assert gone["traffic"]["allowed_total"]["packets"] == 4
    assert gone["traffic"]["source"].startswith("capture c.pcap")
