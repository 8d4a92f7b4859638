"""The thread-dump probe on real processes that the tests start.

Needs the right to attach to a child process (root or CAP_SYS_PTRACE; the
tests skip with the reason otherwise) and, for the Java test, a JDK.
"""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

from qdiag import probe as P
from qdiag import targets as tg
from qdiag.config import Settings
from qdiag.context import ProbeContext
import qdiag.probes.threads  # noqa: F401  (registers the probe)
from qdiag.probes import _threads_classify as tc
from qdiag.runner import Runner
from tests.freezer import frozen

pytestmark = pytest.mark.live  # runs the probe against this host: spawned processes, sockets, files

WINDOW_S = 2.0
PY_SPY = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")


def run_probe(*, window=WINDOW_S, options=None, discovered=None, **targets):
    settings = Settings(targets=tg.Targets(**targets), window_s=window, timeout_s=60,
                        probe_options={"threads": dict(options or {})})
    runner = Runner(settings, [P.REGISTRY["threads"]])
    if discovered is not None:
        runner._discover = lambda probes, deadline: list(discovered)
    results, _ = runner.run()
    return results[0]


def process(result, pid) -> dict:
    return next(p for p in result.observations["processes"] if p["pid"] == pid)


def thread(proc: dict, name: str) -> dict:
    found = [t for t in proc["threads"] if t["name"] == name]
    assert found, f"no thread {name!r} in {[t['name'] for t in proc['threads']]}"
    return found[0]


