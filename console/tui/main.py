"""infw-tui: its command line. Opens the engine the options name (or the lab's), runs the app,
and prints the quit message once the terminal is the shell's again."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

from console.tui.app import InfwApp
from engine import Engine, InfwError, PrivilegeError


def _say(text: str) -> None:
    print(text, flush=True)


def open_lab(read_only: bool, progress: Callable[[str], None] = _say) -> Engine:
    """The lab's engine (Engine.open_lab): the lab brought up if needed, its firewall attached."""
    return Engine.open_lab(read_only, progress)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infw-tui", description="Live console for the infw XDP ingress firewall."
    )
    parser.add_argument(
        "--lab", action="store_true", help="open the console on the lab (brings it up if needed)"
    )
    parser.add_argument(
        "--read-only", action="store_true", help="view counters and events, change nothing"
    )
    parser.add_argument(
        "--pin-root", help="where the firewall's maps are pinned (default /sys/fs/bpf/infw)"
    )
    parser.add_argument("--state-dir", help="desired state and history (default /var/lib/infw)")
    parser.add_argument(
        "--netns",
        metavar="NAME",
        help="the firewall of network namespace NAME (as in 'ip netns'; entering it needs root)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.lab and (args.netns or args.pin_root or args.state_dir):
        parser.error(
            "--lab picks the lab's namespace, pins and state: drop --netns/--pin-root/--state-dir"
        )
    from engine import rejoin_host_mounts

    # Under `ip netns exec` the pins are hidden; rejoin the host's mounts before any thread starts.
    rejoin_host_mounts(args.pin_root or "/sys/fs/bpf/infw")
    try:
        if os.geteuid() != 0 and not args.read_only:
            raise PrivilegeError(
                "changing the firewall needs CAP_BPF and CAP_NET_ADMIN (root)",
                "run infw-tui with sudo (add --read-only to look without changing anything)",
            )
        if args.lab:
            engine: Engine = open_lab(args.read_only)
        else:
            from console.cli import connect  # the CLI's --netns/--pin-root/--state-dir meaning

            engine = connect(
                args.pin_root, args.state_dir, netns=args.netns, read_only=args.read_only
            )
    except InfwError as exc:
        print(f"infw-tui: {exc.message}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    except PermissionError as exc:
        print(f"infw-tui: permission denied: {exc.filename or exc}", file=sys.stderr)
        print(
            "  fix: run as root (sudo); reading the pinned maps needs CAP_BPF too", file=sys.stderr
        )
        return 4
    except ImportError as exc:
        print(f"infw-tui: a part of infw is missing: {exc}", file=sys.stderr)
        print(
            "  fix: run 'make bootstrap' (bcc comes from Debian's python3-bpfcc)", file=sys.stderr
        )
        return 1
    except KeyboardInterrupt:
        return 130
    app = InfwApp(engine)
    message = app.run()
    say_goodbye(message)
    return app.return_code or 0


def say_goodbye(message: str | None, out: TextIO | None = None) -> None:
    """Print the quit message once app.run() has returned: by then Textual has left the
    alternate screen and joined its writer thread, so every line lands in the shell's
    scrollback (the 'firewall keeps running' line first, then any pending warning)."""
    if not message:
        return
    stream = out or sys.stdout
    for line in message.splitlines():
        stream.write(line + "\n")
    stream.flush()


if __name__ == "__main__":
    raise SystemExit(main())
