"""Opening an Engine from a console's options (--pin-root, --state-dir, --netns, --lab,
--read-only), and the lab's engine, the same way for the CLI, the REPL and the TUI."""

from __future__ import annotations

import os
from dataclasses import dataclass

from engine.base import Progress, no_progress
from engine.engine import Engine
from engine.errors import InfwError, PrivilegeError, StateError
from engine.kernel.host import HostKernel
from engine.kernel.netns import NETNS_DIR
from engine.kernel.seam import Kernel
from engine.lab.firewall import lab_connection, start_lab_firewall
from engine.state.config import parse_node_labels


@dataclass(frozen=True)
class ConnectOptions:
    """Which firewall a console looks at: defaults are the node's own (/etc/infw/config.yaml)."""

    pin_root: str | None = None
    state_dir: str | None = None
    netns: str | None = None
    lab: bool = False
    read_only: bool = False
    node_labels: str | None = None  # 'k=v,k2=v2' (a console flag): wins over the config's


def connect(options: ConnectOptions, *, kernel: Kernel | None = None) -> Engine:
    """Open the Engine the options name; a missing namespace is an error with its fix."""
    pin_root, state_dir, netns = options.pin_root, options.state_dir, options.netns
    if options.lab:
        lab_pins, lab_state, lab_ns = lab_connection()
        pin_root, state_dir, netns = pin_root or lab_pins, state_dir or lab_state, netns or lab_ns
        if kernel is None and not HostKernel().has_privileges():
            # Before anything else: whether the lab is up or not, a non-root user can't enter it.
            raise PrivilegeError(
                f"--lab needs root: the lab's firewall lives in network namespace {lab_ns}, "
                "and entering it needs CAP_SYS_ADMIN",
                "run it with sudo",
            )
    if netns and kernel is None and not os.path.exists(os.path.join(NETNS_DIR, netns)):
        fix = "start the lab with 'infw lab up'" if options.lab else "see 'ip netns list'"
        raise StateError(f"network namespace {netns!r} does not exist", fix)
    try:
        labels = parse_node_labels(options.node_labels) if options.node_labels else None
        return Engine(
            pin_root,
            state_dir,
            read_only=options.read_only,
            netns=netns,
            kernel=kernel,
            node_labels=labels,
        )
    except OSError as exc:
        if netns and exc.errno in (1, 13):
            raise PrivilegeError(
                f"cannot enter network namespace {netns!r}: {exc.strerror}",
                "entering a namespace needs root (CAP_SYS_ADMIN): run it with sudo",
            ) from exc
        raise


def open_lab(
    read_only: bool = False,
    progress: Progress = no_progress,
    *,
    kernel: Kernel | None = None,
) -> Engine:
    """The lab's engine: bring the lab up if needed (unless read-only), then, when nothing is
    loaded there yet, apply its example rules and attach the node's veths."""
    from engine.lab import world as lab

    host = kernel if kernel is not None else HostKernel()
    if not host.has_privileges():
        raise PrivilegeError(
            f"the lab lives in network namespace {lab.NODE_NS}: entering it needs root "
            "(CAP_SYS_ADMIN)",
            "run it with sudo",
        )
    if read_only:
        info = lab.lab_status()
        if not info.up:
            raise InfwError(
                f"the lab is not up ({'; '.join(info.problems)})",
                "run 'infw lab up', or open the lab without --read-only",
            )
    else:
        # lab_up is idempotent: it repairs what is missing and (re)starts the traffic.
        progress("bringing the lab up (namespaces, veths, traffic)…")
        lab.lab_up(progress=progress)
    engine = connect(ConnectOptions(lab=True, read_only=read_only), kernel=kernel)
    if not read_only:
        start_lab_firewall(engine, progress)
    return engine
