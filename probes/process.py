"""Process probe: the consumer processes (--pid, --process, found from the
broker side) and the host's busiest processes, each measured over the window.

Per target: CPU of one core and of the host, memory, threads, open fds against
the soft RLIMIT_NOFILE, state, context-switch rates, cgroup, listening sockets
with their accept-queue fill, and connections by remote endpoint.  A process
that exits during the window is reported as gone, never as a failed probe.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

import psutil

from qdiag import target_processes
from qdiag.probe import NotApplicable, Option, register
from qdiag.redact import command_line
from qdiag.runtime import process_runtime
from qdiag.sockdiag import listen_backlogs

from ._proc_parse import cgroup_lines, parse_ctx_switches, parse_limits, parse_proc_cgroup, parse_proc_net_tcp
from ._proc_read import read_proc, socket_inodes

from . import _process_facts

CMDLINE_MAX_CHARS = 500
TOP_N = 5
MAX_TARGETS = 20  # per run, for --process matches; explicit --pid and discovered pids are always kept
MAX_REMOTES = 20  # remote endpoints listed per process; the rest are counted
MAX_FD_LINKS = 65536  # fd links read per process per sample
MAX_TASKS = 10000  # threads read per process per sample for context switches

_STATE_LETTERS = {
    psutil.STATUS_RUNNING: "R",
    psutil.STATUS_SLEEPING: "S",
    psutil.STATUS_DISK_SLEEP: "D",
    psutil.STATUS_ZOMBIE: "Z",
    psutil.STATUS_STOPPED: "T",
    psutil.STATUS_TRACING_STOP: "t",
    psutil.STATUS_DEAD: "X",
    psutil.STATUS_IDLE: "I",
    psutil.STATUS_PARKED: "P",
    psutil.STATUS_WAKING: "W",
}


def state_letter(status: str | None) -> str | None:
    """psutil's status word -> the letter ps and /proc/<pid>/stat use."""
    if status is None:
        return None
    return _STATE_LETTERS.get(status, status[:1].upper() or None)


# --------------------------------------------------------------------------
# Reading one process.
# --------------------------------------------------------------------------

def _read_text(path: str, limit: int = 1 << 20) -> str | None:
    try:
        return read_proc(path, limit)
    except OSError:
        return None


def scan_fds(proc_root: str, pid: int) -> tuple[int | None, set[int] | None]:
    """(open fd count, socket inodes) from /proc/<pid>/fd; (None, None) if unreadable."""
    try:
        return socket_inodes(proc_root, pid, MAX_FD_LINKS)
    except OSError:
        return None, None


def read_ctx_switches(proc_root: str, pid: int) -> tuple[int, int] | None:
    """Context switches of all the process's threads.

    /proc/<pid>/status (and so psutil's num_ctx_switches) counts only the main
    thread, which in a JVM or a threaded consumer barely runs; the per-thread
    counters under /proc/<pid>/task/ are summed instead.
    """
    task_dir = f"{proc_root}/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return None
    voluntary = involuntary = 0
    counted = 0
    for tid in tids[:MAX_TASKS]:
        text = _read_text(f"{task_dir}/{tid}/status")
        pair = parse_ctx_switches(text) if text else None
        if pair is not None:
            voluntary += pair[0]
            involuntary += pair[1]
            counted += 1
    return (voluntary, involuntary) if counted else None


def _truncate(cmdline: list[str] | None) -> str | None:
    if cmdline is None:
        return None
    joined = " ".join(cmdline).rstrip()  # processes that rewrite their title pad it with spaces
    return joined if len(joined) <= CMDLINE_MAX_CHARS else joined[: CMDLINE_MAX_CHARS - 1] + "…"


def _cpu_seconds(cpu_times) -> float | None:
    return None if cpu_times is None else cpu_times.user + cpu_times.system


def _cgroup_parsers():
    """(cgroup_stats, cgroup_delta) from the host probe's parsers
    (probes/_host_parse.py), or None when that module is missing."""
    try:
        from qdiag.probes._host_parse import cgroup_delta, cgroup_stats
    except ImportError:
        return None
    return cgroup_stats, cgroup_delta


