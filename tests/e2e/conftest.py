"""Shared fixtures for end-to-end tests: the lab (engine.lab) in network namespaces."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from engine.lab import LabInfo, lab_down, lab_status, lab_up, stop_traffic

ROOT_REASON = "needs root: network namespaces, veth pairs and raw sockets"


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip(ROOT_REASON)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabInfo]:
    """A quiet lab (no traffic processes: only the packets a test sends arrive), for one module.

    Torn down at the end of the module, also when a test fails. The lab has fixed names, so
    e2e modules must not run in parallel (no pytest-xdist across them).
    """
    require_root()
    try:
        lab_up(traffic=False)
        stop_traffic()  # a lab left running by someone else may have traffic
        info = lab_status()
        assert info.up, info.problems
        yield info
    finally:
        lab_down()


@pytest.fixture(scope="module")
def lab_with_traffic() -> Iterator[LabInfo]:
    """The lab with its steady traffic mix (20 packets/s per client, 10 minutes at most)."""
    require_root()
    try:
        info = lab_up(rate=20.0, traffic=True, duration=600.0)
        assert info.up, info.problems
        yield info
    finally:
        lab_down()
