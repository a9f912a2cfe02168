"""infw flows, diff, --dry-run and trace --pcap from the command line (real processes, this
test's own state dir; nothing is loaded, so the reference answers alone)."""

from __future__ import annotations

from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from tests.console.test_cli import GOOD, Run, data, infw, pin_root, write

__all__ = ["infw", "pin_root"]  # fixtures, used by name


def test_flows_without_a_firewall_say_why(infw: Run) -> None:
    view = data(infw("flows", "--json"))
    assert view["flows"] == [] and "no firewall is loaded" in view["notes"][0]
    text = infw("flows")
    assert text.returncode == 0 and "0 of 0 flows" in text.stdout
    bad = infw("flows", "--sample", "x")
    assert bad.returncode == 2 and "sample rate 'x' is not a number" in bad.stderr


def test_diff_and_dry_run_show_the_change_and_apply_nothing(infw: Run, tmp_path: Path) -> None:
    rules = write(tmp_path, "good.yaml", GOOD)
    diff = data(infw("diff", "--json", rules))
    assert len(diff["diff"]["added"]) == 4 and diff["traffic"]["flows_seen"] == 0
    dry = infw("apply", "--dry-run", rules)
    assert dry.returncode == 0 and "nothing was applied" in dry.stderr
    assert "+ rule" in dry.stdout and "impact:" in dry.stdout
    assert data(infw("rules", "--json")) == [], "a dry run stores nothing"
    assert infw("apply", rules, "--confirm-timeout", "0").returncode == 0
    add = data(
        infw(
            "add",
            "--dry-run",
            "--json",
            "deny",
            "udp",
            "53",
            "from",
            "192.0.2.0/24",
            "on",
            "lo",
            "order",
            "30",
            "firewall",
            "new",
        )
    )
    assert add["diff"]["added"][0]["match"] == "UDP 53"
    rid = str(data(infw("rules", "--json"))[0]["id"])
    gone = data(infw("delete", "--dry-run", "--json", rid))
    assert [r["id"] for r in gone["diff"]["removed"]] == [int(rid)]
    assert len(data(infw("rules", "--json"))) == 4


def test_diff_against_a_capture_names_the_frames_it_drops(infw: Run, tmp_path: Path) -> None:
    cap = tmp_path / "lab.pcap"
    frames = [Ether() / IP(src="192.0.2.7", dst="192.0.2.1") / TCP(dport=8000)] * 3
    frames.append(Ether() / IP(src="192.0.2.7", dst="192.0.2.1") / UDP(dport=53))
    wrpcap(str(cap), frames)
    rules = write(tmp_path, "good.yaml", GOOD)
    out = data(infw("diff", "--json", rules, "--pcap", str(cap), "--iface", "lo"))
    denied = out["traffic"]["newly_denied"]
    assert [(d["dport"], d["packets"]) for d in denied] == [(8000, 3)]
    trace = infw("trace", "--pcap", str(cap), "--iface", "lo")
    assert trace.returncode == 0 and "4 frames" in trace.stdout
    assert "reference only" in trace.stdout
    assert infw("trace", "--iface", "lo").returncode == 2, "a packet needs --src and --proto"


def test_the_repl_has_flows_and_diff(infw: Run, tmp_path: Path) -> None:
    rules = write(tmp_path, "good.yaml", GOOD)
    proc = infw(stdin=f"flows --top 3\ndiff {rules}\nhelp flows\nexit\n")
    assert proc.returncode == 0, proc.stderr
    assert "0 of 0 flows" in proc.stdout
    assert "impact: no traffic seen" in proc.stdout
    assert "--verdict" in proc.stdout
