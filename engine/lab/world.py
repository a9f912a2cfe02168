"""The lab (DESIGN §6): a throwaway node and clients in network namespaces, with steady traffic.

Namespaces ``infw-node`` and ``infw-c1``.. are joined by veth pairs (``infw-nN`` in the node,
``infw-cNe`` in client N) and addressed from documentation ranges only. Every name the lab makes
starts with ``infw-``, and ``lab_down`` removes exactly those names, also after a crash.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from engine.checkout import ROOT
from engine.errors import InfwError, PrivilegeError, StateError
from engine.kernel.netns import NETNS_DIR, setns_fd
from engine.kernel.netns import current_inode as current_netns_inode
from engine.lab.traffic import (
    DEFAULT_DURATION,
    DEFAULT_RATE,
    LAB_NS_RE,
    MAX_RATE,
    PROTOCOLS,
    READY_LINE,
    Sender,
    check_lab_address,
    check_lab_namespace,
    tcp_syn,
)

# The lab's firewall pins live apart from a real one (/sys/fs/bpf/infw).
LAB_PIN_ROOT = "/sys/fs/bpf/infw-lab"
LAB_STATE_DIR = "/var/lib/infw/lab"  # the lab firewall's desired state and history
NODE_NS = "infw-node"
STATE_DIR = Path("/run/infw/lab")
LOCK_PATH = Path("/run/infw/lab.lock")
MAX_CLIENTS = 3

# One documentation /24 per client (RFC 5737) and one /64 of 2001:db8::/32 (RFC 3849).
_V4_NETS = ("192.0.2", "198.51.100", "203.0.113")
_ROOT_VETH_RE = re.compile(r"^infw-(n[0-9]{1,2}|c[0-9]{1,2}e)$")
_CLIENT_NS_RE = re.compile(r"^infw-c([0-9]{1,2})$")
_SYSCTLS = {
    # Addresses are usable at once (no DAD) and the link stays quiet (no router solicitations).
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/router_solicitations": "0",
}
_IFA_F_NODAD = 0x02
_NUD_PERMANENT = 0x80
_TRAFFIC_MODULE = "engine.lab.traffic"
_TERM_GRACE = 2.0

Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class LabClient:
    """One client namespace, its veth pair and the addresses on both ends.

    Reads like the mapping the CLI prints: ``client.ns`` and ``client["ns"]`` are the same.
    """

    ns: str
    ifname_node: str
    ifname_client: str
    v4: str
    v6: str
    node_v4: str
    node_v6: str
    v4_net: str
    v6_net: str

    def __getitem__(self, key: str) -> str:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        value: str = getattr(self, key)
        return value

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class LabInfo:
    """What the lab looks like now; `problems` says what is missing when `up` is False."""

    node_ns: str
    clients: tuple[LabClient, ...]
    node_interfaces: tuple[str, ...]
    traffic_pids: tuple[int, ...]
    up: bool
    problems: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_ns": self.node_ns,
            "clients": [c.as_dict() for c in self.clients],
            "node_interfaces": list(self.node_interfaces),
            "traffic_pids": list(self.traffic_pids),
            "up": self.up,
            "problems": list(self.problems),
        }


def lab_client(index: int) -> LabClient:
    """The fixed plan for client `index` (1-based)."""
    if not 1 <= index <= MAX_CLIENTS:
        raise InfwError(
            f"lab client {index} does not exist", f"the lab has 1..{MAX_CLIENTS} clients"
        )
    v4 = _V4_NETS[index - 1]
    return LabClient(
        ns=f"infw-c{index}",
        ifname_node=f"infw-n{index}",
        ifname_client=f"infw-c{index}e",
        v4=f"{v4}.{11 * index}",
        v6=f"2001:db8:{index}::{11 * index}",
        node_v4=f"{v4}.1",
        node_v6=f"2001:db8:{index}::1",
        v4_net=f"{v4}.0/24",
        v6_net=f"2001:db8:{index}::/64",
    )


def _say(progress: Progress, text: str) -> None:
    if progress is not None:
        progress(text)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(
            "the lab needs root (network namespaces, veth pairs, raw sockets)",
            "run it with sudo",
        )


@contextlib.contextmanager
def _lab_lock() -> Iterator[None]:
    """Serialise lab_up/lab_down between processes (CLI, TUI, tests)."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _netns_names() -> list[str]:
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if LAB_NS_RE.match(n))


def _client_indexes(names: list[str]) -> list[int]:
    found = [_CLIENT_NS_RE.match(n) for n in names]
    return sorted(int(m.group(1)) for m in found if m and 1 <= int(m.group(1)) <= MAX_CLIENTS)


