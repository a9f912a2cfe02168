"""The seam between the Engine and the kernel, as httpx has one at its transport.

The Engine speaks to the node only through a `Kernel`: it finds or loads the firewall (a
`LoadedDatapath`), lists interfaces, asks for privileges and starts the commit-confirmed
`Watchdog`. `engine.kernel.host.HostKernel` is the real one (bcc, netlink, a detached process);
`engine.kernel.fake.FakeKernel` is the one fake, so the real Engine, guard and store run in
unit and console tests without root.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from engine.core.compiler import CompiledTables
from engine.core.replies import ReplyFlow, ReplySettings
from engine.kernel.abi import Config, DropEventRecord, LastVerdict, Mode, NodeCounter

# (ifname, ifindex, XDP mode, program id, ours) for every XDP program in the namespace.
Attachment = tuple[str, int, str, int, bool]
# The XDP actions test_run answers with (include/uapi/linux/bpf.h).
XDP_DROP = 1
XDP_PASS = 2


@dataclass(frozen=True)
class Orphan:
    """An infw program attached in this network namespace that no pin root holds (its pins
    were removed): it keeps filtering, out of reach until it is pinned again (adopted)."""

    prog_id: int
    interfaces: tuple[str, ...]


class LoadedDatapath(Protocol):
    """One loaded firewall: the public calls of engine.kernel.datapath.Datapath the Engine uses."""

    @property
    def prog_id(self) -> int: ...

    def table_ifindexes(self) -> set[int]:
        """The ifindexes the active generation has tables for."""
        ...

    def attached(self) -> list[Attachment]: ...

    def attach(self, ifname: str, mode: str = "auto", force: bool = False) -> str: ...

    def detach(self, ifname: str) -> None: ...

    def unload(self) -> None: ...

    def close(self) -> None: ...

    def config(self) -> Config: ...

    def set_mode(self, mode: Mode) -> None: ...

    def set_event_rate(self, per_sec: int) -> None: ...

    def set_generation(self, generation: int) -> None: ...

    def write_tables(self, tables: CompiledTables, generation: int) -> None: ...

    def reset_rule_counters(self, rule_ids: Iterable[int]) -> None: ...

    def rule_counters(self, max_id: int | None = None) -> dict[int, tuple[int, int]]: ...

    def node_counters(self) -> dict[NodeCounter, tuple[int, int]]: ...

    def set_flow_sample(self, rate: int) -> None: ...

    def flow_entries(self) -> tuple[bytes, bytes, int] | None: ...

    def open_events(self, callback: Callable[[DropEventRecord], None]) -> None: ...

    def other_reader_pid(self) -> int | None: ...

    def poll_events(self, timeout_ms: int = 100) -> int: ...

    def test_run(
        self, frame: bytes, ifindex: int | None = None, repeat: int = 1
    ) -> tuple[int, LastVerdict, int]: ...

    def replies(self) -> ReplySettings: ...

    def set_replies(self, settings: ReplySettings) -> None: ...

    def replies_held(self) -> int: ...

    def reply_flows(self) -> frozenset[ReplyFlow]: ...


class Watchdog(Protocol):
    """The process apart from the console that reverts an unconfirmed apply (DESIGN §4)."""

    def spawn(
        self,
        state_dir: str,
        pin_root: str,
        generation: int,
        deadline: float,
        netns: str | None,
        node_labels: Mapping[str, str] | None = None,
    ) -> int:
        """Start a watchdog for generation; returns its pid (raises if it did not start).
        node_labels: the console's, so the revert compiles the objects for this node."""
        ...

    def is_running(self, pid: int) -> bool:
        """True when pid is a live watchdog (not some process that reused the pid)."""
        ...

    def state(self, pid: int) -> str:
        """ "alive", "stopped" (exists but will not act: SIGSTOP) or "gone"."""
        ...

    def stop(self, pid: int) -> None:
        """End a watchdog that is being taken over (a stopped one too)."""
        ...

    def find(self, state_dir: str, generation: int) -> int:
        """The pid of generation's watchdog when the marker could not record it (0: none)."""
        ...


class Kernel(Protocol):
    """Everything the Engine needs of the node it runs on."""

    @property
    def watchdog(self) -> Watchdog: ...

    def is_loaded(self, pin_root: str) -> bool:
        """A firewall is pinned at pin_root (cheap: no fds are opened)."""
        ...

    def open(self, pin_root: str) -> LoadedDatapath | None:
        """The firewall pinned at pin_root, without compiling; None if there is none."""
        ...

    def load(self, pin_root: str) -> LoadedDatapath:
        """Compile and load (reusing pinned maps), pin, and move older builds' interfaces."""
        ...

    def xdp_interfaces(self) -> list[str]:
        """Interfaces of this namespace that run any XDP program (ours or not)."""
        ...

    def interfaces(self) -> dict[str, int]:
        """Interfaces of this namespace: name -> ifindex."""
        ...

    def has_privileges(self) -> bool:
        """May load and attach XDP programs (CAP_BPF and CAP_NET_ADMIN)."""
        ...

    def enter_netns(self, name: str) -> None:
        """Move this process into the named network namespace (never creating it)."""
        ...

    def orphans(self, pinned_prog_id: int | None, names: Collection[str]) -> list[Orphan]:
        """infw programs attached to one of names here, other than the pinned one."""
        ...

    def adopt(self, pin_root: str, prog_id: int) -> None:
        """Pin program prog_id and its maps at pin_root (where nothing is pinned)."""
        ...
