"""engine.core.guard: fail-safe ports, self-lockout from SSH_CONNECTION, attach safety."""

from __future__ import annotations

import pytest

from engine.core.compiler import assign_rule_ids
from engine.core.crd import load_yaml
from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe
from engine.core.guard import (
    Guard,
    GuardRefusals,
    Refusal,
    SshSession,
    raise_if_refused,
    session_interface_for,
)
from engine.core.model import Action, PortRange, Protocol, Rule, RuleSet, add_rule
from engine.errors import GuardRefusal

IFACES = {"lo": 1, "eth0": 2, "eth1": 3}
V4_SESSION = SshSession.from_env({"SSH_CONNECTION": "198.51.100.7 51234 192.0.2.10 2222"})
V6_SESSION = SshSession.from_env({"SSH_CONNECTION": "2001:db8:1::7 51234 2001:db8::1 2222"})


def ruleset(
    rules: str, cidrs: str = "[0.0.0.0/0]", interfaces: str = "[eth0]", name: str = "web"
) -> RuleSet:
    return load_yaml(f"""
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {{name: {name}}}
spec:
  interfaces: {interfaces}
  ingress:
  - sourceCIDRs: {cidrs}
    rules:
{rules}
""")


def deny(proto: str, ports: str, order: int = 10) -> str:
    key = proto.lower()
    return (
        f"    - {{order: {order}, action: Deny, protocolConfig: "
        f"{{protocol: {proto}, {key}: {{ports: '{ports}'}}}}}}\n"
    )


def check(rs: RuleSet, guard: Guard | None = None) -> list[Refusal]:
    guard = guard or Guard(DEFAULT_FAILSAFE, None, None)
    return guard.check(rs, assign_rule_ids(rs), IFACES)


# -- fail-safe ports -------------------------------------------------------------------------


def test_deny_range_covering_ssh_is_refused_with_rule_port_and_purpose() -> None:
    rs = ruleset(deny("TCP", "1-1024"))
    [refusal] = check(rs)
    assert refusal.check == "failsafe"
    assert refusal.field == "ports"
    assert refusal.refusable
    assert refusal.message == (
        "Deny rule web order 10 (TCP 1-1024 from 0.0.0.0/0) covers 22/tcp (SSH), which always passes"
    )
    assert refusal.rule_id == 1
    assert "web order 10" in refusal.rule


def test_deny_range_next_to_ssh_passes() -> None:
    assert check(ruleset(deny("TCP", "23-1024"))) == []


def test_deny_dhcp_client_port_is_refused() -> None:
    [refusal] = check(ruleset(deny("UDP", "68")))
    assert "68/udp (DHCP)" in refusal.message


def test_partial_overlap_with_etcd_range_names_the_overlap() -> None:
    [refusal] = check(ruleset(deny("TCP", "2380-2400")))
    assert "covers 2380/tcp (etcd)" in refusal.message


def test_one_rule_covering_several_failsafe_ports_is_one_refusal() -> None:
    [refusal] = check(ruleset(deny("TCP", "1-65535")))
    for text in ("22/tcp (SSH)", "6443/tcp (kube-apiserver)", "2379-2380/tcp (etcd)"):
        assert text in refusal.message
    assert "68/udp" not in refusal.message


def test_other_protocol_or_allow_is_not_refused() -> None:
    assert check(ruleset(deny("UDP", "22"))) == []
    assert check(ruleset(deny("SCTP", "1-1024"))) == []
    allow = (
        "    - {order: 10, action: Allow, protocolConfig: {protocol: TCP, tcp: {ports: '22'}}}\n"
    )
    assert check(ruleset(allow)) == []


def test_protocol_less_and_port_less_deny_are_not_refused_but_noted() -> None:
    # A Deny on every TCP port is a rule line's shorthand (the operator has no form for it).
    rs = ruleset("    - {order: 100, action: Deny}\n")
    fw = rs.firewalls[0]
    rs = add_rule(
        rs, fw.name, fw.interfaces, fw.ingress[0].source_cidrs, Rule(90, Action.DENY, Protocol.TCP)
    )
    guard = Guard(DEFAULT_FAILSAFE, None, None)
    assert check(rs, guard) == []
    notes = guard.failsafe_notes(rs)
    assert len(notes) == 2
    assert any("order 100" in n and "22/tcp (SSH)" in n and "68/udp (DHCP)" in n for n in notes)
    assert any("order 90" in n and "68/udp" not in n for n in notes)


def test_custom_failsafe_list_is_used() -> None:
    custom = (FailSafe(Protocol.TCP, PortRange(2222, 2222), "SSH (alt)"),)
    guard = Guard(custom, None, None)
    assert check(ruleset(deny("TCP", "1-1024")), guard) == []
    [refusal] = check(ruleset(deny("TCP", "2200-2300")), guard)
    assert "2222/tcp (SSH (alt))" in refusal.message


# -- self-lockout ----------------------------------------------------------------------------


def test_session_parsing() -> None:
    assert SshSession("198.51.100.7", 51234, "192.0.2.10", 2222) == V4_SESSION
    assert SshSession("2001:db8:1::7", 51234, "2001:db8::1", 2222) == V6_SESSION
    mapped = SshSession.from_env({"SSH_CONNECTION": "::ffff:198.51.100.7 1 fe80::1%eth0 22"})
    assert mapped == SshSession("198.51.100.7", 1, "fe80::1", 22)
    for bad in (
        "",
        "1.2.3.4 1 5.6.7.8",
        "1.2.3.4 x 5.6.7.8 22",
        "nope 1 5.6.7.8 22",
        "1.2.3.4 1 5.6.7.8 70000",
    ):
        assert SshSession.from_env({"SSH_CONNECTION": bad}) is None
    assert SshSession.from_env({}) is None


