"""Faults of the thread-dump probe on real processes.

Issue 13 #3: jcmd ran on anything that looked like Java.  jcmd attaches by
sending SIGQUIT, which kills a process that is not a JVM (SIGQUIT's default
action), and keeps jcmd waiting 10 s (leaving .attach_pid* behind) on one that
catches it.  A process named java must show it is a JVM before it is
signalled, and the pid must still be the same process before each dump.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest

from qdiag import probe as P
from qdiag import targets as tg
from qdiag.config import Settings
import qdiag.probes.threads as threads_probe
from qdiag.runner import Runner

pytestmark = pytest.mark.live
HANG_GUARD_S = 60
JCMD = shutil.which("jcmd")


def run_probe(*, window=1.0, timeout=30, options=None, **targets):
    settings = Settings(targets=tg.Targets(**targets), window_s=window, timeout_s=timeout,
                        probe_options={"threads": dict(options or {})})
    results, _ = Runner(settings, [P.REGISTRY["threads"]]).run()
    return results[0]


def entry(result, pid) -> dict:
    return next(p for p in result.observations["processes"] if p["pid"] == pid)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)


def copy_as_java(tmp_path: Path, program: str) -> Path:
    """`program` under the name java: argv[0] and /proc/PID/exe both say java."""
    binary = tmp_path / "bin" / "java"
    binary.parent.mkdir()
    shutil.copy2(program, binary)
    return binary


@pytest.mark.skipif(JCMD is None, reason="no jcmd here: nothing would signal the process anyway")
def test_a_program_named_java_that_is_no_jvm_is_not_signalled(tmp_path):
    sleeper = subprocess.Popen([str(copy_as_java(tmp_path, shutil.which("sleep"))), "300"], cwd=tmp_path)
    try:
        time.sleep(0.3)
        result = run_probe(pids=(sleeper.pid,))
        assert sleeper.poll() is None, "SIGQUIT's default action killed it"
        proc = entry(result, sleeper.pid)
        assert proc["runtime"] == "java"
        assert "shows no sign of a JVM" in proc["error"] and "not signalled" in proc["error"]
        assert proc["dumps"] == 0
        # The kernel's view does not need the JVM: still there.
        assert proc.get("kernel") is not None
    finally:
        stop(sleeper)


@pytest.mark.skipif(JCMD is None, reason="no jcmd here: nothing would signal the process anyway")
def test_a_program_named_java_that_catches_sigquit_is_not_attached_to(tmp_path):
    marker = tmp_path / "got-sigquit"
    work = tmp_path / "cwd"
    work.mkdir()
    script = f"trap 'echo QUIT >> {marker}' QUIT; while :; do sleep 0.1; done"
    shell = subprocess.Popen([str(copy_as_java(tmp_path, shutil.which("bash"))), "-c", script], cwd=work)
    try:
        deadline = time.monotonic() + HANG_GUARD_S
        while not int(_status(shell.pid).get("SigCgt", "0"), 16) & threads_probe.SIGQUIT_BIT:
            assert time.monotonic() < deadline, "the trap was never set"
            time.sleep(0.05)
        began = time.monotonic()
        result = run_probe(pids=(shell.pid,))
        elapsed = time.monotonic() - began
        time.sleep(0.5)  # a trap runs between two sleeps
        assert not marker.exists(), "it was sent SIGQUIT"
        assert not list(work.glob(".attach_pid*")), "jcmd tried to attach"
        proc = entry(result, shell.pid)
        assert "shows no sign of a JVM" in proc["error"]
        assert elapsed < 1.0 + HANG_GUARD_S
    finally:
        stop(shell)


def _status(pid: int) -> dict[str, str]:
    return threads_probe._status_fields("/proc", pid)


def test_attach_safety_reads_the_kernels_view(tmp_path):
    """A fixture /proc: perf data in the target's own /tmp (its namespace pid), SigCgt."""
    root = tmp_path / "proc"
    (root / "40" / "root" / "tmp" / "hsperfdata_app").mkdir(parents=True)
    (root / "40" / "root" / "tmp" / "hsperfdata_app" / "7").write_bytes(b"\0" * 32)
    status = "Name:\tjava\nNSpid:\t40\t7\nSigCgt:\t{mask}\n"
    (root / "40" / "status").write_text(status.format(mask="0000000000000004"))
    assert threads_probe._attach_refusal(str(root), 40, "java") is None
    (root / "40" / "status").write_text(status.format(mask="0000000000000000"))  # -Xrs: SIGQUIT not caught
    assert "does not catch SIGQUIT" in threads_probe._attach_refusal(str(root), 40, "java")
    (root / "40" / "status").write_text("Name:\tjava\nNSpid:\t40\t8\nSigCgt:\t0000000000000004\n")
    assert "no sign of a JVM" in threads_probe._attach_refusal(str(root), 40, "java")  # another JVM's file


