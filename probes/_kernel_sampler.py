"""Samples, many times over a window, what the kernel says every thread of the
given processes is doing, and the TCP info of their connections; the pure
functions of _kernel_waits.py turn the samples into a wait attribution.

Language-independent: it reads /proc and sock_diag, never attaches, never
stops the process.  Per sample and thread: /proc/PID/task/TID/stat and
syscall (wchan only when those do not tell), the fds a blocked call names
(read from its arguments, from the pollfd array or fd_sets in the process's
memory, or from an epoll fd's fdinfo), each resolved through /proc/PID/fd to
a socket and its peer.  Root reads all of it; with less, the report says what
was unreadable and classifies from what was readable.

    sampler = KernelSampler([pid], broker_ports={"kafka": {9092}})
    sampler.run(start=t0, end=t0 + 5, deadline=t0 + 6)   # monotonic seconds
    report = sampler.report()                           # {pid: attribution}
    sampler.close()
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections import Counter
from typing import Callable, Iterable, Mapping

from qdiag import sockdiag
from qdiag.endpoints import split_endpoint

from . import _kernel_waits as kw
from . import _proc_parse as pp
from ._proc_read import read_proc, socket_inodes

DEFAULT_INTERVAL_S = 0.1
MAX_THREADS = 64           # threads sampled per process (the lowest tids; the rest are counted)
MAX_CONNECTIONS = 32       # TCP connections whose TCP info is read per process per sample
MAX_FD_SCAN = 4096         # fd links read when listing a process's sockets
MAX_WAIT_FDS = 256         # fds resolved per blocked call (a poll or epoll on thousands: the first ones)
MAX_SAMPLES = 3000         # samples kept per thread (a 5-minute window at 100 ms)
FIRST_TICK_WAIT_S = 1.0    # start() waits at most this long for the first sample
TABLE_REFRESH_S = 1.0      # re-read the socket tables this often, to see new connections
MISS_REFRESH_S = 0.2       # and at most this often when a waited-on socket is not in them ...
# ... unless the tables are small: a client that opens a connection per request
# (urllib, requests without a session) waits on a new socket every time, and
# only a fresh read names its peer.
SMALL_TABLE_ROWS = 5000
NET_TABLE_BYTES = 16 << 20
FDINFO_BYTES = 64 << 10
_GONE = (errno.ENOENT, errno.ESRCH)


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class _Process:
    """The samples of one process, and what is needed to resolve its fds."""

    def __init__(self, pid: int, owner: "KernelSampler"):
        self.pid = pid
        self.owner = owner
        self.base = f"{owner.proc_root}/{pid}"
        self.threads: dict[int, dict] = {}
        self.connections: dict[int, dict] = {}   # inode -> {"local", "remote", "series"}
        self.sockets: dict[int, dict] = {}       # inode -> table row with "proto"
        self.own_inodes: set[int] = set()
        self.initial_inodes: set[int] | None = None  # sockets open when sampling began
        self.waited_inodes: set[int] = set()
        self.awaiting: set[str] = set()
        self.interruptions = 0  # ptrace stops of the process while sampled (KernelSampler.interrupting)
        self.resolved: dict[int, dict] = {}      # fd -> resolve_fd() result, within one tick
        self.tables_at = float("-inf")
        self.table_rows = 0  # rows in the socket tables at the last read
        self.listening: frozenset[int] = frozenset()  # ports its own listeners accept on
        self.own_ends: frozenset[str] = frozenset()   # local ip:port of its own TCP sockets
        self.mem_fd: int | None = None
        self.mem_error: str | None = None
        self.problems: Counter = Counter()
        self.notes: list[str] = []
        self.gone_after: float | None = None
        self.error: str | None = None
        self.name: str | None = None
        self.starttime: int | None = None
        self.threads_seen = 0
        self.ticks = 0
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.previous_t: float | None = None  # the tick before the last
        self.machine = owner.machine if owner.machine in kw.SYSCALL_TABLES else None
        self.tcp_info_why: str | None = None
        if self.machine is None:
            self.notes.append(f"system call numbers of {owner.machine} are not known here: "
                              "threads are classified from their state and wchan only")
        elif self._is_32bit():
            self.machine = None
            self.notes.append("a 32-bit process: its system call numbers differ, so threads are "
                              "classified from their state and wchan only")
        self.same_netns = self._same_netns()

    # -------------------------------------------------------------- setup

    def _is_32bit(self) -> bool:
        try:
            fd = os.open(f"{self.base}/exe", os.O_RDONLY)
            try:
                header = os.read(fd, 5)
            finally:
                os.close(fd)
        except OSError:
            return False
        return header[:4] == b"\x7fELF" and header[4:5] == b"\x01"  # EI_CLASS 1: ELFCLASS32

    def _same_netns(self) -> bool | None:
        """Whether sock_diag (which sees qdiag's own network namespace) can see this process's sockets."""
        try:
            return os.readlink(f"{self.base}/ns/net") == os.readlink(f"{self.owner.proc_root}/self/ns/net")
        except OSError:
            return None

    # -------------------------------------------------------------- one tick

    def tick(self, now: float) -> None:
        try:
            tids = sorted(int(t) for t in os.listdir(f"{self.base}/task") if t.isdigit())
        except OSError as exc:
            if exc.errno in _GONE:
                self._gone(now)
            else:
                self.error = f"cannot list the threads of pid {self.pid}: {_why(exc)}"
            return
        if not tids:
            self._gone(now)
            return
        self.ticks += 1
        self.resolved = {}  # fds are reused: resolve afresh each tick, once per fd
        self.first_t = now if self.first_t is None else self.first_t
        self.previous_t, self.last_t = self.last_t, now
        self.threads_seen = max(self.threads_seen, len(tids))
        if now - self.tables_at >= TABLE_REFRESH_S:
            self._refresh_tables(now)
        self._sample_connections(now)
        for tid in tids[:self.owner.max_threads]:
            if not self._sample_thread(tid, now):
                self._gone(now)
                return

    def _gone(self, now: float) -> None:
        if self.gone_after is None:
            self.gone_after = now

    def _sample_thread(self, tid: int, now: float) -> bool:
        """Sample one thread; False when it shows the whole process has exited."""
        tdir = f"{self.base}/task/{tid}"
        try:
            stat = pp.parse_task_stat(read_proc(f"{tdir}/stat"))
        except OSError as exc:
            if exc.errno not in _GONE:  # a thread that just exited is simply not sampled
                self.problems["thread stat unreadable"] += 1
            return True
        if stat is None:
            self.problems["thread stat unparsable"] += 1
            return True
        if tid == self.pid:
            if stat["state"] in ("Z", "X"):
                return False  # exited, not yet reaped by its parent
            if self.starttime is not None and stat["starttime"] != self.starttime:
                return False  # the pid now names another process
        track = self.threads.get(tid)
        if track is None or track["starttime"] != stat["starttime"]:
            track = self.threads[tid] = {"comm": stat["comm"], "starttime": stat["starttime"], "samples": [],
                                         "cpu_ticks": None, "sched": None}
        if tid == self.pid:
            self.name = stat["comm"]
            if self.starttime is None:
                self.starttime = stat["starttime"]
        cpu = stat["utime"] + stat["stime"]
        track["cpu_ticks"] = (track["cpu_ticks"][0] if track["cpu_ticks"] else cpu, cpu)
        if track["sched"] is None:  # read at the first sample; the end of the window once, by finish()
            sched = self._schedstat(tdir)
            track["sched"] = (sched, sched) if sched is not None else False
        # The thread's sample at the tick just before, if any: a wait the kernel resumed since
        # (restart_syscall) is read through it.
        last = track["samples"][-1] if track["samples"] else None
        previous = last if last is not None and last["t"] == self.previous_t else None
        sample = self._classify(tdir, stat["state"], previous)
        if sample is not None and len(track["samples"]) < MAX_SAMPLES:
            sample["t"] = now
            track["samples"].append(sample)
        return True

    def _schedstat(self, tdir: str) -> tuple[int, int, int] | None:
        try:
            return pp.parse_schedstat(read_proc(f"{tdir}/schedstat", 256))
        except OSError:
            return None

    def _classify(self, tdir: str, state: str, previous: dict | None = None) -> dict | None:
        call, args, readable, wchan, fds, fd_problem = None, (), True, None, None, None
        resumed = False
        if state != "R":
            try:
                parsed = pp.parse_syscall(read_proc(f"{tdir}/syscall", 512))
            except OSError as exc:
                if exc.errno in _GONE:
                    return None
                readable = False
                self.problems[f"/proc/{self.pid}/task/*/syscall unreadable ({_why(exc)}; "
                              "needs root or CAP_SYS_PTRACE)"] += 1
                parsed = None
            if parsed is not None:
                if parsed["running"]:
                    call = "running"
                elif parsed["nr"] >= 0 and self.machine is not None:
                    args = parsed["args"]
                    call = kw.syscall_name(self.machine, parsed["nr"]) or f"syscall {parsed['nr']}"
            if kw.needs_wchan(state, call):
                try:
                    wchan = pp.parse_wchan(read_proc(f"{tdir}/wchan", 256))
                except OSError:
                    wchan = None
            if call == "restart_syscall" and previous is not None:
                carried = kw.resumed_call(previous.get("call"), previous.get("args") or (), wchan)
                if carried is not None:
                    (call, args), resumed = carried, True
            request = kw.fd_request(call, args) if call else None
            if request is not None:
                fds, fd_problem = self._wait_fds(request)
        wait = kw.classify(state, call, args, wchan, fds, syscall_readable=readable, fd_problem=fd_problem,
                           broker_ports=self.owner.broker_ports, awaiting=self.awaiting)
        sample = {"state": state, "call": call, "args": args, "wchan": wchan, "wait": wait}
        if resumed:
            sample["resumed"] = True
        return sample

    # -------------------------------------------------------------- the fds of a blocked call

    def _wait_fds(self, request: kw.FdRequest) -> tuple[list[dict] | None, str | None]:
        numbers = list(request.fds)
        if request.pollfd is not None:
            address, count = request.pollfd
            if count:
                raw, problem = self._memory(address, count * 8)
                if raw is None:
                    return None, problem
                numbers += [fd for fd, _events in pp.parse_pollfds(raw)]
        if request.fdsets is not None:
            nfds, addresses = request.fdsets
            for address in addresses:
                raw, problem = self._memory(address, kw.fd_set_bytes(nfds))
                if raw is None:
                    return None, problem
                numbers += pp.parse_fd_set(raw, nfds)
        if request.epoll is not None:
            try:
                numbers += pp.parse_epoll_fdinfo(read_proc(f"{self.base}/fdinfo/{request.epoll}", FDINFO_BYTES))
            except OSError as exc:
                if exc.errno in _GONE:
                    return [], None  # the epoll fd was closed under us
                self.problems[f"/proc/{self.pid}/fdinfo unreadable ({_why(exc)})"] += 1
                return None, f"fdinfo of the epoll fd unreadable ({_why(exc)})"
        out = []
        for fd in list(dict.fromkeys(numbers))[:MAX_WAIT_FDS]:
            if fd not in self.resolved:
                self.resolved[fd] = self._resolve(fd)
            out.append(self.resolved[fd])
        return out, None

    def _memory(self, address: int, size: int) -> tuple[bytes | None, str | None]:
        """Bytes of the process's memory (the pollfd array or fd_set a blocked call points at)."""
        if self.mem_error is not None:
            return None, self.mem_error
        try:
            if self.mem_fd is None:
                self.mem_fd = os.open(f"{self.base}/mem", os.O_RDONLY)
            return os.pread(self.mem_fd, size, address), None
        except OSError as exc:
            if exc.errno == errno.EIO:  # that address is not mapped (any more): this call only
                return None, "its fd array in process memory could not be read (EIO)"
            self.mem_error = f"process memory unreadable ({_why(exc)}; needs root or ptrace rights)"
            self.problems[f"/proc/{self.pid}/mem unreadable ({_why(exc)})"] += 1
            return None, self.mem_error

    def _resolve(self, fd: int) -> dict:
        try:
            link = os.readlink(f"{self.base}/fd/{fd}")
        except OSError as exc:
            if exc.errno not in _GONE:
                self.problems[f"/proc/{self.pid}/fd unreadable ({_why(exc)})"] += 1
                return {"fd": fd, "kind": "unreadable", "peer": None, "label": "fd unreadable"}
            link = None
        kind, detail = pp.fd_target(link) if link else (None, None)
        if kind == "socket":
            self.waited_inodes.add(detail)
            pause = 0.0 if self.table_rows <= SMALL_TABLE_ROWS else MISS_REFRESH_S
            if detail not in self.sockets and self.owner.clock() - self.tables_at >= pause:
                self._refresh_tables(self.owner.clock(), also=detail)
            row = self.sockets.get(detail)
            if row is not None and row["proto"] == "unix" and "peer_name" not in row:
                row["peer_name"] = self._unix_peer(detail)
        return kw.resolve_fd(fd, link, self.sockets, self.listening, self.own_ends)

    def _unix_peer(self, inode: int) -> str | None:
        if not self.same_netns:
            return None
        return sockdiag.unix_peer_names([inode], self.owner.io_timeout).get(inode)

    # -------------------------------------------------------------- sockets and TCP info

    def _refresh_tables(self, now: float, also: int | None = None) -> None:
        self.tables_at = now
        inodes: set[int] = set()
        try:
            _count, inodes = socket_inodes(self.owner.proc_root, self.pid, MAX_FD_SCAN)
        except OSError as exc:
            if exc.errno not in _GONE:
                self.problems[f"/proc/{self.pid}/fd unreadable ({_why(exc)})"] += 1
        self.own_inodes = inodes
        if self.initial_inodes is None:
            self.initial_inodes = set(inodes)
        wanted = inodes | ({also} if also is not None else set())
        rows = 0
        tables = (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp"))
        live = sockdiag.tcp_sockets(wanted, self.owner.io_timeout) if self.same_netns else None
        if live is not None:
            # The kernel filters out TIME_WAIT: a per-request client leaves thousands of
            # them, and /proc/net/tcp made every refresh slow and rate-limited, so a
            # short-lived connection's wait was never resolved.
            for row in live:
                self.sockets[row["inode"]] = {**row, "proto": "tcp"}
            rows += len(live)
            tables = tables[2:]
        for table, proto in tables:
            try:
                text = read_proc(f"{self.base}/net/{table}", NET_TABLE_BYTES)
            except OSError:
                continue
            rows += text.count("\n")
            for row in pp.parse_proc_net_tcp(text, wanted):
                self.sockets[row["inode"]] = {**row, "proto": proto}
        self.table_rows = rows
        mine = {i: r for i, r in self.sockets.items() if i in inodes}
        self.listening = kw.listening_ports(mine)
        self.own_ends = kw.own_ends(mine)
        missing = wanted - self.sockets.keys()
        if missing:
            try:
                unix = pp.parse_proc_net_unix(read_proc(f"{self.base}/net/unix", NET_TABLE_BYTES))
            except OSError:
                unix = {}
            for inode in missing & unix.keys():
                self.sockets[inode] = {"proto": "unix", "inode": inode, "name": unix[inode]}

    def _sample_connections(self, now: float) -> None:
        reader = self.owner.tcp_reader
        if reader is None:
            return
        if not self.same_netns:
            self.tcp_info_why = ("the process is in another network namespace" if self.same_netns is False
                                 else "its network namespace is unreadable")
            return
        rows = [r for inode, r in self.sockets.items()
                if inode in self.own_inodes and r["proto"] == "tcp" and r["state"] == "ESTABLISHED"
                and r.get("remote") not in self.own_ends]  # not the process's connections to itself
        # Connections a thread waited on first, then the others, up to the cap.
        rows.sort(key=lambda r: (r["inode"] not in self.waited_inodes, r["inode"]))
        awaiting = set()
        for row in rows[:self.owner.max_connections]:
            local, remote = split_endpoint(row["local"]), split_endpoint(row["remote"])
            if local is None or remote is None:
                continue
            try:
                info = reader.read(local, remote, row["inode"])
            except OSError as exc:
                self.tcp_info_why = f"sock_diag failed ({_why(exc)})"
                self.owner.tcp_reader_failed(exc)
                return
            t = self.owner.clock()
            if info is None:
                continue
            conn = self.connections.get(row["inode"])
            if conn is None:
                conn = self.connections[row["inode"]] = {
                    "local": row["local"], "remote": row["remote"], "series": [],
                    "opened_in_window": row["inode"] not in (self.initial_inodes or ())}
            if len(conn["series"]) < MAX_SAMPLES:
                conn["series"].append((t, info))
            if kw.awaiting_answer(info):
                awaiting.add(row["remote"])
        self.awaiting = awaiting

    def finish(self) -> None:
        """Read each thread's scheduler counters once more, at the end of the window."""
        for tid, track in self.threads.items():
            if track["sched"]:
                sched = self._schedstat(f"{self.base}/task/{tid}")
                # A thread gone by now: its CPU ticks, not a stale pair, tell whether it woke.
                track["sched"] = (track["sched"][0], sched) if sched is not None else None

    # -------------------------------------------------------------- report

    def report(self, clk_tck: int) -> dict:
        doc = {"pid": self.pid, "name": self.name, "error": self.error,
               "gone": self.gone_after is not None, "ticks": self.ticks,
               "window_s": round(self.last_t - self.first_t, 3) if self.ticks > 1 else None,
               "threads_seen": self.threads_seen, "threads_sampled": len(self.threads),
               "threads_not_sampled": max(0, self.threads_seen - self.owner.max_threads),
               "syscall_table": self.machine,
               "tcp_info": "sampled" if self.connections else (self.tcp_info_why or self.owner.tcp_info_why
                                                               or "no established TCP connection seen"),
               "notes": list(self.notes)}
        if self.gone_after is not None:
            offset = self.gone_after - (self.first_t if self.first_t is not None else self.gone_after)
            doc["notes"].append(f"the process exited (or its pid was reused) {offset:.1f}s into the sampling; "
                                "the attribution covers the time before")
        if doc["threads_not_sampled"]:
            doc["notes"].append(f"{doc['threads_not_sampled']} of {self.threads_seen} threads not sampled "
                                f"(at most {self.owner.max_threads} per process, the lowest thread ids)")
        for problem, count in sorted(self.problems.items()):
            doc["notes"].append(f"{problem}: {count} time(s)")
        for track in self.threads.values():
            for sample in track["samples"]:
                if sample.get("wait") is not None:
                    sample["wait"] = kw.resolve_late(sample["wait"], self.sockets, self.listening,
                                                     self.owner.broker_ports, self.own_ends)
        doc.update(kw.summarise_process(self.threads, self.connections, broker_ports=self.owner.broker_ports,
                                        clk_tck=clk_tck, interruptions=self.interruptions))
        if self.interruptions:
            doc["interruptions"] = self.interruptions
        return doc

    def close(self) -> None:
        if self.mem_fd is not None:
            os.close(self.mem_fd)
            self.mem_fd = None


class KernelSampler:
    """Sample the threads of `pids` at the pace of run() (or of your own calls to tick()).

    broker_ports: {"kafka": {9092}, "amqp": {5672}, ...}; a socket to one of
    those ports is "broker" (idle, waiting for the broker), never a dependency.
    """

    def __init__(self, pids: Iterable[int], *, broker_ports: Mapping[str, Iterable[int]] | None = None,
                 proc_root: str = "/proc", max_threads: int = MAX_THREADS, max_connections: int = MAX_CONNECTIONS,
                 tcp_info: bool = True, io_timeout: float = 0.5, machine: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.proc_root = proc_root
        self.broker_ports = kw.broker_port_map(broker_ports)
        self.max_threads = max_threads
        self.max_connections = max_connections
        self.io_timeout = io_timeout
        self.machine = machine or os.uname().machine
        self.clock = clock
        self.tcp_reader: sockdiag.TcpInfoReader | None = sockdiag.TcpInfoReader(io_timeout) if tcp_info else None
        self.tcp_info_why: str | None = None if tcp_info else "not asked for"
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.first_tick = threading.Event()
        self.processes: dict[int, _Process] = {}
        for pid in dict.fromkeys(int(p) for p in pids):
            proc = _Process(pid, self)
            if not os.path.isdir(proc.base):
                proc.error = f"no process with pid {pid}"
            self.processes[pid] = proc

    def tcp_reader_failed(self, exc: OSError) -> None:
        """sock_diag itself failed (no netlink, not permitted): stop asking, say why once."""
        if self.tcp_reader is not None:
            self.tcp_reader.close()
            self.tcp_reader = None
        self.tcp_info_why = f"sock_diag unavailable ({_why(exc)})"

    def tick(self) -> None:
        """One sample of every thread of every live process."""
        with self.lock:
            for proc in self.processes.values():
                if proc.error is None and proc.gone_after is None:
                    proc.tick(self.clock())

    def run(self, start: float, end: float, deadline: float, *, interval: float = DEFAULT_INTERVAL_S,
            sleep: Callable[[float], None] = time.sleep, stop: threading.Event | None = None) -> None:
        """Tick every `interval` seconds from `start` to `end` (monotonic), never past
        `deadline`; returns early when `stop` is set or every process is gone.  A
        tick that overruns its slot delays the next one instead of bunching up."""
        next_at = start
        while not (stop is not None and stop.is_set()):
            now = self.clock()
            if now >= min(end, deadline):
                break
            if now < next_at:
                sleep(min(next_at, end, deadline) - now)
                continue
            self.tick()
            self.first_tick.set()
            if all(p.error is not None or p.gone_after is not None for p in self.processes.values()):
                break
            next_at = max(next_at + interval, self.clock())
        self.finish()

    def finish(self) -> None:
        """The end-of-window readings (run() calls it; call it yourself after your own ticks)."""
        with self.lock:
            for proc in self.processes.values():
                if proc.error is None and proc.gone_after is None:
                    proc.finish()

    def interrupting(self, pids: Iterable[int]) -> None:
        """Called before a thread dump that stops every thread of these processes (ptrace):
        each stop makes their blocked system calls restart, which must not count as the
        thread waking up (_kernel_waits.thread_never_woke)."""
        with self.lock:
            for pid in pids:
                proc = self.processes.get(pid)
                if proc is not None:
                    proc.interruptions += 1

    def start(self, start: float, end: float, deadline: float, *, interval: float = DEFAULT_INTERVAL_S) -> None:
        """run() in a background thread, so a probe can take its own samples (thread dumps) meanwhile."""
        self.thread = threading.Thread(target=self._run_quietly, args=(start, end, deadline, interval),
                                       name="qdiag-kernel-sampler", daemon=True)
        self.thread.start()
        # The caller's first thread dump attaches with ptrace, which interrupts every
        # timed poll and futex wait (they resume as restart_syscall, arguments hidden):
        # the first sample is taken before that, so the waits can be followed through it.
        self.first_tick.wait(FIRST_TICK_WAIT_S)

    def _run_quietly(self, start: float, end: float, deadline: float, interval: float) -> None:
        try:
            self.run(start, end, deadline, interval=interval, stop=self.stop_event)
        except Exception as exc:  # a surprise must not kill the caller's probe; it is reported instead
            for proc in self.processes.values():
                proc.notes.append(f"sampling stopped early: {type(exc).__name__}: {exc}")
        finally:
            self.first_tick.set()  # whatever happened, start() waits no longer

    def join(self, timeout: float) -> bool:
        """Wait for the background run to end (at most `timeout` s); stop it if it has not.
        True when it ended by itself."""
        if self.thread is None:
            return True
        self.thread.join(max(0.0, timeout))
        if self.thread.is_alive():
            self.stop_event.set()
            self.thread.join(1.0)
            return False
        return True

    def report(self) -> dict[int, dict]:
        """{pid: the process's wait attribution} (see _kernel_waits.summarise_process for the shape)."""
        clk_tck = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        with self.lock:
            return {pid: proc.report(clk_tck) for pid, proc in self.processes.items()}

    def close(self) -> None:
        if self.tcp_reader is not None:
            self.tcp_reader.close()
        for proc in self.processes.values():
            proc.close()


def sample_window(pids: Iterable[int], start: float, end: float, deadline: float, *,
                  interval: float = DEFAULT_INTERVAL_S, **options) -> dict[int, dict]:
    """Sample `pids` from `start` to `end` (monotonic seconds, stopping at `deadline`)
    and return {pid: wait attribution}.  options: those of KernelSampler."""
    sampler = KernelSampler(pids, **options)
    try:
        sampler.run(start, end, deadline, interval=interval)
        return sampler.report()
    finally:
        sampler.close()
