"""Console tests render times: pin the zone so text and snapshots are the same everywhere."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console import tuikit


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture(autouse=True)
def node_scope(tmp_path: Path) -> Iterator[None]:
    """Where this test's FakeNodes keep their pins and state; their frozen clock ends here."""
    with contextlib.ExitStack() as stack:
        tuikit.SCOPE.clear()
        tuikit.SCOPE.update(stack=stack, tmp=tmp_path)
        yield
        tuikit.SCOPE.clear()
