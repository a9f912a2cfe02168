"""engine.core.crd: the IngressNodeFirewall YAML, its validation (DESIGN §2) and its export."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.core.crd import (
    admit_documents,
    admit_yaml,
    dump_yaml,
    load_file,
    load_yaml,
    order_conflicts,
    parse_documents,
)
from engine.core.export import export_documents
from engine.core.model import (
    API_VERSION,
    KIND,
    Action,
    PortRange,
    Protocol,
    Rule,
    RuleSet,
    add_rule,
)
from engine.errors import FieldError, ValidationError
from tests.unit.strategies import rulesets

DESIGN_EXAMPLE = f"""
apiVersion: {API_VERSION}
kind: {KIND}
metadata:
  name: web
spec:
  interfaces: [eth0, "ens*"]          # names or shell-style globs
  ingress:
  - sourceCIDRs: [192.0.2.0/24, "2001:db8::/32"]
    rules:
    - order: 10
      protocolConfig: {{protocol: TCP, tcp: {{ports: "8000-8080"}}}}
      action: Deny
    - order: 20
      protocolConfig: {{protocol: ICMP, icmp: {{icmpType: 8, icmpCode: 0}}}}
      action: Allow
"""


def make_doc(
    rules: list[Any] | None = None,
    cidrs: list[Any] | None = None,
    name: Any = "web",
    interfaces: Any = None,
) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "interfaces": ["eth0"] if interfaces is None else interfaces,
            "ingress": [
                {
                    "sourceCIDRs": ["192.0.2.0/24"] if cidrs is None else cidrs,
                    "rules": [{"order": 10, "action": "Deny"}] if rules is None else rules,
                }
            ],
        },
    }


def errors_of(*docs: dict[str, Any], source: str = "f.yaml") -> tuple[FieldError, ...]:
    text = yaml.safe_dump_all(list(docs))
    with pytest.raises(ValidationError) as info:
        load_yaml(text, source)
    assert str(info.value)
    return info.value.errors


def expect_error(doc: dict[str, Any], path: str, value: object, words: str = "") -> FieldError:
    errs = errors_of(doc)
    for err in errs:
        if err.path == path and err.value == value:
            assert err.document.startswith("f.yaml document 1")
            assert words.lower() in f"{err.problem} {err.fix}".lower()
            # The rendered message names the document, the path and the bad value.
            text = str(err)
            assert "f.yaml document 1" in text and path in text and repr(value) in text
            return err
    raise AssertionError(f"no error at {path} for {value!r}: {errs}")


PC = "spec.ingress[0].rules[0].protocolConfig"
R0 = "spec.ingress[0].rules[0]"


# --- valid input ---------------------------------------------------------------------------


def test_design_example_parses() -> None:
    rs = load_yaml(DESIGN_EXAMPLE)
    assert len(rs.firewalls) == 1
    fw = rs.firewalls[0]
    assert fw.name == "web" and fw.interfaces == ("eth0", "ens*")
    (block,) = fw.ingress
    assert block.source_cidrs == ("192.0.2.0/24", "2001:db8::/32")
    assert block.rules == (
        Rule(10, Action.DENY, Protocol.TCP, PortRange(8000, 8080)),
        Rule(20, Action.ALLOW, Protocol.ICMP, icmp_type=8, icmp_code=0),
    )


def test_design_example_warns_where_it_means_something_else() -> None:
    """Admitted (as the operator admits it), with what differs: the glob, the range end, and the
    ICMP rule that can't match the IPv6 source."""
    warnings = admit_yaml(DESIGN_EXAMPLE).warnings
    text = "\n".join(warnings)
    assert "'ens*' is a glob" in text and "exact names only" in text
    assert "ports 8000-8080" in text and "end port" in text
    assert "other family" in text


