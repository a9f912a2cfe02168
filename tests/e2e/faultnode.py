"""A node that can be broken on purpose, for the fault-injection suite (tests/e2e/test_faults.py).

One node namespace with one veth whose far end sits in a client namespace, a firewall of its own
(pin root /sys/fs/bpf/infw-f<pid>-N, state dir on a small tmpfs that a test can fill or make
read-only), and a UDP receiver on the node: `delivered(port)` sends real datagrams from the
client and counts what reached the node's socket, so every check is about packets, never about
what infw prints. The CLI runs as an operator runs it (`python -m console.cli --netns ...`).
Everything it creates (namespaces, links, mounts, pins, processes) is removed in `close()`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.lab.world import in_namespace
from tests.support import wait_for

PROJECT = Path(__file__).resolve().parents[2]
NODE_IF = "infw-fa"  # the node's end, the one the rules name
CLIENT_IF = "infw-fb"
NODE_V4 = "198.51.100.1"
CLIENT_V4 = "198.51.100.2"
OPEN_PORT = 7001  # allowed by OLD, denied by NEW
SHUT_PORT = 7002  # denied by OLD, allowed by NEW

OLD = f"""
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {{name: fault}}
spec:
  interfaces: [{NODE_IF}]
  ingress:
  - sourceCIDRs: [198.51.100.0/24]
    rules:
    - order: 10
      protocolConfig: {{protocol: UDP, udp: {{ports: {SHUT_PORT}}}}}
      action: Deny
"""
NEW = f"""
apiVersion: ingressnodefirewall.openshift.io/v1alpha1
kind: IngressNodeFirewall
metadata: {{name: fault}}
spec:
  interfaces: [{NODE_IF}]
  ingress:
  - sourceCIDRs: [198.51.100.0/24]
    rules:
    - order: 5
      protocolConfig: {{protocol: UDP, udp: {{ports: {OPEN_PORT}}}}}
      action: Deny
"""


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> dict:
        return json.loads(self.out) if self.out.strip() else {}


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def process_state(pid: int) -> str | None:
    """The one-letter state of pid (R, S, T, Z...), None when it does not exist."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


