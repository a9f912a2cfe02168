"""engine.core.incremental: an edit compiled incrementally equals a full compile from the same
state, entry for entry, and decides packets as the brute-force classifier does."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.cidr import Prefix
from engine.core.classify import PacketFields, classify, lookup
from engine.core.compiler import CompiledTables, ListRule, compile_ruleset
from engine.core.failsafe import DEFAULT_FAILSAFE
from engine.core.incremental import IncrementalCompiler
from engine.core.model import Action, Firewall, IngressBlock, Rule, RuleSet
from tests.unit.strategies import (
    NODE_INTERFACES,
    packets_for,
    tricky_block,
    tricky_rulesets,
)

EDITS = ("rules", "cidrs", "add", "drop", "interfaces", "new", "same")


@st.composite
def edited(draw: st.DrawFn, rs: RuleSet) -> RuleSet:
    """rs with one edit: a block's rules or CIDRs replaced, a block added or dropped, an
    object's interfaces changed, a whole new rule set, or nothing at all."""
    what = draw(st.sampled_from(EDITS))
    if what == "new":
        return draw(tricky_rulesets())
    if what == "same":
        return rs
    fi = draw(st.integers(0, len(rs.firewalls) - 1))
    fw = rs.firewalls[fi]
    blocks = list(fw.ingress)
    bi = draw(st.integers(0, len(blocks) - 1))
    fresh = draw(tricky_block())
    if what == "rules":
        blocks[bi] = replace(blocks[bi], rules=fresh.rules)
    elif what == "cidrs":
        blocks[bi] = replace(blocks[bi], source_cidrs=fresh.source_cidrs)
    elif what == "add":
        blocks.insert(bi, fresh)
    elif what == "drop" and len(blocks) > 1:
        del blocks[bi]
    elif what == "interfaces":
        fw = replace(fw, interfaces=draw(st.sampled_from([("eth0",), ("eth*", "lo"), ("*",)])))
    # the CRD never has two blocks of one object with the same CIDR set
    seen: set[frozenset[str]] = set()
    unique = []
    for b in blocks:
        if frozenset(b.source_cidrs) not in seen:
            seen.add(frozenset(b.source_cidrs))
            unique.append(b)
    fws = list(rs.firewalls)
    fws[fi] = replace(fw, ingress=tuple(unique))
    return RuleSet(tuple(fws))


def entries(t: CompiledTables) -> dict[str, object]:
    """Every map entry the tables ask for (zero source roots are the same as none)."""
    fast = t.fast
    return {
        "lpm": tuple(t.lpm),
        "lists": dict(t.lists),
        "segments": tuple(t.segments),
        "rule_ids": dict(t.rule_ids),
        "rules": dict(t.rules),
        "interfaces": dict(t.interfaces),
        "rows": dict(fast.rows or {}),
        "src_roots": {k: v for k, v in fast.src_roots.items() if v},
        "list_roots": dict(fast.list_roots),
        "fast_lpm": tuple(fast.lpm),
        "fast_segments": tuple(fast.segments),
    }


ListContent = tuple[ListRule, ...]
# A segment with its list id replaced by the list's rules: (list, proto, nonfirst, value, length,
# rule id, action).
SegmentContent = tuple[ListContent, int, bool, int, int, int, Action]