def test_protocol_and_action_are_case_sensitive_like_the_operator() -> None:
    rules = [
        {"order": 1, "action": "deny"},
        {"order": 2, "action": "Deny", "protocolConfig": {"protocol": "tcp", "tcp": {"ports": 1}}},
    ]
    with pytest.raises(ValidationError) as exc:
        parse_documents([make_doc(rules)])
    text = str(exc.value)
    assert "rules[0].action: unknown action" in text and "write Deny" in text
    assert "rules[1].protocolConfig.protocol: unknown protocol" in text and "write TCP" in text


def test_any_protocol_forms() -> None:
    rules = [
        {"order": 1, "action": "Deny"},
        {"order": 3, "action": "Allow", "protocolConfig": {"protocol": ""}},
        {"order": 4, "action": "Allow", "protocolConfig": None},
        {
            "order": 5,
            "action": "Deny",
            "protocolConfig": {"protocol": "SCTP", "sctp": {"ports": 9}},
        },
        {
            "order": 6,
            "action": "Allow",
            "protocolConfig": {"protocol": "TCP", "tcp": {"ports": "1-65535"}},
        },
    ]
    rs = parse_documents([make_doc(rules)])
    got = rs.firewalls[0].ingress[0].rules
    assert [r.protocol for r in got] == [None, None, None, Protocol.SCTP, Protocol.TCP]
    assert got[3].ports == PortRange(9, 9)
    assert got[4].port_range is None  # 1-65535 is the whole protocol
    assert got[1].action is Action.ALLOW


@pytest.mark.parametrize(
    "pc, path",
    [
        ({}, f"{PC}.protocol"),
        ({"protocol": "TCP"}, f"{PC}.tcp"),
        ({"protocol": "UDP"}, f"{PC}.udp"),
        ({"protocol": "ICMP"}, f"{PC}.icmp"),
        ({"protocol": "ICMPv6"}, f"{PC}.icmpv6"),
        ({"protocol": "TCP", "tcp": {}}, f"{PC}.tcp.ports"),
        ({"protocol": "", "tcp": {"ports": 80}}, f"{PC}.tcp"),
        ({"tcp": {"ports": 80}}, f"{PC}.protocol"),
    ],
)
def test_blocks_the_operator_requires_or_forbids(pc: dict[str, Any], path: str) -> None:
    doc = make_doc([{"order": 1, "action": "Allow", "protocolConfig": pc}])
    assert path in {e.path for e in errors_of(doc)}


def test_omitted_action_is_allow_with_a_warning() -> None:
    admitted = admit_documents([make_doc([{"order": 1}])])
    assert admitted.ruleset.firewalls[0].ingress[0].rules[0].action is Action.ALLOW
    assert any("no action" in w for w in admitted.warnings)


def test_rules_sorted_by_order_and_list_kind_unwrapped() -> None:
    doc = make_doc([{"order": 30, "action": "Deny"}, {"order": 5, "action": "Allow"}])
    for kind, version in (("List", "v1"), ("IngressNodeFirewallList", API_VERSION)):
        text = yaml.safe_dump({"apiVersion": version, "kind": kind, "items": [doc]})
        rs = load_yaml(text)
        assert [r.order for r in rs.firewalls[0].ingress[0].rules] == [5, 30]


def test_empty_documents_skipped_but_some_needed() -> None:
    rs = load_yaml("---\n---\n" + yaml.safe_dump(make_doc()) + "---\n")
    assert [fw.name for fw in rs.firewalls] == ["web"]
    with pytest.raises(ValidationError, match="no documents"):
        load_yaml("---\n")


def test_icmp_omitted_fields_compare_as_zero_like_the_operator() -> None:
    def rule(sub: dict[str, Any]) -> Rule:
        pc = {"protocol": "ICMPv6", "icmpv6": sub}
        doc = make_doc([{"order": 1, "action": "Allow", "protocolConfig": pc}], ["::/0"])
        return parse_documents([doc]).firewalls[0].ingress[0].rules[0]

    assert rule({"icmpType": 128}) == Rule(1, Action.ALLOW, Protocol.ICMPV6, None, 128, 0)
    assert rule({}) == Rule(1, Action.ALLOW, Protocol.ICMPV6, None, 0, 0)
    assert rule({"icmpCode": 4}) == Rule(1, Action.ALLOW, Protocol.ICMPV6, None, 0, 4)


