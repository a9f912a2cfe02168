"""Operator parity: every case of tests/unit/operator_corpus/cases.yaml gets the operator's
verdict from infw's admission, refusals name the field the operator's check is about, and
admitted cases carry the warning (and the meaning) the corpus states."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine.core.crd import Admission, admit_documents, admit_yaml
from engine.core.model import API_VERSION, KIND, Action, PortRange, Protocol
from engine.errors import ValidationError

HERE = Path(__file__).parent / "operator_corpus"
CASES: list[dict[str, Any]] = yaml.safe_load((HERE / "cases.yaml").read_text())


def _documents(case: dict[str, Any]) -> list[Any]:
    if "docs" in case:
        return copy.deepcopy(case["docs"])
    if "many_rules" in case:
        rules = [
            {
                "order": i,
                "action": "Allow",
                "protocolConfig": {"protocol": "TCP", "tcp": {"ports": 80}},
            }
            for i in range(1, case["many_rules"] + 1)
        ]
    elif "rules" in case:
        rules = case["rules"]
    else:
        rules = [case.get("rule", {"order": 1, "action": "Deny"})]
    entry: dict[str, Any] = {"sourceCIDRs": case.get("cidrs", ["192.168.1.0/24"])}
    if rules is not None:
        entry["rules"] = rules
    spec: dict[str, Any] = {"interfaces": case.get("interfaces", ["eth0"]), "ingress": [entry]}
    for key, value in (case.get("spec") or {}).items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    doc = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": "corpus", **(case.get("meta") or {})},
        "spec": spec,
        **(case.get("top") or {}),
    }
    return [copy.deepcopy(doc)]


def _admit(case: dict[str, Any]) -> Admission:
    if "file" in case:
        path = HERE / "samples" / f"{case['file']}.yaml"
        return admit_yaml(path.read_text(), str(path))
    return admit_documents(_documents(case), "corpus.yaml")


def test_the_corpus_is_big_and_well_formed() -> None:
    assert len(CASES) >= 70
    for case in CASES:
        assert case["verdict"] in ("admit", "refuse"), case["name"]
        assert case.get("source"), case["name"]
        assert (case["verdict"] == "refuse") == ("path" in case), case["name"]
    assert len({c["name"] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_operator_verdict(case: dict[str, Any]) -> None:
    if case["verdict"] == "refuse":
        with pytest.raises(ValidationError) as info:
            _admit(case)
        paths = [e.path for e in info.value.errors]
        assert case["path"] in paths, paths
        return
    admitted = _admit(case)
    if "warn" in case:
        assert any(case["warn"] in w for w in admitted.warnings), admitted.warnings
    if "means" in case:
        rule = admitted.ruleset.firewalls[0].ingress[0].rules[0]
        for key, want in case["means"].items():
            got = getattr(rule, key)
            if key == "protocol":
                want = None if want is None else Protocol(want)
            elif key == "action":
                want = Action(want)
            elif key == "ports":
                want = PortRange(*want)
            assert got == want, (key, got)
