"""The real Kernel: the firewall through bcc and its pins, interfaces through netlink, and a
detached watchdog process. bcc is imported only when a firewall is opened or loaded."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping

from engine.kernel.abi import PROG_PIN
from engine.kernel.seam import LoadedDatapath, Orphan


class HostWatchdog:
    """The watchdog as a detached process (engine.state.watchdog)."""

    def spawn(
        self,
        state_dir: str,
        pin_root: str,
        generation: int,
        deadline: float,
        netns: str | None,
        node_labels: Mapping[str, str] | None = None,
    ) -> int:
        from engine.state.watchdog import spawn_watchdog

        return spawn_watchdog(
            state_dir, pin_root, generation, deadline, netns, node_labels=node_labels
        )

    def is_running(self, pid: int) -> bool:
        from engine.state.watchdog import is_running

        return is_running(pid)

    def state(self, pid: int) -> str:
        from engine.state.watchdog import process_state

        return process_state(pid)

    def stop(self, pid: int) -> None:
        from engine.state.watchdog import stop

        stop(pid)

    def find(self, state_dir: str, generation: int) -> int:
        from engine.state.watchdog import find

        return find(state_dir, generation)


class HostKernel:
    """This node's kernel, in the network namespace the process is in."""

    def __init__(self) -> None:
        self._watchdog = HostWatchdog()

    @property
    def watchdog(self) -> HostWatchdog:
        return self._watchdog

    def is_loaded(self, pin_root: str) -> bool:
        return os.path.exists(os.path.join(pin_root, PROG_PIN))

    def open(self, pin_root: str) -> LoadedDatapath | None:
        from engine.kernel.datapath import Datapath

        return Datapath.open(pin_root)

    def load(self, pin_root: str) -> LoadedDatapath:
        from engine.kernel.datapath import Datapath

        return Datapath.load(pin_root)

    def xdp_interfaces(self) -> list[str]:
        from engine.kernel.datapath import scan_attached

        return [a.ifname for a in scan_attached()]

    def interfaces(self) -> dict[str, int]:
        # every link of this namespace, up or down (glibc asks netlink, as IPRoute.get_links
        # does), without importing pyroute2: ~0.1 s of every CLI command that compiles
        return {name: index for index, name in socket.if_nameindex()}

    def has_privileges(self) -> bool:
        return os.geteuid() == 0

    def enter_netns(self, name: str) -> None:
        from engine.kernel.netns import enter

        enter(name)  # never creates a mistyped namespace

    def orphans(self, pinned_prog_id: int | None, names: Collection[str]) -> list[Orphan]:
        from engine.kernel.orphans import find_orphans

        return find_orphans(pinned_prog_id, names)

    def adopt(self, pin_root: str, prog_id: int) -> None:
        from engine.kernel.orphans import adopt

        adopt(pin_root, prog_id)
