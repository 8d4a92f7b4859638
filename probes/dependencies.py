"""Downstream dependencies: how long DNS, TCP connect, TLS and the first byte of
an HTTP answer take, sampled over the window for every --dependency URL and
for the endpoints the consumer processes hold connections to.

Timed with plain sockets rather than an HTTP library: each phase is a separate
call here, so its time is measured directly instead of being inferred from
hooks, and every call gets the remaining budget of its sample as its timeout.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import queue
import re
import socket
import ssl
import threading
import time
from typing import Callable

from qdiag import __version__
from qdiag.context import DeadlineReached, ProbeContext
from qdiag import target_processes
from qdiag.endpoints import format_endpoint, norm_ip
from qdiag.probe import NotApplicable, ProbeError, Option, register
from qdiag.redact import Redactor

from . import _dependencies_facts
from ._latency import Endpoint, parse_endpoint, parse_status_line, summarize, tcp_label

DEFAULTS = {
    "samples": 3,            # per endpoint, spread over the window
    "request_timeout": 3.0,  # seconds one sample may take, all phases together
    "insecure_tls": False,   # skip certificate verification for https
    "ca_file": "",           # PEM bundle of an internal CA, trusted besides the system's
    "discover": True,        # add endpoints from the target processes' connections
    "max_discovered": 10,
    "workers": 16,           # endpoints timed at once (threads mostly asleep between samples)
    "exclude": [],           # "host:port" never to report as discovered
}
MAX_HEADER_BYTES = 64 * 1024
# Samples end this long before the deadline, so that one cut short still
# counts (as a timeout) ...
SAMPLE_STOP_S = 0.5
# ... and waiting for them stops this long before it, to summarise in time.
SUMMARY_RESERVE_S = 0.25
# AMQP ports of a RabbitMQ given by its management URL: consumers connect there.
_AMQP_PORTS = (5672, 5671)


def _is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(norm_ip(ip)).is_loopback
    except ValueError:
        return False


def resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """getaddrinfo with a timeout.  The C resolver has none of its own and can
    block for its whole retry cycle, so it runs in a daemon thread that is left
    behind if it does not answer in time."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        literal = True
    except ValueError:
        literal = False
    if literal:
        return socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    box: dict = {}

    def work() -> None:
        try:
            box["value"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=work, name="qdiag-dns", daemon=True)
    thread.start()
    thread.join(max(0.0, timeout))
    if thread.is_alive():
        raise TimeoutError(f"DNS lookup of {host} gave no answer")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _tls_context(insecure: bool, ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=os.path.expanduser(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"[probes.dependencies] ca_file '{ca_file}' cannot be loaded: "
                             f"{getattr(exc, 'strerror', None) or exc} (give a PEM file of CA certificates)") from None
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _request(ep: Endpoint) -> bytes:
    lines = [f"GET {ep.path} HTTP/1.1", f"Host: {ep.host_header()}", f"User-Agent: qdiag/{__version__}",
             "Accept: */*", "Connection: close"]
    if ep.username is not None or ep.password is not None:
        token = base64.b64encode(f"{ep.username or ''}:{ep.password or ''}".encode()).decode()
        lines.append(f"Authorization: Basic {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")


def take_sample(ep: Endpoint, timeout: float, tls: ssl.SSLContext | None,
                clock: Callable[[], float] = time.perf_counter) -> dict:
    """One timed attempt.  Never raises: failures are data (`error`, `error_kind`)."""
    sample = {"dns_ms": None, "connect_ms": None, "tls_ms": None, "ttfb_ms": None, "total_ms": None,
              "status": None, "error": None, "error_kind": None, "timed_out": False, "address": None}
    start = clock()
    end_by = start + timeout
    phase = "DNS lookup"
    sock = None

    def left() -> float:
        remaining = end_by - clock()
        if remaining <= 0:
            raise TimeoutError
        return remaining

    def ms(since: float) -> float:
        return round((clock() - since) * 1000.0, 3)

    try:
        addresses = resolve(ep.host, ep.port, left())
        sample["dns_ms"] = ms(start)
        phase = "TCP connect"
        began = clock()
        last_exc: OSError | None = None
        for family, kind, proto, _, sockaddr in addresses:
            # Every address in order, as a client library would; the connect
            # time includes the failed ones.
            candidate = socket.socket(family, kind, proto)
            try:
                candidate.settimeout(left())
                candidate.connect(sockaddr)
            except OSError as exc:
                candidate.close()
                last_exc = exc
                if isinstance(exc, TimeoutError):
                    raise
                continue
            sock = candidate
            sample["address"] = norm_ip(sockaddr[0])
            break
        if sock is None:
            raise last_exc or OSError(f"no address for {ep.host}")
        sample["connect_ms"] = ms(began)
        if ep.kind == "tcp":
            sample["total_ms"] = ms(start)
            return sample
        if ep.kind == "https":
            phase = "TLS handshake"
            began = clock()
            sock.settimeout(left())
            sock = tls.wrap_socket(sock, server_hostname=ep.host)
            sample["tls_ms"] = ms(began)
        phase = "HTTP response"
        sock.settimeout(left())
        sock.sendall(_request(ep))
        began = clock()
        head = b""
        while b"\r\n\r\n" not in head and len(head) < MAX_HEADER_BYTES:
            sock.settimeout(left())
            chunk = sock.recv(8192)
            if not chunk:
                break
            if not head:
                sample["ttfb_ms"] = ms(began)
            head += chunk
        if not head:
            sample.update(error=f"{ep.host}:{ep.port} closed the connection without an HTTP response",
                          error_kind="no_response")
            return sample
        sample["total_ms"] = ms(start)
        status = parse_status_line(head.split(b"\r\n", 1)[0])
        sample["status"] = status
        if status is None:
            sample.update(error=f"{ep.host}:{ep.port} did not answer with HTTP", error_kind="not_http")
        elif status >= 500:
            sample.update(error=f"HTTP {status} from {ep.host}:{ep.port}", error_kind="http_5xx")
    except TimeoutError:
        sample.update(error=f"timed out after {timeout:.3g}s during {phase} to {ep.host}:{ep.port}",
                      error_kind="timeout", timed_out=True)
    except socket.gaierror as exc:
        sample.update(error=f"DNS lookup of {ep.host} failed: {exc.strerror or exc} (check the host name)",
                      error_kind="dns")
    except ConnectionRefusedError:
        sample.update(error=f"connection refused by {ep.host}:{ep.port} (nothing listening there?)",
                      error_kind="refused")
    except ssl.SSLCertVerificationError as exc:
        sample.update(error=f"TLS certificate of {ep.host}:{ep.port} not trusted: "
                            f"{exc.verify_message or exc.reason} (set insecure_tls = true under "
                            "[probes.dependencies] to time it without verification)", error_kind="tls")
    except ssl.SSLError as exc:
        sample.update(error=f"TLS handshake with {ep.host}:{ep.port} failed: {exc.reason or exc}",
                      error_kind="tls")
    except OSError as exc:
        sample.update(error=f"{phase} to {ep.host}:{ep.port} failed: {exc.strerror or exc}", error_kind="network")
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
    return sample


# ---------------------------------------------------------------- discovery

def target_pids(ctx: ProbeContext) -> tuple[dict[int, str], list[str]]:
    """{pid: how it became a target} from --pid, --process and broker-side discovery."""
    selection = target_processes.select(ctx.targets, ctx.discovered, deadline=ctx.deadline)
    notes = list(selection.notes)
    notes += [f"pid {pid} (--pid) no longer exists: its connections were not read" for pid in selection.missing]
    return {pid: selection.how(pid) for pid in selection.targets}, notes


def _host_port(value: str) -> tuple[str, int] | None:
    value = value.strip()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.rsplit("@", 1)[-1].split("/", 1)[0]
    match = re.match(r"^\[?([^\]]+?)\]?:(\d{1,5})$", value)
    if not match:
        return None
    return match.group(1), int(match.group(2))


def broker_addresses(ctx: ProbeContext) -> list[tuple[str, int]]:
    """host:port of the brokers under diagnosis (and of [probes.dependencies] exclude)."""
    t = ctx.targets
    pairs: list[tuple[str, int]] = []
    if t.kafka is not None:
        pairs += [hp for hp in (_host_port(s) for s in t.kafka.bootstrap) if hp]
    if t.rabbitmq is not None:
        pairs.append((t.rabbitmq.host, t.rabbitmq.port))
        pairs += [(t.rabbitmq.host, port) for port in _AMQP_PORTS if port != t.rabbitmq.port]
    if t.redis is not None:
        pairs.append((t.redis.host, t.redis.port))
    for item in ctx.options["exclude"]:
        hp = _host_port(str(item))
        if hp is None:
            raise ProbeError(f"[probes.dependencies] exclude: '{item}' is not HOST:PORT (write e.g. \"db.internal:5432\")")
        pairs.append(hp)
    return pairs


def _ips_of(host: str, port: int, timeout: float) -> set[str]:
    ips = {norm_ip(host)}
    try:
        ips.update(norm_ip(info[4][0]) for info in resolve(host, port, timeout))
    except (OSError, TimeoutError):
        pass  # an unresolvable broker name only loses its exclusion
    return ips


def address_set(pairs: list[tuple[str, int]], timeout: float) -> set[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    for host, port in pairs:
        out.update((ip, port) for ip in _ips_of(host, port, timeout))
    return out


def _connections(pid: int) -> list:
    import psutil

    proc = psutil.Process(pid)
    lister = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6 has only connections()
    return lister(kind="tcp")


def outbound_peers(conns: list) -> list[tuple[str, int]]:
    """Remote (ip, port) of a process's established outbound TCP connections.

    Left out: connections accepted by the process's own listeners (their peer
    is a client, not a dependency) and connections to itself over loopback."""
    import psutil

    listening = {(norm_ip(c.laddr.ip), c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN and c.laddr}
    listen_ports = {port for _, port in listening}
    own_ends = {(norm_ip(c.laddr.ip), c.laddr.port) for c in conns if c.laddr}
    peers = []
    for c in conns:
        if c.status != psutil.CONN_ESTABLISHED or not c.raddr or not c.laddr:
            continue
        if c.laddr.port in listen_ports:
            continue  # inbound
        peer = (norm_ip(c.raddr.ip), c.raddr.port)
        if peer in own_ends or (_is_loopback(peer[0]) and peer[1] in listen_ports):
            continue  # the process talking to itself
        peers.append(peer)
    return peers


def discover_endpoints(ctx: ProbeContext, known: set[tuple[str, int]], limit: int) -> tuple[list[Endpoint], list[str], int]:
    """Endpoints the target processes are connected to, busiest first.
    Returns (endpoints, notes, number of target processes looked at)."""
    import psutil

    pids, notes = target_pids(ctx)
    if not pids:
        return [], notes, 0
    excluded = address_set(broker_addresses(ctx), ctx.io_timeout(1.0))
    by_peer: dict[tuple[str, int], dict] = {}
    looked = 0
    for pid in sorted(pids):
        try:
            conns = _connections(pid)
        except psutil.NoSuchProcess:
            notes.append(f"pid {pid} ({pids[pid]}) no longer exists: its connections were not read")
            continue
        except psutil.AccessDenied:
            notes.append(f"cannot list the connections of pid {pid}: access denied (run qdiag as root or as that process's user)")
            continue
        except OSError as exc:
            notes.append(f"cannot list the connections of pid {pid}: {exc.strerror or exc}")
            continue
        looked += 1
        for peer in outbound_peers(conns):
            if peer in excluded or peer in known:
                continue
            entry = by_peer.setdefault(peer, {"connections": 0, "pids": set()})
            entry["connections"] += 1
            entry["pids"].add(pid)
    ranked = sorted(by_peer.items(), key=lambda kv: (-kv[1]["connections"], kv[0]))
    if len(ranked) > limit:
        notes.append(f"{len(ranked) - limit} more discovered endpoint(s) left out "
                     f"(max_discovered = {limit} under [probes.dependencies])")
    endpoints = [Endpoint(tcp_label(ip, port), "tcp", ip, port, discovered=True, pids=tuple(sorted(e["pids"])),
                          connections=e["connections"]) for (ip, port), e in ranked[:limit]]
    return endpoints, notes, looked


# ---------------------------------------------------------------- the probe

def _endpoint_doc(ep: Endpoint, samples: list[dict], complete: bool, insecure: bool) -> dict:
    addresses = {s["address"] for s in samples if s.get("address")}
    if ep.discovered:
        addresses.add(ep.host)
    doc = {"url": ep.label, "kind": ep.kind, "host": ep.host, "port": ep.port,
           "addresses": sorted(addresses),
           # "ip:port" as the threads probe names a socket's peer, for matching
           # threads blocked in socket I/O to a slow endpoint.
           "peers": [format_endpoint(ip, ep.port) for ip in sorted(addresses)],
           "discovered": ep.discovered, "pids": list(ep.pids),
           "connections": ep.connections if ep.discovered else None,
           "tls_verify": (not insecure) if ep.kind == "https" else None,
           "complete": complete}
    doc.update(summarize(samples))
    return doc


@register("dependencies", timeout_s=10, uses_discovery=True,
          description="Downstream latency: DNS, TCP connect, TLS, time to first byte and HTTP status per endpoint",
          options=(
              Option("samples", "int", DEFAULTS["samples"], "samples per endpoint over the window", low=2, high=20),
              Option("request_timeout", "float", DEFAULTS["request_timeout"], "seconds one sample may take",
                     low=0.05, high=60),
              Option("insecure_tls", "bool", DEFAULTS["insecure_tls"], "skip certificate verification for https"),
              Option("ca_file", "path", DEFAULTS["ca_file"], "PEM bundle of an internal CA, trusted besides the system's"),
              Option("discover", "bool", DEFAULTS["discover"], "add endpoints from the consumers' connections"),
              Option("max_discovered", "int", DEFAULTS["max_discovered"], "discovered endpoints timed", low=0, high=100),
              Option("workers", "int", DEFAULTS["workers"], "endpoints timed at once", low=1, high=32),
              Option("exclude", "list", DEFAULTS["exclude"], "HOST:PORT never reported as discovered"),
          ), diagnosis=_dependencies_facts.CONTRIBUTION)
def collect(ctx: ProbeContext) -> dict:
    count = ctx.options["samples"]
    request_timeout = ctx.options["request_timeout"]
    insecure = ctx.options["insecure_tls"]
    ca_file = ctx.options["ca_file"] or ""
    discover = ctx.options["discover"]
    limit = ctx.options["max_discovered"]
    workers = ctx.options["workers"]
    notes: list[str] = []

    endpoints: list[Endpoint] = []
    for url in ctx.targets.dependencies:
        try:
            endpoints.append(parse_endpoint(url))
        except ValueError as exc:
            notes.append(f"--dependency {exc}: not timed")
    looked = 0
    if discover:
        known = set()
        for ep in endpoints:
            known.update((ip, ep.port) for ip in _ips_of(ep.host, ep.port, ctx.io_timeout(1.0)))
        found, more_notes, looked = discover_endpoints(ctx, known, limit)
        endpoints += found
        notes += more_notes
    if not endpoints:
        why = "no dependency to time: give --dependency URL"
        if looked:
            why += f" (the {looked} target process(es) hold no outbound connection besides the brokers)"
        elif discover:
            why += " or --pid/--process of a consumer whose connections can be read"
            if notes:
                why += f" ({notes[0]})"
        raise NotApplicable(why)

    tls = _tls_context(insecure, ca_file) if any(ep.kind == "https" for ep in endpoints) else None
    if insecure:
        notes.append("TLS certificates not verified (insecure_tls = true)")
    collected: list[list[dict]] = [[] for _ in endpoints]
    finished = [False] * len(endpoints)
    todo: queue.Queue[int] = queue.Queue()
    for index in range(len(endpoints)):
        todo.put(index)
    redact = Redactor(ctx.targets.secrets())
    lock = threading.Lock()

    def docs() -> list[dict]:
        return [_endpoint_doc(ep, list(collected[i]), finished[i], insecure) for i, ep in enumerate(endpoints)]

    def publish() -> None:
        # Replaced whole, never mutated: the runner may copy it at the deadline.
        with lock:
            ctx.partial["endpoints"] = redact(docs())

    ctx.partial.update({"endpoints": [], "notes": notes})

    def time_endpoint(index: int) -> None:
        ep = endpoints[index]
        for when in ctx.sample_times(count):
            if when > ctx.deadline - SAMPLE_STOP_S:
                return  # started too late for this one (more endpoints than workers)
            try:
                ctx.sleep_until(when)
            except DeadlineReached:
                return
            budget = min(request_timeout, ctx.remaining() - SAMPLE_STOP_S)
            if budget < 0.05:
                return
            collected[index].append(take_sample(ep, ctx.io_timeout(budget), tls))
            publish()
        finished[index] = True

    def worker() -> None:
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            time_endpoint(index)

    # Daemon threads: every socket call has a timeout, but a thread cannot be
    # killed, and none may keep qdiag from exiting.
    threads = [threading.Thread(target=worker, name=f"qdiag-dep-{i}", daemon=True)
               for i in range(min(workers, len(endpoints)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, ctx.deadline - SUMMARY_RESERVE_S - ctx.clock()))
    unfinished = sum(1 for done in finished if not done)
    if unfinished:
        notes.append(f"{unfinished} endpoint(s) not fully sampled before the deadline")

    return redact({
        "endpoints": docs(),
        "samples_per_endpoint": count,
        "request_timeout_s": request_timeout,
        "insecure_tls": insecure,
        "target_processes": looked,
        "notes": notes,
    })