def spawn(tmp_path: Path, name: str, body: str, *args) -> subprocess.Popen:
    """Start a Python script and wait until it prints "ready"."""
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(body))
    proc = subprocess.Popen([sys.executable, str(script), *map(str, args)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "ready", f"{name} did not start"
    return proc


def spawn_detached(tmp_path: Path, name: str, body: str, *args) -> int:
    """Start a Python script that is not this process's child (qdiag leaves its own children
    alone, and the probe runs inside pytest here); returns its pid once it is ready."""
    script = tmp_path / f"{name}.py"
    ready = tmp_path / f"{name}.ready"
    script.write_text(textwrap.dedent(body).replace("READY_FILE", repr(str(ready))))
    argv = " ".join(shlex.quote(a) for a in (sys.executable, str(script), *map(str, args)))
    shell = subprocess.run(["/bin/sh", "-c", f"{argv} </dev/null >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True, timeout=30)
    pid = int(shell.stdout.strip())
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.05)
    return pid


def kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


@pytest.fixture(scope="module", autouse=True)
def attach_allowed():
    if PY_SPY is None:
        pytest.skip("py-spy is not installed")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.3)
        run = subprocess.run([PY_SPY, "dump", "--json", "--pid", str(child.pid)], capture_output=True, text=True,
                             timeout=30, env={**os.environ, "RUST_BACKTRACE": "0"})
    finally:
        stop(child)
    kind, message = tc.pyspy_error(run.stderr) if run.returncode else (None, None)
    if kind == "permission":
        pytest.skip(f"cannot attach to a child process here ({message}): run as root or with CAP_SYS_PTRACE")


class _Slow(http.server.BaseHTTPRequestHandler):
    release = threading.Event()

    def do_GET(self):  # noqa: N802
        self.release.wait(60)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def consumers(tmp_path_factory):
    """Four consumers at once, dumped by one probe run over them all."""
    tmp = tmp_path_factory.mktemp("consumers")
    handler = type("Slow", (_Slow,), {"release": threading.Event()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    procs = {}
    try:
        procs["busy"] = spawn(tmp, "busy_consumer", """
            def score_order(n):
                total = 0
                for i in range(n):
                    total = (total * 31 + i) % 1000003
                return total

            print("ready", flush=True)
            while True:
                score_order(200000)
            """)
        procs["deadlock"] = spawn(tmp, "deadlocked_consumer", """
            import threading, time
            stock = threading.Lock()
            ledger = threading.Lock()
            both = threading.Barrier(2)

            def reserve():
                with stock:
                    both.wait()
                    with ledger:
                        pass

            def settle():
                ledger.acquire()
                both.wait()
                stock.acquire()

            for f in (reserve, settle):
                threading.Thread(target=f, name=f.__name__).start()
            time.sleep(0.3)
            print("ready", flush=True)
            """)
        procs["http"] = spawn(tmp, "http_consumer", """
            import sys, urllib.request
            print("ready", flush=True)
            urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/price", timeout=120).read()
            """, server.server_address[1])
        procs["idle"] = spawn(tmp, "idle_consumer", """
            import queue, threading, time

            def nap():
                time.sleep(3600)

            jobs = queue.Queue()
            threading.Thread(target=nap, name="napper", daemon=True).start()
            print("ready", flush=True)
            while True:
                job = jobs.get()
            """)
        time.sleep(0.5)  # the HTTP request is sent, the deadlock has formed
        result = run_probe(pids=tuple(p.pid for p in procs.values()))
        yield result, {k: p.pid for k, p in procs.items()}, server.server_address[1]
    finally:
        handler.release.set()
        stop(*procs.values())
        server.shutdown()
        server.server_close()


def test_probe_succeeds_on_all_four(consumers):
    result, pids, _ = consumers
    assert result.status == P.OK, result.error
    obs = result.observations
    assert obs["mode"] == "blocking" and obs["accuracy"] is None
    assert obs["summary"]["dumped"] == 4 and obs["summary"]["failed"] == 0
    for pid in pids.values():
        proc = process(result, pid)
        assert proc["runtime"] == "python" and proc["error"] is None
        assert proc["dumps"] >= 2, proc["notes"]
        assert proc["dump_offsets_s"][-1] - proc["dump_offsets_s"][0] > WINDOW_S / 2


def test_a_cpu_bound_consumer_is_on_cpu_with_its_hot_function(consumers):
    result, pids, _ = consumers
    proc = process(result, pids["busy"])
    main = thread(proc, "MainThread")
    assert main["class"] == tc.ON_CPU
    assert proc["hot_functions"][0]["function"] == "score_order"
    assert proc["hot_functions"][0]["where"].startswith("score_order (busy_consumer.py:")
    assert main["cpu_percent"] is not None and main["cpu_percent"] > 0


def test_two_threads_deadlocked_on_two_locks_are_reported(consumers):
    result, pids, _ = consumers
    proc = process(result, pids["deadlock"])
    assert thread(proc, "reserve")["class"] == tc.LOCK_WAIT
    assert thread(proc, "settle")["class"] == tc.LOCK_WAIT
    assert proc["deadlock"] is not None
    assert sorted(proc["deadlock"]["threads"]) == ["reserve", "settle"]
    assert result.observations["summary"]["deadlocked_pids"] == [pids["deadlock"]]


def test_a_consumer_waiting_on_a_slow_http_server_is_in_socket_io_with_the_peer(consumers):
    result, pids, port = consumers
    proc = process(result, pids["http"])
    main = thread(proc, "MainThread")
    assert main["class"] == tc.SOCKET_IO, main
    assert "http" in main["detail"]
    assert main["peer"] == f"127.0.0.1:{port}"
    assert "MainThread" in {s["thread"] for s in proc["stuck"]}


def test_an_idle_consumer_is_queue_wait_and_a_sleeper_is_sleep(consumers):
    result, pids, _ = consumers
    proc = process(result, pids["idle"])
    assert thread(proc, "MainThread")["class"] == tc.QUEUE_WAIT
    assert "queue.Queue.get" in thread(proc, "MainThread")["detail"]
    assert thread(proc, "napper")["class"] == tc.SLEEP
    assert proc["stuck"] == [] and proc["deadlock"] is None


def test_nothing_else_is_reported_as_deadlocked(consumers):
    result, pids, _ = consumers
    for key in ("busy", "http", "idle"):
        assert process(result, pids[key])["deadlock"] is None


# --------------------------------------------------------------------------- targets and bad input


def test_no_process_target_is_not_applicable():
    result = run_probe()
    assert result.status == P.NOT_APPLICABLE
    assert "--pid or --process" in result.error


def test_process_pattern_and_discovered_consumers(tmp_path):
    token = f"qdiag-threads-{uuid.uuid4().hex[:8]}"
    body = """
        import pathlib, time
        pathlib.Path(READY_FILE).touch()
        time.sleep(3600)
        """
    by_pattern = spawn_detached(tmp_path, "by_pattern", body, token)
    by_broker = spawn_detached(tmp_path, "by_broker", body)
    # A child of qdiag's own process matching the pattern is left alone (it would be py-spy or jcmd).
    own_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)", token])
    try:
        result = run_probe(window=1.0, process_patterns=(rf"{token}$",),
                           discovered=[{"pid": by_broker, "via": "redis client", "subject": "jobs"}])
        assert result.status == P.OK, result.error
        procs = {p["pid"]: p for p in result.observations["processes"]}
        assert set(procs) == {by_pattern, by_broker}
        assert procs[by_pattern]["via"] == f"--process {token}$"
        assert procs[by_broker]["via"] == "discovered: redis client jobs"
        assert thread(procs[by_broker], "MainThread")["class"] == tc.SLEEP
    finally:
        kill_pid(by_pattern)
        kill_pid(by_broker)
        stop(own_child)


def test_a_pattern_matching_nothing_is_an_error():
    result = run_probe(window=0.5, process_patterns=(f"no-such-process-{uuid.uuid4().hex}",))
    assert result.status == P.ERROR and "no running process matches" in result.error


def test_bad_processes_get_one_line_each_and_the_others_are_dumped(tmp_path):
    good = spawn(tmp_path, "good", """
        import time
        print("ready", flush=True)
        time.sleep(3600)
        """)
    not_python = subprocess.Popen(["sleep", "3600"])
    missing = 5_000_000  # above Linux's largest pid_max (2**22): never a live process
    try:
        result = run_probe(window=1.0, pids=(good.pid, not_python.pid, missing))
        assert result.status == P.OK, result.error
        assert process(result, good.pid)["dumps"] >= 2
        other = process(result, not_python.pid)
        assert "neither a Python nor a Java process" in other["error"] and "\n" not in other["error"]
        assert other["dumps"] == 0
        assert process(result, missing)["error"] == f"pid {missing} does not exist"
        assert not_python.poll() is None  # nothing was sent to it
    finally:
        stop(good, not_python)


def test_when_every_process_fails_the_probe_fails_with_the_first_reason():
    not_python = subprocess.Popen(["sleep", "3600"])
    try:
        result = run_probe(window=0.5, pids=(not_python.pid,))
        assert result.status == P.ERROR
        assert result.error.startswith(f"pid {not_python.pid} (sleep) is neither a Python nor a Java process")
    finally:
        stop(not_python)


def test_a_stopped_python_process_is_not_attached_to_and_stays_stopped(tmp_path):
    """SIGSTOP (or Ctrl-Z): py-spy would fail on the stop it finds; the probe says why, in one
    line, and leaves the process as it was: still stopped, never resumed."""
    stopped = spawn(tmp_path, "stopped", """
        import time
        print("ready", flush=True)
        time.sleep(3600)
        """)
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        result = run_probe(window=1.0, pids=(stopped.pid,))
        assert result.status == P.ERROR
        assert result.error.startswith(f"pid {stopped.pid} is stopped (state T") and "kill -CONT" in result.error
        with open(f"/proc/{stopped.pid}/stat") as fh:
            assert fh.read().rsplit(")", 1)[1].split()[0] == "T"
    finally:
        os.kill(stopped.pid, signal.SIGCONT)
        stop(stopped)


def test_a_frozen_process_is_not_attached_to_and_stays_frozen(tmp_path):
    """docker pause (the v2 cgroup freezer): a ptrace attach would wait for a stop the frozen
    task cannot take; the probe says why in one line, and the kernel's view of its threads stays."""
    paused = spawn(tmp_path, "paused", """
        import time
        print("ready", flush=True)
        time.sleep(3600)
        """)
    try:
        with frozen(paused.pid, "v2") as cgroup:
            began = time.monotonic()
            result = run_probe(window=1.0, pids=(paused.pid,))
            assert time.monotonic() - began < 15  # py-spy's timeout not waited out
            assert result.status == P.ERROR
            assert result.error.startswith(f"pid {paused.pid} is frozen by its cgroup's freezer ({cgroup}: "), \
                result.error
            with open(f"/proc/{paused.pid}/cgroup") as fh:
                assert f"0::{cgroup}" in fh.read().split()
    finally:
        stop(paused)


def test_a_process_that_exits_mid_window_keeps_its_dumps(tmp_path):
    short = spawn(tmp_path, "short_lived", """
        import time
        print("ready", flush=True)
        time.sleep(3600)
        """)
    settings = Settings(targets=tg.Targets(pids=(short.pid,)), window_s=3.0)
    now = time.monotonic()
    ctx = ProbeContext(settings=settings, name="threads", deadline=now + 30, window_start=now)
    box = {}
    worker = threading.Thread(target=lambda: box.update(out=P.REGISTRY["threads"].collect(ctx)), daemon=True)
    worker.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            procs = ctx.partial.get("processes") or []
            if procs and procs[0]["dumps"] >= 1:
                break
            time.sleep(0.05)
        short.kill()
        short.wait()
        worker.join(30)
        assert not worker.is_alive()
        proc = box["out"]["processes"][0]
        assert proc["dumps"] >= 1 and proc["error"] is None
        assert any("exited after" in note for note in proc["notes"]), proc["notes"]
        assert proc["threads"][0]["name"] == "MainThread"
    finally:
        stop(short)


def test_nonblocking_mode_is_labelled_less_accurate(tmp_path):
    proc = spawn(tmp_path, "nonblocking", """
        import queue
        print("ready", flush=True)
        queue.Queue().get()
        """)
    try:
        result = run_probe(window=1.0, pids=(proc.pid,), options={"nonblocking": True, "dumps": 2})
        assert result.status == P.OK, result.error
        assert result.observations["mode"] == "nonblocking"
        assert "less accurate" in result.observations["accuracy"]
        assert process(result, proc.pid)["dumps"] == 2
        assert thread(process(result, proc.pid), "MainThread")["class"] == tc.QUEUE_WAIT
    finally:
        stop(proc)


@pytest.fixture
def unprivileged_py_spy():
    """A py-spy that runs as nobody: real py-spy, really refused by the kernel."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run py-spy as an unprivileged user")
    # Outside pytest's 0700 temporary tree, so that nobody can execute the copy.
    where = Path(tempfile.mkdtemp(prefix="qdiag-threads-"))
    try:
        where.chmod(0o755)
        binary = where / "py-spy"
        shutil.copy2(PY_SPY, binary)
        binary.chmod(0o755)
        wrapper = where / "py-spy-as-nobody"
        wrapper.write_text(f"#!/bin/sh\nexec {setpriv} --reuid=65534 --regid=65534 --clear-groups {binary} \"$@\"\n")
        wrapper.chmod(0o755)
        yield wrapper
    finally:
        shutil.rmtree(where, ignore_errors=True)


def test_without_permission_to_attach_the_probe_is_not_applicable_with_the_fix(tmp_path, unprivileged_py_spy):
    wrapper = unprivileged_py_spy
    proc = spawn(tmp_path, "root_owned", """
        import time
        print("ready", flush=True)
        time.sleep(3600)
        """)
    try:
        result = run_probe(window=0.5, pids=(proc.pid,), options={"py_spy": str(wrapper)})
        assert result.status == P.NOT_APPLICABLE, (result.status, result.error)
        assert "--cap-add SYS_PTRACE" in result.error and "kubectl debug --profile=general" in result.error
        assert "run as root" in result.error
    finally:
        stop(proc)


# --------------------------------------------------------------------------- Java

JAVA_DEADLOCK = """
public class Deadlock {
    static final Object INVENTORY = new Object();
    static final Object PAYMENTS = new Object();

    public static void main(String[] args) throws Exception {
        Thread a = new Thread(() -> { synchronized (INVENTORY) { pause(); synchronized (PAYMENTS) { } } }, "reserver");
        Thread b = new Thread(() -> { synchronized (PAYMENTS) { pause(); synchronized (INVENTORY) { } } }, "charger");
        a.start();
        b.start();
        System.out.println("ready");
        System.out.flush();
        a.join();
    }

    static void pause() {
        try { Thread.sleep(300); } catch (InterruptedException e) { }
    }
}
"""


def test_a_java_deadlock_is_reported_from_the_jvm(tmp_path):
    javac, java = shutil.which("javac"), shutil.which("java")
    if not javac or not java or not (shutil.which("jcmd") or shutil.which("jstack")):
        pytest.skip("no JDK here (javac, java and jcmd or jstack are needed)")
    (tmp_path / "Deadlock.java").write_text(JAVA_DEADLOCK)
    subprocess.run([javac, "-d", str(tmp_path), str(tmp_path / "Deadlock.java")], check=True, timeout=120)
    jvm = subprocess.Popen([java, "-cp", str(tmp_path), "Deadlock"], stdout=subprocess.PIPE, text=True)
    try:
        assert jvm.stdout.readline().strip() == "ready"
        time.sleep(1.0)  # both threads are past their 300 ms pause
        result = run_probe(pids=(jvm.pid,))
        assert result.status == P.OK, result.error
        proc = process(result, jvm.pid)
        assert proc["runtime"] == "java" and proc["tool"] in ("jcmd", "jstack")
        assert proc["deadlock"]["source"] == "jvm" and proc["deadlock"]["confirmed"] is True
        assert sorted(proc["deadlock"]["threads"]) == ["charger", "reserver"]
        assert thread(proc, "reserver")["class"] == tc.LOCK_WAIT
        assert thread(proc, "main")["class"] == tc.QUEUE_WAIT
        assert proc["jvm_internal_threads"] > 0
    finally:
        stop(jvm)
