"""Read YAML (and JSON) from files and stdin as hostile input, and write it back safely.

Every input is bounded before it can cost much: a byte cap, regular files only (a FIFO or a
device would block or never end), a cap on nesting depth and on nodes after alias expansion
(billion laughs), and duplicate keys are refused as Kubernetes' strict decoding does. Plain
scalars are typed the way go-yaml v2 types them (the decoder behind the operator's API
server), not as PyYAML's YAML 1.1 does: `1:20` is a string, not 80; `0o17` is 15; `y` is true.
Every failure is one ValidationError naming the place.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

import yaml
from yaml import events as ev

from engine.errors import FieldError, ValidationError

MAX_BYTES = 16 * 1024 * 1024  # a 100,000-CIDR export is 3.5 MB
MAX_NODES = 300_000  # after alias expansion; that export has 235,000; refusing costs ~0.5 s
MAX_DEPTH = 64  # an IngressNodeFirewall list nests 9 deep

STR_TAG = "tag:yaml.org,2002:str"
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_COLLECTION_TAGS = {None, "!", _TAG + "seq", _TAG + "map"}

# go-yaml v2's resolve table: these exact words, and nothing case-folded beyond them.
_WORDS: dict[str, object] = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE"), True),
    **dict.fromkeys(("on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE"), False),
    **dict.fromkeys(("off", "Off", "OFF"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
MERGE = object()  # the `<<` key
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_DIGITS = {
    2: re.compile(r"[01]+"),
    8: re.compile(r"[0-7]+"),
    10: re.compile(r"[0-9]+"),
    16: re.compile(r"[0-9a-fA-F]+"),
}
_PREFIX_BASE = {"0x": 16, "0o": 8, "0b": 2}
INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


def _go_int(text: str) -> int | None:
    """strconv.ParseInt(text, 0, 64), then ParseUint: sign, 0x/0o/0b, a leading 0 is octal."""
    signed = text[:1] in ("+", "-")
    body = text[1:] if signed else text
    base = _PREFIX_BASE.get(body[:2].lower())
    if base is not None:
        digits = body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, digits = 8, body[1:]
    else:
        base, digits = 10, body
    if not _DIGITS[base].fullmatch(digits):
        return None
    value = int(digits, base)
    if text[:1] == "-":
        value = -value
    if INT64_MIN <= value <= INT64_MAX or (not signed and value <= UINT64_MAX):
        return value
    return None


def go_scalar(text: str) -> object:
    """What go-yaml v2 makes of a plain (unquoted, untagged) scalar."""
    if text == "<<":
        return MERGE
    if text in _WORDS:
        return _WORDS[text]
    first = text[:1]
    # the common case first: a plain decimal that fits int64, no leading zero
    if (
        first.isdigit()
        and len(text) < 19
        and text.isdigit()
        and text.isascii()
        and (first != "0" or len(text) == 1)
    ):
        return int(text)
    if first == ".":
        if _DOT_FLOAT.fullmatch(text):
            return float(text)
    elif first.isdigit() or first in ("+", "-"):
        if "/" in text or ":" in text:
            return text  # no number of Go's has these: a CIDR, an address, a time of day
        plain = text.replace("_", "")
        if plain.isascii():
            number = _go_int(plain)
            if number is not None:
                return number
            if _GO_FLOAT.fullmatch(plain):
                value = float(plain)
                if not math.isinf(value):  # Go's ParseFloat: out of range is an error
                    return value
    return text


def _key_text(key: object) -> str:
    """Map keys as the API server's YAML-to-JSON step writes them."""
    if isinstance(key, bool):
        return "true" if key else "false"
    if key is None:
        return "null"
    return str(key)


