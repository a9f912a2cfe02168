"""Commands that change the rules: add, edit, delete, validate, apply, export, confirm, revert,
history and mode. Each is one Engine call; the engine's guard decides."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
from typing import Any

from console import render
from console.commands.context import Context
from console.commands.flows import dry_run
from engine import InfwError


def _write_file(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InfwError(
            f"cannot write {path}: {exc.strerror}",
            "check that the directory exists and is writable",
        ) from exc


def _edit_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"confirm_timeout": args.confirm_timeout, "force": args.force}


def _applied(ctx: Context, res: Any) -> int:
    ctx.emit(res.to_json(), lambda: render.apply_text(res, f"{ctx.prefix}confirm"))
    return 0


def cmd_add(ctx: Context, args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(ctx, args)
    return _applied(ctx, ctx.engine.add_rule(shlex.join(args.rule), **_edit_kwargs(args)))


def cmd_edit(ctx: Context, args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(ctx, args)
    return _applied(ctx, ctx.engine.edit_rule(args.id, shlex.join(args.rule), **_edit_kwargs(args)))


def cmd_delete(ctx: Context, args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(ctx, args)
    return _applied(ctx, ctx.engine.delete_rule(args.id, **_edit_kwargs(args)))


def cmd_validate(ctx: Context, args: argparse.Namespace) -> int:
    ruleset, warnings = ctx.engine.validate_file(args.file)
    data = {
        "valid": True,
        "file": args.file,
        "objects": len(ruleset.firewalls),
        "rules": ruleset.rule_count(),
        "warnings": list(warnings),
    }

    def text() -> str:
        lines = [
            f"valid: {args.file} ({len(ruleset.firewalls)} objects, {ruleset.rule_count()} rules); "
            "nothing was applied"
        ]
        return "\n".join(lines + [f"warning: {w}" for w in warnings])

    ctx.emit(data, text)
    return 0


def cmd_apply(ctx: Context, args: argparse.Namespace) -> int:
    if args.dry_run:
        return dry_run(ctx, args)
    # Like the operator's daemon: the objects name their interfaces, apply attaches there.
    with ctx.progress() as progress:
        res = ctx.engine.apply_file(
            args.file, attach=not args.no_attach, progress=progress, **_edit_kwargs(args)
        )
    return _applied(ctx, res)


def cmd_export(ctx: Context, args: argparse.Namespace) -> int:
    text = ctx.engine.export(as_json=ctx.json)
    ruleset = ctx.engine.ruleset()
    # Notes go to stderr: the file is the operator's, the notes are for the person taking it.
    for note in ctx.engine.export_notes():
        ctx.note(f"export note: {note}")
    if args.output in (None, "-"):
        ctx.out.write(text)
        ctx.out.flush()
        if not ruleset.firewalls:
            ctx.note("no rules are stored: nothing to export")
        return 0
    _write_file(args.output, text)
    ctx.note(
        f"exported {len(ruleset.firewalls)} objects ({ruleset.rule_count()} rules) to {args.output}"
    )
    return 0


def cmd_confirm(ctx: Context, args: argparse.Namespace) -> int:
    generation = ctx.engine.confirm()
    ctx.emit({"confirmed": generation}, f"confirmed generation {generation}: it stays")
    return 0


def cmd_revert(ctx: Context, args: argparse.Namespace) -> int:
    return _applied(ctx, ctx.engine.revert(force=args.force))


def cmd_history(ctx: Context, args: argparse.Namespace) -> int:
    items = ctx.engine.history(args.limit)
    ctx.emit([h.to_json() for h in items], lambda: render.history_text(items))
    return 0


def cmd_mode(ctx: Context, args: argparse.Namespace) -> int:
    if args.mode is None:
        mode = ctx.engine.status().mode
        ctx.emit({"mode": mode}, f"mode {mode}")
        return 0
    mode = ctx.engine.set_mode(args.mode)
    text = f"mode {mode}" + (
        ": nothing is dropped, denies are counted as WOULD DENY"
        if mode == "audit"
        else ": Deny rules drop packets"
    )
    ctx.emit({"mode": mode}, text)
    return 0
