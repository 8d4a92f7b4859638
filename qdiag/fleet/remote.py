"""Snapshots taken on other hosts through the engines people already run.

    --collect ssh://HOST[,HOST...]     the system ssh (the user's ~/.ssh/config, keys, agent,
                                       jump hosts), BatchMode: never a prompt
    --collect kubectl://NS/SELECTOR    the pods of a namespace matching a label selector,
                                       through kubectl exec (the user's kubeconfig; --kube-context,
                                       --kube-container)

Every target runs `qdiag snapshot -o -` with this run's window and deadline,
looking at the processes connected to the brokers this run probes
(--connected-to; no credential leaves this host), and streams the snapshot
back on its standard output.  All targets run at once, beside the local
probes.  A target that fails (unreachable, refused, no qdiag there, no answer
by the deadline, not a snapshot) is reported with why; it never fails the run.

QDIAG_SSH_COMMAND replaces `ssh` (as GIT_SSH_COMMAND does for git), e.g.
"ssh -F ~/.ssh/incident_config"; QDIAG_KUBECTL replaces `kubectl`.
"""

from __future__ import annotations

import gzip
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import urlsplit

from qdiag.errors import UsageError
from qdiag.fleet.merge import Taken

# Seconds a target may take beyond the run's own --timeout: connecting, starting Python.
CONNECT_ALLOWANCE_S = 10.0
# ssh gives up connecting after this long (ConnectTimeout).
SSH_CONNECT_TIMEOUT_S = 8
# Listing the pods of a selector.
KUBECTL_LIST_TIMEOUT_S = 10.0
# A snapshot is a few MB of gzip; anything far beyond is not one.
MAX_SNAPSHOT_BYTES = 64 << 20
STDERR_KEEP = 4096
DEFAULT_COMMAND = "qdiag"


@dataclass(frozen=True)
class Spec:
    """One --collect value."""

    scheme: str  # "ssh" or "kubectl"
    hosts: tuple[str, ...] = ()  # ssh: [user@]host[:port]
    namespace: str | None = None  # kubectl
    selector: str | None = None

    def label(self) -> str:
        if self.scheme == "ssh":
            return "ssh://" + ",".join(self.hosts)
        return f"kubectl://{self.namespace}/{self.selector}"


def parse_spec(value: str) -> Spec:
    value = value.strip()
    if value.startswith("ssh://"):
        hosts = tuple(h.strip() for h in value[len("ssh://"):].split(",") if h.strip())
        if not hosts:
            raise UsageError(f"--collect {value}: no host", "give ssh://HOST[,HOST...], e.g. ssh://web-1,web-2")
        for host in hosts:
            if host.startswith("-") or any(c.isspace() or c in "'\"`$;|&<>\\" for c in host):
                raise UsageError(f"--collect: '{host}' is not a host name", "give ssh://[USER@]HOST[:PORT],...")
            _ssh_host_port(host)
        return Spec("ssh", hosts=hosts)
    if value.startswith("kubectl://"):
        rest = value[len("kubectl://"):]
        namespace, sep, selector = rest.partition("/")
        if not sep or not namespace or not selector:
            raise UsageError(f"--collect {value}: needs a namespace and a label selector",
                             "give kubectl://NAMESPACE/SELECTOR, e.g. kubectl://shop/app=worker")
        if namespace.startswith("-") or selector.startswith("-"):
            raise UsageError(f"--collect {value}: a namespace or selector cannot start with '-'",
                             "give kubectl://NAMESPACE/SELECTOR")
        return Spec("kubectl", namespace=namespace, selector=selector)
    raise UsageError(f"--collect {value!r}: unknown kind of target",
                     "give ssh://HOST[,HOST...] or kubectl://NAMESPACE/SELECTOR")


def _ssh_host_port(host: str) -> tuple[str, int | None]:
    """'user@web-1:2222' -> ('user@web-1', 2222); '[::1]:22' -> ('::1', 22)."""
    user, at, rest = host.rpartition("@")
    prefix = f"{user}@" if at else ""
    if rest.startswith("["):
        name, _, tail = rest[1:].partition("]")
        port = tail.lstrip(":")
    elif rest.count(":") == 1:
        name, _, port = rest.partition(":")
    else:
        name, port = rest, ""
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(f"--collect: '{host}' has no valid port", "give ssh://[USER@]HOST[:PORT]")
    return prefix + name, int(port) if port else None


# --- what runs there ---------------------------------------------------------------------