# --- every validation rule -----------------------------------------------------------------


@pytest.mark.parametrize("order", [0, 2**32, -1, "ten", "10", 1.5, True, None])
def test_order_range(order: object) -> None:
    expect_error(make_doc([{"order": order, "action": "Deny"}]), f"{R0}.order", order)


def test_order_bounds_accepted() -> None:
    rules = [{"order": 1, "action": "Deny"}, {"order": 2**32 - 1, "action": "Deny"}]
    admitted = admit_documents([make_doc(rules)])
    assert [r.order for r in admitted.ruleset.firewalls[0].ingress[0].rules] == [1, 2**32 - 1]
    assert any("orders 1-99 only" in w for w in admitted.warnings)


def test_order_unique_within_block() -> None:
    doc = make_doc([{"order": 7, "action": "Deny"}, {"order": 7, "action": "Allow"}])
    err = expect_error(doc, "spec.ingress[0].rules[1].order", 7, "unique")
    assert "rules[0]" in err.problem


def test_same_order_in_other_blocks_and_objects_with_other_selectors_is_fine() -> None:
    doc = make_doc()
    doc["spec"]["ingress"].append(
        {"sourceCIDRs": ["198.51.100.0/24"], "rules": [{"order": 10, "action": "Allow"}]}
    )
    other = make_doc(name="other")
    other["spec"]["nodeSelector"] = {"matchLabels": {"zone": "b"}}
    rs = parse_documents([doc, other])
    assert rs.rule_count() == 3


def test_same_order_for_the_same_cidr_in_two_objects_is_refused() -> None:
    """The webhook: same sourceCIDR string, equal nodeSelector, an order in common."""
    errs = errors_of(make_doc(), make_doc(name="other"))
    (err,) = errs
    assert err.document.startswith("f.yaml document 2") and err.value == [10]
    assert "conflicts with object web" in err.problem


@pytest.mark.parametrize("proto", ["HTTP", "icmp6", "IPv4", 6, "TCP/UDP"])
def test_protocol_names(proto: object) -> None:
    doc = make_doc([{"order": 1, "action": "Deny", "protocolConfig": {"protocol": proto}}])
    expect_error(doc, f"{PC}.protocol", proto, "TCP, UDP, SCTP, ICMP, ICMPv6")


@pytest.mark.parametrize(
    "ports, words",
    [
        (0, "1-65535"),
        (65536, "1-65535"),
        ("0", "port 0"),
        ("0-10", "start at 0"),
        ("10-70000", "1-65535"),
        ("2000-1000", "write 1000-2000"),
        ("7-7", "equal"),
        (" 5 - 6 ", "no spaces"),
        ("80,443", "port number"),
        ("a-b", "range"),
        ("1-2-3", "range"),
        ([80], "number or a string"),
        (True, "number or a string"),
        ("", "port number"),
        ("-5", "range"),
    ],
)
def test_ports_forms_and_ranges(ports: object, words: str) -> None:
    doc = make_doc(
        [
            {
                "order": 1,
                "action": "Allow",
                "protocolConfig": {"protocol": "TCP", "tcp": {"ports": ports}},
            }
        ]
    )
    expect_error(doc, f"{PC}.tcp.ports", ports, words)


@pytest.mark.parametrize(
    "ports, want",
    [
        (80, (80, 80)),
        ("80", (80, 80)),
        ("0080", (80, 80)),
        ("1000-2000", (1000, 2000)),
        ("65535", (65535, 65535)),
    ],
)
def test_ports_accepted_forms(ports: object, want: tuple[int, int]) -> None:
    doc = make_doc(
        [
            {
                "order": 1,
                "action": "Deny",
                "protocolConfig": {"protocol": "UDP", "udp": {"ports": ports}},
            }
        ]
    )
    rule = parse_documents([doc]).firewalls[0].ingress[0].rules[0]
    assert rule.ports == PortRange(*want)