def test_a_reused_pid_is_not_dumped(tmp_path):
    """The start time taken when the target was looked at is compared before each
    dump; a different one means the pid now belongs to another process."""
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        settings = Settings(targets=tg.Targets(pids=(sleeper.pid,)), window_s=0.5, timeout_s=30)
        from qdiag.context import ProbeContext

        ctx = ProbeContext(settings=settings, name="threads")
        target = threads_probe._Target({"pid": sleeper.pid, "via": "--pid"}, ctx, psutil, threads_probe._options(ctx))
        assert target.started == psutil.Process(sleeper.pid).create_time()
        target.error = target.error_kind = None
        target.runtime, target.tool = "java", JCMD or "/bin/false"
        target.started -= 100.0  # as if the process looked at had started earlier: another one has the pid now
        target.dump()
        assert target.error_kind == "no-process" and "may now belong to another process" in target.error
        assert sleeper.poll() is None
    finally:
        stop(sleeper)


@pytest.mark.skipif(JCMD is None or shutil.which("javac") is None, reason="needs a JDK (javac, jcmd)")
def test_a_real_jvm_is_still_dumped(tmp_path):
    source = tmp_path / "Idle.java"
    source.write_text("public class Idle { public static void main(String[] a) throws Exception {"
                      " System.out.println(\"ready\"); System.out.flush(); Thread.sleep(300000); } }")
    subprocess.run(["javac", "-d", str(tmp_path), str(source)], check=True, timeout=120)
    jvm = subprocess.Popen([shutil.which("java"), "-cp", str(tmp_path), "Idle"], stdout=subprocess.PIPE, text=True)
    try:
        assert jvm.stdout.readline().strip() == "ready"
        result = run_probe(pids=(jvm.pid,))
        assert result.status == P.OK, result.error
        proc = entry(result, jvm.pid)
        assert proc["error"] is None and proc["dumps"] >= 2
    finally:
        stop(jvm)


# --------------------------------------------------------------------------- exiting during a dump

PY_SPY = shutil.which("py-spy", path=os.path.dirname(os.path.realpath(__import__("sys").executable))) \
    or shutil.which("py-spy")


def killing_wrapper(tmp_path: Path, real_tool: str, target_pid: int, kill_at: int) -> Path:
    """The dump tool, except that its `kill_at`-th run first kills the target:
    the process then exits while a dump of it is being taken."""
    counter = tmp_path / "runs"
    wrapper = tmp_path / f"{Path(real_tool).name}-killing"
    wrapper.write_text(f"#!/bin/sh\nn=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}\n"
                       f"[ \"$n\" -ge {kill_at} ] && kill -9 {target_pid}\nexec {real_tool} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def python_target() -> subprocess.Popen:
    import sys

    target = subprocess.Popen([sys.executable, "-c", "import time\nprint('ready', flush=True)\ntime.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    # Reaped as soon as it dies, so that its pid is really gone, as for a consumer that is not our child.
    threading.Thread(target=target.wait, daemon=True).start()
    return target


@pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")
@pytest.mark.parametrize("kill_at", [1, 2])
def test_a_target_exiting_during_a_dump(tmp_path, kill_at):
    target = python_target()
    try:
        wrapper = killing_wrapper(tmp_path, PY_SPY, target.pid, kill_at)
        began = time.monotonic()
        result = run_probe(window=1.5, pids=(target.pid,), options={"py_spy": str(wrapper), "dumps": 3})
        elapsed = time.monotonic() - began
        proc = entry(result, target.pid)
        if kill_at == 1:  # died during the first dump: nothing to show, and the probe says so
            assert result.status == P.ERROR, (result.status, result.error)
            assert result.error == f"pid {target.pid} exited before it could be dumped"
            assert proc["dumps"] == 0
        else:  # died during the second: the first dump is kept, and the note says what happened
            assert result.status == P.OK, result.error
            assert proc["dumps"] == 1 and proc["error"] is None
            assert any("exited after 1 dump(s)" in note for note in proc["notes"]), proc["notes"]
        assert elapsed < 1.5 + HANG_GUARD_S
    finally:
        if target.poll() is None:
            target.kill()