def broker_endpoints(settings) -> list[str]:
    """HOST:PORT of every broker this run probes, at its client ports: the remote snapshot's
    consumers are the processes connected there."""
    from qdiag.brokers import BROKERS

    out: list[str] = []
    for name, broker in BROKERS.items():
        target = settings.targets.broker(name)
        if target is None:
            continue
        label = target.label()
        hosts = []
        for part in label.split(","):
            try:
                parts = urlsplit(part if "://" in part else "//" + part)
                if parts.hostname:
                    hosts.append(parts.hostname)
            except ValueError:
                continue
        ports = sorted(set(broker.client_ports) | broker.ports_of(label))
        for host in hosts:
            shown = f"[{host}]" if ":" in host else host
            out += [f"{shown}:{port}" for port in ports if f"{shown}:{port}" not in out]
    return out


def snapshot_args(settings) -> list[str]:
    """`qdiag snapshot` arguments for a consumer host: this run's window and deadline, the
    brokers' addresses to find the consumers by, the user's --process patterns."""
    args = ["snapshot", "-o", "-", "--no-auto-detect", "--window", f"{settings.window_s:g}",
            "--timeout", f"{settings.timeout_s:g}"]
    for endpoint in broker_endpoints(settings):
        args += ["--connected-to", endpoint]
    for pattern in settings.targets.process_patterns:
        args += ["--process", pattern]
    return args


@dataclass
class Job:
    name: str
    target: str
    argv: list[str]
    access: str


def ssh_jobs(spec: Spec, command: list[str], args: list[str], env: Mapping[str, str]) -> list[Job]:
    ssh = shlex.split(env.get("QDIAG_SSH_COMMAND") or "ssh")
    # The remote side gets one command line, run by the login shell: the user's --collect-command
    # as written (it may use ~ or variables), qdiag's own arguments quoted.
    remote = " ".join(command) + " " + " ".join(shlex.quote(a) for a in args)
    jobs = []
    for host in spec.hosts:
        name, port = _ssh_host_port(host)
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={SSH_CONNECT_TIMEOUT_S}"]
        port_args = ["-p", str(port)] if port else []
        jobs.append(Job(name=name.rpartition("@")[2], target=f"ssh://{host}",
                        argv=[*ssh, *options, *port_args, "--", name, remote],
                        access=" ".join(shlex.quote(a) for a in [*ssh, *port_args, name])))
    return jobs


def kubectl_base(env: Mapping[str, str], context: str | None, namespace: str) -> list[str]:
    base = shlex.split(env.get("QDIAG_KUBECTL") or "kubectl")
    if context:
        base += ["--context", context]
    return base + ["--namespace", namespace]


def kubectl_list_argv(base: list[str], selector: str) -> list[str]:
    return [*base, "get", "pods", "--selector", selector, "--field-selector", "status.phase=Running",
            f"--request-timeout={KUBECTL_LIST_TIMEOUT_S:g}s",
            "--output", "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}"]


def kubectl_jobs(spec: Spec, pods: list[str], base: list[str], container: str | None, command: list[str],
                 args: list[str]) -> list[Job]:
    jobs = []
    for pod in pods:
        where = [*base, "exec", pod, *(["--container", container] if container else [])]
        jobs.append(Job(name=pod, target=f"kubectl://{spec.namespace}/{pod}", argv=[*where, "--", *command, *args],
                        access=" ".join(shlex.quote(a) for a in [*where, "--"])))
    return jobs


# --- running -----------------------------------------------------------------------------

def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def explain(kind: str, returncode: int | None, stderr: str) -> str:
    """Why a target sent no snapshot, in one line the user can act on."""
    line = _last_line(stderr)
    low = stderr.lower()
    if kind == "ssh" and returncode == 255:
        if "permission denied" in low or "host key verification failed" in low:
            return f"ssh refused the login ({line}); BatchMode never prompts: use a key or an agent, " \
                   "and a known host key"
        return f"unreachable over ssh ({line or 'exit 255'})"
    if returncode == 127 or "command not found" in low or "executable file not found" in low \
            or "no such file or directory" in low:
        return (f"qdiag is not installed there ({line}): copy the single-file build (python -m qdiag.fleet.zipapp "
                "-o qdiag.pyz) and give --collect-command 'python3 qdiag.pyz'")
    if kind == "kubectl" and ("forbidden" in low or "unauthorized" in low):
        return f"kubectl was refused ({line}): the kubeconfig's user needs pods/exec in that namespace"
    return f"exit {returncode}: {line or 'no message'}"


def decode(data: bytes) -> dict:
    from qdiag import snapshot as snap

    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"more than {MAX_SNAPSHOT_BYTES >> 20} MiB on standard output")
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return snap.upgrade(json.loads(data.decode("utf-8")), "the remote snapshot")


