"""The running firewall in the kernel, composed of one module per job: loader (bcc), pins,
links (XDP attach), configmap, tables (the generation switch), counters, ringbuf (events) and
testrun (trace). The Engine's one door to the kernel.

Everything lives under a pin root (/sys/fs/bpf/infw by default), so the firewall keeps running
and counting when every console has exited, and `Datapath.open` finds it again without
compiling.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from engine.core.compiler import CompiledTables
from engine.core.replies import ReplyFlow, ReplySettings
from engine.errors import DatapathError
from engine.kernel import bpfsys, counters, links, loader, pins, replies
from engine.kernel.abi import (
    DEFAULT_FLOW_SAMPLE,
    EGRESS_PIN,
    MAP_CONFIG,
    MAP_EVENTS,
    MAP_FLOWS,
    MAP_NODE_STATS,
    MAP_NODES,
    MAP_REPLIES,
    MAP_REPLY_CONFIG,
    MAP_ROOTS,
    MAP_RULE_STATS,
    MAX_FLOW_SAMPLE,
    Config,
    DropEventRecord,
    LastVerdict,
    Mode,
    NodeCounter,
)
from engine.kernel.bpfsys import Map
from engine.kernel.configmap import ConfigMap
from engine.kernel.links import XdpAttachment, scan_attached
from engine.kernel.loader import BPF_SOURCE
from engine.kernel.pinroot import check_pin_root
from engine.kernel.pins import DEFAULT_PIN_ROOT
from engine.kernel.ringbuf import DropEvents, remove_events_lock
from engine.kernel.tables import GenerationTables
from engine.kernel.testrun import trace_run

__all__ = ["BPF_SOURCE", "DEFAULT_PIN_ROOT", "Datapath", "XdpAttachment", "scan_attached"]

DEFAULT_EVENTS_PER_SEC = 1000


class Datapath:
    """One loaded firewall, found by its pin root. Holds fds only; close() releases them."""

    def __init__(
        self,
        pin_root: str,
        prog_fd: int,
        maps: dict[str, Map],
        bpf: Any = None,
        egress_fd: int | None = None,
    ) -> None:
        self.pin_root = pin_root
        self.prog_fd = prog_fd
        # the tc egress program recording the node's own flows (None: pinned by an older build)
        self.egress_fd = egress_fd
        self.maps = maps
        self._bpf = bpf  # kept while alive: bcc closes its fds when collected
        self._info = bpfsys.prog_info(prog_fd)
        pins.check_layout(maps)
        self._config = ConfigMap(maps[MAP_CONFIG])
        self.tables = GenerationTables(maps, self._config)
        self._events = DropEvents(maps[MAP_EVENTS], pin_root)

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def open(cls, pin_root: str = DEFAULT_PIN_ROOT) -> Datapath | None:
        """Attach to a loaded firewall through its pins, without compiling; None if absent."""
        if not pins.prog_pinned(pin_root):
            return None
        check_pin_root(pin_root)  # pins under a directory others can write are not trusted
        prog_fd = pins.open_prog(pin_root)
        if prog_fd is None:
            return None
        egress_fd = pins.open_prog(pin_root, EGRESS_PIN)
        return cls(pin_root, prog_fd, pins.open_maps(pin_root), egress_fd=egress_fd)

    @classmethod
    def load(
        cls, pin_root: str = DEFAULT_PIN_ROOT, source_path: str | Path = BPF_SOURCE
    ) -> Datapath:
        """Compile and load, reusing pinned maps (rules and counters survive a reload), pin the
        program, and move every interface running the previous build onto the new one."""
        pins.check_existing_pins(pin_root)
        fresh = not pins.maps_pinned(pin_root)
        # pins of a build that kept its trie nodes or its roots one per element: this load
        # creates trie_nodes or table_roots empty, and the live tables must be copied into it
        adopt = not fresh and not pins.pinned(pin_root, MAP_NODES)
        adopt_roots = not fresh and not pins.pinned(pin_root, MAP_ROOTS)
        bpf = loader.compile_program(pin_root, source_path)
        fn = loader.load_function(bpf)
        egress = loader.load_function(bpf, links.EGRESS_NAME, "SCHED_CLS")
        old_fd = pins.open_prog(pin_root)
        try:
            egress_fd = pins.pin_prog(pin_root, egress.fd, EGRESS_PIN)
            prog_fd = pins.pin_prog(pin_root, fn.fd)
            dp = cls(pin_root, prog_fd, pins.open_maps(pin_root), bpf, egress_fd)
            if fresh:
                dp._config.write(
                    events_per_sec=DEFAULT_EVENTS_PER_SEC,
                    flow_sample=DEFAULT_FLOW_SAMPLE,
                )
            # before any interface runs the new program
            if adopt:
                dp.tables.adopt_legacy_nodes()
            if adopt_roots:
                dp.tables.roots.adopt_legacy()
            dp.tables.fill_host_masks()
            if old_fd is not None:
                links.take_over(dp.prog_fd, dp.prog_id, old_fd)
                dp._follow_replies()
            # no interface runs the older program now: its copied maps go, so a later load
            # can never copy them again over what this build has written since
            pins.retire_legacy_images(pin_root)
        finally:
            if old_fd is not None:
                os.close(old_fd)
        return dp

    def close(self) -> None:
        self.tables.close()
        self._events.close()
        for m in self.maps.values():
            m.close()
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        if self.egress_fd is not None:
            os.close(self.egress_fd)
            self.egress_fd = None
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def prog_id(self) -> int:
        return self._info.id

    def unload(self) -> None:
        """Detach our program everywhere in this namespace and remove every pin."""
        for att in self.attached_here():
            if att.prog_id == self.prog_id:
                self.detach(att.ifname)
        self.close()
        remove_events_lock(self.pin_root)
        pins.remove_pins(self.pin_root)

    # ----------------------------------------------------------------- attach

    def attached_here(self) -> list[XdpAttachment]:
        return scan_attached()

    def attached(self) -> list[tuple[str, int, str, int, bool]]:
        """(ifname, ifindex, mode, prog_id, ours) for every XDP program in this namespace."""
        return [
            (a.ifname, a.ifindex, a.mode, a.prog_id, links.is_ours(a.prog_id, self.prog_id))
            for a in scan_attached()
        ]

    def attach(self, ifname: str, mode: str = "auto", force: bool = False) -> str:
        """Attach to ifname; returns the mode used (native or generic). Replaces an older infw
        program atomically; a foreign program only with force."""
        used = links.attach(self.prog_fd, self.prog_id, ifname, mode, force)
        if self.replies().enabled:
            links.attach_egress(links.ifindex_of(ifname), self._egress())
        return used

    def detach(self, ifname: str) -> None:
        """Remove our program from ifname; a foreign program there is left alone (and named)."""
        links.detach(self.prog_id, ifname)
        links.detach_egress(links.ifindex_of(ifname))

    # ----------------------------------------------------------------- replies

    def replies(self) -> ReplySettings:
        """Whether replies to the node's own flows pass a Deny, and their timeouts."""
        m = self.maps.get(MAP_REPLY_CONFIG)
        return ReplySettings() if m is None else replies.read_settings(m)

    def set_replies(self, settings: ReplySettings) -> None:
        """Write the settings, and put the egress recorder on every interface running our
        program (replies on) or take it off (off). Flows recorded stay until they expire."""
        m = self.maps.get(MAP_REPLY_CONFIG)
        if m is None or self.egress_fd is None:
            raise DatapathError(
                "the loaded firewall is an older build without replies",
                "run `infw reload` to load the current build (rules and counters are kept)",
            )
        ours = [a.ifindex for a in scan_attached() if a.prog_id == self.prog_id]
        if settings.enabled:
            for ifindex in ours:  # recording starts before a reply can pass
                links.attach_egress(ifindex, self.egress_fd)
            replies.write_settings(m, settings)
        else:
            replies.write_settings(m, settings)
            for ifindex in ours:
                links.detach_egress(ifindex)

    def reply_flows(self) -> frozenset[ReplyFlow]:
        """The node's outbound flows whose replies pass now (replies on or not)."""
        m = self.maps.get(MAP_REPLIES)
        return frozenset() if m is None else replies.live_flows(m, self.replies())

    def replies_held(self) -> int:
        """Outbound flows the table holds now (recorded - held = evicted by the LRU)."""
        m = self.maps.get(MAP_REPLIES)
        return 0 if m is None else replies.held(m)

    def _egress(self) -> int:
        if self.egress_fd is None:
            raise DatapathError(
                "the loaded firewall is an older build without replies",
                "run `infw reload` to load the current build (rules and counters are kept)",
            )
        return self.egress_fd

    def _follow_replies(self) -> None:
        """After a reload: the new egress program replaces the old one where replies run."""
        if self.egress_fd is None or not self.replies().enabled:
            return
        for att in scan_attached():
            if att.prog_id == self.prog_id:
                links.attach_egress(att.ifindex, self.egress_fd)

    # ----------------------------------------------------------------- config

    def config(self) -> Config:
        return self._config.read()

    def set_mode(self, mode: Mode) -> None:
        self._config.write(mode=int(mode))

    def set_event_rate(self, per_sec: int) -> None:
        """Drop events per second per CPU; 0 stops events (they are counted as suppressed)."""
        self._config.write(events_per_sec=max(0, int(per_sec)))

    def generation(self) -> int:
        return int(self._config.read().generation)

    def set_generation(self, generation: int) -> None:
        """Record a stored generation that changed no tables (attach, detach, mode), so the
        kernel and the store name the same generation. Callers hold the store lock."""
        self._config.write(generation=int(generation))

    # ----------------------------------------------------------------- tables

    def write_tables(self, tables: CompiledTables, generation: int) -> None:
        """Make tables live atomically (see GenerationTables.write)."""
        self.tables.write(tables, generation)

    def table_ifindexes(self) -> set[int]:
        """The ifindexes the active generation has tables for (see GenerationTables)."""
        return self.tables.ifindexes()

    def reclaim(self) -> None:
        """Empty the generation the last switch left inactive now, not at the next write."""
        self.tables.reclaim()

    # ----------------------------------------------------------------- counters

    def reset_rule_counters(self, rule_ids: Iterable[int]) -> None:
        counters.reset_rule_counters(self.maps[MAP_RULE_STATS], rule_ids)

    def rule_counters(self, max_id: int | None = None) -> dict[int, tuple[int, int]]:
        return counters.rule_counters(self.maps[MAP_RULE_STATS], max_id)

    def node_counters(self) -> dict[NodeCounter, tuple[int, int]]:
        return counters.node_counters(self.maps[MAP_NODE_STATS])

    # ----------------------------------------------------------------- flows

    def set_flow_sample(self, rate: int) -> None:
        """Sample 1 in rate packets into the flows map from the next packet on; 0 stops sampling."""
        self._config.write(flow_sample=min(max(0, int(rate)), MAX_FLOW_SAMPLE))

    def flow_entries(self) -> tuple[bytes, bytes, int] | None:
        """The flows map packed (FlowRecKey, FlowRecVal back to back); None for an older
        build loaded without one."""
        m = self.maps.get(MAP_FLOWS)
        return None if m is None else m.items()

    # ----------------------------------------------------------------- events

    def open_events(self, callback: Callable[[DropEventRecord], None]) -> None:
        self._events.open(callback)

    def other_reader_pid(self) -> int | None:
        return self._events.other_reader_pid()

    def poll_events(self, timeout_ms: int = 100) -> int:
        return self._events.poll(timeout_ms)

    # ----------------------------------------------------------------- trace

    def test_run(
        self, frame: bytes, ifindex: int | None = None, repeat: int = 1
    ) -> tuple[int, LastVerdict, int]:
        """Trace frame as if it arrived on ifindex (see engine.kernel.testrun)."""
        return trace_run(self.prog_fd, self.prog_id, frame, ifindex, repeat)
