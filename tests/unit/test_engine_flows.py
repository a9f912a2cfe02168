"""Flows and the impact preview through the real Engine over the fake kernel: the flows the
datapath sampled, the preview of a Deny naming them, dry runs that change nothing, the pending
banner's drops, and capture replay against the fake's test run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from engine.core.frame import build_frame
from engine.engine import Engine
from engine.errors import RequestError, StateError
from engine.kernel.fake import FakeKernel
from engine.state.config import NodeConfig
from tests.unit.test_kernel_seam import IFACES

ALLOW_443 = "allow tcp 443 from 192.0.2.0/24 on eth0 order 20"
DENY_443 = "deny tcp 443 from 192.0.2.7/32 on eth0 order 10"


def flow_lab(tmp_path: Path, sample: int = 1) -> tuple[Engine, FakeKernel]:
    kernel = FakeKernel(IFACES)
    engine = Engine(
        str(tmp_path / "pins"),
        str(tmp_path / "state"),
        config=NodeConfig(flow_sample=sample),
        session=None,
        kernel=kernel,
    )
    engine.attach(["eth0"])
    engine.add_rule(ALLOW_443, confirm_timeout=0)
    return engine, kernel


def send_tcp(kernel: FakeKernel, engine: Engine, src: str, port: int, count: int) -> None:
    dp = kernel.pinned[engine.pin_root]
    for _ in range(count):
        dp.send(build_frame(src, "192.0.2.1", 6, dport=port), "eth0")


def test_flows_show_what_was_sent_with_verdict_and_rule(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path)
    send_tcp(kernel, engine, "192.0.2.7", 443, 5)
    send_tcp(kernel, engine, "192.0.2.8", 80, 2)
    view = engine.flows()
    assert view.sample_rate == 1 and view.accuracy().startswith("every packet")
    by_src = {f.key.source: f for f in view.flows}
    allow_id = engine.rule_rows()[0].rule_id
    assert by_src["192.0.2.7"].stats.packets == 5
    assert by_src["192.0.2.7"].stats.rule_id == allow_id
    assert by_src["192.0.2.8"].stats.reason.value == "no match"
    assert [f.key.source for f in engine.flows(top=1).flows] == ["192.0.2.7"]
    assert engine.flows(verdict="deny").flows == ()
    assert engine.flows(interface="eth1").flows == ()
    with pytest.raises(StateError, match="unknown verdict"):
        engine.flows(verdict="maybe")
    # A misspelt interface is an error naming it, not an empty table that reads as no traffic.
    with pytest.raises(RequestError, match="no interface 'eht0'") as err:
        engine.flows(interface="eht0")
    assert "eth0" in err.value.fix and err.value.field == "iface"


def test_sampled_counts_are_scaled(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path, sample=4)
    send_tcp(kernel, engine, "192.0.2.7", 443, 4000)
    (flow,) = engine.flows().flows
    s = flow.stats
    assert s.rate == 4 and s.packets == 4 * s.samples
    assert abs(s.packets - 4000) <= s.error.margin_pct / 100 * s.packets
    assert "1 in 4 packets sampled" in engine.flows().accuracy()


def test_dry_run_of_a_deny_names_the_flow_it_drops_and_changes_nothing(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path)
    send_tcp(kernel, engine, "192.0.2.7", 443, 3)
    send_tcp(kernel, engine, "192.0.2.8", 443, 3)
    generation = engine.state().generation
    preview = engine.preview_add(DENY_443)
    assert [c.key.source for c in preview.traffic.newly_denied] == ["192.0.2.7"]
    assert len(preview.diff.added) == 1
    assert engine.state().generation == generation, "a dry run applies nothing"
    # and after the apply, exactly that flow is dropped
    engine.add_rule(DENY_443, confirm_timeout=0)
    before = engine.stats().totals.denied[0]
    send_tcp(kernel, engine, "192.0.2.7", 443, 1)
    send_tcp(kernel, engine, "192.0.2.8", 443, 1)
    assert engine.stats().totals.denied[0] == before + 1


def test_the_preview_names_the_id_the_add_will_get(tmp_path: Path) -> None:
    """Ids are not reused (the store's high-water mark): after a delete, the preview of an add
    must name the id the add then gets, not the lowest free one."""
    engine, kernel = flow_lab(tmp_path)
    engine.delete_rule(engine.rule_rows()[0].rule_id, confirm_timeout=0)
    engine.add_rule(ALLOW_443, confirm_timeout=0)
    send_tcp(kernel, engine, "192.0.2.7", 443, 2)
    preview = engine.preview_add(DENY_443)
    (added,) = preview.diff.added
    (change,) = preview.traffic.newly_denied
    engine.add_rule(DENY_443, confirm_timeout=0)
    new_id = next(r.rule_id for r in engine.rule_rows() if r.order == 10)
    assert added.rule_id == change.after.rule_id == new_id


def test_delete_and_edit_previews(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path)
    send_tcp(kernel, engine, "192.0.2.7", 443, 1)
    rid = engine.rule_rows()[0].rule_id
    assert engine.preview_delete(rid).diff.removed[0].rule_id == rid
    edit = engine.preview_edit(rid, "deny tcp 443 from 192.0.2.0/24 order 20")
    assert edit.traffic.denied_total.flows == 1
    assert [b.rule_id for b, _ in edit.diff.changed] == [rid]


def test_pending_banner_measures_the_new_denys_drops(tmp_path: Path) -> None:
    engine, kernel = flow_lab(tmp_path)
    engine.stats()
    engine.add_rule(DENY_443, confirm_timeout=60)
    send_tcp(kernel, engine, "192.0.2.7", 443, 4)
    drops = engine.pending_drops(engine.stats())
    assert drops is not None and drops.packets == 4
    assert "dropping" in drops.text()
    assert drops.so_far().endswith("have counted 4 packets")
    engine.confirm()
    assert engine.pending_drops(engine.stats()) is None


def test_trace_pcap_and_diff_over_a_capture(tmp_path: Path) -> None:
    engine, _ = flow_lab(tmp_path)
    path = tmp_path / "c.pcap"
    wrpcap(
        str(path),
        [Ether() / IP(src="192.0.2.7", dst="192.0.2.1") / TCP(dport=443) for _ in range(3)],
    )
    report = engine.trace_pcap(str(path))
    assert report.kernel_ran and report.agree and report.frames == 3
    preview = engine.preview_add(DENY_443, capture=str(path))
    assert preview.traffic.denied_total.packets == 3
    assert preview.traffic.source.startswith("capture c.pcap")


def test_status_shows_the_flow_sample_rate_the_kernel_runs(tmp_path: Path) -> None:
    from console.render import status_text

    engine, _ = flow_lab(tmp_path, sample=4)
    st = engine.status()
    assert (st.flow_sample, st.flow_sample_config) == (4, 4)
    assert st.to_json()["flow_sample"] == 4
    assert "1 in 4 packets sampled" in status_text(st) and "next load" not in status_text(st)
    assert engine.set_flow_sample(0) == 4  # live: the config's rate comes back at the next load
    st = engine.status()
    assert (st.flow_sample, st.flow_sample_config) == (0, 4)
    text = status_text(st)
    assert "sampling off" in text and "flowSample 4 applies at the next load" in text
    with pytest.raises(StateError, match="out of range"):
        engine.set_flow_sample(65537)


def test_the_preview_keeps_replies_passing_when_replies_are_on(tmp_path: Path) -> None:
    """A flow the kernel passed as a reply passes any Deny while replies are on: taking the
    catch-all Deny away is no news for it, nor is a second Deny; a forged answer is news."""
    from engine.core.replies import ReplySettings
    from tests.unit.test_replies import answer, make, query

    engine, kernel = make(tmp_path, NodeConfig(replies=ReplySettings(enabled=True), flow_sample=1))
    engine.attach(["eth0"])
    engine.add_rule("deny from 0.0.0.0/0 on eth0 order 10", confirm_timeout=0)
    dp = kernel.pinned[engine.pin_root]
    dp.send_out(query(), "eth0")
    dp.send(answer(), "eth0")
    dp.send(answer(dport=40002), "eth0")  # forged: the node never sent from 40002
    (rule_id,) = engine.state().rule_ids.values()
    gone = engine.preview_delete(rule_id)
    assert [c.key.dport for c in gone.traffic.newly_allowed] == [40002]
    more = engine.preview_add("deny udp 40001 from 198.51.100.0/24 on eth0 order 5")
    assert more.traffic.newly_denied == ()
    engine.set_replies(False)  # off: the answer is decided by the rules like any packet
    newly_allowed = engine.preview_delete(rule_id).traffic.newly_allowed
    assert Counter(c.key.dport for c in newly_allowed) == Counter([40001, 40002])