def test_deny_covering_the_session_port_is_refused_ipv4() -> None:
    rs = ruleset(deny("TCP", "2200-2300"))
    [refusal] = check(rs, Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0"))
    assert refusal.check == "lockout"
    assert refusal.field == "ports"
    assert "would drop your SSH session from 198.51.100.7 to port 2222 on eth0" in refusal.message
    assert "web order 10" in refusal.message


def test_allow_at_lower_order_keeps_the_session() -> None:
    allow = (
        "    - {order: 5, action: Allow, protocolConfig: {protocol: TCP, tcp: {ports: '2222'}}}\n"
    )
    rs = ruleset(allow + deny("TCP", "2200-2300"))
    assert check(rs, Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0")) == []


def test_deny_on_another_interface_or_other_sources_keeps_the_session() -> None:
    rs = ruleset(deny("TCP", "2200-2300"))
    assert check(rs, Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth1")) == []
    other = ruleset(deny("TCP", "2200-2300"), cidrs="[203.0.113.0/24]")
    assert check(other, Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0")) == []


def test_deny_covering_the_session_is_refused_ipv6_with_a_narrower_allow_elsewhere() -> None:
    rs = ruleset("    - {order: 10, action: Deny}\n", cidrs="['::/0']", interfaces="['eth*']")
    # An Allow for another client does not help this one.
    rs = rs.with_firewall(
        ruleset(
            "    - {order: 5, action: Allow, protocolConfig: {protocol: TCP, tcp: {ports: '2222'}}}\n",
            cidrs="['2001:db8:2::/48']",
            name="ops",
        ).firewalls[0]
    )
    [refusal] = check(rs, Guard(DEFAULT_FAILSAFE, V6_SESSION, "eth0"))
    assert refusal.field == "sourceCIDRs"
    assert "from 2001:db8:1::7 to port 2222 on eth0" in refusal.message
    # The IPv6 rule never matches the IPv4 session.
    assert check(rs, Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0")) == []


def test_session_on_a_failsafe_port_is_protected_by_failsafe() -> None:
    session = SshSession("198.51.100.7", 40000, "192.0.2.10", 22)
    rs = ruleset("    - {order: 10, action: Deny}\n")
    assert check(rs, Guard(DEFAULT_FAILSAFE, session, "eth0")) == []
    no_ssh = tuple(fs for fs in DEFAULT_FAILSAFE if fs.purpose != "SSH")
    [refusal] = check(rs, Guard(no_ssh, session, "eth0"))
    assert refusal.check == "lockout"


def test_unknown_session_interface_checks_every_interface() -> None:
    rs = ruleset(deny("TCP", "2200-2300"), interfaces="[eth1]")
    [refusal] = check(rs, Guard(DEFAULT_FAILSAFE, V4_SESSION, None))
    assert "on eth1 (the interface carrying it is unknown)" in refusal.message


def test_audit_mode_skips_the_session_check() -> None:
    rs = ruleset(deny("TCP", "2200-2300"))
    guard = Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0")
    assert guard.check(rs, assign_rule_ids(rs), IFACES, audit=True) == []


def test_rule_ids_missing_new_rules_are_tolerated() -> None:
    rs = ruleset(deny("TCP", "2200-2300"))
    [refusal] = Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0").check(rs, {}, IFACES)
    assert refusal.check == "lockout"


# -- attach and raising ----------------------------------------------------------------------


def test_check_attach() -> None:
    guard = Guard(DEFAULT_FAILSAFE, V4_SESSION, "eth0")
    [session] = guard.check_attach("eth0", foreign_program=False)
    assert session.check == "attach-session" and session.field == "interfaces"
    assert "carries your SSH session from 198.51.100.7 to port 2222" in session.message
    assert guard.check_attach("eth1", foreign_program=False) == []
    [foreign] = guard.check_attach("eth1", foreign_program=True)
    assert foreign.check == "attach-foreign"
    assert len(guard.check_attach("eth0", foreign_program=True)) == 2
    assert Guard(DEFAULT_FAILSAFE, None, None).check_attach("eth0", False) == []


def test_raise_if_refused() -> None:
    soft = Refusal("failsafe", "covers 22", "narrow it", rule="web order 10", field="ports")
    hard = Refusal("validation", "bad", "fix it", refusable=False)
    assert raise_if_refused([], force=False) == []
    with pytest.raises(GuardRefusal) as info:
        raise_if_refused([soft], force=False)
    assert isinstance(info.value, GuardRefusals)
    assert info.value.refusals == (soft,)
    assert info.value.rule == "web order 10" and info.value.refusable
    assert "--force" in info.value.fix
    assert raise_if_refused([soft], force=True) == [soft]
    with pytest.raises(GuardRefusals) as info2:
        raise_if_refused([soft, hard], force=True)
    assert not info2.value.refusable
    assert "covers 22" in str(info2.value) and "bad" in str(info2.value)


def test_session_interface_for_loopback() -> None:
    assert session_interface_for("127.0.0.1") == "lo"
    assert session_interface_for("::1") == "lo"
    assert session_interface_for("::ffff:127.0.0.1") == "lo"
    assert session_interface_for("203.0.113.254") is None  # TEST-NET-3: on no interface here
    assert session_interface_for("not-an-address") is None