def by_content(
    t: CompiledTables,
) -> tuple[dict[tuple[int, Prefix], ListContent], set[SegmentContent]]:
    """lpm and segments with list ids replaced by list contents (numbering aside)."""
    lpm = {(e.ifindex, e.prefix): t.lists[e.list_id] for e in t.lpm}
    segs = {
        (t.lists[s.list_id], s.proto, s.nonfirst, s.value, s.length, s.rule_id, s.action)
        for s in t.segments
    }
    return lpm, segs


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.data())
def test_incremental_equals_full_compile(data: st.DataObject) -> None:
    inc, full = IncrementalCompiler(), IncrementalCompiler()
    rs = data.draw(tricky_rulesets())
    a = inc.compile(rs, NODE_INTERFACES)
    b = full.full(rs, NODE_INTERFACES)
    assert entries(a) == entries(b)
    for _ in range(data.draw(st.integers(1, 6))):
        rs = data.draw(edited(rs))
        ids = a.rule_ids
        a = inc.compile(rs, NODE_INTERFACES, previous_ids=a.rule_ids)
        b = full.full(rs, NODE_INTERFACES, previous_ids=b.rule_ids)
        assert entries(a) == entries(b)
        legacy = compile_ruleset(rs, NODE_INTERFACES, previous_ids=ids)
        assert a.rule_ids == legacy.rule_ids
        assert by_content(a) == by_content(legacy)
        iface = data.draw(st.sampled_from(sorted(NODE_INTERFACES)))
        for src, proto, dport, itype, icode, nonfirst in data.draw(
            st.lists(packets_for(rs), min_size=1, max_size=8)
        ):
            pkt = PacketFields(src, proto, dport, itype, icode, nonfirst)
            want = classify(rs, a.rule_ids, iface, pkt, DEFAULT_FAILSAFE)
            got = lookup(a, NODE_INTERFACES[iface], pkt)
            assert (got.action, got.reason, got.rule_id) == (want.action, want.reason, want.rule_id)


def bulk(blocks: int, per_block: int) -> RuleSet:
    out = []
    for b in range(blocks):
        cidrs = tuple(f"198.18.{b}.{c}/32" for c in range(per_block))
        out.append(IngressBlock(cidrs, (Rule(1, Action.ALLOW), Rule(2, Action.DENY))))
    return RuleSet((Firewall("bulk", ("*",), tuple(out)),))


def test_one_rule_edit_touches_a_few_entries() -> None:
    """Flipping one block's rule on 20 x 50 hosts rewrites that list's rows and root only."""
    rs = bulk(20, 50)
    inc = IncrementalCompiler()
    first = inc.compile(rs, NODE_INTERFACES)
    fw = rs.firewalls[0]
    block = replace(fw.ingress[7], rules=(Rule(1, Action.DENY), Rule(2, Action.DENY)))
    edit = RuleSet((replace(fw, ingress=(*fw.ingress[:7], block, *fw.ingress[8:])),))
    second = inc.compile(edit, NODE_INTERFACES, previous_ids=first.rule_ids)
    delta = inc.last_delta
    assert inc.full_compiles == 1 and delta is not None
    assert delta.rows is not None and delta.list_roots is not None and delta.src_roots is not None
    assert len(delta.list_roots) <= 2 and len(delta.rows) <= 4
    changed = {
        s for s, raw in (second.fast.rows or {}).items() if (first.fast.rows or {}).get(s) != raw
    }
    assert changed <= delta.rows
    probe = PacketFields("198.18.7.3", 17, 9, None, None, False)
    assert lookup(first, 1, probe).action is Action.ALLOW
    assert lookup(second, 1, probe).action is Action.DENY
    assert lookup(second, 1, replace(probe, src="198.18.6.3")).action is Action.ALLOW


def test_earlier_tables_keep_their_lpm_after_an_update() -> None:
    inc = IncrementalCompiler()
    rs = bulk(3, 4)
    first = inc.compile(rs, NODE_INTERFACES)
    before = compile_ruleset(rs, NODE_INTERFACES)
    fw = rs.firewalls[0]
    inc.compile(
        RuleSet((replace(fw, ingress=fw.ingress[:1]),)),
        NODE_INTERFACES,
        previous_ids=first.rule_ids,
    )
    assert by_content(first) == by_content(before)


def test_tables_that_do_not_fit_fall_back_to_the_full_compiler() -> None:
    inc = IncrementalCompiler(budget=2)
    rs = bulk(4, 10)
    tables = inc.compile(rs, NODE_INTERFACES)
    assert tables.fast.rows is None  # compile_ruleset's layout, LPM where needed
    again = inc.compile(rs, NODE_INTERFACES, previous_ids=tables.rule_ids)
    assert by_content(again) == by_content(compile_ruleset(rs, NODE_INTERFACES))