def cgroup_reading(proc_root: str, sys_root: str, pid: int) -> Any:
    """One raw reading of the process's cgroup (CPU quota and throttling,
    memory limit and usage); None when unavailable.  Two readings become
    deltas through cgroup_over_window()."""
    parsers = _cgroup_parsers()
    if parsers is None:
        return None
    try:
        return parsers[0](proc_root, sys_root, pid)
    except Exception:  # a bonus field: its failure must not lose the target
        return None


def cgroup_over_window(before: Any, after: Any, seconds: float | None) -> Any:
    parsers = _cgroup_parsers()
    if parsers is None or not before or not after or not seconds:
        return None
    try:
        return parsers[1](before, after, seconds)
    except Exception:
        return None


def _freezer(reading: Any) -> dict | None:
    return reading.get("freezer") if isinstance(reading, dict) else None


def describe(proc: psutil.Process, proc_root: str) -> tuple[dict, int | None]:
    """What does not change over the window (read once), and the soft RLIMIT_NOFILE."""
    pid = proc.pid
    with proc.oneshot():
        info = proc.as_dict(["name", "cmdline", "username", "create_time", "exe"], ad_value=None)
    limits_text = _read_text(f"{proc_root}/{pid}/limits")
    soft_nofile = parse_limits(limits_text).get("Max open files", (None, None))[0] if limits_text else None
    cgroup_text = _read_text(f"{proc_root}/{pid}/cgroup")
    runtime = process_runtime(proc_root, pid, info["name"], info["exe"], info["cmdline"])
    return {
        "name": info["name"], "cmdline": _truncate(command_line(info["cmdline"], full=True)), "username": info["username"],
        "create_time": info["create_time"], "runtime": runtime,
        "cgroup": cgroup_lines(parse_proc_cgroup(cgroup_text)) if cgroup_text is not None else None,
    }, soft_nofile


_DYNAMIC = ["create_time", "cpu_times", "memory_info", "num_threads", "status"]


def measure(proc: psutil.Process, proc_root: str, sys_root: str, clock) -> dict | None:
    """One sample of a process; None when it no longer exists."""
    taken = clock()  # CPU times are read right after: rates divide by the time between two of these
    try:
        with proc.oneshot():
            values = proc.as_dict(_DYNAMIC, ad_value=None)
    except psutil.NoSuchProcess:
        return None
    fds, inodes = scan_fds(proc_root, proc.pid)
    return {
        "t": taken,
        "cgroup": cgroup_reading(proc_root, sys_root, proc.pid),
        "create_time": values["create_time"],
        "cpu_s": _cpu_seconds(values["cpu_times"]),
        "rss": values["memory_info"].rss if values["memory_info"] is not None else None,
        "threads": values["num_threads"],
        "ctx": read_ctx_switches(proc_root, proc.pid),
        "state": state_letter(values["status"]),
        "fds": fds,
        "inodes": inodes,
    }


# --------------------------------------------------------------------------
# The probe.
# --------------------------------------------------------------------------

def _switch_rate(first, end, index: int, seconds: float | None) -> float | None:
    if first is None or end is None or not seconds:
        return None
    change = end[index] - first[index]
    # Threads that exit take their counts with them; a drop means "unknown", not negative.
    return round(change / seconds, 1) if change >= 0 else None