class FaultNode:
    """The node under test. Tests break it (methods below) and then check packets."""

    _serial = 0

    def __init__(self, base: Path, *, state_size_kb: int = 4096) -> None:
        self.state_size_kb = state_size_kb
        FaultNode._serial += 1
        tag = f"{os.getpid() % 10000}{FaultNode._serial}"
        self.ns = f"infw-fn{tag}"
        self.client_ns = f"infw-fc{tag}"
        self.away_ns = f"infw-fx{tag}"
        self.pin_root = f"/sys/fs/bpf/infw-f{tag}"
        self.state_dir = base / "state"
        self._kept = base / "kept"  # the state tmpfs while lose_state_dir has it away
        self._children: list[subprocess.Popen[str]] = []
        self._sockets: dict[int, socket.socket] = {}
        self._mounted = False
        self.global_args: list[str] = []  # options every infw command gets (--node-labels ...)

    def build(self) -> None:
        self.state_dir.mkdir(parents=True)
        for ns in (self.ns, self.client_ns, self.away_ns):
            sh("ip", "netns", "add", ns)
        # A small tmpfs of its own, so "disk full" and "read-only" hit only this firewall.
        sh(
            "mount",
            "-t",
            "tmpfs",
            "-o",
            f"size={self.state_size_kb}k,mode=0700",
            "infw-fault",
            str(self.state_dir),
        )
        self._mounted = True
        self.make_link()
        self._open_receivers()

    # -------------------------------------------------------------- the network

    def make_link(self) -> None:
        """Create (or re-create) the veth pair and address both ends."""
        sh(
            "ip",
            "-n",
            self.ns,
            "link",
            "add",
            NODE_IF,
            "type",
            "veth",
            "peer",
            "name",
            CLIENT_IF,
            "netns",
            self.client_ns,
        )
        self.configure_node_end()
        sh("ip", "-n", self.client_ns, "addr", "add", f"{CLIENT_V4}/24", "dev", CLIENT_IF)
        sh("ip", "-n", self.client_ns, "link", "set", CLIENT_IF, "up")
        sh("ip", "-n", self.client_ns, "link", "set", "lo", "up")

    def configure_node_end(self) -> None:
        """Address and raise the node's end (moving a link between namespaces drops both)."""
        sh("ip", "-n", self.ns, "addr", "replace", f"{NODE_V4}/24", "dev", NODE_IF)
        sh("ip", "-n", self.ns, "link", "set", NODE_IF, "up")
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")

    def move_away(self) -> None:
        sh("ip", "-n", self.ns, "link", "set", NODE_IF, "netns", self.away_ns)

    def move_back(self) -> None:
        sh("ip", "-n", self.away_ns, "link", "set", NODE_IF, "netns", self.ns)
        self.configure_node_end()

    def delete_link(self) -> None:
        sh("ip", "-n", self.ns, "link", "del", NODE_IF)

    def ifindex(self) -> int:
        out = sh("ip", "-n", self.ns, "-j", "link", "show", NODE_IF).stdout
        return int(json.loads(out)[0]["ifindex"])

    def xdp_prog_id(self) -> int | None:
        """The id of the XDP program on the node's interface, None when there is none."""
        out = sh("ip", "-n", self.ns, "-j", "-d", "link", "show", NODE_IF).stdout
        xdp = json.loads(out)[0].get("xdp")
        if not xdp:
            return None
        prog = xdp.get("prog") or {}
        return int(prog["id"]) if "id" in prog else None

    # -------------------------------------------------------------- packets

    def _open_receivers(self) -> None:
        with in_namespace(self.ns):
            for port in (OPEN_PORT, SHUT_PORT):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("0.0.0.0", port))
                sock.setblocking(False)
                self._sockets[port] = sock

    def _drain(self, port: int) -> int:
        got = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                self._sockets[port].recv(2048)
                got += 1
        return got

    def delivered(
        self, port: int, count: int = 5, *, client: str | None = None, dst: str = NODE_V4
    ) -> int:
        """Send count datagrams from the client (or the namespace `client`) to port on the
        node's address dst; how many arrived."""
        self._drain(port)
        with in_namespace(client or self.client_ns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(count):
                sock.sendto(f"probe {i}".encode(), (dst, port))
        finally:
            sock.close()
        got = 0
        end = time.monotonic() + 0.5
        while time.monotonic() < end and got < count:
            got += self._drain(port)
            time.sleep(0.02)
        time.sleep(0.05)  # and nothing more arrives
        return got + self._drain(port)

    def rules_in_force(self, *, client: str | None = None, dst: str = NODE_V4) -> str:
        """Judged by packets alone: "old", "new", "none" (everything passes), "closed" (both
        ports dropped: OLD plus the added deny) or "mixed (a, b)" (part of a burst passed).
        client and dst as for delivered(), for a second link."""
        counts = (
            self.delivered(OPEN_PORT, client=client, dst=dst),
            self.delivered(SHUT_PORT, client=client, dst=dst),
        )
        if not set(counts) <= {0, 5}:
            return f"mixed {counts}"
        verdicts = {
            (True, False): "old",
            (False, True): "new",
            (True, True): "none",
            (False, False): "closed",
        }
        return verdicts[(counts[0] == 5, counts[1] == 5)]

    def wait_rules(self, want: str, timeout: float) -> bool:
        return wait_for(lambda: self.rules_in_force() == want, timeout, step=0.1)

    # -------------------------------------------------------------- infw

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "SSH_CONNECTION"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), env.get("PYTHONPATH")]))
        return env

    def argv(self, *args: str) -> list[str]:
        return [
            sys.executable, "-m", "console.cli", "--pin-root", self.pin_root,
            "--state-dir", str(self.state_dir), "--netns", self.ns, *self.global_args, *args,
        ]  # fmt: skip

    def infw(self, *args: str, timeout: float = 120, user: str | None = None) -> Run:
        cmd = self.argv(*args)
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        proc = subprocess.run(
            cmd, cwd=PROJECT, env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str) -> Run:
        run = self.infw(*args)
        assert run.code == 0, f"infw {' '.join(args)}: exit {run.code}\n{run.out}\n{run.err}"
        return run

    def rules_file(self, text: str, name: str) -> str:
        path = self.state_dir.parent / name
        path.write_text(text)
        return str(path)

    def start_old(self) -> None:
        """Attach the firewall and apply OLD, confirmed: the state every test starts from."""
        self.ok("attach", NODE_IF)
        self.ok("apply", self.rules_file(OLD, "old.yaml"), "--confirm-timeout", "0")
        assert self.rules_in_force() == "old"

    def apply_new_pending(self, timeout: float) -> dict:
        """Apply NEW with a confirm timeout; returns the pending marker (with the watchdog pid)."""
        self.ok("apply", self.rules_file(NEW, "new.yaml"), "--confirm-timeout", f"{timeout:g}")
        assert self.rules_in_force() == "new"
        pending = json.loads((self.state_dir / "pending.json").read_text())
        assert isinstance(pending, dict)
        return pending

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv(*args), cwd=PROJECT, env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self._children.append(proc)
        return proc

    def status(self) -> tuple[int, dict]:
        run = self.infw("status", "--json")
        return run.code, run.json()

    # -------------------------------------------------------------- faults

    def remove_pins(self) -> None:
        for name in os.listdir(self.pin_root):
            os.unlink(os.path.join(self.pin_root, name))

    def fill_state_dir(self, leave_pages: int = 0) -> None:
        """Fill the state tmpfs to the last page, or leave leave_pages pages free."""
        fd = os.open(self.state_dir / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with contextlib.suppress(OSError):
                while True:
                    st = os.statvfs(self.state_dir)
                    free = st.f_bavail * st.f_frsize - leave_pages * 4096
                    if free <= 0:
                        break
                    os.write(fd, b"\0" * min(free, 1 << 20))
        finally:
            os.close(fd)

    def free_state_dir(self) -> None:
        (self.state_dir / "filler").unlink(missing_ok=True)

    def state_read_only(self, ro: bool = True) -> None:
        """A read-only bind mount over the state dir: a remount of the tmpfs itself is refused
        while the watchdog holds its log open for writing."""
        path = str(self.state_dir)
        if ro:
            sh("mount", "--bind", path, path)
            sh("mount", "-o", "remount,bind,ro", path)
        else:
            sh("umount", path)

    def lose_state_dir(self) -> None:
        """The state dir's disk goes away under infw (a lazy unmount, as of a pulled disk): its
        path shows the empty directory beneath. A second mount keeps the content, for
        return_state_dir."""
        self._kept.mkdir(exist_ok=True)
        sh("mount", "--bind", str(self.state_dir), str(self._kept))
        sh("umount", "-l", str(self.state_dir))

    def return_state_dir(self) -> None:
        sh("mount", "--bind", str(self._kept), str(self.state_dir))
        sh("umount", "-l", str(self._kept))

    def processes(self) -> list[int]:
        """Live processes naming this firewall's pin root (watchdogs, agents)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if self.pin_root.encode() in cmdline and process_state(int(entry)) not in (None, "Z"):
                found.append(int(entry))
        return found

    # -------------------------------------------------------------- teardown

    def close(self) -> None:
        for proc in self._children:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):
                proc.communicate(timeout=10)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for sock in self._sockets.values():
            sock.close()
        # Deleting the namespaces detaches every program on their links.
        for ns in (self.ns, self.client_ns, self.away_ns):
            sh("ip", "netns", "del", ns, check=False)
        if self._mounted:
            sh("umount", "-l", str(self.state_dir), check=False)
            if os.path.ismount(self._kept):
                sh("umount", "-l", str(self._kept), check=False)
        if os.path.isdir(self.pin_root):
            for name in os.listdir(self.pin_root):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.pin_root, name))
            with contextlib.suppress(OSError):
                os.rmdir(self.pin_root)
        shutil.rmtree(self.state_dir, ignore_errors=True)


@contextlib.contextmanager
def fault_node(base: Path, **kwargs: int) -> Iterator[FaultNode]:
    node = FaultNode(base, **kwargs)
    try:
        node.build()
        yield node
    finally:
        node.close()