@pytest.mark.parametrize("proto, key", [("ICMP", "icmp"), ("ICMPv6", "icmpv6")])
def test_ports_only_for_port_protocols(proto: str, key: str) -> None:
    cidrs = ["192.0.2.0/24"] if proto == "ICMP" else ["2001:db8::/32"]
    doc = make_doc(
        [{"order": 1, "action": "Deny", "protocolConfig": {"protocol": proto, key: {"ports": 80}}}],
        cidrs,
    )
    expect_error(doc, f"{PC}.{key}.ports", 80, "icmpType")


def test_ports_under_wrong_protocol_key() -> None:
    doc = make_doc(
        [
            {
                "order": 1,
                "action": "Deny",
                "protocolConfig": {"protocol": "TCP", "udp": {"ports": 80}},
            }
        ]
    )
    expect_error(doc, f"{PC}.udp", {"ports": 80}, "tcp")


@pytest.mark.parametrize("field", ["icmpType", "icmpCode"])
@pytest.mark.parametrize("value", [-1, 256, "x", "3", 1.5])
def test_icmp_type_code_range(field: str, value: object) -> None:
    sub = {"icmpType": 3, field: value}
    doc = make_doc(
        [{"order": 1, "action": "Deny", "protocolConfig": {"protocol": "ICMP", "icmp": sub}}]
    )
    expect_error(doc, f"{PC}.icmp.{field}", value, "0..255")


def test_icmp_on_the_other_family_is_admitted_with_a_warning() -> None:
    rules = [
        {"order": 1, "action": "Deny", "protocolConfig": {"protocol": "ICMP", "icmp": {}}},
        {"order": 2, "action": "Deny", "protocolConfig": {"protocol": "ICMPv6", "icmpv6": {}}},
    ]
    admitted = admit_documents([make_doc(rules, cidrs=["2001:db8::/32"])])
    assert admitted.ruleset.rule_count() == 2
    assert any("web order 1 (ICMP)" in w and "never match" in w for w in admitted.warnings)


@pytest.mark.parametrize(
    "cidr, meant",
    [
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("192.0.2.77/24", "192.0.2.0/24"),
        ("2001:db8::1/32", "2001:db8::/32"),
        ("1.2.3.4/024", "1.2.3.0/24"),
    ],
)
def test_host_bits_are_admitted_and_mean_the_network(cidr: str, meant: str) -> None:
    admitted = admit_documents([make_doc(cidrs=[cidr])])
    assert admitted.ruleset.firewalls[0].ingress[0].source_cidrs == (meant,)
    if cidr != "1.2.3.4/024":
        assert any("host bits" in w and meant in w for w in admitted.warnings)


@pytest.mark.parametrize(
    "cidr",
    [
        "10.0.0.0",
        "10.0/8",
        "300.0.0.0/8",
        "10.0.0.0/33",
        "2001:db8::/129",
        "010.0.0.0/8",
        " 10.0.0.0/8",
        "fe80::1%eth0/64",
        "nonsense",
        "",
        12,
    ],
)
def test_bad_cidrs(cidr: object) -> None:
    expect_error(make_doc(cidrs=["192.0.2.0/24", cidr]), "spec.ingress[0].sourceCIDRs[1]", cidr)


@pytest.mark.parametrize("cidrs", [[], None, "10.0.0.0/8"])
def test_source_cidrs_must_be_list(cidrs: object) -> None:
    doc = make_doc()
    doc["spec"]["ingress"][0]["sourceCIDRs"] = cidrs
    expect_error(doc, "spec.ingress[0].sourceCIDRs", cidrs, "list")


@pytest.mark.parametrize("action", ["Drop", "Reject", "", 1])
def test_bad_action(action: object) -> None:
    doc = make_doc([{"order": 1, "action": action}])
    expect_error(doc, f"{R0}.action", action, "Allow or Deny")


