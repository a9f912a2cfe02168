"""The dotted-quad fast path of engine.core.cidr answers exactly as the general parsers do
(netaddr for parse_cidr, ipaddress under Go's rules for parse_operator_cidr): same prefix,
same flags, the same error for every string, the near misses included."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core import cidr

octet = st.one_of(
    st.integers(0, 255).map(str),
    st.integers(0, 999).map(str),  # too big
    st.integers(0, 99).map(lambda n: f"0{n}"),  # leading zero
    st.sampled_from(["", "-1", "+1", "١", " 1", "1 ", "0x1"]),
)
length = st.one_of(
    st.integers(0, 33).map(str),
    st.integers(0, 40).map(lambda n: f"0{n}"),
    st.sampled_from(["", "128", "-0", "٣", " 8", "8 "]),
)
text = st.one_of(
    st.builds(lambda a, b, c, d, n: f"{a}.{b}.{c}.{d}/{n}", octet, octet, octet, octet, length),
    st.builds(lambda a, b, c, n: f"{a}.{b}.{c}/{n}", octet, octet, octet, length),
    st.builds(lambda a, b, c, d: f"{a}.{b}.{c}.{d}", octet, octet, octet, octet),
)


def _answer(parse: Callable[[str], object], value: str) -> object:
    try:
        return parse(value)
    except cidr.CidrError as exc:
        return ("error", str(exc))


def _slow(monkeypatch: pytest.MonkeyPatch, parse: Callable[[str], object], value: str) -> object:
    with monkeypatch.context() as m:
        m.setattr(cidr, "_quad", lambda addr: None)
        cidr.forget_parsed_cidrs()
        try:
            return _answer(parse, value)
        finally:
            cidr.forget_parsed_cidrs()


@given(text)
def test_fast_path_equals_the_general_parsers(value: str) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        for parse in (cidr.parse_cidr, cidr.parse_operator_cidr):
            fast = _answer(parse, value)
            assert fast == _slow(monkeypatch, parse, value), (parse.__name__, value)


def test_fast_path_results() -> None:
    assert cidr.parse_cidr("198.18.0.1/32") == cidr.Prefix(0xFFFF_C612_0001, 128, True)
    assert cidr.parse_operator_cidr("10.1.2.3/8") == cidr.OperatorCidr(
        cidr.Prefix(0xFFFF_0A00_0000, 104, True), True, False
    )
    with pytest.raises(cidr.CidrError, match=r"host bits are set; did you mean 10\.0\.0\.0/8"):
        cidr.parse_cidr("10.1.2.3/8")
    with pytest.raises(cidr.CidrError, match="prefix length 33 is more than the 32 bits"):
        cidr.parse_operator_cidr("10.0.0.0/33")


@given(text)
def test_what_admission_remembers_is_what_parse_cidr_says(value: str) -> None:
    try:
        parsed = cidr.parse_operator_cidr(value)
    except cidr.CidrError:
        return
    normal = str(parsed.prefix)
    assert cidr._parse_cidr(normal) == parsed.prefix  # the uncached parse of the normal form
    assert cidr.operator_text(value, parsed) == normal  # admission's shortcut to it


@given(st.lists(text, max_size=4))
def test_parse_cidrs_answers_as_parse_cidr(values: list[str]) -> None:
    """The batch parser's inline fast path: same prefixes, the same error for the same string."""
    expected = []
    for value in values:
        cidr.forget_parsed_cidrs()
        expected.append(_answer(cidr.parse_cidr, value))
    cidr.forget_parsed_cidrs()
    try:
        got: list[object] = list(cidr.parse_cidrs(values))
    except cidr.CidrError as exc:
        first_error = next(e for e in expected if isinstance(e, tuple) and e[:1] == ("error",))
        assert ("error", str(exc)) == first_error
        return
    finally:
        cidr.forget_parsed_cidrs()
    assert got == expected
