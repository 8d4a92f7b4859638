"""A small fleet on this machine: network namespaces joined by a bridge, each
"host" with its own sshd (Debian's openssh-server), its own host name (a UTS
namespace) and its own address; the broker in one, qdiag in another.

Everything lives in namespaces this lab creates (named qf<tag>-...), on a
private /24 that exists only inside them: the machine's own interfaces and
rules are never touched (no veth end, address or route in the root namespace).
`close()` removes it all: the processes it started (by pid, each in its own
session), the namespaces (and so their links), the keys and configs (a
temporary directory).

Needs root (ip netns, unshare), /usr/sbin/sshd and ssh.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[2]
WORKLOADS = REPO / "tests" / "scenarios" / "workloads"
SUBNET = "10.231.{tag}"


def available() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "unshare", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not os.path.exists(SSHD):
        return "sshd is not installed (apt-get install openssh-server; tests/rig.sh does)"
    return None


def _run(*argv: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


@dataclass
class Node:
    name: str  # host name, as its snapshot reports it
    netns: str
    address: str


@dataclass
class Lab:
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qdiag-fleet-lab-")))
    nodes: dict[str, Node] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    octet: int = 0

    def __post_init__(self):
        # A third octet from the tag: two labs at once (two test sessions) do not share a subnet.
        self.subnet = SUBNET.format(tag=int(self.tag, 16) % 200 + 20)
        self.lan = self._netns("lan")
        _run("ip", "-n", self.lan, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.lan, "link", "set", "br0", "up")
        self.ssh_dir = self.root / "ssh"
        self.ssh_dir.mkdir(mode=0o700)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qdiag-lab-client", "-f", str(self.ssh_dir / "client"))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qdiag-lab-host", "-f", str(self.ssh_dir / "host"))
        shutil.copy(self.ssh_dir / "client.pub", self.ssh_dir / "authorized_keys")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory

    # --- namespaces -------------------------------------------------------------------

    def _netns(self, role: str) -> str:
        name = f"qf{self.tag}-{role}"[:32]
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def node(self, name: str) -> Node:
        """A host on the lab's LAN."""
        self.octet += 1
        netns = self._netns(name)
        veth = f"v{self.tag}{self.octet}"
        address = f"{self.subnet}.{self.octet + 1}"
        _run("ip", "-n", self.lan, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "-n", self.lan, "link", "set", veth, "master", "br0", "up")
        _run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _run("ip", "-n", netns, "link", "set", "eth0", "up")
        node = Node(name, netns, address)
        self.nodes[name] = node
        return node

    def start(self, node: Node, argv: list[str], *, env: dict | None = None, hostname: str | None = None,
              stdout=subprocess.DEVNULL, cwd: str | None = None) -> subprocess.Popen:
        """A process inside `node`'s network namespace (and, with `hostname`, a UTS namespace of its own)."""
        prefix = ["ip", "netns", "exec", node.netns]
        if hostname:
            prefix += ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
        proc = subprocess.Popen(prefix + argv, env=env, stdout=stdout, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=cwd)
        self.procs.append(proc)
        return proc

    def sshd(self, node: Node) -> None:
        config = self.root / f"sshd-{node.name}.conf"
        config.write_text("\n".join([
            f"ListenAddress {node.address}:22",
            f"HostKey {self.ssh_dir / 'host'}",
            f"AuthorizedKeysFile {self.ssh_dir / 'authorized_keys'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # A locked root password (Debian's default) only allows key logins through PAM.
            "UsePAM yes",
            "StrictModes no",
            f"PidFile {self.root / ('sshd-' + node.name + '.pid')}",
            "LogLevel ERROR",
            "MaxStartups 64",
            "MaxSessions 64",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
        ]) + "\n")
        self.start(node, [SSHD, "-D", "-e", "-f", str(config)], hostname=node.name)
        self._wait_port(node, 22)

    def _wait_port(self, node: Node, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = _run("ip", "netns", "exec", node.netns, sys.executable, "-c",
                        f"import socket; socket.create_connection(({node.address!r}, {port}), 1).close()",
                        check=False)
            if done.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError(f"nothing listens on {node.address}:{port} in {node.netns}")

    def ssh_config(self) -> Path:
        """A client config naming every node; host keys pinned (no trust on first use)."""
        host_key = (self.ssh_dir / "host.pub").read_text().split()[:2]
        known = [f"{n.address} {' '.join(host_key)}" for n in self.nodes.values()]
        (self.ssh_dir / "known_hosts").write_text("\n".join(known) + "\n")
        lines = []
        for n in self.nodes.values():
            lines += [f"Host {n.name}", f"  HostName {n.address}"]
        lines += ["Host *", "  User root", f"  IdentityFile {self.ssh_dir / 'client'}", "  IdentitiesOnly yes",
                  f"  UserKnownHostsFile {self.ssh_dir / 'known_hosts'}", "  StrictHostKeyChecking yes",
                  "  GlobalKnownHostsFile /dev/null", "  LogLevel ERROR"]
        path = self.ssh_dir / "config"
        path.write_text("\n".join(lines) + "\n")
        return path

    def redis(self, node: Node, port: int = 6379) -> str:
        """A private Redis on `node` (in memory only); its URL."""
        self.start(node, ["redis-server", "--bind", node.address, "--port", str(port), "--save", "",
                          "--appendonly", "no", "--protected-mode", "no", "--dir", str(self.root)])
        self._wait_port(node, port)
        return f"redis://{node.address}:{port}/0"

    def run(self, node: Node, argv: list[str], *, env: dict | None = None, timeout: float = 120,
            cwd: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", node.netns, *argv], env=env, capture_output=True,
                              timeout=timeout, cwd=cwd)

    # --- cleanup --------------------------------------------------------------------------

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)  # each was started in a session of its own
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        # sshd's sessions run in sessions of their own: whatever is left in a lab namespace is ours.
        for netns in self.namespaces:
            done = _run("ip", "netns", "pids", netns, check=False)
            for pid in done.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for netns in reversed(self.namespaces):
            _run("ip", "netns", "del", netns, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Anything of this lab still there (for the cleanup test)."""
        listed = _run("ip", "netns", "list", check=False).stdout
        left = [n for n in self.namespaces if n in listed]
        if self.root.exists():
            left.append(str(self.root))
        left += [str(p.pid) for p in self.procs if p.poll() is None]
        return left


def target_python() -> str:
    """The Python a consumer host has: the system's, without qdiag's libraries (it runs the single file)."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
