"""Thread dumps of the consumer processes: is the consumer stuck, busy, or waiting on something?

Python processes are read with `py-spy dump --json`, Java processes with
`jcmd <pid> Thread.print` (or `jstack`), two to five times over the window.  Every thread is classified (probes/_threads_classify.py); per process
the probe reports counts per class, the most common stacks, hot functions,
threads whose stack never moved, and deadlocks.

py-spy's default (blocking) mode pauses the process for the few milliseconds a
dump takes, so the stacks are consistent; `nonblocking = true` under
[probes.threads] avoids the pause at the cost of possibly torn stacks.

Options ([probes.threads]): dumps (2-5, default 3), nonblocking, max_processes
(default 8), dump_timeout (py-spy, s), jcmd_timeout (s), java_locks (add -l:
also list held java.util.concurrent locks; costs the JVM a heap walk), py_spy and
jcmd (paths of the tools).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from qdiag import target_processes
from qdiag.endpoints import format_endpoint
from qdiag.runtime import process_runtime
from qdiag.probe import NotApplicable, ProbeError, Option, register
from qdiag.redact import command_line

from . import _threads_classify as tc
from ._host_parse import cgroup_frozen
from . import _threads_facts

DEFAULT_DUMPS = 3
DEFAULT_MAX_PROCESSES = 8
PYSPY_TIMEOUT_S = 5.0
JCMD_TIMEOUT_S = 10.0
MAX_SOURCE_BYTES = 4 << 20
CMDLINE_CHARS = 200
NONBLOCKING_NOTE = ("nonblocking: stacks were read without pausing the process and may be inconsistent "
                    "(less accurate than the default blocking mode)")
# Default broker ports, so a socket wait inside a broker client is matched to that broker's connection.
DEFAULT_BROKER_PORTS = {"kafka": {9092}, "amqp": {5672, 5671}, "redis": {6379}}


@register("threads", description="Classified thread dumps of consumer processes (py-spy, jcmd): on CPU, lock waits, "
                                 "socket I/O, idle; stuck threads and deadlocks",
          needs=(), timeout_s=20, uses_discovery=True, options=(
              Option("dumps", "int", DEFAULT_DUMPS, "thread dumps over the window", low=2, high=5),
              Option("max_processes", "int", DEFAULT_MAX_PROCESSES, "processes dumped", low=1, high=64),
              Option("nonblocking", "bool", False, "read stacks without pausing the process (less accurate)"),
              Option("java_locks", "bool", False, "jcmd -l: also list held java.util.concurrent locks"),
              Option("dump_timeout", "float", PYSPY_TIMEOUT_S, "seconds one py-spy dump may take", low=0.1, high=120),
              Option("jcmd_timeout", "float", JCMD_TIMEOUT_S, "seconds one jcmd dump may take", low=0.1, high=120),
              Option("py_spy", "executable", None, "path of py-spy (default: found on PATH)"),
              Option("jcmd", "executable", None, "path of jcmd (default: found on PATH)"),
          ), diagnosis=_threads_facts.CONTRIBUTION)
def collect(ctx) -> dict:
    import psutil

    opts = _options(ctx)
    targets, problems = _resolve_targets(ctx, psutil, opts["max_processes"])
    if not targets and not problems:
        raise NotApplicable("no consumer processes to dump: give --pid or --process")

    out: dict = {
        "mode": "nonblocking" if opts["nonblocking"] else "blocking",
        "accuracy": NONBLOCKING_NOTE if opts["nonblocking"] else None,
        "dumps_requested": opts["dumps"],
        "processes": [],
        "skipped_processes": problems.get("skipped", []),
        "unmatched_patterns": problems.get("unmatched", []),
    }
    ctx.partial.update(out)
    procs = [_Target(t, ctx, psutil, opts) for t in targets]
    for pid in problems.get("missing", []):
        dead = _Target({"pid": pid, "via": "--pid"}, ctx, psutil, opts)
        dead.fail("no-process", f"pid {pid} does not exist")
        procs.append(dead)

    # What the kernel says every thread waits on, sampled all window beside the
    # dumps: it needs no runtime support (Go, Node, C consumers too) and names
    # the peer of a socket wait and whether a lock wait ever woke.
    kernel = _start_kernel_sampler(ctx, [p for p in procs if p.proc is not None and not p.gone])
    live = [p for p in procs if p.error is None]
    if live:
        workers = ThreadPoolExecutor(max_workers=min(4, len(live)), thread_name_prefix="qdiag-threads")
        try:
            def take():
                now = [p for p in live if p.error is None and not p.gone]
                if kernel is not None and kernel.sampler is not None:
                    kernel.sampler.interrupting(p.pid for p in now if p.stops_threads)
                for p in now:
                    p.start_cpu()
                list(workers.map(_dump_isolated, now))
                ctx.partial["processes"] = [p.report() for p in procs]
                return len(now)

            ctx.sample(take, opts["dumps"])
        finally:
            workers.shutdown(wait=False)
        for p in live:
            p.finish()

    waits = _finish_kernel_sampler(ctx, kernel)
    for p in procs:
        p.kernel = waits.get(p.pid)
    out["processes"] = [p.report() for p in procs]
    out["kernel_sampling"] = kernel.status if kernel else "no process to sample"
    ctx.partial.update(out)
    # The probe answers for its stacks: with none, it fails and says why (no
    # permission to attach, not a Python or Java process, ...), even when the
    # kernel's view was sampled; that view stays in the observations (they are
    # kept with a failed probe) and the rules still read it.
    dumped = [p for p in procs if p.dumps]
    if not dumped:
        failures = [p for p in procs if p.error]
        if failures and all(p.error_kind == "permission" for p in failures):
            raise NotApplicable(failures[0].error)
        first = failures[0].error if failures else "no dump was taken before the deadline"
        raise ProbeError(first if len(procs) == 1 else f"{first} (and {len(procs) - 1} other process(es) failed)")
    out["summary"] = _summary(out["processes"])
    return out


def _dump_isolated(target: "_Target") -> None:
    # One process's surprise (an odd dump format, a psutil race) must not lose the others' dumps.
    try:
        target.dump()
    except Exception as exc:  # noqa: BLE001
        target._failed_dump("other", f"dumping pid {target.pid} failed: {type(exc).__name__}: {exc}")


# --------------------------------------------------------------------------- options and targets


def _options(ctx) -> dict:
    o = ctx.options
    return {
        "dumps": o["dumps"],
        "max_processes": o["max_processes"],
        "nonblocking": o["nonblocking"],
        "java_locks": o["java_locks"],
        "pyspy_timeout": o["dump_timeout"],
        "jcmd_timeout": o["jcmd_timeout"],
        "py_spy": o["py_spy"],
        "jcmd": o["jcmd"],
    }


def _resolve_targets(ctx, psutil, cap: int) -> tuple[list[dict], dict]:
    selection = target_processes.select(ctx.targets, ctx.discovered, deadline=ctx.deadline)
    targets = [{"pid": pid, "via": selection.how(pid)} for pid in selection.targets]
    problems: dict = {}
    if len(targets) > cap:
        problems["skipped"] = [t["pid"] for t in targets[cap:]]
        targets = targets[:cap]
    if selection.missing:
        problems["missing"] = selection.missing
    if selection.unmatched:
        problems["unmatched"] = selection.unmatched
        if not targets and not selection.missing:
            raise ProbeError(f"no running process matches --process {' / '.join(selection.unmatched)}; "
                             "check the pattern against `ps -eo pid,args` (it is a regular expression)")
    return targets, problems


# --------------------------------------------------------------------------- one process


def _runtime(pid: int, proc, proc_root: str) -> str | None:
    def get(read):
        try:
            return read()
        except Exception:  # a field we may not read must not hide the others
            return None

    return process_runtime(proc_root, pid, get(proc.name), get(proc.exe), get(proc.cmdline))


def _find_tool(configured, name: str, *extra_dirs: str) -> str | None:
    if configured:
        return str(configured) if os.access(str(configured), os.X_OK) else None
    for d in extra_dirs:
        if d:
            candidate = os.path.join(d, name)
            if os.access(candidate, os.X_OK):
                return candidate
    return shutil.which(name)


class _SourceLines:
    """Source lines of a target's files, read through /proc/<pid>/root so a process in
    another mount namespace (a container) is read from its own filesystem."""

    def __init__(self, pid: int, proc_root: str):
        self.prefix = f"{proc_root}/{pid}/root"
        self.cache: dict[str, list[str] | None] = {}

    def __call__(self, filename: str, line: int) -> str | None:
        if filename not in self.cache:
            self.cache[filename] = self._read(filename)
        lines = self.cache[filename]
        if lines is None or not 0 < line <= len(lines):
            return None
        return lines[line - 1]

    def _read(self, filename: str) -> list[str] | None:
        if not filename.startswith("/"):
            return None
        for path in (self.prefix + filename, filename):
            try:
                with open(path, "rb") as fh:
                    data = fh.read(MAX_SOURCE_BYTES)
            except OSError:
                continue
            return data.decode("utf-8", errors="replace").splitlines()
        return None


class _Target:
    def __init__(self, target: dict, ctx, psutil, opts: dict):
        self.pid = target["pid"]
        self.via = target["via"]
        self.ctx = ctx
        self.psutil = psutil
        self.opts = opts
        self.dumps: list[dict] = []
        self.jvm_deadlocks: list[dict] = []
        self.error: str | None = None
        self.error_kind: str | None = None
        self.notes: list[str] = []
        self.gone = False
        self.name = self.cmdline = self.runtime = self.user = None
        self.cpu_start = self.cpu_end = None
        self.kernel: dict | None = None  # the kernel's wait attribution over the window
        self.connections: list[dict] = []
        self.proc = None
        self.started: float | None = None  # the process's start time, checked before each dump
        self.lines = _SourceLines(self.pid, ctx.paths.proc)
        try:
            self.proc = psutil.Process(self.pid)
            with self.proc.oneshot():
                self.name = self.proc.name()
                cmd = self.proc.cmdline()
                self.cmdline = " ".join(command_line(cmd, full=True))[:CMDLINE_CHARS] if cmd else None
                try:
                    self.user = self.proc.username()
                except (psutil.Error, KeyError):
                    pass
            self.runtime = _runtime(self.pid, self.proc, ctx.paths.proc)
        except psutil.NoSuchProcess:
            self.fail("no-process", f"pid {self.pid} exited before it could be dumped")
            return
        except psutil.AccessDenied:
            self.fail("permission", f"cannot read pid {self.pid}'s details (access denied): {tc.ATTACH_FIX}")
            return
        if self.runtime is None:
            self.fail("unsupported", f"pid {self.pid} ({self.name or '?'}) is neither a Python nor a Java process: "
                                     "no stacks (py-spy reads CPython, jcmd a JVM); what the kernel says its "
                                     "threads wait on is still reported")
        elif self.runtime == "python":
            self.tool = _find_tool(opts["py_spy"], "py-spy", os.path.dirname(sys.executable))
            if self.tool is None:
                self.fail("tool", f"py-spy is not installed, needed to dump Python pid {self.pid}: pip install py-spy "
                                  "(or copy its single binary here and name it in [probes.threads] py_spy)"
                          + (f" (configured py_spy = {opts['py_spy']} is not executable)" if opts["py_spy"] else ""))
        elif self.runtime == "java":
            java_home = os.environ.get("JAVA_HOME")
            jdk_bin = os.path.join(java_home, "bin") if java_home else None
            self.tool = _find_tool(opts["jcmd"], "jcmd", jdk_bin) or _find_tool(None, "jstack", jdk_bin)
            refusal = _attach_refusal(ctx.paths.proc, self.pid, self.name)
            if refusal is not None:
                self.fail("unsupported", refusal)
            elif self.tool is None:
                self.fail("tool", f"no jcmd or jstack on this machine to dump Java pid {self.pid}: install a JDK "
                                  "(e.g. openjdk-17-jdk-headless) or run jcmd inside the process's container")
        self.started = _start_time(psutil, self.pid)

    @property
    def stops_threads(self) -> bool:
        """Whether a dump stops every thread of the process: py-spy's default (blocking) mode
        attaches with ptrace; its nonblocking mode and jcmd (the JVM's attach listener) do not."""
        return self.runtime == "python" and not self.opts["nonblocking"]

    def fail(self, kind: str, message: str) -> None:
        self.error_kind, self.error = kind, message

    # CPU per OS thread, as a delta over the dumps (the counters are cumulative).
    def _cpu(self):
        try:
            threads = self.proc.threads()
            total = self.proc.cpu_times()
        except Exception:
            return None
        return self.ctx.clock(), {t.id: t.user_time + t.system_time for t in threads}, total.user + total.system

    def start_cpu(self) -> None:
        if self.cpu_start is None and self.proc is not None:
            self.cpu_start = self._cpu()

    def finish(self) -> None:
        if self.error is None and not self.dumps:
            self.fail("timeout", f"no dump of pid {self.pid} was taken before the probe's deadline")
        if self.proc is None or not self.dumps:
            return
        self.cpu_end = self._cpu()
        try:
            conns = (self.proc.net_connections(kind="tcp") if hasattr(self.proc, "net_connections")
                     else self.proc.connections(kind="tcp"))
        except Exception:
            conns = []
        listening = {c.laddr.port for c in conns if c.status == "LISTEN" and c.laddr}
        self.connections = [{"raddr": format_endpoint(c.raddr.ip, c.raddr.port), "rport": c.raddr.port, "status": c.status,
                             "inbound": bool(c.laddr) and c.laddr.port in listening}
                            for c in conns if c.raddr]

    def dump(self) -> None:
        if self.error is not None or self.gone:
            return
        # The pid may have been reused since the process was looked at: never
        # signal or attach to whatever runs under that number now.
        if self.started is None or _start_time(self.psutil, self.pid) != self.started:
            self.gone = True
            if self.dumps:
                self.notes.append(f"the process exited after {len(self.dumps)} dump(s); the summary uses those")
            else:
                self.fail("no-process", f"pid {self.pid} exited before it could be dumped "
                                        "(the number may now belong to another process)")
            return
        if _status_fields(self.ctx.paths.proc, self.pid).get("State", "").startswith("T"):
            # Stopped by SIGSTOP or SIGTSTP: its threads cannot run to be dumped (py-spy fails
            # on the stop it finds, jcmd waits for a JVM that cannot answer).  Not touched.
            self._failed_dump("stopped", f"pid {self.pid} is stopped (state T: SIGSTOP, or Ctrl-Z in its terminal): "
                                         f"not dumped, since a dump needs it running; kill -CONT {self.pid} resumes it")
            return
        frozen = cgroup_frozen(self.ctx.paths.proc, self.ctx.paths.sys, self.pid)
        if frozen and frozen["frozen"]:
            # A frozen task cannot take the stop a ptrace attach sends: py-spy would wait out its
            # timeout, and a JVM cannot answer jcmd.  Not touched.
            self._failed_dump("frozen", f"pid {self.pid} is frozen by its cgroup's freezer ({frozen['path']}: "
                                        f"{frozen['file']} says {frozen['value']}, as after docker pause): not dumped, "
                                        "since a dump needs it running")
            return
        offset = self.ctx.clock() - self.ctx.window_start
        if self.runtime == "python":
            cmd = [self.tool, "dump", "--json", "--pid", str(self.pid)]
            if self.opts["nonblocking"]:
                cmd.append("--nonblocking")
            timeout = self.ctx.io_timeout(self.opts["pyspy_timeout"])
        else:
            # -l also lists the java.util.concurrent locks each thread holds, but the JVM finds
            # them by walking the heap at a safepoint: a pause on a big heap.  Off by default;
            # the JVM's deadlock report covers those locks either way.
            locks = ["-l"] if self.opts["java_locks"] else []
            cmd = [self.tool, str(self.pid), "Thread.print", *locks] if self.tool.endswith("jcmd") \
                else [self.tool, *locks, str(self.pid)]
            timeout = self.ctx.io_timeout(self.opts["jcmd_timeout"])
        tool = os.path.basename(self.tool)
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                                 env={**os.environ, "RUST_BACKTRACE": "0"})
        except subprocess.TimeoutExpired:
            self._failed_dump("timeout", f"{tool} did not finish within {timeout:.1f}s on pid {self.pid}"
                              + ("; a very large or stopped process: try nonblocking = true under [probes.threads]"
                                 if self.runtime == "python" else "; the JVM may be unable to reach a safepoint"))
            return
        except OSError as exc:
            self._failed_dump("tool", f"cannot run {self.tool}: {exc.strerror or exc}")
            return
        if self.runtime == "python":
            self._take_python(run, offset)
        else:
            self._take_java(run, offset)

    def _take_python(self, run, offset: float) -> None:
        if run.returncode != 0 or not run.stdout.strip():
            kind, message = tc.pyspy_error(run.stderr or run.stdout)
            if kind == "permission":
                why = tc.attach_denied_reason(euid=os.geteuid(), cap_eff_hex=_cap_eff(self.ctx.paths.proc),
                                              ptrace_scope=_ptrace_scope(self.ctx.paths.proc))
                message = (f"cannot attach to Python pid {self.pid} ({message}{'; ' + why if why else ''}): "
                           f"{tc.ATTACH_FIX}")
            elif kind == "not-python":
                message = f"pid {self.pid} ({self.name}): py-spy cannot read it as CPython ({message})"
            elif kind != "no-process":
                message = f"py-spy failed on pid {self.pid}: {message}"
            self._failed_dump(kind, message)
            return
        try:
            threads = tc.parse_pyspy(run.stdout)
        except ValueError as exc:
            self._failed_dump("other", f"py-spy on pid {self.pid}: {exc}")
            return
        tc.classify_python_dump(threads, self.lines)
        self.dumps.append({"offset_s": round(offset, 3), "threads": threads})

    def _take_java(self, run, offset: float) -> None:
        text = run.stdout
        if run.returncode != 0 or "Full thread dump" not in text:
            kind, message = tc.jcmd_error(text + "\n" + (run.stderr or ""))
            tool = os.path.basename(self.tool)
            if kind == "permission":
                message = (f"{tool} cannot attach to JVM {self.pid} ({message}): run qdiag as root or as the JVM's "
                           f"user{f' ({self.user})' if self.user else ''}")
            elif kind == "not-java":
                message = (f"{tool} cannot attach to JVM {self.pid} ({message}); it may run with "
                           "-XX:+DisableAttachMechanism or in a container whose /tmp is not visible here")
            elif kind != "no-process":
                message = f"{tool} failed on JVM {self.pid}: {message}"
            self._failed_dump(kind, message)
            return
        try:
            parsed = tc.parse_thread_print(text)
        except ValueError as exc:
            self._failed_dump("other", f"{os.path.basename(self.tool)} on pid {self.pid}: {exc}")
            return
        tc.classify_java_dump(parsed)
        self.jvm_deadlocks = parsed["deadlocks"]
        self.dumps.append({"offset_s": round(offset, 3), "threads": parsed["threads"]})

    def _failed_dump(self, kind: str, message: str) -> None:
        gone = kind == "no-process" or (self.proc is not None and not self.proc.is_running())
        if not self.dumps:
            self.fail(kind, f"pid {self.pid} exited before it could be dumped" if gone and kind == "no-process"
                      else message)
            return
        if gone:
            self.gone = True
            self.notes.append(f"the process exited after {len(self.dumps)} dump(s); the summary uses those")
        else:
            self.notes.append(f"dump {len(self.dumps) + 1} failed: {message}")

    # ------------------------------------------------------------------ report

    def _cpu_percent(self) -> tuple[dict, float | None]:
        if not self.cpu_start or not self.cpu_end:
            return {}, None
        (t0, per0, total0), (t1, per1, total1) = self.cpu_start, self.cpu_end
        span = t1 - t0
        if span <= 0:
            return {}, None
        per = {tid: round(100.0 * max(0.0, per1[tid] - per0[tid]) / span, 1) for tid in per1 if tid in per0}
        return per, round(100.0 * max(0.0, total1 - total0) / span, 1)

    def report(self) -> dict:
        doc = {
            "pid": self.pid, "name": self.name, "cmdline": self.cmdline, "runtime": self.runtime, "via": self.via,
            "tool": os.path.basename(self.tool) if getattr(self, "tool", None) else None,
            "dumps": len(self.dumps), "dump_offsets_s": [d["offset_s"] for d in self.dumps],
            "error": self.error, "notes": list(self.notes),
        }
        if self.kernel is not None:
            doc["kernel"] = self.kernel
        if not self.dumps:
            return doc
        per_thread, process_cpu = self._cpu_percent()
        doc["cpu_percent"] = process_cpu
        broker_ports = _broker_ports(self.ctx.targets)

        def peer(thread):
            return tc.pick_peer(self.connections, client=thread["verdict"].get("client"), broker_ports=broker_ports)

        summary = tc.summarise(self.dumps, runtime=self.runtime, cpu_percent=per_thread, peers=peer,
                               jvm_deadlocks=self.jvm_deadlocks)
        doc.update(summary)
        if self.runtime == "java":
            doc["jvm_internal_threads"] = sum(1 for t in self.dumps[-1]["threads"] if t.get("internal"))
        if len(self.dumps) < 2:
            doc["notes"].append("only one dump: stuck threads and deadlocks need two or more")
        return doc


