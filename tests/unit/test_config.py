"""engine.state.config: defaults, the example file, and errors that name the file, field and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.core.failsafe import DEFAULT_FAILSAFE, FailSafe
from engine.core.model import PortRange, Protocol
from engine.errors import FieldError, ValidationError
from engine.state.config import NodeConfig, config_to_dict, load_config, parse_config, split_listen

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config.yaml"


def errors_of(tmp_path: Path, text: str) -> tuple[Path, tuple[FieldError, ...]]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        load_config(str(path))
    return path, info.value.errors


def test_missing_and_empty_files_give_defaults(tmp_path: Path) -> None:
    assert load_config(str(tmp_path / "absent.yaml")) == NodeConfig()
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    assert load_config(str(tmp_path / "empty.yaml")) == NodeConfig()
    assert NodeConfig().failsafe == DEFAULT_FAILSAFE


def test_example_file_states_the_defaults() -> None:
    assert load_config(str(EXAMPLE)) == NodeConfig()


def test_values_are_read(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("""
failsafe:
  - {protocol: tcp, ports: "2222", purpose: SSH}
  - {protocol: UDP, ports: 67-68, purpose: DHCP}
confirmTimeout: 0
eventRate: 500
metricsListen: "[::1]:9000"
stateDir: /srv/infw/
pinRoot: /sys/fs/bpf/infw-lab
""")
    config = load_config(str(path))
    assert config == NodeConfig(
        failsafe=(
            FailSafe(Protocol.TCP, PortRange(2222, 2222), "SSH"),
            FailSafe(Protocol.UDP, PortRange(67, 68), "DHCP"),
        ),
        confirm_timeout=0.0,
        event_rate=500,
        metrics_listen="[::1]:9000",
        state_dir="/srv/infw",
        pin_root="/sys/fs/bpf/infw-lab",
    )
    assert parse_config(config_to_dict(config)) == config


def test_errors_name_file_field_and_value(tmp_path: Path) -> None:
    path, errors = errors_of(
        tmp_path,
        """
failsafe:
  - {protocol: ICMP, ports: "22", purpose: SSH}
  - {protocol: TCP, ports: "90-80", purpose: web}
  - {protocol: TCP, ports: "22"}
  - {protocol: TCP, port: "22", purpose: x}
confirmTimeout: -1
eventRate: fast
metricsListen: "127.0.0.1"
stateDir: relative/dir
pinRoot: /tmp/pins
colour: blue
""",
    )
    found = {(e.path, e.value) for e in errors}
    assert all(e.document == str(path) for e in errors)
    assert ("failsafe[0].protocol", "ICMP") in found
    assert ("failsafe[1].ports", "90-80") in found
    assert ("failsafe[2].purpose", "") in found
    assert ("failsafe[3].port", "22") in found
    assert ("failsafe[3].ports", None) in found
    assert ("confirmTimeout", -1) in found
    assert ("eventRate", "fast") in found
    assert ("metricsListen", "127.0.0.1") in found
    assert ("stateDir", "relative/dir") in found
    assert ("pinRoot", "/tmp/pins") in found
    assert ("colour", "blue") in found
    reversed_range = next(e for e in errors if e.path == "failsafe[1].ports")
    assert "80-90" in reversed_range.problem
    assert str(path) in str(ValidationError(list(errors)))


def test_yaml_syntax_and_shape_errors(tmp_path: Path) -> None:
    path, errors = errors_of(tmp_path, "failsafe: [\n")
    assert errors[0].document == str(path) and "YAML syntax" in errors[0].problem
    _, errors = errors_of(tmp_path, "- just a list\n")
    assert errors[0].path == "" and "mapping" in errors[0].problem
    _, errors = errors_of(tmp_path, "failsafe: {protocol: TCP}\n")
    assert errors[0].path == "failsafe"


def test_empty_failsafe_list_is_allowed_and_too_many_ports_is_not(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("failsafe: []\n")
    assert load_config(str(path)).failsafe == ()
    _, errors = errors_of(tmp_path, "failsafe: [{protocol: TCP, ports: 1-2000, purpose: x}]\n")
    assert errors[0].path == "failsafe" and errors[0].value == 2000


def test_split_listen() -> None:
    assert split_listen("127.0.0.1:39301") == ("127.0.0.1", 39301)
    assert split_listen("[::1]:80") == ("::1", 80)
    assert split_listen(":80") == ("", 80)
    assert split_listen("localhost:80") == ("localhost", 80)
    for bad in ("::1:80", "[::1]80", "[nope]:80", "host:0", "host:x", "host"):
        with pytest.raises(ValueError):
            split_listen(bad)