@contextlib.contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run the block with the calling thread inside network namespace `name`, then return.

    setns(2) is per thread: other threads keep their namespace, and threads started inside the
    block inherit `name`. What changes is everything netlink and sockets see (ifindexes, links,
    routes, if_nametoindex), so the engine can attach XDP to ``infw-n1`` inside ``infw-node``.
    What does not change: the mount namespace, so bpffs pins under /sys/fs/bpf (LAB_PIN_ROOT)
    are the same files in every netns, and maps and programs are global kernel objects; but
    /sys/class/net still shows the host's interfaces, so use netlink there, not sysfs.
    """
    path = os.path.join(NETNS_DIR, name)
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise StateError(f"network namespace {name} does not exist", "run `infw lab up`") from None
    try:
        saved = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            setns_fd(target)
            try:
                yield
            finally:
                setns_fd(saved)
        finally:
            os.close(saved)
    finally:
        os.close(target)


def _ipr(ns: str) -> Any:
    """An IPRoute inside an existing namespace (flags=0: never creates one by accident)."""
    from pyroute2 import IPRoute

    return IPRoute(netns=ns, flags=0)


def _write_sysctls(ns: str) -> None:
    with in_namespace(ns):
        for key, value in _SYSCTLS.items():
            with open(f"/proc/sys/{key}", "w", encoding="ascii") as fh:
                fh.write(value)


def _ensure_namespace(ns: str, progress: Progress) -> None:
    from pyroute2 import netns

    if ns not in _netns_names():
        _say(progress, f"creating namespace {ns}")
        netns.create(ns)
    _write_sysctls(ns)
    with _ipr(ns) as ipr:
        ipr.link("set", index=1, state="up")  # lo is always ifindex 1 in a fresh netns


def _link_index(ipr: Any, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _ensure_veth(client: LabClient, progress: Progress) -> None:
    with _ipr(NODE_NS) as node, _ipr(client.ns) as peer:
        n_idx = _link_index(node, client.ifname_node)
        c_idx = _link_index(peer, client.ifname_client)
        if n_idx is not None and c_idx is not None:
            return
        # Half a pair (a crash between steps, or a veth deleted by hand): start the pair over.
        if n_idx is not None:
            _say(progress, f"removing half pair {client.ifname_node}")
            node.link("del", index=n_idx)
        if c_idx is not None:
            _say(progress, f"removing half pair {client.ifname_client}")
            peer.link("del", index=c_idx)
        _say(progress, f"creating veth {client.ifname_node} <-> {client.ns}/{client.ifname_client}")
        node.link(
            "add",
            ifname=client.ifname_node,
            kind="veth",
            peer={"ifname": client.ifname_client, "net_ns_fd": client.ns},
        )


def _configure_end(ns: str, ifname: str, v4: str, v6: str, neigh: dict[str, str]) -> str:
    """Addresses, link up and permanent neighbours on one end; returns its MAC."""
    with _ipr(ns) as ipr:
        idx = _link_index(ipr, ifname)
        if idx is None:
            raise StateError(
                f"{ns}/{ifname} vanished while the lab was being built", "run lab up again"
            )
        have = {a.get("IFA_ADDRESS") for a in ipr.get_addr(index=idx)}
        if v4 not in have:
            ipr.addr("add", index=idx, address=v4, prefixlen=24)
        if v6 not in have:
            ipr.addr("add", index=idx, address=v6, prefixlen=64, flags=_IFA_F_NODAD)
        ipr.link("set", index=idx, state="up")
        # Static neighbours: no ARP/ND, so the only packets are the ones the lab sends.
        for addr, mac in neigh.items():
            ipr.neigh("replace", dst=addr, lladdr=mac, ifindex=idx, state=_NUD_PERMANENT)
        link = ipr.get_links(idx)[0]
        mac_addr: str = link.get("IFLA_ADDRESS")
        return mac_addr


def _mac(ns: str, ifname: str) -> str:
    with _ipr(ns) as ipr:
        idx = _link_index(ipr, ifname)
        if idx is None:
            raise StateError(f"{ns}/{ifname} is missing", "run lab up again")
        mac: str = ipr.get_links(idx)[0].get("IFLA_ADDRESS")
        return mac


def _configure_client(client: LabClient) -> None:
    node_mac = _mac(NODE_NS, client.ifname_node)
    client_mac = _configure_end(
        client.ns,
        client.ifname_client,
        client.v4,
        client.v6,
        {client.node_v4: node_mac, client.node_v6: node_mac},
    )
    _configure_end(
        NODE_NS,
        client.ifname_node,
        client.node_v4,
        client.node_v6,
        {client.v4: client_mac, client.v6: client_mac},
    )


# ---- traffic processes ----------------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _traffic_ns_of(pid: int, ns_of_inode: dict[int, str]) -> str | None:
    """The lab namespace of a labtraffic process, or None if `pid` is not one: it names a lab
    namespace with --ns (even one already deleted) or lives in one."""
    argv = _cmdline(pid)
    if not any(_TRAFFIC_MODULE in arg for arg in argv):
        return None
    with contextlib.suppress(ValueError, IndexError):
        ns = argv[argv.index("--ns") + 1]
        if LAB_NS_RE.match(ns):
            return ns
    with contextlib.suppress(OSError):
        return ns_of_inode.get(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return None


def _lab_ns_inodes() -> dict[int, str]:
    inodes = {}
    for name in _netns_names():
        with contextlib.suppress(OSError):
            inodes[os.stat(os.path.join(NETNS_DIR, name)).st_ino] = name
    return inodes


def _processes_in(inodes: dict[int, str]) -> dict[int, str]:
    """pid -> lab namespace, for every process living in one of the lab's namespaces."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
            if ino in inodes:
                found[int(entry)] = inodes[ino]
    return found