def _descendants(parents: dict[int, int | None], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _process_table() -> dict[int, dict]:
    """Every process: the few fields top lists need (one /proc/<pid>/stat + statm each)."""
    table = {}
    for proc in psutil.process_iter(["ppid", "create_time", "cpu_times", "memory_info"], ad_value=None):
        info = proc.info
        table[proc.pid] = {
            "ppid": info["ppid"], "create_time": info["create_time"],
            "cpu_s": _cpu_seconds(info["cpu_times"]),
            "rss": info["memory_info"].rss if info["memory_info"] is not None else None,
        }
    return table


def _select_targets(ctx, notes: list[str]) -> dict[int, dict]:
    limit = ctx.options["max_targets"]
    selection = target_processes.select(ctx.targets, ctx.discovered, max_per_pattern=limit, deadline=ctx.deadline)
    notes.extend(f"{note} (raise [probes.process] max_targets)" for note in selection.notes)
    notes.extend(f"--process '{pattern}' matched no running process" for pattern in selection.unmatched)
    targets = selection.targets
    for pid in selection.missing:  # reported as gone, not dropped: the user asked for it
        targets[pid] = {"pid": pid, "selected_by": ["--pid"]}
    return targets


class _Sampler:
    """Called by ctx.sample at each instant of the window."""

    def __init__(self, ctx, targets: dict[int, dict]):
        self.ctx = ctx
        self.proc_root = ctx.paths.proc
        self.targets = targets
        self.procs: dict[int, psutil.Process] = {}
        self.fd_limits: dict[int, int | None] = {}
        self.first = True

    def __call__(self) -> dict:
        table = _process_table()
        measured: dict[int, dict | None] = {}
        for pid, rec in self.targets.items():
            if rec.get("gone"):
                continue
            proc = self.procs.get(pid)
            if proc is None:
                try:
                    proc = self.procs[pid] = psutil.Process(pid)
                except psutil.NoSuchProcess:
                    measured[pid] = None
                    continue
            measured[pid] = measure(proc, self.proc_root, self.ctx.paths.sys, self.ctx.clock)
        sockets = self._sockets(measured)
        if self.first:
            self.first = False
            for pid, proc in self.procs.items():
                if measured.get(pid) is not None:
                    try:
                        static, self.fd_limits[pid] = describe(proc, self.proc_root)
                    except psutil.NoSuchProcess:
                        continue
                    self.targets[pid].update(static)
        return {"table": table, "targets": measured, "sockets": sockets}

    def _sockets(self, measured: dict[int, dict | None]) -> dict[int, list[dict]]:
        """TCP rows owned by each target, read once per network namespace."""
        by_netns: dict[str, list[int]] = {}
        for pid, sample in measured.items():
            if sample is not None and sample["inodes"]:
                try:
                    netns = os.readlink(f"{self.proc_root}/{pid}/ns/net")
                except OSError:
                    netns = f"pid:{pid}"
                by_netns.setdefault(netns, []).append(pid)
        owned: dict[int, list[dict]] = {}
        for pids in by_netns.values():
            wanted = set().union(*(measured[pid]["inodes"] for pid in pids))
            rows = []
            for table in ("tcp", "tcp6"):
                # The table of a process's own network namespace (a container's, say).
                text = None
                for pid in pids:
                    text = _read_text(f"{self.proc_root}/{pid}/net/{table}", limit=64 << 20)
                    if text is not None:
                        break
                if text:
                    rows.extend(parse_proc_net_tcp(text, wanted))
            for pid in pids:
                mine = measured[pid]["inodes"]
                owned[pid] = [row for row in rows if row["inode"] in mine]
        return owned


def _summarise_sockets(first: list[dict] | None, last: list[dict] | None, backlogs: dict[int, int] | None,
                       same_netns: bool) -> tuple[list[dict] | None, dict | None]:
    if last is None:
        return None, None
    queued_first = {row["inode"]: row["rx_queue"] for row in first or () if row["state"] == "LISTEN"}
    listening = []
    for row in last:
        if row["state"] != "LISTEN":
            continue
        queued = row["rx_queue"]
        queued_max = max(queued, queued_first.get(row["inode"], 0))
        backlog = backlogs.get(row["inode"]) if (backlogs is not None and same_netns) else None
        # The kernel admits one connection beyond the limit (the queue is full when
        # sk_ack_backlog > sk_max_ack_backlog), so a full queue reads backlog + 1.
        fill = round(min(1.0, queued_max / backlog), 3) if backlog else None
        listening.append({"local": row["local"], "queued": queued, "queued_max": queued_max,
                          "backlog": backlog, "fill_ratio": fill})
    states = Counter(row["state"] for row in last if row["state"] != "LISTEN")
    remotes = Counter(row["remote"] for row in last if row["state"] == "ESTABLISHED")
    top = remotes.most_common(MAX_REMOTES)
    connections = {"established": states.get("ESTABLISHED", 0), "by_state": dict(sorted(states.items())),
                   "remotes": dict(top), "remotes_omitted": len(remotes) - len(top)}
    return sorted(listening, key=lambda x: x["local"]), connections


def _target_record(rec: dict, samples: list, ncpu: int, fd_limit: int | None, backlogs, own_netns: str | None,
                   proc_root: str) -> dict:
    pid = rec["pid"]
    seen = [(s["targets"][pid], s["sockets"].get(pid)) for _, s in samples if pid in s["targets"]]
    first, first_sockets = seen[0] if seen else (None, None)
    if first is None:
        # It existed when targets were chosen but was gone by the first sample.
        return {**rec, "gone": True}
    last, last_sockets = seen[-1] if len(seen) > 1 else (first, first_sockets)
    if last is None or last["create_time"] != first["create_time"]:
        gone, state = True, None  # exited (or its pid was reused) during the window
    else:
        # A process that died but was not reaped yet is a zombie: gone all the same.
        gone, state = last["state"] == "Z" and first["state"] != "Z", last["state"]
    # Gauges of a gone process are its last live values; rates need both ends alive.
    end = first if gone else last
    seconds = (last["t"] - first["t"]) if (not gone and last is not first) else None
    if gone:
        last_sockets = first_sockets

    def delta(key):
        if not seconds or end[key] is None or first[key] is None:
            return None
        return end[key] - first[key]

    cpu = delta("cpu_s")
    ctx_first, ctx_end = first["ctx"], end["ctx"]
    limit = fd_limit
    fds = end["fds"]
    try:
        same_netns = own_netns is not None and os.readlink(f"{proc_root}/{pid}/ns/net") == own_netns
    except OSError:
        same_netns = False
    listening, connections = _summarise_sockets(first_sockets, last_sockets if end["inodes"] is not None else None,
                                                backlogs, same_netns)
    freezer_start, freezer_end = _freezer(first["cgroup"]), (None if gone else _freezer(last["cgroup"]))
    out = dict(rec)
    out.update({
        "gone": gone,
        "state": state,
        "state_at_start": first["state"],
        # The cgroup freezer holds a process whatever its state letter says (see _host_parse).
        "frozen": freezer_end.get("frozen") if freezer_end else None,
        "frozen_at_start": freezer_start.get("frozen") if freezer_start else None,
        "freezer": freezer_end or freezer_start,
        "window_s": round(seconds, 3) if seconds else None,
        "cpu_seconds": round(cpu, 3) if cpu is not None else None,
        "cpu_percent": round(100.0 * cpu / seconds, 1) if cpu is not None else None,
        "cpu_percent_host": round(100.0 * cpu / seconds / ncpu, 1) if cpu is not None else None,
        "rss_bytes": end["rss"],
        "rss_delta_bytes": delta("rss"),
        "threads": end["threads"],
        "fds": {
            "open": fds, "open_at_start": first["fds"], "delta": delta("fds"), "soft_limit": limit,
            "ratio": round(fds / limit, 4) if fds is not None and limit else None,
        },
        "ctx_switches_per_s": {
            "voluntary": _switch_rate(ctx_first, ctx_end, 0, seconds),
            "involuntary": _switch_rate(ctx_first, ctx_end, 1, seconds),
        },
        "cgroup_stats": None if gone else cgroup_over_window(first["cgroup"], last["cgroup"], seconds),
        "listening": listening,
        "connections": connections,
    })
    return out


def _top(samples: list, own: set[int], ncpu: int, window_start_wall: float, targets: dict) -> tuple[list, list]:
    first = samples[0][1]["table"]
    last_t, last = samples[-1][0], samples[-1][1]["table"]
    seconds = last_t - samples[0][0]
    own = own | _descendants({pid: i["ppid"] for pid, i in last.items()}, os.getpid())
    rows = []
    for pid, now in last.items():
        if pid in own:
            continue
        before = first.get(pid)
        cpu = None
        if seconds > 0 and now["cpu_s"] is not None:
            if before is not None and before["create_time"] == now["create_time"] and before["cpu_s"] is not None:
                cpu = now["cpu_s"] - before["cpu_s"]
            elif now["create_time"] is not None and now["create_time"] >= window_start_wall:
                cpu = now["cpu_s"]  # started inside the window: all of its CPU was spent in it
        rows.append((pid, cpu, now["rss"]))
    by_cpu = sorted((r for r in rows if r[1] is not None), key=lambda r: -r[1])[:TOP_N]
    by_mem = sorted((r for r in rows if r[2] is not None), key=lambda r: -r[2])[:TOP_N]
    names: dict[int, dict] = {}
    for pid, _, _ in by_cpu + by_mem:
        if pid in names:
            continue
        try:
            info = psutil.Process(pid).as_dict(["name", "username", "cmdline"], ad_value=None)
        except psutil.NoSuchProcess:
            info = {"name": None, "username": None, "cmdline": None}
        # Any process on the host: its secrets are not ours to ship; a target's flags and values are masked.
        cmdline = _truncate(command_line(info["cmdline"], full=pid in targets))
        names[pid] = {"name": info["name"], "username": info["username"], "cmdline": cmdline}

    def record(pid, cpu, rss):
        return {"pid": pid, **names[pid],
                "cpu_percent": round(100.0 * cpu / seconds, 1) if cpu is not None and seconds > 0 else None,
                "cpu_percent_host": round(100.0 * cpu / seconds / ncpu, 1) if cpu is not None and seconds > 0 else None,
                "rss_bytes": rss, "is_target": pid in targets}

    return [record(*r) for r in by_cpu], [record(*r) for r in by_mem]


@register("process", timeout_s=5, uses_discovery=True,
          options=(Option("max_targets", "int", MAX_TARGETS, "processes a --process pattern may select",
                          low=1, high=1000),),
          diagnosis=_process_facts.CONTRIBUTION,
          description="Consumer processes (--pid, --process, discovered) and the busiest on the host: "
                      "CPU, memory, fds, state, context switches, cgroup, accept queues, connections")
def collect(ctx) -> dict:
    if not sys.platform.startswith("linux"):
        raise NotApplicable("the process probe reads /proc: Linux only")
    proc_root = ctx.paths.proc
    ncpu = psutil.cpu_count() or 1
    window_start_wall = ctx.wall_clock() - (ctx.clock() - ctx.window_start)
    notes: list[str] = []
    own = target_processes.own_family()
    targets = _select_targets(ctx, notes)
    for pid, rec in targets.items():
        if not psutil.pid_exists(pid):
            rec.update(gone=True, error=f"no process with pid {pid}")
    explicit = bool(ctx.targets.pids or ctx.targets.process_patterns)
    if explicit and targets and all(rec.get("gone") for rec in targets.values()):
        notes.append("none of the given processes is running")
    ctx.partial.update(targets=list(targets.values()), ncpu=ncpu, notes=notes)

    sampler = _Sampler(ctx, targets)
    samples = ctx.sample(sampler, count=2)
    if len(samples) < 2:
        notes.append("the deadline cut the window short: rates need two samples and are missing")
    if not samples:
        return {"targets": list(targets.values()), "top_cpu": [], "top_memory": [], "ncpu": ncpu,
                "window_s": None, "notes": notes}

    wants_backlog = any(row["state"] == "LISTEN" for _, s in samples for rows in s["sockets"].values()
                        for row in rows)
    backlogs = listen_backlogs(ctx.io_timeout(1.0)) if wants_backlog else None
    try:
        own_netns = os.readlink(f"{proc_root}/self/ns/net")
    except OSError:
        own_netns = None

    records = []
    for pid, rec in targets.items():
        if rec.get("error"):
            records.append(rec)
        else:
            records.append(_target_record(rec, samples, ncpu, sampler.fd_limits.get(pid), backlogs, own_netns,
                                          proc_root))
    ctx.partial["targets"] = records
    hidden = [str(r["pid"]) for r in records if not r.get("gone") and r.get("fds", {}).get("open") is None]
    if hidden:
        notes.append(f"open fds and sockets of pid {', '.join(hidden)} are not readable "
                     "(run qdiag as the same user or as root)")
    top_cpu, top_memory = ([], [])
    if len(samples) >= 2:
        top_cpu, top_memory = _top(samples, own, ncpu, window_start_wall, targets)
    window = samples[-1][0] - samples[0][0] if len(samples) >= 2 else None
    return {"targets": records, "top_cpu": top_cpu, "top_memory": top_memory, "ncpu": ncpu,
            "window_s": round(window, 3) if window is not None else None, "notes": notes}