def test_missing_fields() -> None:
    doc = make_doc([{"protocolConfig": {"protocol": "TCP", "tcp": {"ports": 1}}}])
    expect_error(doc, f"{R0}.order", None, "missing")
    no_name = make_doc()
    del no_name["metadata"]["name"]
    expect_error(no_name, "metadata.name", None, "name")
    no_spec = make_doc()
    del no_spec["spec"]
    expect_error(no_spec, "spec", None)
    no_ifaces = make_doc()
    del no_ifaces["spec"]["interfaces"]
    expect_error(no_ifaces, "spec.interfaces", None)
    no_ingress = make_doc()
    no_ingress["spec"]["ingress"] = []
    expect_error(no_ingress, "spec.ingress", [])


def test_an_entry_without_rules_is_admitted_and_matches_nothing() -> None:
    doc = make_doc()
    del doc["spec"]["ingress"][0]["rules"]
    admitted = admit_documents([doc])
    assert admitted.ruleset.rule_count() == 0
    assert any("matches nothing" in w for w in admitted.warnings)


def test_unknown_fields() -> None:
    doc = make_doc([{"order": 1, "action": "Deny", "priority": 3}])
    doc["spec"]["egress"] = []
    expect_error(doc, f"{R0}.priority", 3, "unknown")
    expect_error(doc, "spec.egress", [], "unknown")


def test_wrong_kind_and_api_version() -> None:
    doc = make_doc()
    doc["kind"] = "NetworkPolicy"
    doc["apiVersion"] = "networking.k8s.io/v1"
    expect_error(doc, "kind", "NetworkPolicy", KIND)
    expect_error(doc, "apiVersion", "networking.k8s.io/v1", API_VERSION)


@pytest.mark.parametrize("name", ["Web", "-web", "web_1", "", "a..b", "a" * 254])
def test_bad_object_names(name: str) -> None:
    expect_error(make_doc(name=name), "metadata.name", name)


@pytest.mark.parametrize("iface", ["", "a" * 17, " ", 5, "0th"])
def test_bad_interfaces(iface: object) -> None:
    expect_error(make_doc(interfaces=["eth0", iface]), "spec.interfaces[1]", iface)


@pytest.mark.parametrize("iface", ["a" * 16, "eth 0", "eth0/1"])
def test_interfaces_no_linux_name_can_have_are_admitted_with_a_warning(iface: str) -> None:
    admitted = admit_documents([make_doc(interfaces=[iface])])
    assert admitted.ruleset.firewalls[0].interfaces == (iface,)
    assert any("never matches" in w for w in admitted.warnings)


def test_duplicate_object_names() -> None:
    errs = errors_of(make_doc(), make_doc(cidrs=["10.0.0.0/8"]))
    (err,) = errs
    assert err.document.startswith("f.yaml document 2") and err.path == "metadata.name"
    assert err.value == "web" and "document 1" in err.problem


def test_same_cidrs_in_two_entries_merge_and_clashing_orders_are_refused() -> None:
    doc = make_doc(cidrs=["10.0.0.0/8", "192.0.2.0/24"])
    doc["spec"]["ingress"].append(
        {"sourceCIDRs": ["192.0.2.0/24", "10.0.0.0/8"], "rules": [{"order": 1, "action": "Deny"}]}
    )
    (block,) = parse_documents([doc]).firewalls[0].ingress
    assert [r.order for r in block.rules] == [1, 10]
    doc["spec"]["ingress"][1]["rules"][0]["order"] = 10
    errs = errors_of(doc)
    assert [e.path for e in errs] == ["spec.ingress[1].rules"]


def test_all_errors_of_a_file_reported_at_once() -> None:
    bad1 = make_doc([{"order": 0, "action": "Deny"}, {"order": 5, "action": "Nope"}])
    bad2 = make_doc(cidrs=["10.0.0.1"], name="two")
    bad2["kind"] = "Other"
    errs = errors_of(bad1, make_doc(name="fine", cidrs=["10.9.0.0/16"]), bad2)
    where = {(e.document.split(" (")[0], e.path) for e in errs}
    assert where == {
        ("f.yaml document 1", f"{R0}.order"),
        ("f.yaml document 1", "spec.ingress[0].rules[1].action"),
        ("f.yaml document 3", "kind"),
        ("f.yaml document 3", "spec.ingress[0].sourceCIDRs[0]"),
    }