def _kill(proc: subprocess.Popen) -> None:
    """End the target's client (started in its own session) and whatever it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_job(job: Job, kind: str, deadline: float, clock: Callable[[], float] = time.monotonic) -> Taken:
    taken = Taken(name=job.name, target=job.target, access=job.access, launched_at=time.time())
    try:
        proc = subprocess.Popen(job.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        taken.error = f"cannot run {job.argv[0]}: {exc.strerror or exc}"
        return taken
    try:
        out, err = proc.communicate(timeout=max(0.1, deadline - clock()))
    except subprocess.TimeoutExpired:
        _kill(proc)
        out, err = proc.communicate()
        taken.error = f"no snapshot before the deadline (killed after {job.name} gave none in time)"
        return taken
    finally:
        if proc.poll() is None:
            _kill(proc)
    taken.received_at = time.time()
    stderr = err[-STDERR_KEEP:].decode("utf-8", "replace")
    if out:
        try:
            taken.doc = decode(out)
            return taken
        except Exception as exc:  # anything but a snapshot: say what came instead
            taken.error = f"did not send a snapshot ({str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__})" \
                          + (f"; {_last_line(stderr)}" if stderr.strip() else "")
            return taken
    taken.error = explain(kind, proc.returncode, stderr)
    return taken


@dataclass
class Collection:
    """Remote snapshots being taken; `finish()` waits for them (to their deadline)."""

    threads: list[threading.Thread] = field(default_factory=list)
    results: list[Taken] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    order: dict[str, int] = field(default_factory=dict)

    def add(self, taken: Taken, rank: int) -> None:
        with self.lock:
            self.order[id(taken)] = rank
            self.results.append(taken)

    def finish(self) -> list[Taken]:
        for t in self.threads:
            t.join()
        with self.lock:
            return sorted(self.results, key=lambda t: (self.order.get(id(t), 0), t.name))


def start(specs: list[Spec], settings, env: Mapping[str, str], *, command: str | None = None,
          kube_context: str | None = None, kube_container: str | None = None,
          clock: Callable[[], float] = time.monotonic) -> Collection:
    """Start every target's snapshot now; each runs in a thread of its own until its deadline."""
    deadline = clock() + settings.timeout_s + CONNECT_ALLOWANCE_S
    words = shlex.split(command or env.get("QDIAG_COLLECT_COMMAND") or DEFAULT_COMMAND)
    args = snapshot_args(settings)
    collection = Collection()

    def spawn(job: Job, kind: str, rank: int) -> None:
        thread = threading.Thread(target=lambda: collection.add(run_job(job, kind, deadline, clock), rank),
                                  name=f"collect-{job.name}", daemon=True)
        collection.threads.append(thread)
        thread.start()

    for rank, spec in enumerate(specs):
        if spec.scheme == "ssh":
            for job in ssh_jobs(spec, words, args, env):
                spawn(job, "ssh", rank)
        else:
            base = kubectl_base(env, kube_context, spec.namespace)
            thread = threading.Thread(target=_kubectl_target, name=f"collect-{spec.label()}", daemon=True,
                                      args=(spec, base, kube_container, words, args, deadline, clock, collection,
                                            rank))
            collection.threads.append(thread)
            thread.start()
    return collection


def list_pods(base: list[str], selector: str, deadline: float, clock) -> tuple[list[str], str | None]:
    argv = kubectl_list_argv(base, selector)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        return [], f"cannot run {argv[0]}: {exc.strerror or exc}"
    try:
        out, err = proc.communicate(timeout=max(0.1, min(deadline, clock() + KUBECTL_LIST_TIMEOUT_S + 2) - clock()))
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        return [], "listing the pods did not finish in time"
    if proc.returncode != 0:
        return [], explain("kubectl", proc.returncode, err.decode("utf-8", "replace"))
    pods = [line.strip() for line in out.decode("utf-8", "replace").splitlines() if line.strip()]
    return pods, None if pods else "no running pod matches the selector"


def _kubectl_target(spec: Spec, base: list[str], container: str | None, words: list[str], args: list[str],
                    deadline: float, clock, collection: Collection, rank: int) -> None:
    pods, error = list_pods(base, spec.selector, deadline, clock)
    if error:
        collection.add(Taken(name=f"{spec.namespace}/{spec.selector}", target=spec.label(), error=error), rank)
        return
    threads = []
    for job in kubectl_jobs(spec, pods, base, container, words, args):
        thread = threading.Thread(target=lambda j=job: collection.add(run_job(j, "kubectl", deadline, clock), rank),
                                  name=f"collect-{job.name}", daemon=True)
        threads.append(thread)
        thread.start()
    for thread in threads:
        thread.join()
