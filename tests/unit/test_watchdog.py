"""The run's deadline holds whatever the probes and the CPU do: it counts from
the process's start, a guard stops a run that overran it, and the kernel's
SIGALRM stops one whose threads cannot run at all."""

import dataclasses
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil

from qdiag import probe as P
from qdiag import watchdog
from qdiag.config import resolve
from qdiag.exit_codes import ExitCode
from qdiag.runner import Runner

REPO = Path(__file__).resolve().parents[2]


def test_process_started_is_this_process_start():
    # This interpreter has been running a while (pytest's start, the imports): the
    # answer is the process's age from the kernel, not "now".
    now = time.monotonic()
    started = watchdog.process_started()
    age_by_psutil = time.time() - psutil.Process().create_time()
    assert started <= now
    assert abs((now - started) - age_by_psutil) < 1.0


def test_process_started_in_a_fresh_child_is_recent():
    code = "from qdiag import watchdog; import time; print(time.monotonic() - watchdog.process_started())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert 0.0 <= float(out.stdout) < 30.0


def _guard(deadline, timeout_s, stderr, stopped, **kw):
    return watchdog.guard(stderr, deadline=deadline, timeout_s=timeout_s, stop=stopped.append, use_alarm=False, **kw)


def test_guard_stops_a_run_that_overran(monkeypatch):
    monkeypatch.setattr(watchdog, "GRACE_S", 0.2)
    monkeypatch.setattr(watchdog, "GRACE_SHARE", 0.0)
    stderr, stopped = io.StringIO(), []
    with _guard(time.monotonic(), 1.0, stderr, stopped):
        limit = time.monotonic() + 30
        while not stopped and time.monotonic() < limit:
            time.sleep(0.02)
    assert stopped == [int(ExitCode.UNKNOWN)]
    text = stderr.getvalue()
    assert text.startswith("qdiag: error: still probing") and "--timeout of 1s" in text
    assert text.count("\n") == 1 and "Traceback" not in text  # one line without --debug


def test_guard_with_debug_shows_where_each_thread_was(monkeypatch):
    monkeypatch.setattr(watchdog, "GRACE_S", 0.1)
    monkeypatch.setattr(watchdog, "GRACE_SHARE", 0.0)
    stderr, stopped = io.StringIO(), []

    def hung_in_a_named_place():
        limit = time.monotonic() + 30
        while not stopped and time.monotonic() < limit:
            time.sleep(0.02)

    with _guard(time.monotonic(), 1.0, stderr, stopped, debug=True):
        hung_in_a_named_place()
    assert "hung_in_a_named_place" in stderr.getvalue()
    assert stderr.getvalue().rstrip().splitlines()[-1].startswith("qdiag: error: still probing")


def test_guard_does_nothing_when_the_block_ends_in_time(monkeypatch):
    monkeypatch.setattr(watchdog, "GRACE_S", 0.1)
    monkeypatch.setattr(watchdog, "GRACE_SHARE", 0.0)
    stderr, stopped = io.StringIO(), []
    with _guard(time.monotonic() + 0.2, 1.0, stderr, stopped):
        pass
    time.sleep(0.6)  # well past when it would have fired
    assert stopped == [] and stderr.getvalue() == ""
    assert not [t for t in threading.enumerate() if t.name == "qdiag-watchdog"]


def test_grace_grows_with_the_timeout():
    assert watchdog.grace(30) < watchdog.grace(300)
    assert watchdog.grace(0) == watchdog.GRACE_S


def _child(body: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_guarded_process_whose_threads_cannot_run_is_ended_by_sigalrm():
    # The main thread holds the interpreter's lock in one C call (a backtracking
    # regex) for far longer than the test: the guard's thread never gets to run,
    # the kernel's alarm ends the process anyway.
    began = time.monotonic()
    run = _child("""
        import re, time
        from qdiag import watchdog
        watchdog.GRACE_S, watchdog.GRACE_SHARE, watchdog.ALARM_AFTER_S = 0.0, 0.0, 1.0
        watchdog.allow_alarm()
        # Due three seconds in: by then the main thread is inside the regex, even on a loaded machine.
        with watchdog.guard(__import__("sys").stderr, deadline=time.monotonic() + 3.0, timeout_s=1.0):
            re.match(r"(a|aa)*c", "a" * 60)
        print("finished")
    """)
    assert run.returncode == -signal.SIGALRM, (run.returncode, run.stderr[-500:])
    assert "finished" not in run.stdout
    assert time.monotonic() - began < 45  # bounded: it did not run to the regex's end


def test_a_guarded_process_that_overran_exits_unknown_with_one_line():
    run = _child("""
        import time
        from qdiag import watchdog
        watchdog.GRACE_S, watchdog.GRACE_SHARE = 0.2, 0.0
        watchdog.allow_alarm()
        with watchdog.guard(__import__("sys").stderr, deadline=time.monotonic(), timeout_s=2.0):
            time.sleep(60)
    """)
    assert run.returncode == int(ExitCode.UNKNOWN)
    assert run.stderr.startswith("qdiag: error: still probing") and run.stderr.count("\n") == 1


def test_runner_deadline_counts_from_the_run_start(tmp_path):
    # A run that began 1.5 s ago (a slow start) with --timeout 2 has about half a
    # second left for its probes, not two seconds.
    release = threading.Event()

    def hang(ctx):
        release.wait(30)
        return {}

    s = dataclasses.replace(resolve({"window": 0.1, "timeout": 2.0, "auto_detect": False}, env={}, cwd=tmp_path),
                            started_at=time.monotonic() - 1.5)
    began = time.monotonic()
    results, _ = Runner(s, [P.Probe(name="stuck", collect=hang, description="stuck", timeout_s=30)]).run()
    waited = time.monotonic() - began
    release.set()
    assert results[0].status == P.TIMEOUT and "--timeout was reached" in results[0].error
    assert waited < 1.0  # the 2 s budget minus the 1.5 s already spent (and the report's reserve)