def _traffic_processes() -> dict[int, str]:
    """pid -> namespace of every live labtraffic process, found by scanning /proc.

    The pid files under STATE_DIR record what lab_up started, but a scan also finds processes
    whose pid file was lost (a crash between start and record, a wiped /run); the command line
    is checked either way, since pids get reused.
    """
    inodes = _lab_ns_inodes()
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            ns = _traffic_ns_of(int(entry), inodes)
            if ns is not None:
                found[int(entry)] = ns
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _reap(pid: int) -> None:
    # Our own child: collect it so it doesn't linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _terminate(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + _TERM_GRACE
    while time.monotonic() < deadline:
        for pid in pids:
            _reap(pid)
        if not any(_alive(p) for p in pids):
            return
        time.sleep(0.02)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _reap(pid)


def _stop_traffic(progress: Progress) -> list[str]:
    procs = _traffic_processes()
    if procs:
        _say(progress, f"stopping {len(procs)} traffic process(es)")
        _terminate(sorted(procs))
    for path in STATE_DIR.glob("traffic-*.json"):
        path.unlink(missing_ok=True)
    return [f"traffic process {pid} ({ns})" for pid, ns in sorted(procs.items())]


def stop_traffic(progress: Progress = None) -> list[str]:
    """Stop every lab traffic process (the lab stays up); returns what was stopped."""
    _require_root()
    with _lab_lock():
        return _stop_traffic(progress)


def _project_root() -> str:
    return str(ROOT)


def _start_traffic(client: LabClient, rate: float, duration: float) -> int:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log_path = STATE_DIR / f"traffic-{client.ns}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_project_root(), env.get("PYTHONPATH")]))
    argv = [
        sys.executable,
        "-m",
        _TRAFFIC_MODULE,
        "--ns",
        client.ns,
        "--target",
        client.node_v4,
        "--target",
        client.node_v6,
        "--rate",
        repr(rate),
        "--duration",
        repr(duration),
    ]
    with open(log_path, "wb") as log:
        # Own session: the traffic outlives the CLI that started it and ignores its ^C.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd="/",
            env=env,
            start_new_session=True,
        )
    record = {
        "pid": proc.pid,
        "ns": client.ns,
        "rate": rate,
        "duration": duration,
        "started": time.time(),
        "argv": argv,
    }
    (STATE_DIR / f"traffic-{client.ns}.json").write_text(json.dumps(record))
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        if READY_LINE in log_path.read_text(errors="replace"):
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    tail = log_path.read_text(errors="replace")[-800:].strip()
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    raise InfwError(
        f"lab traffic for {client.ns} did not start: {tail or 'no output'}", f"see {log_path}"
    )


def _recorded_rate(ns: str) -> float | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        data = json.loads((STATE_DIR / f"traffic-{ns}.json").read_text())
        return float(data["rate"])
    return None


