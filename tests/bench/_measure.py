"""What every benchmark here measures a child process with, and how it names the machine.

A child's cost is read from wait4(): wall seconds around it, CPU seconds and
peak RSS of it and the children it reaped (a shell pipeline, the Erlang VM
behind rabbitmqctl, the JVM behind kafka-consumer-groups).
"""

from __future__ import annotations

import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# This tree's qdiag, here and in the children (an installed qdiag may be another checkout).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

children: list[subprocess.Popen] = []  # started here, killed on the way out


def _compile_once() -> None:
    """qdiag's bytecode, as an install has it: with PYTHONDONTWRITEBYTECODE set, every
    measured qdiag would otherwise compile its modules from source (about 0.3 CPU-s)."""
    import compileall

    for tree in ("qdiag", "probes"):
        compileall.compile_dir(str(REPO / tree), quiet=1)


_compile_once()


# wait4's ru_maxrss is no measure of a child's peak memory: the kernel keeps the
# high-water mark across exec, and the first one is the forking parent's (this
# benchmark's Python: `true` measured 315 MB from a parent holding 300 MB).
# GNU time (bash tests/rig.sh installs it) forks the command itself, from a
# process of about 2 MB, and reports the command's own peak.
GNU_TIME = "/usr/bin/time"


def measured(cmd: list[str], *, cwd: Path, stdout=subprocess.DEVNULL, timeout: float = 300) -> dict:
    """Wall seconds, CPU seconds (wait4, children included) and peak RSS in MB (GNU time) of one command."""
    if not os.access(GNU_TIME, os.X_OK):
        raise SystemExit(f"{GNU_TIME} is missing (Debian package 'time'): bash tests/rig.sh installs it")
    rss_file = Path(cwd) / f".maxrss-{os.getpid()}-{time.monotonic_ns()}"
    began = time.perf_counter()
    proc = subprocess.Popen([GNU_TIME, "-f", "%M", "-o", str(rss_file), *cmd], cwd=cwd, stdout=stdout,
                            stderr=subprocess.PIPE, start_new_session=True, env=CHILD_ENV)
    children.append(proc)
    timer = threading.Timer(timeout, lambda: kill(proc))
    timer.start()
    try:
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        timer.cancel()
        children.remove(proc)
    try:
        rss_mb = int(rss_file.read_text().split()[-1]) / 1024
    except (OSError, ValueError, IndexError):
        rss_mb = None
    rss_file.unlink(missing_ok=True)
    err_text = err.decode(errors="replace")
    if proc.returncode != 0 and err_text.startswith("Command exited with non-zero status"):
        err_text = err_text.split("\n", 1)[-1]
    return {"wall_s": time.perf_counter() - began, "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": rss_mb, "exit": proc.returncode, "stderr": err_text}


def kill(proc: subprocess.Popen) -> None:
    """Kill a child started here, with whatever it started (its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_all(keep: tuple = ()) -> None:
    for proc in list(children):
        if proc not in keep:
            kill(proc)


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def machine() -> str:
    """CPU model, cores, memory and kernel, in one line."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{mem_kb / 1024 / 1024:.0f} GiB"
    except (OSError, IndexError, ValueError):
        mem = "? GiB"
    return f"{model or platform.machine()}, {os.cpu_count()} cores, {mem}, Linux {platform.release()}, " \
           f"Python {platform.python_version()}"