class _Reader:
    """Builds Python values straight from parser events: no node graph, so memory stays close
    to the result, and every limit is checked as the events arrive. The path of the node being
    read is kept as a stack of open containers and is only spelled out for an error."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.parser = _event_source(text)
        self.next = self.parser.get_event
        self.nodes = 0
        self.anchors: dict[str, tuple[object, int]] = {}
        self.open_anchors: set[str] = set()
        # one entry per open collection: its list, or [current key] for a mapping
        self.stack: list[list[Any]] = []
        self.mappings: set[int] = set()

    def documents(self) -> list[object]:
        docs: list[object] = []
        try:
            self.next()  # StreamStart
            while not isinstance(self.next(), ev.StreamEndEvent):  # DocumentStart
                self.anchors.clear()
                docs.append(self.value(self.next()))
                self.next()  # DocumentEnd
        finally:
            self.parser.dispose()
        return docs

    def where(self) -> str:
        path = ""
        for entry in self.stack:
            if id(entry) in self.mappings:
                path += f".{entry[0]}" if path else str(entry[0])
            else:
                path += f"[{len(entry)}]"
        return path

    def fail(self, event: Any, problem: str, fix: str, value: object = "") -> ValidationError:
        mark = event.start_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        path = self.where()
        if path:
            where = f"{path} ({where})" if where else path
        return ValidationError([FieldError(self.source, where, value, problem, fix)])

    def too_many(self, event: Any) -> ValidationError:
        return self.fail(
            event,
            f"more than {MAX_NODES:,} YAML nodes (after expanding aliases)",
            "split the file, or write repeated parts out instead of through aliases",
        )

    def value(self, event: Any) -> object:
        kind = type(event)
        if kind is ev.ScalarEvent and event.anchor is None:  # the common case, kept short
            self.nodes += 1
            if self.nodes > MAX_NODES:
                raise self.too_many(event)
            if event.tag is None:
                return go_scalar(event.value) if not event.style else event.value
            return self.tagged(event)
        if kind is ev.AliasEvent:
            return self.alias(event)
        anchor = event.anchor
        if anchor is not None:
            self.open_anchors.add(anchor)
        start = self.nodes
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.too_many(event)
        result: object
        if kind is ev.ScalarEvent:
            result = self.tagged(event) if event.tag is not None else self.value_of(event)
        elif kind is ev.SequenceStartEvent or kind is ev.MappingStartEvent:
            if event.tag not in _COLLECTION_TAGS:
                raise self.fail(event, f"unsupported tag {event.tag}", "remove the tag")
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(
                    event, f"YAML nested more than {MAX_DEPTH} levels deep", "flatten the document"
                )
            result = self.sequence() if kind is ev.SequenceStartEvent else self.mapping()
        else:  # the parser yields nothing else where a value is expected
            raise self.fail(event, f"unexpected YAML event {event}", "check the file")
        if anchor is not None:
            self.open_anchors.discard(anchor)
            self.anchors[anchor] = (result, self.nodes - start)
        return result

    @staticmethod
    def value_of(event: Any) -> object:
        return go_scalar(event.value) if not event.style else event.value  # C parser: "" plain

    def alias(self, event: Any) -> object:
        name = event.anchor or ""
        if name in self.open_anchors:
            raise self.fail(event, f"alias *{name} refers to itself", "remove the recursive alias")
        if name not in self.anchors:
            raise self.fail(event, f"alias *{name} has no anchor", f"define &{name} before it")
        result, size = self.anchors[name]
        self.nodes += size
        if self.nodes > MAX_NODES:
            raise self.too_many(event)
        return result

    def tagged(self, event: Any) -> object:
        tag, text = event.tag, event.value
        if tag == "!" or tag == STR_TAG or tag == _TAG + "timestamp":
            return text  # go-yaml keeps timestamps as strings for untyped targets
        if tag not in _SCALAR_TAGS:
            raise self.fail(event, f"unsupported tag {tag}", "remove the tag", text)
        value = go_scalar(text)
        kind = tag[len(_TAG) :]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": isinstance(value, bool),
            "null": value is None,
        }[kind]
        if not ok:
            raise self.fail(
                event, f"cannot read {text!r} as !!{kind}", "fix the value or tag", text
            )
        return float(value) if kind == "float" else value  # type: ignore[arg-type]

    # sequence and mapping read plain scalars (most of a file) inline, as value() would: an
    # untagged, unanchored scalar is one node, typed by go_scalar unless it is quoted.

    def sequence(self) -> list[object]:
        items: list[object] = []
        self.stack.append(items)
        value, nxt, end, scalar = self.value, self.next, ev.SequenceEndEvent, ev.ScalarEvent
        while True:
            event = nxt()
            kind = type(event)
            if kind is scalar and event.anchor is None and event.tag is None:
                self.nodes += 1
                if self.nodes > MAX_NODES:
                    raise self.too_many(event)
                items.append(event.value if event.style else go_scalar(event.value))
            elif kind is end:
                break
            else:
                items.append(value(event))
        self.stack.pop()
        return items

    def mapping(self) -> dict[str, object]:
        explicit: dict[str, object] = {}
        merged: dict[str, object] = {}
        marks: dict[str, Any] = {}  # key as written -> where it was (for the duplicate's error)
        current: list[Any] = [""]
        self.stack.append(current)
        self.mappings.add(id(current))
        value, nxt, end, scalar = self.value, self.next, ev.MappingEndEvent, ev.ScalarEvent
        while True:
            key_event = nxt()
            kind = type(key_event)
            if kind is scalar and key_event.anchor is None and key_event.tag is None:
                self.nodes += 1
                if self.nodes > MAX_NODES:
                    raise self.too_many(key_event)
                # Strict decoding compares keys as written: `80` and "80" are the same key.
                raw = key_event.value
                key = raw if key_event.style else go_scalar(raw)
            elif kind is end:
                break
            else:
                if kind is not scalar and kind is not ev.AliasEvent:
                    raise self.fail(
                        key_event, "a mapping key must be a plain value", "use a string"
                    )
                key = value(key_event)
                if isinstance(key, (list, dict)):
                    raise self.fail(
                        key_event, "a mapping key must be a plain value", "use a string"
                    )
                raw = key_event.value if kind is scalar else _key_text(key)
            if key is MERGE:
                current[0] = "<<"
                value_event = nxt()
                self.merge(value_event, value(value_event), merged)
                continue
            if raw in marks:
                first = marks[raw]
                raise self.fail(
                    key_event,
                    f"duplicate key {raw!r} (first at line {first.line + 1 if first else 0})",
                    "keep one of them: Kubernetes refuses duplicate keys",
                    raw,
                )
            marks[raw] = key_event.start_mark
            text = key if type(key) is str else _key_text(key)
            current[0] = text
            event = nxt()
            if type(event) is scalar and event.anchor is None and event.tag is None:
                self.nodes += 1
                if self.nodes > MAX_NODES:
                    raise self.too_many(event)
                explicit[text] = event.value if event.style else go_scalar(event.value)
            else:
                explicit[text] = value(event)
        self.stack.pop()
        self.mappings.discard(id(current))
        return {**merged, **explicit} if merged else explicit

    def merge(self, event: Any, source: object, into: dict[str, object]) -> None:
        """`<<: *base` or `<<: [*a, *b]`: keys not set yet are taken, earlier sources first."""
        sources = source if isinstance(source, list) else [source]
        for item in sources:
            if not isinstance(item, dict):
                raise self.fail(event, "a merge (<<) takes a mapping or a list of them", "fix it")
            for key, value in item.items():
                into.setdefault(key, value)


def _event_source(text: str) -> Any:
    """libyaml's C parser when present (~10x faster), else PyYAML's own; both yield events."""
    try:
        from yaml.cyaml import CParser  # type: ignore[attr-defined]
    except ImportError:  # PyYAML built without libyaml
        return yaml.SafeLoader(text)
    return CParser(text)


def _json_nodes_bound(text: str) -> int:
    """An upper bound on a JSON text's values: each one after the first follows one of these."""
    return sum(text.count(c) for c in ",:[{") + 1


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateJsonKey(key)
            seen.add(key)
    return out


