"""Hostile input is refused fast, cheaply and clearly (issue #15): the YAML reader's caps,
go-yaml v2 number forms, duplicate keys, files that are not files, and bounded error output."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from bench.hostile import CASES, measure
from console.render import error_lines
from engine.core import crd, yamlfile
from engine.core.yamlfile import dump_all, go_scalar, load_all, read_stdin, read_text
from engine.errors import FieldError, ValidationError

VALID = """apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {name: web}
spec:
  interfaces: [eth0]
  ingress:
  - sourceCIDRs: [192.0.2.0/24]
    rules:
    - order: 10
      protocolConfig: {protocol: TCP, tcp: {ports: PORTS}}
      action: Deny
"""


def refusal(text: str) -> FieldError:
    with pytest.raises(ValidationError) as info:
        load_all(text, "f.yaml")
    assert len(info.value.errors) == 1
    return info.value.errors[0]


# --- the corpus, each case in a child process under setrlimit -------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_hostile_case_is_refused_within_one_second_and_200_mb(
    case: object, tmp_path: Path
) -> None:
    result = measure(case, tmp_path)  # type: ignore[arg-type]
    assert result.refused, result.first_line
    assert result.cpu_seconds < 1.0, result
    assert result.peak_mb < 200, result


# --- caps ------------------------------------------------------------------------------------


def test_alias_bomb_is_refused_by_the_expanded_size_not_built() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    err = refusal("\n".join(lines) + "\nall: *a8\n")
    assert "after expanding aliases" in err.problem and "line " in err.path


def test_a_few_aliases_are_fine_and_shared() -> None:
    docs = load_all("base: &b [10.0.0.0/8]\none: *b\ntwo: *b\n", "f.yaml")
    assert docs == [{"base": ["10.0.0.0/8"], "one": ["10.0.0.0/8"], "two": ["10.0.0.0/8"]}]


def test_recursive_and_undefined_aliases_are_refused() -> None:
    assert "refers to itself" in refusal("a: &x [*x]\n").problem
    assert "no anchor" in refusal("a: *nothing\n").problem


@pytest.mark.parametrize(
    "text",
    ["[" * 10_000 + "]" * 10_000, "- " * 10_000 + "x\n", "{a: " * 5_000 + "1" + "}" * 5_000],
)
def test_deep_nesting_is_refused_at_the_depth_cap(text: str) -> None:
    err = refusal(text)
    assert f"more than {yamlfile.MAX_DEPTH} levels" in err.problem


def test_nesting_at_the_cap_is_read() -> None:
    depth = yamlfile.MAX_DEPTH
    assert load_all("[" * depth + "]" * depth, "f.yaml")


def test_node_cap_counts_plain_nodes_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlfile, "MAX_NODES", 100)
    assert load_all("[" + "0," * 98 + "0]", "f.yaml")  # 1 list + 99 scalars
    assert "more than 100 YAML nodes" in refusal("[" + "0," * 99 + "0]").problem
    # the JSON fast path is taken only when the text cannot exceed the cap
    assert "more than 100 YAML nodes" in refusal('{"a": [' + "0," * 120 + "0]}").problem


# --- duplicate keys ----------------------------------------------------------------------------


def test_duplicate_key_is_refused_with_both_lines_and_its_path() -> None:
    text = VALID.replace("ports: PORTS", "ports: 80") + "      action: Allow\n"
    with pytest.raises(ValidationError) as info:
        crd.load_yaml(text, "f.yaml")
    err = info.value.errors[0]
    assert "duplicate key 'action' (first at line 11)" in err.problem
    assert err.path.startswith("spec.ingress[0].rules[0].action (line 12")


def test_keys_compare_as_written_and_merges_are_not_duplicates() -> None:
    assert "duplicate key '80'" in refusal('80: a\n"80": b\n').problem
    docs = load_all("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 3\n", "f.yaml")
    assert docs == [{"base": {"x": 1, "true": 2}, "m": {"x": 3, "true": 2}}]  # `y`: a bool


def test_duplicate_key_in_json_is_refused() -> None:
    assert "duplicate key 'a'" in refusal('{"a": 1, "a": 2}').problem


# --- go-yaml v2 scalars ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("80", 80),
        ("1:20", "1:20"),  # YAML 1.1 base 60 in PyYAML (80); a string in go-yaml v2
        ("0o17", 15),
        ("017", 15),
        ("0x1F", 31),
        ("0b101", 5),
        ("-0b11", -3),
        ("1_000", 1000),
        ("+5", 5),
        ("08", 8.0),  # not octal: go-yaml falls through to a float
        ("1e3", 1000.0),
        (".5", 0.5),
        ("1e400", "1e400"),  # out of float64 range: Go's ParseFloat fails, so a string
        ("18446744073709551615", 2**64 - 1),
        ("y", True),
        ("N", False),
        ("on", True),
        ("tRUE", "tRUE"),
        ("~", None),
        ("2001-12-14", "2001-12-14"),  # timestamps stay strings for untyped targets
        ("٣", "٣"),
    ],
)
def test_plain_scalars_are_typed_as_go_yaml_v2_types_them(text: str, value: object) -> None:
    assert go_scalar(text) == value and type(go_scalar(text)) is type(value)


def test_base60_port_is_not_read_as_80() -> None:
    with pytest.raises(ValidationError) as info:
        crd.load_yaml(VALID.replace("PORTS", "1:20"), "f.yaml")
    assert info.value.errors[0].value == "1:20"


def test_quoted_and_tagged_scalars() -> None:
    docs = load_all("a: '80'\nb: !!str 80\nc: !!int 0x10\nd: !!float 1\ne: ! y\n", "f.yaml")
    assert docs == [{"a": "80", "b": "80", "c": 16, "d": 1.0, "e": "y"}]
    assert "cannot read 'abc' as !!int" in refusal("a: !!int abc\n").problem
    assert "unsupported tag" in refusal("a: !!python/object:os.system x\n").problem
    assert "unsupported tag" in refusal("a: !!set {x}\n").problem


def test_bool_keys_become_the_strings_the_api_server_sees() -> None:
    assert load_all("n: 1\non: 2\n", "f.yaml") == [{"false": 1, "true": 2}]


def test_export_quotes_strings_either_decoder_would_type() -> None:
    words = ["y", "n", "on", "0o17", "1:20", "1e3", "08", "2001-12-14", "80", "plain"]
    text = dump_all([{"interfaces": words}])
    assert load_all(text, "out") == [{"interfaces": words}]
    assert yaml.safe_load(text) == {"interfaces": words}
    assert "- plain" in text and "- 'y'" in text and "- '0o17'" in text


# --- files and stdin ---------------------------------------------------------------------------


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "rules.yaml"
    os.mkfifo(fifo)
    done: list[ValidationError] = []

    def read() -> None:
        try:
            read_text(str(fifo))
        except ValidationError as exc:
            done.append(exc)

    worker = threading.Thread(target=read, daemon=True)
    worker.start()
    worker.join(2)
    if worker.is_alive():  # unblock it before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO blocked")
    assert done and "FIFO" in done[0].errors[0].problem


def test_devices_and_directories_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="character device"):
        read_text("/dev/zero")
    with pytest.raises(ValidationError, match="a directory"):
        read_text(str(tmp_path))


def test_oversized_file_is_refused_by_its_size_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(yamlfile.MAX_BYTES + 1)  # sparse: costs nothing to make
    start = time.process_time()
    with pytest.raises(ValidationError, match="more than 16 MiB"):
        read_text(str(big))
    assert time.process_time() - start < 0.1


def test_stdin_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlfile, "MAX_BYTES", 1000)
    with open("/dev/zero", "rb") as zero, pytest.raises(ValidationError, match="larger than"):
        read_stdin(zero)
    r, w = os.pipe()
    os.write(w, b"a: 1\n")
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        assert read_stdin(pipe) == "a: 1\n"


# --- bounded output ----------------------------------------------------------------------------


def test_error_output_is_capped_at_20_plus_a_count() -> None:
    exc = ValidationError([FieldError("f", f"p{i}", i, "bad") for i in range(25)])
    lines = error_lines(exc)
    assert len(lines) == 1 + 20 + 1 and lines[-1].strip() == "... and 5 more"
    assert "25 errors" in lines[0]
    assert str(exc).count("\n") == 21


def test_a_huge_bad_value_is_shown_bounded() -> None:
    text = str(FieldError("f", "spec.interfaces", [["eth0"] * 1000] * 1000, "not a string"))
    assert len(text) < 400