# --------------------------------------------------------------------------- JVM attach safety

# jcmd and jstack attach to a JVM by creating .attach_pid<pid> in its working
# directory and sending it SIGQUIT; a JVM's signal handler then opens the attach
# socket /tmp/.java_pid<pid>.  To anything else SIGQUIT's default action is to
# die with a core dump, and a process that catches it without being a JVM keeps
# the tool waiting 10 s and the .attach_pid file behind.  So a process is only
# attached to when it shows it is a JVM (its perf-data file, or libjvm mapped)
# and that SIGQUIT is safe (caught per /proc/PID/status, or the attach socket
# already listening, which jcmd uses without signalling).
SIGQUIT_BIT = 1 << (3 - 1)  # SigCgt is a mask of signals 1..64, bit n-1 for signal n


def _status_fields(proc_root: str, pid: int) -> dict[str, str]:
    fields = {}
    try:
        with open(f"{proc_root}/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
    except OSError:
        pass
    return fields


def _in_target_tmp(proc_root: str, pid: int, name: str) -> str:
    # Through /proc/PID/root: a JVM in a container has its own /tmp.
    return f"{proc_root}/{pid}/root/tmp/{name}"


def _has_perf_data(proc_root: str, pid: int, nspid: str) -> bool:
    """/tmp/hsperfdata_<user>/<pid> as the JVM sees them (its user and pid in its own namespaces)."""
    try:
        with os.scandir(_in_target_tmp(proc_root, pid, "")) as entries:
            for entry in entries:
                if entry.name.startswith("hsperfdata_") and os.path.isfile(os.path.join(entry.path, nspid)):
                    return True
    except OSError:
        pass
    return False


def _attach_refusal(proc_root: str, pid: int, name: str | None) -> str | None:
    """Why jcmd must not be run on `pid`, or None when attaching is safe."""
    from qdiag.runtime import read_runtime_maps

    status = _status_fields(proc_root, pid)
    nspid = (status.get("NSpid") or str(pid)).split()[-1]
    jvm = _has_perf_data(proc_root, pid, nspid) or "/libjvm.so" in (read_runtime_maps(proc_root, pid) or "")
    label = f"pid {pid} ({name or '?'})"
    if not jvm:
        return (f"{label} is named like Java but shows no sign of a JVM (no hsperfdata file, no libjvm.so mapped): "
                "not signalled, since jcmd's SIGQUIT would kill it; what the kernel says its threads wait on is "
                "still reported")
    try:
        caught = int(status.get("SigCgt", "0"), 16) & SIGQUIT_BIT
    except ValueError:
        caught = 0
    if not caught and not stat.S_ISSOCK(_mode(_in_target_tmp(proc_root, pid, f".java_pid{nspid}"))):
        return (f"JVM {label} does not catch SIGQUIT (started with -Xrs?) and has no attach socket: jcmd's attach "
                "signal would kill it, so it was not dumped; what the kernel says its threads wait on is still "
                "reported")
    return None


def _mode(path: str) -> int:
    try:
        return os.stat(path).st_mode
    except OSError:
        return 0


def _start_time(psutil, pid: int) -> float | None:
    """When the process now at `pid` started (per the kernel; read afresh, psutil
    caches it per Process object), to tell it from a later one given the same pid."""
    try:
        return psutil.Process(pid).create_time()
    except Exception:  # gone, or not readable: not the process that was looked at
        return None


# Seconds kept back from the deadline for the kernel sampler's summary.
KERNEL_SUMMARY_RESERVE_S = 0.3


class _KernelRun:
    def __init__(self, sampler, status: str):
        self.sampler = sampler
        self.status = status


def _start_kernel_sampler(ctx, procs: list) -> "_KernelRun | None":
    if not procs:
        return None
    from . import _kernel_sampler

    try:
        sampler = _kernel_sampler.KernelSampler([p.pid for p in procs], broker_ports=_broker_ports(ctx.targets),
                                                proc_root=ctx.paths.proc, clock=ctx.clock)
    except OSError as exc:
        return _KernelRun(None, f"unavailable: {exc}")
    end = ctx.window_start + ctx.window_s
    sampler.start(ctx.window_start, end, max(ctx.window_start, ctx.deadline - KERNEL_SUMMARY_RESERVE_S))
    return _KernelRun(sampler, "sampled")


def _finish_kernel_sampler(ctx, run: "_KernelRun | None") -> dict[int, dict]:
    if run is None or run.sampler is None:
        return {}
    try:
        # The dumps end with the window; the sampler ends there too.
        if not run.sampler.join(max(0.0, ctx.remaining() - KERNEL_SUMMARY_RESERVE_S)):
            run.status = "cut short by the probe's deadline"
        return run.sampler.report()
    finally:
        run.sampler.close()


def _broker_ports(targets) -> dict[str, set[int]]:
    ports = {k: set(v) for k, v in DEFAULT_BROKER_PORTS.items()}
    if targets.kafka:
        ports["kafka"] |= {int(hp.rsplit(":", 1)[1]) for hp in targets.kafka.bootstrap}
    if targets.rabbitmq and not targets.rabbitmq.is_management:
        ports["amqp"].add(targets.rabbitmq.port)
    if targets.redis:
        ports["redis"].add(targets.redis.port)
    return ports


def _cap_eff(proc_root: str) -> str | None:
    try:
        for line in Path(f"{proc_root}/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return line.split()[1]
    except OSError:
        pass
    return None


def _ptrace_scope(proc_root: str) -> int | None:
    try:
        return int(Path(f"{proc_root}/sys/kernel/yama/ptrace_scope").read_text().strip())
    except (OSError, ValueError):
        return None


def _summary(reports: list[dict]) -> dict:
    by_class = {c: 0 for c in tc.CLASSES}
    deadlocks, stuck = [], 0
    for rep in reports:
        if not rep["dumps"]:
            continue
        for c, n in rep["counts"].items():
            by_class[c] += n
        if rep.get("deadlock"):
            deadlocks.append(rep["pid"])
        stuck += len(rep.get("stuck") or [])
    return {"processes": len(reports), "dumped": sum(1 for r in reports if r["dumps"]),
            "failed": sum(1 for r in reports if not r["dumps"]), "threads_by_class": by_class,
            "deadlocked_pids": deadlocks, "stuck_threads": stuck}