def _ensure_traffic(
    clients: list[LabClient], rate: float, duration: float, progress: Progress
) -> None:
    running: dict[str, list[int]] = {}
    for pid, ns in _traffic_processes().items():
        running.setdefault(ns, []).append(pid)
    for client in clients:
        pids = running.get(client.ns, [])
        if len(pids) == 1 and _recorded_rate(client.ns) == rate:
            continue
        if pids:
            _say(progress, f"restarting traffic in {client.ns}")
            _terminate(pids)
        _say(progress, f"starting traffic in {client.ns} ({rate:g} packets/s)")
        _start_traffic(client, rate, duration)


# ---- public API -----------------------------------------------------------------------------


def lab_status() -> LabInfo:
    """Read the lab from the kernel (namespaces, links, addresses) and the process table."""
    names = _netns_names()
    problems: list[str] = []
    clients = [lab_client(i) for i in _client_indexes(names)]
    node_ifaces: tuple[str, ...] = ()
    if NODE_NS not in names:
        problems.append(f"namespace {NODE_NS} is missing")
    if not clients:
        problems.append("no client namespaces")
    if os.geteuid() != 0:
        problems.append("not root: links and addresses were not checked")
    elif NODE_NS in names:
        with _ipr(NODE_NS) as ipr:
            links = {link.get("ifname"): link for link in ipr.get_links()}
            node_ifaces = tuple(sorted(n for n in links if n != "lo"))
            node_addrs = {a.get("IFA_ADDRESS") for a in ipr.get_addr()}
        for client in clients:
            link = links.get(client.ifname_node)
            if link is None:
                problems.append(f"{NODE_NS}/{client.ifname_node} is missing")
            elif link.get("IFLA_OPERSTATE") != "UP":
                problems.append(f"{NODE_NS}/{client.ifname_node} is not up")
            for addr in (client.node_v4, client.node_v6):
                if addr not in node_addrs:
                    problems.append(f"{NODE_NS}: address {addr} is missing")
            with _ipr(client.ns) as ipr:
                have = {a.get("IFA_ADDRESS") for a in ipr.get_addr()}
                if not ipr.link_lookup(ifname=client.ifname_client):
                    problems.append(f"{client.ns}/{client.ifname_client} is missing")
            for addr in (client.v4, client.v6):
                if addr not in have:
                    problems.append(f"{client.ns}: address {addr} is missing")
    pids = tuple(sorted(_traffic_processes())) if os.geteuid() == 0 else ()
    return LabInfo(NODE_NS, tuple(clients), node_ifaces, pids, not problems, tuple(problems))


def lab_up(
    rate: float = DEFAULT_RATE,
    traffic: bool = True,
    clients: int = 2,
    progress: Progress = None,
    duration: float = DEFAULT_DURATION,
) -> LabInfo:
    """Build the lab, or repair what is missing of it; idempotent.

    With `traffic`, each client runs one labtraffic process at `rate` packets/s for at most
    `duration` seconds (restarted if its rate differs). `traffic=False` starts none but leaves
    running ones alone (stop_traffic() stops them). Extra clients from an earlier, larger
    lab_up are kept.
    """
    _require_root()
    if not 1 <= clients <= MAX_CLIENTS:
        raise InfwError(
            f"the lab has 1..{MAX_CLIENTS} clients, not {clients}",
            f"pass clients between 1 and {MAX_CLIENTS}",
        )
    if not 0 < rate <= MAX_RATE:
        raise InfwError(f"traffic rate {rate} is out of range", f"use 0 < rate <= {MAX_RATE:g}")
    if not duration > 0:
        raise InfwError(f"traffic duration {duration} must be positive", "give seconds > 0")
    plan = [lab_client(i) for i in range(1, clients + 1)]
    with _lab_lock():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        _ensure_namespace(NODE_NS, progress)
        for client in plan:
            _ensure_namespace(client.ns, progress)
            _ensure_veth(client, progress)
            _say(progress, f"addressing {client.ns} {client.v4} {client.v6}")
            _configure_client(client)
        (STATE_DIR / "lab.json").write_text(
            json.dumps(
                {
                    "clients": clients,
                    "rate": rate,
                    "duration": duration,
                    "updated": time.time(),
                }
            )
        )
        if traffic:
            _ensure_traffic(plan, rate, duration, progress)
    info = lab_status()
    _say(progress, "lab is up" if info.up else f"lab is incomplete: {'; '.join(info.problems)}")
    return info


def _remove_tree(path: Path) -> None:
    """rm -r that also works on bpffs (which has no rename and no recursive rmdir)."""
    if not path.is_dir() or path.is_symlink():
        path.unlink(missing_ok=True)
        return
    for child in path.iterdir():
        _remove_tree(child)
    path.rmdir()


