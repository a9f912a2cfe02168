"""Ingress blocks kept once on disk, in immutable packs named by the hash of their content, so a
commit writes only the blocks it changed (#12: one edit at 100,000 CIDRs in milliseconds).

A pack, blocks/<sha256>.json, is a JSON list of the operator's ingress entries
({"sourceCIDRs": [...], "rules": [...]}). A generation names each of its blocks by (pack, index).
A pack is never rewritten: what this process read or wrote once stays valid for as long as it
runs, so decoded blocks are cached by pack name and a block already stored is found by identity
(or value) without being encoded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.crd import parse_port_range
from engine.core.export import rule_to_dict
from engine.core.model import Action, IngressBlock, Protocol, Rule

PACK_DIR = "blocks"
# Packs one generation may name before the small ones are folded into one: bounds the files a
# cold load opens while an edit still writes only the blocks it touched.
MAX_PACKS = 32
# Decoded packs kept per state directory beyond those the current generation names.
SPARE_PACKS = 2 * MAX_PACKS

Ref = tuple[str, int]  # (pack name, index in the pack)


def rule_from_dict(raw: dict[str, Any]) -> Rule:
    """The inverse of rule_to_dict for files the store wrote (root-only: shapes are checked,
    values are not validated again)."""
    protocol = ports = icmp_type = icmp_code = None
    pc = raw.get("protocolConfig")
    if pc is not None:
        protocol = Protocol(pc["protocol"])
        sub = pc.get(protocol.crd_key) or {}
        if "ports" in sub:
            ports = parse_port_range(sub["ports"])
        icmp_type, icmp_code = sub.get("icmpType"), sub.get("icmpCode")
    for value in (raw["order"], icmp_type, icmp_code):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"bad number {value!r} in rule {raw!r}")
    return Rule(raw["order"], Action(raw["action"]), protocol, ports, icmp_type, icmp_code)


def block_from_dict(raw: dict[str, Any], rules: dict[str, Rule] | None = None) -> IngressBlock:
    """rules: the rules decoded so far, by their dict's repr; rules repeat across blocks (10,000
    rules of a bulk set are 10 distinct ones), and a Rule is immutable, so one object serves."""
    cidrs = raw["sourceCIDRs"]
    if not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
        raise ValueError(f"bad sourceCIDRs {cidrs!r}")
    if rules is None:
        return IngressBlock(tuple(cidrs), tuple(rule_from_dict(r) for r in raw["rules"]))
    decoded = []
    for r in raw["rules"]:
        key = repr(r)  # equal reprs of JSON values are equal values
        rule = rules.get(key)
        if rule is None:
            rule = rules[key] = rule_from_dict(r)
        decoded.append(rule)
    return IngressBlock(tuple(cidrs), tuple(decoded))


def block_to_dict(
    block: IngressBlock, rules: dict[Rule, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """rules: rule_to_dict's answers so far, by rule (equal rules repeat across blocks; the
    encoder writes a shared dict as often as it is named)."""
    if rules is None:
        encoded = [rule_to_dict(r) for r in block.rules]
    else:
        encoded = []
        for r in block.rules:
            d = rules.get(r)
            if d is None:
                d = rules[r] = rule_to_dict(r)
            encoded.append(d)
    return {"sourceCIDRs": list(block.source_cidrs), "rules": encoded}


@dataclass
class _Known:
    """What one state directory's packs hold, as far as this process has seen them."""

    packs: dict[str, tuple[IngressBlock, ...]] = field(default_factory=dict)
    # id(block) -> (block, where): the block is held so its id is not reused
    by_id: dict[int, tuple[IngressBlock, Ref]] = field(default_factory=dict)
    by_value: dict[IngressBlock, Ref] = field(default_factory=dict)


_KNOWN: dict[str, _Known] = {}
_GUARD = threading.Lock()