@pytest.mark.parametrize("text", ["spec: [unclosed", "a: b: c", "key: 'open", "\t- tab", "x: \x00"])
def test_yaml_syntax_errors(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_yaml(text, "bad.yaml")
    (err,) = info.value.errors
    assert err.document == "bad.yaml" and "YAML syntax error" in err.problem


def test_yaml_syntax_error_position() -> None:
    with pytest.raises(ValidationError) as info:
        load_yaml("a: 1\nb: [\n", "bad.yaml")
    assert info.value.errors[0].path.startswith("line ")


def test_load_file_errors(tmp_path: Any) -> None:
    with pytest.raises(ValidationError, match="cannot read"):
        load_file(str(tmp_path / "missing.yaml"))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ValidationError, match="UTF-8"):
        load_file(str(binary))
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(make_doc()))
    assert load_file(str(good)).firewalls[0].name == "web"


# --- export ------------------------------------------------------------------------------------


def test_metadata_and_node_selector_survive_export() -> None:
    doc = make_doc()
    doc["metadata"]["labels"] = {"app": "web", "tier": "edge"}
    doc["metadata"]["annotations"] = {"note": "kept as is", "num": "1"}
    doc["spec"]["nodeSelector"] = {"matchLabels": {"node-role.kubernetes.io/worker": ""}}
    rs = load_yaml(yaml.safe_dump(doc))
    out = list(yaml.safe_load_all(dump_yaml(rs)))
    assert out == [doc | {"spec": {**doc["spec"]}}]
    assert out[0]["metadata"]["labels"] == {"app": "web", "tier": "edge"}
    assert out[0]["metadata"]["annotations"] == {"note": "kept as is", "num": "1"}
    assert out[0]["spec"]["nodeSelector"] == doc["spec"]["nodeSelector"]


def test_design_example_round_trips_without_the_icmp_rule() -> None:
    text = DESIGN_EXAMPLE.replace("ICMP, icmp", "ICMPv6, icmpv6").replace("192.0.2.0/24, ", "")
    rs = load_yaml(text)
    again = load_yaml(dump_yaml(rs))
    assert again.semantic_key() == rs.semantic_key()


# --- properties -------------------------------------------------------------------------------


def _meaning(rule: Rule) -> tuple[Any, ...]:
    return (rule.order, rule.action, rule.protocol, rule.port_range, rule.icmp_type, rule.icmp_code)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets())
def test_export_is_admitted_and_keeps_the_meaning(rs: RuleSet) -> None:
    """node -> operator -> node: what infw exports, the operator's admission admits (this module
    is that admission), and every rule means the same after the trip or is named in a note."""
    assume(not order_conflicts(rs))
    exported = export_documents(rs)
    again = admit_documents(list(exported.documents)).ruleset  # raises if not admitted
    notes = "\n".join(exported.notes)
    assert [fw.name for fw in again.firewalls] == [fw.name for fw in rs.firewalls]
    for a, b in zip(rs.firewalls, again.firewalls, strict=True):
        assert a.interfaces == b.interfaces
        assert dict(a.node_selector) == dict(b.node_selector)
        assert dict(a.extra_metadata) == dict(b.extra_metadata)
        after = {frozenset(blk.source_cidrs): blk for blk in b.ingress}
        for block in a.ingress:
            kept = {r.order: r for r in after[frozenset(block.source_cidrs)].rules}
            for rule in block.rules:
                if f"{a.name} {', '.join(block.source_cidrs)} order {rule.order}:" in notes:
                    continue
                assert _meaning(kept[rule.order]) == _meaning(rule)