def lab_down(progress: Progress = None) -> list[str]:
    """Remove the lab: traffic, namespaces (and so their veths), pins, state; returns what went.

    Works from any leftover state (a crashed lab_up, a killed starter) and touches only the
    lab's own names: namespaces infw-node/infw-cN, veths infw-nN/infw-cNe, LAB_PIN_ROOT and
    /run/infw/lab.
    """
    _require_root()
    from pyroute2 import IPRoute, netns

    removed: list[str] = []
    with _lab_lock():
        removed += _stop_traffic(progress)
        names = _netns_names()
        inodes = _lab_ns_inodes()
        for pid, ns in sorted(_processes_in(inodes).items()):
            # Not ours to kill (an operator's shell, a test's ping); it only delays the netns.
            _say(
                progress,
                f"warning: process {pid} ({' '.join(_cmdline(pid))[:60]}) is still in {ns}",
            )
        for ns in sorted(names, key=lambda n: n == NODE_NS):
            _say(progress, f"removing namespace {ns}")
            try:
                netns.remove(ns)
            except FileNotFoundError:
                continue
            removed.append(f"namespace {ns}")
        with IPRoute() as ipr:
            for link in ipr.get_links():
                name = link.get("ifname") or ""
                kind = link.get(("IFLA_LINKINFO", "IFLA_INFO_KIND"))
                # Deleting one end of a pair takes the peer with it: look again before each.
                if _ROOT_VETH_RE.match(name) and kind == "veth" and ipr.link_lookup(ifname=name):
                    _say(progress, f"removing stray veth {name} from the host namespace")
                    ipr.link("del", index=link["index"])
                    removed.append(f"veth {name}")
        pin_root = Path(LAB_PIN_ROOT)
        if pin_root.exists():
            _say(progress, f"removing pins {LAB_PIN_ROOT}")
            _remove_tree(pin_root)
            removed.append(f"pins {LAB_PIN_ROOT}")
        if STATE_DIR.exists():
            shutil.rmtree(STATE_DIR)
            removed.append(f"state {STATE_DIR}")
    _say(progress, "lab is down" if removed else "no lab to remove")
    return removed


def send_packets(
    ns: str,
    dst: str,
    proto: str,
    dport: int | None = None,
    count: int = 1,
    src: str | None = None,
    icmp: tuple[int, int] | None = None,
    sport: int | None = None,
) -> int:
    """Send `count` real packets from lab namespace `ns` to `dst`; returns how many were sent.

    proto: tcp (one SYN each, via a non-blocking connect), udp, sctp (an INIT chunk), icmp or
    icmpv6 (the family follows `dst`). icmp=(type, code), default echo request. `src` picks
    the source address (it must be on `ns`). Only lab namespaces and documentation addresses
    are accepted, so a test can't send traffic anywhere else.
    """
    check_lab_namespace(ns)
    check_lab_address(dst)
    proto = proto.lower()
    if proto not in PROTOCOLS:
        raise ValueError(f"protocol {proto!r} is not one of {', '.join(PROTOCOLS)}")
    if proto in ("tcp", "udp", "sctp") and dport is None:
        raise ValueError(f"{proto} needs a dport")
    if count < 0:
        raise ValueError("count must be >= 0")
    icmp_type, icmp_code = icmp if icmp is not None else (None, 0)
    if proto == "tcp":
        assert dport is not None
        with in_namespace(ns):
            for _ in range(count):
                tcp_syn(dst, dport, src=src, sport=sport)
        return count
    with in_namespace(ns):
        sender = Sender.open(src)
    try:
        for seq in range(count):
            if proto == "udp":
                assert dport is not None
                sender.udp(dst, dport)
            elif proto == "sctp":
                assert dport is not None
                sender.sctp(dst, dport, sport or 40000)
            else:
                sender.icmp(dst, icmp_type, icmp_code, seq)
    finally:
        sender.close()
    return count


def netns_inode(name: str) -> int:
    """Inode of a lab namespace (to tell whether a thread is inside it)."""
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except FileNotFoundError as exc:
        raise StateError(f"network namespace {name} does not exist", "run `infw lab up`") from exc


def thread_in_namespace(name: str) -> bool:
    return current_netns_inode() == netns_inode(name)


__all__ = [
    "LAB_PIN_ROOT",
    "NODE_NS",
    "LabClient",
    "LabInfo",
    "in_namespace",
    "lab_client",
    "lab_down",
    "lab_status",
    "lab_up",
    "send_packets",
    "stop_traffic",
    "thread_in_namespace",
]