class CorruptPack(ValueError):
    """A pack that is missing, unreadable or not what its name says."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


class Packs:
    """The packs of one state directory. `write` is the store's atomic, fsynced file write (which
    makes the pack directory too)."""

    def __init__(self, root: Path, write: Callable[[Path, str], None]) -> None:
        self.dir = root / PACK_DIR
        self._write = write
        with _GUARD:
            self._known = _KNOWN.setdefault(str(root.resolve()), _Known())

    def path(self, name: str) -> Path:
        return self.dir / f"{name}.json"

    # -- reading -----------------------------------------------------------------------------

    def blocks(self, name: str) -> tuple[IngressBlock, ...]:
        """A pack's blocks, read and checked against its name once per process."""
        known = self._known.packs.get(name)
        if known is not None:
            return known
        path = self.path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CorruptPack(path, f"cannot be read ({exc.strerror})") from exc
        if hashlib.sha256(data).hexdigest() != name:
            raise CorruptPack(path, "its content does not match its name")
        raw = json.loads(data)
        if not isinstance(raw, list):
            raise CorruptPack(path, "not a list of ingress entries")
        rules: dict[str, Rule] = {}
        blocks = tuple(block_from_dict(b, rules) for b in raw)
        self._learn(name, blocks)
        return blocks

    def _learn(self, name: str, blocks: tuple[IngressBlock, ...]) -> None:
        known = self._known
        with _GUARD:
            known.packs[name] = blocks
            for index, block in enumerate(blocks):
                ref = (name, index)
                known.by_value.setdefault(block, ref)
                known.by_id[id(block)] = (block, ref)

    # -- writing -----------------------------------------------------------------------------

    def store(self, blocks: Sequence[IngressBlock]) -> list[Ref]:
        """Where each block is, after writing one new pack with the blocks not stored yet (and
        folding small packs into it when the generation would name more than MAX_PACKS)."""
        refs = self._find(blocks)
        if self._vanished({ref[0] for ref in refs if ref is not None}):
            refs = self._find(blocks)
        missing = [b for b, ref in zip(blocks, refs, strict=True) if ref is None]
        found: list[Ref] = []
        if missing:
            name, index = self._pack(missing)
            found = [ref or (name, index[b]) for b, ref in zip(blocks, refs, strict=True)]
        else:
            found = [ref for ref in refs if ref is not None]
        used = Counter(ref[0] for ref in found)
        if len(used) > MAX_PACKS:
            # Keep the biggest pack while most of it is in use (the bulk of a large rule set),
            # fold everything else into one: a compaction rewrites only what edits wrote.
            big, count = used.most_common(1)[0]
            keep = big if count * 2 >= len(self._known.packs.get(big, ())) else ""
            name, index = self._pack(
                [b for b, ref in zip(blocks, found, strict=True) if ref[0] != keep]
            )
            found = [
                ref if ref[0] == keep else (name, index[b])
                for b, ref in zip(blocks, found, strict=True)
            ]
        return found

    def _find(self, blocks: Sequence[IngressBlock]) -> list[Ref | None]:
        by_id, by_value = self._known.by_id, self._known.by_value
        refs: list[Ref | None] = []
        for block in blocks:
            hit = by_id.get(id(block))
            refs.append(hit[1] if hit is not None and hit[0] is block else by_value.get(block))
        return refs

    def _pack(self, blocks: Sequence[IngressBlock]) -> tuple[str, dict[IngressBlock, int]]:
        """Write one pack of these blocks (once each); its name and each block's index."""
        unique = tuple(dict.fromkeys(blocks))
        rules: dict[Rule, dict[str, Any]] = {}
        text = json.dumps([block_to_dict(b, rules) for b in unique], separators=(",", ":"))
        name = hashlib.sha256(text.encode()).hexdigest()
        path = self.path(name)
        if not path.exists():  # written whole (by rename) or not at all: same name, same bytes
            self._write(path, text)
        self._learn(name, unique)
        return name, {b: i for i, b in enumerate(unique)}

    def _vanished(self, names: set[str]) -> bool:
        """Forget packs that are gone from disk (removed by hand), so this commit writes their
        blocks again instead of naming a file that no longer exists."""
        gone = [name for name in names if not os.path.exists(self.path(name))]
        for name in gone:
            self._forget(name)
        return bool(gone)

    def _forget(self, name: str) -> None:
        known = self._known
        with _GUARD:
            for block in known.packs.pop(name, ()):
                hit = known.by_id.get(id(block))
                if hit is not None and hit[1][0] == name:
                    del known.by_id[id(block)]
                if known.by_value.get(block, ("",))[0] == name:
                    del known.by_value[block]

    def forget(self, names: Sequence[str]) -> None:
        """Drop removed packs from the cache, so no commit names them again."""
        for name in names:
            self._forget(name)

    def retain(self, names: Sequence[str]) -> None:
        """Bound the cache: when it holds many more packs than the current generation names,
        drop the others (they are read again if an older generation is loaded)."""
        keep = set(names)
        if len(self._known.packs) <= len(keep) + SPARE_PACKS:
            return
        for name in [n for n in self._known.packs if n not in keep]:
            self._forget(name)


def forget_cached_packs() -> None:
    """Drop every decoded pack, as a new process starts (tests read back from disk with it)."""
    with _GUARD:
        _KNOWN.clear()
