"""engine.core.ruleline: the one-line rule form, validated exactly like the YAML."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.crd import load_yaml
from engine.core.model import API_VERSION, KIND, Action, PortRange, Protocol, Rule
from engine.core.ruleline import DEFAULT_FIREWALL, RuleLine, format_rule_line, parse_rule_line
from engine.errors import ValidationError
from tests.unit.strategies import IFACES, NAMES, blocks


@pytest.mark.parametrize(
    "line, want",
    [
        (
            "allow tcp 8000-8080 from 192.0.2.0/24 on eth0 order 10",
            RuleLine(
                DEFAULT_FIREWALL,
                ("eth0",),
                ("192.0.2.0/24",),
                Rule(10, Action.ALLOW, Protocol.TCP, PortRange(8000, 8080)),
            ),
        ),
        (
            "deny icmp type 8 code 0 from 198.51.100.0/24 order 20 firewall web",
            RuleLine(
                "web",
                ("eth9",),
                ("198.51.100.0/24",),
                Rule(20, Action.DENY, Protocol.ICMP, icmp_type=8, icmp_code=0),
            ),
        ),
        (
            "deny from 203.0.113.0/24,2001:db8::/32 on 'ens*' order 30",
            RuleLine(
                DEFAULT_FIREWALL,
                ("ens*",),
                ("203.0.113.0/24", "2001:db8::/32"),
                Rule(30, Action.DENY),
            ),
        ),
        (
            "ALLOW ICMPv6 type 128 from 2001:db8::/32 on eth0,eth1 ORDER 5",
            RuleLine(
                DEFAULT_FIREWALL,
                ("eth0", "eth1"),
                ("2001:db8::/32",),
                Rule(5, Action.ALLOW, Protocol.ICMPV6, icmp_type=128),
            ),
        ),
        (
            "deny sctp 9 from 10.0.0.0/8 on eth0 order 1",
            RuleLine(
                DEFAULT_FIREWALL,
                ("eth0",),
                ("10.0.0.0/8",),
                Rule(1, Action.DENY, Protocol.SCTP, PortRange(9, 9)),
            ),
        ),
        (
            "deny udp from 10.0.0.0/8 on eth0 order 2",
            RuleLine(
                DEFAULT_FIREWALL, ("eth0",), ("10.0.0.0/8",), Rule(2, Action.DENY, Protocol.UDP)
            ),
        ),
    ],
)
def test_line_forms(line: str, want: RuleLine) -> None:
    assert parse_rule_line(line, default_interfaces=("eth9",)) == want


def test_line_gives_the_same_dataclasses_as_yaml() -> None:
    line = parse_rule_line(
        "deny tcp 1000-2000 from 192.0.2.0/24,10.0.0.0/8 on eth0 order 7 firewall web"
    )
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "web"},
        "spec": {
            "interfaces": ["eth0"],
            "ingress": [
                {
                    "sourceCIDRs": ["192.0.2.0/24", "10.0.0.0/8"],
                    "rules": [
                        {
                            "order": 7,
                            "action": "Deny",
                            "protocolConfig": {"protocol": "TCP", "tcp": {"ports": "1000-2000"}},
                        }
                    ],
                }
            ],
        },
    }
    fw = load_yaml(yaml.safe_dump(doc)).firewalls[0]
    assert (line.firewall, line.interfaces, line.cidrs, line.rule) == (
        fw.name,
        fw.interfaces,
        fw.ingress[0].source_cidrs,
        fw.ingress[0].rules[0],
    )


@pytest.mark.parametrize(
    "line, path",
    [
        ("", ""),
        ("deny 'open", ""),
        ("deny tcp 80 from 10.0.0.0/8 on eth0", "order"),
        ("deny tcp 80 on eth0 order 1", "from"),
        ("deny tcp 80 from 10.0.0.0/8 order 1", "on"),
        ("deny from 10.0.0.0/8 on eth0 order", "order"),
        ("drop tcp 80 from 10.0.0.0/8 on eth0 order 1", "spec.ingress[0].rules[0].action"),
        (
            "deny http from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.protocol",
        ),
        (
            "deny tcp 0 from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.tcp.ports",
        ),
        (
            "deny tcp 9-1 from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.tcp.ports",
        ),
        ("deny tcp 80 90 from 10.0.0.0/8 on eth0 order 1", ""),
        ("deny tcp 80 from 10.0.0.0/8 on eth0 order 0", "spec.ingress[0].rules[0].order"),
        ("deny tcp 80 from 10.0.0.0/8 on eth0 order x", "spec.ingress[0].rules[0].order"),
        ("deny tcp 80 from 10.0.0.0/8 on eth0 order ²", "spec.ingress[0].rules[0].order"),
        (
            "deny icmp type ² from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.icmp.icmpType",
        ),
        (
            "deny icmp type 300 from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.icmp.icmpType",
        ),
        ("deny type 8 from 10.0.0.0/8 on eth0 order 1", "type"),
        (
            "deny tcp type 8 from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.tcp.icmpType",
        ),
        (
            "deny tcp 80 type 8 from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.tcp.icmpType",
        ),
        (
            "deny icmp 80 from 10.0.0.0/8 on eth0 order 1",
            "spec.ingress[0].rules[0].protocolConfig.icmp.ports",
        ),
        ("deny tcp 80 from 10.0.0.0/8 on eth0 order 1 firewall Web", "metadata.name"),
    ],
)
def test_errors_are_validation_errors(line: str, path: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_rule_line(line)
    assert str(info.value)
    assert path in [e.path for e in info.value.errors]
    assert all(e.document == f"rule '{line}'" for e in info.value.errors)


@st.composite
def rule_lines(draw: st.DrawFn) -> RuleLine:
    block = draw(blocks())
    rule = draw(st.sampled_from(block.rules))
    name = draw(NAMES | st.just(DEFAULT_FIREWALL))
    ifaces = tuple(draw(st.lists(IFACES, min_size=1, max_size=3, unique=True)))
    return RuleLine(name, ifaces, block.source_cidrs, rule)


@settings(max_examples=200, deadline=None)
@given(rule_lines())
def test_format_then_parse_round_trip(rl: RuleLine) -> None:
    text = format_rule_line(rl.firewall, rl.interfaces, rl.cidrs, rl.rule)
    assert parse_rule_line(text) == rl


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "allow",
                "deny",
                "tcp",
                "icmp",
                "icmpv6",
                "from",
                "on",
                "order",
                "type",
                "code",
                "firewall",
                "80",
                "1-2",
                "10.0.0.0/8",
                "::/0",
                "eth0",
                "'x",
                "²",
                "0",
                "300",
                ",",
            ]
        )
        | st.text(max_size=6),
        max_size=10,
    )
)
def test_random_lines_only_raise_validation_error(words: list[str]) -> None:
    try:
        parse_rule_line(" ".join(words))
    except ValidationError as exc:
        assert str(exc).strip()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("deny tcp 80 from 10.0.0.1/8 on eth0 order 1", "host bits set: it means 10.0.0.0/8"),
        ("deny icmp from 2001:db8::/32 on eth0 order 1", "can never match"),
        ("deny tcp 80 from 10.0.0.0/8 on 'eth 0' order 1", "no Linux interface"),
        ("deny tcp 80 from 10.0.0.0/8 on 'eth*' order 1", "exact names only"),
    ],
)
def test_admitted_with_a_warning_like_the_operator(line: str, words: str) -> None:
    """What the operator admits, a rule line admits too, saying what it means here."""
    parsed = parse_rule_line(line)
    assert any(words in w for w in parsed.warnings), parsed.warnings


def test_icmp_shorthands_mean_every_type_or_code() -> None:
    """infw's own forms: 'icmp' alone is every ICMP message, 'type 3' every code of type 3."""
    every = parse_rule_line("allow icmp from 10.0.0.0/8 on eth0 order 1").rule
    assert (every.icmp_type, every.icmp_code) == (None, None)
    codes = parse_rule_line("allow icmp type 3 from 10.0.0.0/8 on eth0 order 1").rule
    assert (codes.icmp_type, codes.icmp_code) == (3, None)
    code = parse_rule_line("deny icmp code 1 from 10.0.0.0/8 on eth0 order 1").rule
    assert (code.icmp_type, code.icmp_code) == (0, 1)  # as the operator reads a missing type
