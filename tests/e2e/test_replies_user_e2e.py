"""#16 as a user meets it: the CLI (`--json`, in the lab's node namespace, a real process per
command) closes the node with one catch-all Deny and switches replies on and off, with real
packets. The node's DNS query and TCP connection to a client get their answers only with
replies on; those answers show in `flows` as ALLOW (reply) with the Deny they got past and
in the reply_allowed counter; a forged flood of "answers" to ports the node never used, and a
near miss (the right peer and port, the wrong source port), stay dropped; `trace --reply` says
why an answer passes; the impact preview does not count answers that pass as replies as
newly allowed when the Deny goes."""

from __future__ import annotations

from typing import Any

import pytest

from engine.lab.world import LabClient, LabInfo, send_packets
from tests.e2e.test_flows_impact_e2e import cli, cli_json, flow_map
from tests.e2e.test_replies_e2e import DENY_ALL, DNS_PORT, dns_query, servers, tcp_greeting
from tests.support import wait_for

__all__ = ["servers"]  # a fixture, used by name

pytestmark = [pytest.mark.root, pytest.mark.e2e]

NODE_PORT = 41000  # the node's own query goes out from here


def reply_allowed(fw: Any) -> int:
    return int(cli_json(fw, "stats")["totals"]["reply_allowed"][0])


def denied(fw: Any) -> int:
    return int(cli_json(fw, "stats")["totals"]["denied"][0])


def test_replies_from_the_cli_under_one_deny(
    fresh_lab: LabInfo, servers: LabClient, lab_firewall: Any, tmp_path: Any
) -> None:
    client, fw = servers, lab_firewall
    rules = tmp_path / "deny-all.yaml"
    rules.write_text(DENY_ALL)
    cli(fw, "attach", client.ifname_node, "--mode", "generic")
    cli(fw, "apply", str(rules), "--confirm-timeout", "0")
    cli(fw, "flows", "--sample", "1")
    (deny,) = cli_json(fw, "rules")
    deny_id = deny["id"]

    # off (the default): the node's own answers are dropped like anything else
    assert cli_json(fw, "replies")["enabled"] is False
    assert cli_json(fw, "status")["replies"] is False
    assert fw.node(dns_query, client.v4, NODE_PORT) is None
    assert fw.node(tcp_greeting, client.v4) is None
    assert reply_allowed(fw) == 0

    assert cli_json(fw, "replies", "on")["enabled"] is True
    assert cli_json(fw, "status")["replies"] is True
    assert "ON (replies to the node's own connections pass a Deny)" in cli(fw, "status").stdout
    assert fw.node(dns_query, client.v4, NODE_PORT) == b"answer:q"
    assert fw.node(tcp_greeting, client.v4) == b"hello"
    assert reply_allowed(fw) >= 2

    # the answers in flows: passed as replies, with the Deny they got past
    answer = flow_map(fw)[(client.ifname_node, client.v4, "UDP", NODE_PORT)]
    assert (answer["verdict"], answer["reason"], answer["rule_id"]) == ("Allow", "reply", deny_id)
    tcp = [
        f
        for (_, src, proto, _), f in flow_map(fw).items()
        if (src, proto) == (client.v4, "TCP") and f["reason"] == "reply"
    ]
    assert tcp and all(f["rule_id"] == deny_id for f in tcp)
    assert "ALLOW (reply)" in cli(fw, "flows").stdout

    # the preview of taking the Deny away: the answers that passed as replies are not news
    # (before the near miss below, which shares the answers' flow key: sport is not in it)
    gone = cli_json(fw, "delete", "--dry-run", str(deny_id), "--top", "100")
    news = {(f["source"], f["protocol"], f["dport"]) for f in gone["traffic"]["newly_allowed"]}
    assert (client.v4, "UDP", NODE_PORT) not in news, gone["traffic"]

    # forged answers: from the server's port to ports the node never used, and a near miss
    # (the node's port, the right peer, the wrong source port): all dropped, none a reply
    allowed, before = reply_allowed(fw), denied(fw)
    sent = sum(
        send_packets(client.ns, client.node_v4, "udp", dport=port, count=2, sport=DNS_PORT)
        for port in range(42000, 42050)
    )
    sent += send_packets(
        client.ns, client.node_v4, "udp", dport=NODE_PORT, count=5, sport=DNS_PORT + 1
    )
    assert wait_for(lambda: denied(fw) - before >= sent, 5), (denied(fw) - before, sent)
    assert reply_allowed(fw) == allowed
    forged = flow_map(fw, "--verdict", "deny")
    assert (client.ifname_node, client.v4, "UDP", 42000) in forged
    gone = cli_json(fw, "delete", "--dry-run", str(deny_id), "--top", "100")
    news = {(f["source"], f["protocol"], f["dport"]) for f in gone["traffic"]["newly_allowed"]}
    assert (client.v4, "UDP", 42000) in news, "the forged ones were dropped: they are news"

    # why an answer passes, from trace
    traced = cli_json(
        fw,
        "trace",
        "--iface",
        client.ifname_node,
        "--src",
        client.v4,
        "--proto",
        "UDP",
        "--dport",
        str(NODE_PORT),
        "--sport",
        str(DNS_PORT),
        "--dst",
        client.node_v4,
        "--reply",
    )
    assert traced["reference_reason"] == "reply" and traced["agree"], traced

    assert cli_json(fw, "replies", "off")["enabled"] is False
    assert fw.node(dns_query, client.v4, NODE_PORT + 1) is None
    assert fw.node(tcp_greeting, client.v4) is None
