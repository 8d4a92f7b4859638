"""What the kernel says a thread is waiting for, and where a process's threads
spent a window: pure functions over samples that probes/_kernel_sampler.py reads.

One sample of a thread is its state letter (/proc/.../stat), its system call
with the raw arguments (/proc/.../syscall), sometimes the kernel function it
sleeps in (wchan), and the file descriptors that call waits on, each resolved
to what it is (a TCP connection and its peer, a pipe, a Unix socket...).  The
classification follows the mechanism, never a function or thread name:

- state R: on a CPU (or runnable; schedstat separates the two);
- state D: uninterruptible, usually disk or NFS; the wchan names where
  (__refrigerator: the v1 cgroup freezer holds it);
- futex, semop, file locks: waiting for a lock or a condition (idle worker
  pools wait here too: a futex wait alone is not contention);
- nanosleep, clock_nanosleep, a poll on no fds, a timerfd: sleeping;
- wait4, waitid: waiting for a child process;
- read/recv/send/accept/connect on an fd, poll/select on fds read from the
  process's memory, epoll_wait on the fds its fdinfo lists: waiting on what
  those fds are.  A socket whose peer port is a broker's is idle on the broker.

Syscall numbers are per architecture: x86-64 and aarch64 are known; on others
(and for 32-bit processes) only the state and wchan are used.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from statistics import median
from typing import Iterable, Mapping, NamedTuple

from qdiag.endpoints import port_of

from ._proc_parse import fd_target

# ---------------------------------------------------------------- system calls

_X86_64 = {
    0: "read", 1: "write", 7: "poll", 17: "pread64", 19: "readv", 20: "writev", 23: "select",
    24: "sched_yield", 34: "pause", 35: "nanosleep", 42: "connect", 43: "accept", 44: "sendto",
    45: "recvfrom", 46: "sendmsg", 47: "recvmsg", 61: "wait4", 65: "semop", 70: "msgrcv", 72: "fcntl",
    73: "flock", 128: "rt_sigtimedwait", 130: "rt_sigsuspend", 202: "futex", 208: "io_getevents",
    219: "restart_syscall", 220: "semtimedop", 230: "clock_nanosleep", 232: "epoll_wait",
    243: "mq_timedreceive", 247: "waitid", 270: "pselect6", 271: "ppoll", 281: "epoll_pwait",
    288: "accept4", 299: "recvmmsg", 307: "sendmmsg", 426: "io_uring_enter", 441: "epoll_pwait2",
    449: "futex_waitv", 455: "futex_wait",
}
# The generic table (include/uapi/asm-generic/unistd.h): no poll, select or epoll_wait there.
_AARCH64 = {
    4: "io_getevents", 22: "epoll_pwait", 25: "fcntl", 32: "flock", 63: "read", 64: "write", 65: "readv",
    66: "writev", 67: "pread64", 72: "pselect6", 73: "ppoll", 95: "waitid", 98: "futex", 101: "nanosleep",
    115: "clock_nanosleep", 124: "sched_yield", 128: "restart_syscall", 133: "rt_sigsuspend",
    137: "rt_sigtimedwait", 183: "mq_timedreceive", 188: "msgrcv", 192: "semtimedop", 193: "semop",
    202: "accept", 203: "connect", 206: "sendto", 207: "recvfrom", 211: "sendmsg", 212: "recvmsg",
    242: "accept4", 243: "recvmmsg", 260: "wait4", 269: "sendmmsg", 426: "io_uring_enter",
    441: "epoll_pwait2", 449: "futex_waitv", 455: "futex_wait",
}
SYSCALL_TABLES = {"x86_64": _X86_64, "aarch64": _AARCH64}

_FD_FIRST = {"read", "readv", "pread64", "recvfrom", "recvmsg", "recvmmsg", "accept", "accept4", "connect",
             "write", "writev", "sendto", "sendmsg", "sendmmsg"}
_POLL = {"poll", "ppoll"}
_SELECT = {"select", "pselect6"}
_EPOLL = {"epoll_wait", "epoll_pwait", "epoll_pwait2"}
_LOCK = {"futex", "futex_waitv", "futex_wait", "semop", "semtimedop", "flock"}
_SLEEP = {"nanosleep", "clock_nanosleep", "pause", "rt_sigsuspend", "rt_sigtimedwait"}
_CHILD = {"wait4", "waitid"}
F_SETLKW, F_OFD_SETLKW = 7, 38
FUTEX_CMD_MASK = 0x7F  # without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME
MAX_POLL_FDS = 256  # pollfd entries read from memory per call
FD_SETSIZE = 1024

KINDS = ("cpu", "disk", "lock", "sleep", "peer", "broker", "child", "local", "other", "unknown", "unreadable")
"""cpu: state R.  disk: state D.  lock: futex or other lock/condition wait.  sleep: a timed sleep.
peer: a socket to a peer that is not a broker.  broker: a socket to a broker (idle: waiting for it).
child: waiting for a child process.  local: a pipe, tty, eventfd, listening or unnamed Unix socket.
other: another system call (named).  unknown: the kernel's answer does not tell.  unreadable: the
files could not be read (permissions, or the thread went away)."""


def syscall_name(machine: str | None, nr: int | None) -> str | None:
    table = SYSCALL_TABLES.get(machine or "")
    return None if table is None or nr is None else table.get(nr)


class FdRequest(NamedTuple):
    """Which fds a blocked call waits on, and where to find them."""
    fds: tuple[int, ...] = ()          # named directly in the arguments
    pollfd: tuple[int, int] | None = None    # (address of struct pollfd[], count) in process memory
    fdsets: tuple[int, tuple[int, ...]] | None = None  # (nfds, addresses of the read and write fd_sets)
    epoll: int | None = None           # an epoll fd: its fdinfo lists the watched fds


def fd_request(name: str | None, args: tuple[int, ...]) -> FdRequest | None:
    """What the sampler must read to learn the fds of this call; None when it waits on no fd."""
    if name in _FD_FIRST:
        return FdRequest(fds=(_as_int(args[0]),))
    if name in _POLL:
        return FdRequest(pollfd=(args[0], min(args[1], MAX_POLL_FDS)))
    if name in _SELECT:
        return FdRequest(fdsets=(min(_as_int(args[0]), FD_SETSIZE), tuple(a for a in args[1:3] if a)))
    if name in _EPOLL:
        return FdRequest(epoll=_as_int(args[0]))
    return None


def _as_int(raw: int) -> int:
    """A register holding a C int: the low 32 bits, signed."""
    raw &= 0xFFFFFFFF
    return raw - (1 << 32) if raw >= 1 << 31 else raw


def fd_set_bytes(nfds: int) -> int:
    """Bytes to read for an fd_set covering fds below nfds (whole longs, as the kernel copies)."""
    return ((max(nfds, 0) + 63) // 64) * 8


# ---------------------------------------------------------------- one sample


class Wait(NamedTuple):
    """What one thread waited on in one sample: parts share the sample's weight
    equally (an event loop on three sockets waits on all three)."""
    parts: tuple[tuple[str, str | None], ...]
    detail: str | None = None  # the system call or kernel function, for people


_UNRESOLVED = re.compile(r"^socket:\[(\d+)\]$")


def resolve_late(wait: Wait, sockets: Mapping[int, dict], listening: frozenset[int],
                 broker_ports: Mapping[int, str], own: frozenset[str] = frozenset()) -> Wait:
    """A wait on a socket that was not in the tables when sampled, resolved from a later read.

    A client that opens a connection per request (urllib, requests without a session) waits
    on a socket younger than the last table read; socket inodes are unique while the socket
    lives, and a later read made during the same request names its peer."""
    if not any(kind == "unknown" and target and _UNRESOLVED.match(target) for kind, target in wait.parts):
        return wait
    parts = []
    for kind, target in wait.parts:
        match = _UNRESOLVED.match(target or "") if kind == "unknown" else None
        if match:
            fd = resolve_fd(-1, target, sockets, listening, own)
            if fd["kind"] in ("tcp", "udp") and fd["peer"]:
                port = port_of(fd["peer"])
                kind, target = ("broker" if port in broker_ports else "peer"), fd["peer"]
            elif fd["kind"] in ("inbound", "selfpair"):
                kind, target = "local", fd["label"]
        parts.append((kind, target))
    return Wait(tuple(dict.fromkeys(parts)), wait.detail)


def _one(kind: str, target: str | None = None, detail: str | None = None) -> Wait:
    return Wait(((kind, target),), detail)


def classify(state: str | None, call: str | None, args: tuple[int, ...], wchan: str | None,
             fds: list[dict] | None, *, syscall_readable: bool = True, fd_problem: str | None = None,
             broker_ports: Mapping[int, str] | None = None, awaiting: set[str] | None = None) -> Wait:
    """One thread sample -> Wait.

    state: the stat letter (None when unreadable).  call: the system call's
    name ("running" when the kernel says so, None when unknown).  fds: the fds
    the call waits on, resolved by resolve_fd() (None when not read).
    broker_ports: {port: broker kind}.  awaiting: peers whose connection has
    sent a request and not yet had an answer (from TCP info), to tell which
    socket of an event loop is the one waited for.
    """
    if state is None:
        return _one("unreadable", None, "thread stat")
    if state == "R" or call == "running":
        return _one("cpu")
    if state == "D":
        if (wchan or "").startswith("__refrigerator"):  # the v1 cgroup freezer holds it, not a disk
            return _one("other", "frozen", "held by the cgroup freezer")
        return _one("disk", wchan, call)
    if state in ("T", "t"):
        return _one("other", "stopped", "stopped by a signal or a debugger")
    if state in ("Z", "X"):
        return _one("other", "exiting")
    if call in _LOCK or (call == "fcntl" and len(args) > 1 and args[1] in (F_SETLKW, F_OFD_SETLKW)):
        target = f"futex 0x{args[0]:x}" if call in ("futex", "futex_wait") and args else (
            "file lock" if call in ("flock", "fcntl") else call)
        return _one("lock", target, call)
    if call in _SLEEP:
        return _one("sleep", None, call)
    if call in _CHILD:
        return _one("child", None, call)
    if call == "restart_syscall":  # an interrupted sleep or poll resuming: its arguments are gone
        return _from_wchan(wchan, syscall_readable)
    if call is not None and fd_request(call, args) is not None:
        if fd_problem is not None:
            return _one("unreadable", None, f"{call}: {fd_problem}")
        return _fd_wait(call, fds or [], broker_ports or {}, awaiting)
    if call is not None:
        return _one("other", call, call)
    return _from_wchan(wchan, syscall_readable)


# Kernel functions a thread sleeps in while a poll or select resumes, and
# while a futex wait does (the names carry suffixes such as ".constprop.0").
_POLL_WCHANS = ("poll_schedule_timeout", "do_sys_poll", "do_restart_poll", "do_select", "core_sys_select")
_FUTEX_WCHANS = ("futex",)


def resumed_call(previous_call: str | None, previous_args: tuple[int, ...], wchan: str | None
                 ) -> tuple[str, tuple[int, ...]] | None:
    """The call a thread shown in restart_syscall is still in, from its sample one tick before.

    A poll() or a futex wait with a timeout that is interrupted (a signal, a
    SIGSTOP/SIGCONT, a debugger or py-spy attaching with ptrace) is resumed by
    the kernel as restart_syscall, with the original arguments kept where
    /proc does not show them (the task's restart block): from then on every
    sample of that thread would say "unknown", for as long as it waits.  When
    the thread was in poll/select or a futex wait at the previous sample and
    the kernel function it sleeps in is still that call's, it is the same
    wait: the same pollfd array (still in the thread's memory, read afresh)
    and the same futex word.  None when that cannot be said."""
    w = wchan or ""
    if previous_call in _POLL | _SELECT and w.startswith(_POLL_WCHANS):
        return previous_call, previous_args
    if previous_call in ("futex", "futex_wait") and w.startswith(_FUTEX_WCHANS):
        return previous_call, previous_args
    return None


def needs_wchan(state: str | None, call: str | None) -> bool:
    """Whether classify() will look at the wchan (read it only then: one file less per sample)."""
    return state == "D" or (state == "S" and call in (None, "restart_syscall"))


def _from_wchan(wchan: str | None, syscall_readable: bool) -> Wait:
    """When the system call is unknown (unreadable, unsupported architecture,
    or the thread blocks outside one), the kernel function still tells some."""
    w = wchan or ""
    if w.startswith("futex"):
        return _one("lock", None, w)
    if "nanosleep" in w:
        return _one("sleep", None, w)
    if w == "do_wait":
        return _one("child", None, w)
    return _one("unknown" if syscall_readable else "unreadable", None, w or None)


_WAKE_CHANNELS = {"eventfd", "signalfd", "inotify"}
SELF_PAIR = "socketpair over loopback"


def _fd_wait(call: str, fds: list[dict], broker_ports: Mapping[int, str], awaiting: set[str] | None) -> Wait:
    network: list[tuple[str, str]] = []
    local: list[tuple[str, str]] = []
    unresolved: list[tuple[str, str]] = []
    timers = 0
    for fd in fds:
        kind, peer = fd.get("kind"), fd.get("peer")
        if kind in ("tcp", "udp", "unix") and peer:
            port = port_of(peer) if kind != "unix" else None
            network.append(("broker" if port is not None and port in broker_ports else "peer", peer))
        elif kind == "anon" and fd.get("detail") == "timerfd":
            timers += 1
        elif kind in ("socket", "unreadable"):  # not (yet) in the socket tables, or its link unreadable
            unresolved.append(("unknown", fd.get("label") or kind))
        elif kind != "closed":
            local.append(("local", fd.get("label") or kind or "fd"))
    if network:
        waited = [p for p in network if p[0] == "peer" and awaiting and p[1] in awaiting]
        if waited:  # of several sockets, the ones with a request out are what the loop waits for
            return Wait(tuple(dict.fromkeys(waited)), call)
        return Wait(tuple(dict.fromkeys(network)), call)
    if unresolved:
        return Wait(tuple(dict.fromkeys(unresolved)), call)
    # Event loops keep a wake-up channel (eventfd, pipe, socketpair) beside their real fds.
    real = [p for p in local if p[1] not in _WAKE_CHANNELS and p[1] not in ("pipe", "unix", SELF_PAIR)] or local
    if real:
        return Wait(tuple(dict.fromkeys(real)), call)
    if timers or not fds:
        return _one("sleep", None, call)  # poll(NULL, 0, timeout) and timerfd reads are sleeps
    return _one("local", "closed fds", call)


def listening_ports(sockets: Mapping[int, dict]) -> frozenset[int]:
    """The ports the process's own listening sockets accept on."""
    return frozenset(p for p in (port_of(r.get("local", "")) for r in sockets.values()
                                 if r.get("state") == "LISTEN") if p is not None)


def own_ends(sockets: Mapping[int, dict]) -> frozenset[str]:
    """The local "ip:port" of every TCP socket of the process: a connection whose remote end
    is one of them is the process talking to itself (see resolve_fd)."""
    return frozenset(r["local"] for r in sockets.values() if r.get("proto") == "tcp" and r.get("local"))


def resolve_fd(fd: int, link: str | None, sockets: Mapping[int, dict], listening: frozenset[int] = frozenset(),
               own: frozenset[str] = frozenset()) -> dict:
    """One fd -> {"fd", "kind", "peer", "label", ...} from its /proc/<pid>/fd link and the
    process's socket table ({inode: row} with "proto" tcp/udp/unix, "remote" or "name").

    kind: tcp, udp, unix, pipe, anon, file, socket (of another family), closed; inbound for a
    connection one of the process's own listeners accepted (`listening`: their ports): a
    server waiting there waits for its clients' requests, not on a dependency; selfpair for a
    TCP connection whose other end is the process itself (`own`: its sockets' local
    addresses): the wake-up channel some event loops build over loopback where a
    socketpair() would do (pika's pollers among them), never a dependency.
    peer: "ip:port" of a connected TCP/UDP socket, "unix:/path" of a Unix socket
    whose peer is bound to a path; None otherwise.
    """
    if link is None:
        return {"fd": fd, "kind": "closed", "peer": None, "label": None}
    kind, detail = fd_target(link)
    if kind == "socket":
        row = sockets.get(detail)
        if row is None:  # not (yet) in the tables: the label keeps the inode, to resolve it later
            return {"fd": fd, "kind": "socket", "peer": None, "label": f"socket:[{detail}]", "inode": detail}
        proto = row["proto"]
        if proto == "unix":
            name = row.get("peer_name")
            return {"fd": fd, "kind": "unix", "peer": f"unix:{name}" if name else None, "label": "unix",
                    "inode": detail}
        if row.get("state") == "LISTEN" or row.get("remote", "").endswith(":0"):
            return {"fd": fd, "kind": proto, "peer": None, "label": f"listen {row['local']}"
                    if row.get("state") == "LISTEN" else f"{proto} {row['local']}", "inode": detail}
        if proto == "tcp" and port_of(row.get("local", "")) in listening:
            return {"fd": fd, "kind": "inbound", "peer": None, "label": f"clients on :{port_of(row['local'])}",
                    "inode": detail}
        if proto == "tcp" and row.get("remote") in own:
            return {"fd": fd, "kind": "selfpair", "peer": None, "label": SELF_PAIR, "inode": detail}
        return {"fd": fd, "kind": proto, "peer": row["remote"], "label": row["remote"], "inode": detail}
    if kind == "pipe":
        return {"fd": fd, "kind": "pipe", "peer": None, "label": "pipe", "inode": detail}
    if kind == "anon":
        return {"fd": fd, "kind": "anon", "peer": None, "label": detail, "detail": detail}
    return {"fd": fd, "kind": "file", "peer": None, "label": detail}


# ---------------------------------------------------------------- protocols

WELL_KNOWN_PORTS = {
    53: "dns", 80: "http", 443: "https", 1433: "mssql", 1521: "oracle", 2181: "zookeeper", 3306: "mysql",
    4222: "nats", 5432: "postgresql", 5671: "amqps", 5672: "amqp", 6379: "redis", 8000: "http",
    8080: "http", 8443: "https", 9042: "cassandra", 9092: "kafka", 9200: "elasticsearch",
    11211: "memcached", 27017: "mongodb",
}


def protocol_guess(peer: str) -> str | None:
    """The protocol a well-known port suggests.  Only a guess from the port number:
    a service on a non-standard port gets None, never a wrong name made certain."""
    port = port_of(peer)
    return WELL_KNOWN_PORTS.get(port) if port is not None else None


# ---------------------------------------------------------------- TCP info over the window

ANSWER_SLACK_MS = 20  # TCP info times are jiffies: a few ms coarse
SYN_BYTES = 1  # bytes_acked counts the SYN of a connection opened in the window


def awaiting_answer(info: Mapping) -> bool:
    """A request/response connection whose last data sent is more recent than
    the last data received has a request out with no answer yet.

    The stamps are whole milliseconds (jiffies), so a send and a receive in the
    same one need a tie-break.  The request is out if nothing was ever received
    (on a fresh connection the "last receive" is the SYN-ACK, and the request
    follows the handshake within the millisecond), if the data sent is still
    unacknowledged, or if an ACK came in after that receive.  Otherwise it was
    answered within the millisecond.  A connection that never sent data has no
    request out.
    """
    sent, recv = info.get("last_data_sent_ms"), info.get("last_data_recv_ms")
    if sent is None or recv is None or info.get("data_segs_out", 1) == 0:
        return False
    if sent != recv:
        return sent < recv
    return (info.get("bytes_received") == 0 or info.get("unacked", 0) > 0
            or info.get("last_ack_recv_ms", recv) < recv)


def connection_requests(series: list[tuple[float, Mapping]]) -> list[dict]:
    """[(monotonic seconds, tcp_info)] of one connection, in time order -> the
    requests seen outstanding: [{"wait_ms", "exact"}].

    TCP info gives the time since the last data sent and received; turned into
    absolute stamps they name each request (its send stamp) and its answer
    (the first receive stamp after it).  When the answer is seen at a later
    sample the wait is exact, from the kernel's own stamps, whatever the
    sampling interval.  When the connection closes first (one request per
    connection) or the window ends, the longest wait seen is a lower bound,
    short by at most one sampling interval.  A second request sent before the
    answer (pipelining) makes the pair ambiguous: that request keeps its lower bound.
    """
    requests: list[dict] = []
    previous = None  # (sent stamp, recv stamp, request) of the previous sample
    for t, info in series:
        if "last_data_sent_ms" not in info or "last_data_recv_ms" not in info:
            continue
        now = t * 1000.0
        sent, recv = now - info["last_data_sent_ms"], now - info["last_data_recv_ms"]
        if previous is not None and previous[2] is not None and previous[2]["answer"] is None:
            sent0, request = previous[0], previous[2]
            answered = recv > sent0 + ANSWER_SLACK_MS / 2
            same_request = abs(sent - sent0) <= ANSWER_SLACK_MS
            if answered and (same_request or sent > recv):
                request["answer"] = recv - sent0
        current = None
        if awaiting_answer(info):
            if previous is not None and previous[2] is not None and abs(sent - previous[0]) <= ANSWER_SLACK_MS:
                current = previous[2]
            else:
                current = {"sent": sent, "longest": 0.0, "answer": None}
                requests.append(current)
            current["longest"] = max(current["longest"], float(info["last_data_sent_ms"]))
        previous = (current["sent"] if current else sent, recv, current)
    return [{"wait_ms": round(r["answer"] if r["answer"] is not None else r["longest"], 1),
             "exact": r["answer"] is not None} for r in requests]


def request_waits(requests: list[dict]) -> dict:
    """connection_requests() of one or more connections -> count, median, max, and how many were exact."""
    waits = [r["wait_ms"] for r in requests]
    return {"requests": len(waits), "exact": sum(1 for r in requests if r["exact"]),
            "median_ms": round(median(waits), 1) if waits else None, "max_ms": max(waits) if waits else None}


def summarise_connection(series: list[tuple[float, Mapping]], opened_in_window: bool = False) -> dict:
    """[(monotonic seconds, tcp_info)] of one connection -> its passive latency view:
    rtt, the share of samples it sat waiting for an answer, the requests' waits,
    bytes out and in over the window (from zero for a connection opened in it)."""
    if not series:
        return {"samples": 0}
    first, last = series[0][1], series[-1][1]
    rtts = [info["rtt_us"] for _, info in series if "rtt_us" in info]

    def delta(key, opened_with=0):
        if key not in last or key not in first:
            return None
        start = opened_with if opened_in_window else first[key]
        return last[key] - start if last[key] >= start else None

    return {
        "samples": len(series),
        "state": last.get("state"),
        "rtt_ms": round(median(rtts) / 1000.0, 3) if rtts else None,
        "rtt_ms_max": round(max(rtts) / 1000.0, 3) if rtts else None,
        "awaiting_answer_share": round(sum(1 for _, info in series if awaiting_answer(info)) / len(series), 3),
        "request_waits": request_waits(connection_requests(series)),
        "unacked_max": max((info.get("unacked", 0) for _, info in series), default=None),
        "bytes_out": delta("bytes_acked", SYN_BYTES),
        "bytes_in": delta("bytes_received"),
        "retransmits": delta("total_retrans"),
    }


# ---------------------------------------------------------------- one process over the window


def _signature(sample: Mapping) -> tuple:
    return sample.get("state"), sample.get("call"), tuple(sample.get("args") or ()), sample.get("wchan")


# A ptrace stop (py-spy's blocking dump attaches to every thread) interrupts a
# futex wait: the kernel restarts it once the thread is resumed, which takes a
# timeslice or two of a few microseconds.  Allowed per interruption.
WAKES_PER_INTERRUPTION = 2
RUN_NS_PER_INTERRUPTION = 1_000_000


def thread_never_woke(track: Mapping, interruptions: int = 0) -> bool:
    """The same wait in every sample, and the scheduler never ran the thread in
    between (its count of timeslices did not move; CPU ticks when schedstat is
    missing), but for the restarts `interruptions` ptrace stops of the process
    cost (qdiag's own thread dumps).  Needs two samples or more."""
    samples = track["samples"]
    if len(samples) < 2 or samples[0].get("state") not in ("S", "D"):
        return False
    first = _signature(samples[0])
    if any(_signature(s) != first for s in samples[1:]):
        return False
    sched = track.get("sched")
    if sched and sched[0] is not None and sched[1] is not None:
        runs, ran_ns = sched[1][2] - sched[0][2], sched[1][0] - sched[0][0]
        return runs == 0 or (runs <= WAKES_PER_INTERRUPTION * interruptions
                             and ran_ns <= RUN_NS_PER_INTERRUPTION * interruptions)
    ticks = track.get("cpu_ticks")
    return bool(ticks) and ticks[0] is not None and ticks[0] == ticks[1]


def summarise_process(threads: Mapping[int, Mapping], connections: Mapping[int, Mapping], *,
                      broker_ports: Mapping[int, str] | None = None, clk_tck: int = 100,
                      max_threads_listed: int = 64, interruptions: int = 0) -> dict:
    """Per-thread samples and per-connection TCP info of one process -> its wait attribution.

    threads: {tid: {"comm", "samples": [{"t", "state", "call", "args", "wchan", "wait": Wait}],
    "cpu_ticks": (first, last), "sched": (first, last) of (run ns, wait ns, timeslices)}}.
    connections: {inode: {"local", "remote", "series": [(t, tcp_info)], "opened_in_window": bool}}.

    Returns (every share is of all sampled thread-time: samples x threads):
      thread_samples   int
      shares           {kind: share} for every kind in KINDS; None when nothing was sampled
      attribution      [{"kind", "target", "share", "threads", "max_thread_share",
                         "protocol_guess" (peer/broker only)}], largest first.  target: "ip:port",
                         "unix:/path", "futex 0x...", "file lock", a wchan, a local fd label, or None.
                         max_thread_share: the largest share of ONE thread's time spent there
                         (one consumer thread out of 20 waiting on a peer all window reads 0.05 / 1.0).
      threads          [{"tid", "name", "samples", "dominant": {"kind", "target", "share"}, "detail"
                         (the most common syscall or wchan), "states": {letter: n}, "never_woke",
                         "futex", "cpu_s", "runqueue_wait_s"}], active threads first, at most
                         max_threads_listed (threads_listed_omitted counts the rest)
      peers            [{"peer", "kind" (peer|broker), "protocol_guess", "wait_share", "threads_waiting",
                         "connections", "tcp": None | {"connections_sampled", "samples", "rtt_ms", "rtt_ms_max",
                         "awaiting_answer_share", "request_waits": {"requests", "exact", "median_ms",
                         "max_ms"}, "unacked_max", "bytes_out", "bytes_in", "retransmits"}}]
      lock_waits_never_woke  [{"tid", "name", "wait"}]: threads whose lock wait did not change and
                         who were never scheduled all window (deadlock candidates; idle workers
                         waiting on a condition look the same: join with the stacks)
    """
    broker_ports = broker_ports or {}
    weight: dict[tuple[str, str | None], float] = defaultdict(float)
    per_thread_weight: dict[tuple[str, str | None], dict[int, float]] = defaultdict(dict)
    total = 0.0
    thread_docs = []
    never_woke = []
    for tid, track in sorted(threads.items()):
        samples = [s for s in track["samples"] if s.get("wait") is not None]
        if not samples:
            continue
        mine: dict[tuple[str, str | None], float] = defaultdict(float)
        for s in samples:
            parts = s["wait"].parts
            for part in parts:
                mine[part] += 1.0 / len(parts)
        for part, w in mine.items():
            weight[part] += w
            per_thread_weight[part][tid] = w / len(samples)
        total += len(samples)
        dominant, dom_weight = max(mine.items(), key=lambda kv: (kv[1], kv[0][0] == "cpu"))
        stuck = thread_never_woke(track, interruptions)
        futex = next((p[1] for p in mine if p[0] == "lock" and p[1] and p[1].startswith("futex")), None)
        if stuck and dominant[0] == "lock":
            never_woke.append({"tid": tid, "name": track.get("comm"), "wait": dominant[1]})
        thread_docs.append({
            "tid": tid, "name": track.get("comm"), "samples": len(samples),
            "dominant": {"kind": dominant[0], "target": dominant[1], "share": round(dom_weight / len(samples), 3)},
            "detail": Counter(s["wait"].detail for s in samples if s["wait"].detail).most_common(1)[0][0]
            if any(s["wait"].detail for s in samples) else None,
            "states": dict(Counter(s.get("state") or "?" for s in samples)),
            "never_woke": stuck, "futex": futex,
            "cpu_s": _cpu_seconds(track.get("cpu_ticks"), clk_tck),
            "runqueue_wait_s": _sched_delta(track.get("sched"), 1),
        })
    attribution = []
    for (kind, target), w in sorted(weight.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or "")):
        entry = {"kind": kind, "target": target, "share": round(w / total, 3) if total else None,
                 "threads": len(per_thread_weight[(kind, target)]),
                 "max_thread_share": round(max(per_thread_weight[(kind, target)].values()), 3)}
        if kind in ("peer", "broker") and target:
            entry["protocol_guess"] = broker_ports.get(port_of(target)) if kind == "broker" \
                else protocol_guess(target)
        attribution.append(entry)
    by_kind = {k: 0.0 for k in KINDS}
    for (kind, _target), w in weight.items():
        by_kind[kind] += w
    shares = {k: round(w / total, 3) for k, w in by_kind.items()} if total else None
    thread_docs.sort(key=lambda d: (d["dominant"]["kind"] in ("lock", "sleep"), d["tid"]))
    return {
        "thread_samples": int(total),
        "shares": shares,
        "attribution": attribution,
        "threads": thread_docs[:max_threads_listed],
        "threads_listed_omitted": max(0, len(thread_docs) - max_threads_listed),
        "peers": _peers(connections, attribution, broker_ports),
        "lock_waits_never_woke": never_woke,
    }


def _cpu_seconds(ticks, clk_tck: int) -> float | None:
    if not ticks or ticks[0] is None or ticks[1] is None or ticks[1] < ticks[0]:
        return None
    return round((ticks[1] - ticks[0]) / clk_tck, 3)


def _sched_delta(sched, index: int) -> float | None:
    if not sched or sched[0] is None or sched[1] is None or sched[1][index] < sched[0][index]:
        return None
    return round((sched[1][index] - sched[0][index]) / 1e9, 3)


def _peers(connections: Mapping[int, Mapping], attribution: list[dict], broker_ports: Mapping[int, str]) -> list[dict]:
    """Every peer the process waited on or held a connection to, with the passive latency view."""
    by_peer: dict[str, dict] = {}
    for entry in attribution:
        if entry["kind"] in ("peer", "broker") and entry["target"]:
            by_peer[entry["target"]] = {"peer": entry["target"], "kind": entry["kind"],
                                        "wait_share": entry["share"], "threads_waiting": entry["threads"],
                                        "connections": 0, "tcp": None}
    conns: dict[str, list[Mapping]] = defaultdict(list)
    for conn in connections.values():
        peer = conn["remote"]
        port = port_of(peer)
        doc = by_peer.setdefault(peer, {"peer": peer, "kind": "broker" if port in broker_ports else "peer",
                                        "wait_share": 0.0, "threads_waiting": 0, "connections": 0, "tcp": None})
        doc["connections"] += 1
        if conn.get("series"):
            conns[peer].append(conn)
    out = []
    for peer, doc in by_peer.items():
        doc["protocol_guess"] = broker_ports.get(port_of(peer)) if doc["kind"] == "broker" else protocol_guess(peer)
        if conns.get(peer):
            doc["tcp"] = _merge_connections(conns[peer])
        out.append(doc)
    return sorted(out, key=lambda d: (-(d["wait_share"] or 0.0), d["peer"]))


def _merge_connections(conns: list[Mapping]) -> dict:
    """Several connections to one peer (a pool, or one connection per request) -> one view."""
    summaries = [summarise_connection(c["series"], c.get("opened_in_window", False)) for c in conns]
    requests = [r for c in conns for r in connection_requests(c["series"])]
    rtts = [s["rtt_ms"] for s in summaries if s.get("rtt_ms") is not None]
    sampled = sum(s["samples"] for s in summaries)

    def total(key):
        values = [s[key] for s in summaries if s.get(key) is not None]
        return sum(values) if values else None

    return {
        "connections_sampled": len(summaries),
        "samples": sampled,
        "rtt_ms": round(median(rtts), 3) if rtts else None,
        "rtt_ms_max": max((s["rtt_ms_max"] for s in summaries if s.get("rtt_ms_max") is not None), default=None),
        # Weighted by samples: a connection seen once must not count as much as one seen all window.
        "awaiting_answer_share": round(sum(s["awaiting_answer_share"] * s["samples"] for s in summaries) / sampled, 3)
        if sampled else None,
        "request_waits": request_waits(requests),
        "unacked_max": max((s["unacked_max"] for s in summaries if s.get("unacked_max") is not None), default=None),
        "bytes_out": total("bytes_out"),
        "bytes_in": total("bytes_in"),
        "retransmits": total("retransmits"),
    }


def broker_port_map(broker_ports: Mapping[str, Iterable[int]] | None) -> dict[int, str]:
    """{"kafka": {9092}, "amqp": {5672}} -> {9092: "kafka", 5672: "amqp"}."""
    out: dict[int, str] = {}
    for kind, ports in (broker_ports or {}).items():
        for port in ports:
            out.setdefault(int(port), kind)
    return out
