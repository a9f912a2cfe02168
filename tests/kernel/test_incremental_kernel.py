"""Incremental edits in the kernel: after every edit of a random sequence, written as a delta
into the inactive generation, the loaded program decides frames as the reference does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.incremental import IncrementalCompiler
from tests.kernel.conftest import PIN_BASE
from tests.kernel.test_differential import INTERFACES, assert_agree, frames_for
from tests.unit.strategies import tricky_rulesets
from tests.unit.test_incremental import edited


@pytest.fixture(scope="module")
def kernel() -> Iterator[Any]:
    from engine.kernel.datapath import Datapath

    dp = Datapath.load(os.path.join(PIN_BASE, "incremental"))
    try:
        yield dp
    finally:
        dp.unload()


class Generation:
    n = 0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_kernel_agrees_after_each_incremental_edit(kernel: Any, data: st.DataObject) -> None:
    compiler = IncrementalCompiler()
    ruleset = data.draw(tricky_rulesets(), label="base")
    tables = compiler.compile(ruleset, INTERFACES)
    positional = 0  # positional writes in a row just before this one
    for _ in range(data.draw(st.integers(2, 5))):
        Generation.n += 1
        kernel.write_tables(tables, Generation.n)
        laid_out = tables.fast.rows is not None
        if positional >= 2 and laid_out:
            # both halves hold positional tables this handle wrote: only what differs is written
            # (an IPv6 prefix longer than /64 sends a compile to the full compiler, and the
            # write after it to the full path)
            assert kernel.tables.last_write.startswith("delta"), kernel.tables.last_write
        positional = positional + 1 if laid_out else 0
        for frame in data.draw(st.lists(frames_for(ruleset), min_size=1, max_size=8)):
            assert_agree(kernel, ruleset, tables, frame)
        ruleset = data.draw(edited(ruleset), label="edit")
        tables = compiler.compile(ruleset, INTERFACES, previous_ids=tables.rule_ids)