class _DuplicateJsonKey(ValueError):
    pass


def load_all(text: str, source: str) -> list[object]:
    """Every YAML document in text, within the caps; errors name the line and column.

    JSON is YAML too; it is read with the json module first, which is ~30x faster on the big
    files a fleet exports, when the text cannot hold more values than the cap allows."""
    if text.lstrip()[:1] in ("{", "[") and _json_nodes_bound(text) <= MAX_NODES:
        try:
            return [json.loads(text, object_pairs_hook=_no_duplicates)]
        except (json.JSONDecodeError, RecursionError, _DuplicateJsonKey):
            pass  # not plain JSON after all, or a duplicate: let the YAML reader explain
    try:
        return _Reader(text, source).documents()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(
            [
                FieldError(
                    source,
                    where,
                    "",
                    f"YAML syntax error: {problem}",
                    "fix the YAML syntax at that position",
                )
            ]
        ) from exc


# ------------------------------------------------------------------ reading files and stdin


def _refuse(path: str, problem: str, fix: str, value: object = "") -> ValidationError:
    return ValidationError([FieldError(path, "", value or path, problem, fix)])


_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _read_capped(fd: int, name: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = os.read(fd, min(1 << 20, MAX_BYTES + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > MAX_BYTES:
            raise _refuse(
                name,
                f"input larger than {MAX_BYTES // (1024 * 1024)} MiB",
                "split it into smaller files",
            )


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(name, "not UTF-8 text", "give a YAML file") from exc


def read_text(path: str) -> str:
    """A regular UTF-8 file's text, at most MAX_BYTES; one ValidationError otherwise.

    Opened non-blocking, so a FIFO is refused at once instead of waiting for a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _refuse(
            path, f"cannot read file: {exc.strerror}", "check the path and permissions"
        ) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, f"is {_kind(st.st_mode)}", "give a regular file (or '-' for stdin)")
        if st.st_size > MAX_BYTES:
            raise _refuse(
                path,
                f"file is {st.st_size:,} bytes, more than {MAX_BYTES // (1024 * 1024)} MiB",
                "split it into smaller files",
            )
        os.set_blocking(fd, True)
        try:
            data = _read_capped(fd, path)
        except OSError as exc:
            raise _refuse(path, f"cannot read file: {exc.strerror}", "check the file") from exc
    finally:
        os.close(fd)
    return _decode(data, path)


def read_stdin(stream: BinaryIO | None = None, name: str = "<stdin>") -> str:
    """Standard input (a pipe, a file, a terminal), at most MAX_BYTES: `</dev/zero` is refused
    after MAX_BYTES, not read until memory runs out."""
    fd = (stream or sys.stdin.buffer).fileno()
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        raise _refuse(name, "is a directory", "redirect a file into stdin")
    try:
        data = _read_capped(fd, name)
    except OSError as exc:
        raise _refuse(name, f"cannot read: {exc.strerror}", "check what stdin is") from exc
    return _decode(data, name)


# ------------------------------------------------------------------ writing


_BaseDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class QuotingDumper(_BaseDumper):
    """SafeDumper that also quotes strings go-yaml v2 would type (`y`, `0o17`, `1e3`), so an
    export reads back as the same strings here, in PyYAML and in the operator."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        tag = super().resolve(kind, value, implicit)
        if (
            kind is yaml.ScalarNode
            and implicit[0]
            and tag == STR_TAG
            and not isinstance(go_scalar(value), str)
        ):
            return _TAG + "go-typed"  # not str: the emitter quotes it
        return tag


def dump_all(docs: Iterable[object]) -> str:
    return yaml.dump_all(docs, Dumper=QuotingDumper, sort_keys=False, default_flow_style=False)