def test_export_writes_operator_forms_and_notes_the_rest() -> None:
    cidrs = ("10.0.0.0/8",)
    rs = RuleSet()
    for rule in (
        Rule(1, Action.ALLOW, Protocol.TCP),
        Rule(2, Action.DENY, Protocol.UDP),
        Rule(3, Action.ALLOW, Protocol.ICMP),
        Rule(4, Action.ALLOW, Protocol.ICMP, icmp_type=3),
    ):
        rs = add_rule(rs, "web", ("eth*",), cidrs, rule)
    exported = export_documents(rs)
    (doc,) = exported.documents
    rules = doc["spec"]["ingress"][0]["rules"]
    assert rules[0]["protocolConfig"] == {"protocol": "TCP", "tcp": {"ports": "1-65535"}}
    assert [r["order"] for r in rules] == [1, 3, 4]  # the Deny on every UDP port has no form
    assert rules[2]["protocolConfig"]["icmp"] == {"icmpType": 3, "icmpCode": 0}
    text = "\n".join(exported.notes)
    assert "order 2: left out" in text and "68/udp" in text
    assert "order 3: every ICMP type has no operator form" in text
    assert "order 4: every code of type 3" in text
    assert "'eth*' is a glob" in text
    admit_documents(list(exported.documents))  # and the operator admits what was written


YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["TCP", "icmp", "10.0.0.0/8", "1-2", "Deny", "²", "٣", "0x10"]),
)
KEYS = st.sampled_from(
    [
        "apiVersion",
        "kind",
        "metadata",
        "name",
        "spec",
        "interfaces",
        "ingress",
        "sourceCIDRs",
        "rules",
        "order",
        "protocolConfig",
        "protocol",
        "tcp",
        "icmp",
        "icmpv6",
        "ports",
        "icmpType",
        "icmpCode",
        "action",
        "nodeSelector",
        "items",
    ]
)
VALUES = st.recursive(
    YAML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(KEYS | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def assert_only_validation_error(call: Any) -> None:
    try:
        call()
    except ValidationError as exc:
        assert str(exc).strip()
        assert exc.errors and all(str(e) for e in exc.errors)


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=3))
def test_random_documents_only_raise_validation_error(docs: list[Any]) -> None:
    assert_only_validation_error(lambda: parse_documents(docs))


@st.composite
def mutated_docs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one value somewhere replaced (deep coverage of every field)."""
    doc = make_doc(
        [
            {
                "order": 1,
                "action": "Deny",
                "protocolConfig": {"protocol": "TCP", "tcp": {"ports": "1-2"}},
            },
            {
                "order": 2,
                "action": "Allow",
                "protocolConfig": {"protocol": "ICMP", "icmp": {"icmpType": 8, "icmpCode": 0}},
            },
        ]
    )
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        while True:
            keys = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, (dict, list)) and child and draw(st.booleans()):
                node = child
                continue
            node[key] = draw(VALUES)
            break
    return doc


@settings(max_examples=300, deadline=None)
@given(mutated_docs())
def test_mutated_documents_only_raise_validation_error(doc: dict[str, Any]) -> None:
    assert_only_validation_error(lambda: parse_documents([doc]))
    assert_only_validation_error(lambda: load_yaml(yaml.safe_dump(doc)))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("[]{}:-,'\"!&*#?|>%@` \n\tabc01./")), max_size=80))
def test_random_yaml_text_only_raises_validation_error(text: str) -> None:
    assert_only_validation_error(lambda: load_yaml(text))


def test_deeply_nested_yaml_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        load_yaml("[" * 5000)
    with pytest.raises(ValidationError):
        load_yaml("a: " + "[" * 3000 + "]" * 3000)


def test_unicode_digits_are_not_numbers() -> None:
    doc = make_doc([{"order": "²", "action": "Deny"}])
    expect_error(doc, f"{R0}.order", "²")
    ports = make_doc(
        [
            {
                "order": 1,
                "action": "Deny",
                "protocolConfig": {"protocol": "TCP", "tcp": {"ports": "٣"}},
            }
        ]
    )
    expect_error(ports, f"{PC}.tcp.ports", "٣")
