"""The kernel wait sampler on real processes the tests start: a consumer
blocked on a slow HTTP service, a plain deadlock, a busy loop, consumers
written in C and Go, a process that exits mid-window, and a sampler without
the privilege to read system calls.

Reading another process's /proc/PID/task/TID/syscall and memory needs root
or CAP_SYS_PTRACE; the module skips with that reason otherwise.  Windows are
a few seconds; the only time limits are wide hang guards.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from qdiag.probes import _kernel_sampler as ks
from tests.servers import silent_listener

WINDOW_S = 2.5
ANSWER_DELAY_S = 0.5
HANG_GUARD_S = 60


def _can_read_syscalls() -> str | None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.2)
        Path(f"/proc/{child.pid}/syscall").read_text()
        return None
    except OSError as exc:
        return f"cannot read another process's /proc/PID/syscall ({exc.strerror}): run as root or with CAP_SYS_PTRACE"
    finally:
        child.kill()
        child.wait()


@pytest.fixture(scope="module", autouse=True)
def privileged():
    why = _can_read_syscalls()
    if why:
        pytest.skip(why)


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802
        time.sleep(ANSWER_DELAY_S)
        body = b"done"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def slow_http():
    """An HTTP service that accepts at once and answers every request after 500 ms."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def silent_broker():
    """A listener standing in for a broker: accepts and never sends (an idle consumer's view)."""
    with silent_listener() as port:
        yield port


@pytest.fixture
def start(tmp_path):
    """start(code or argv, *args) -> (Popen, first stdout line parsed as JSON)."""
    started = []

    def run(code_or_argv, *args):
        if isinstance(code_or_argv, str):
            script = tmp_path / f"child{len(started)}.py"
            script.write_text(textwrap.dedent(code_or_argv))
            argv = [sys.executable, str(script), *map(str, args)]
        else:
            argv = [*code_or_argv, *map(str, args)]
        child = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        started.append(child)
        line = child.stdout.readline()
        assert line, f"{argv[0]} exited before it was ready"
        return child, json.loads(line)

    yield run
    for child in started:
        if child.poll() is None:
            child.kill()
        child.wait(HANG_GUARD_S)
        child.stdout.close()


def sample(pids, *, window=WINDOW_S, settle=0.5, **options) -> dict:
    time.sleep(settle)  # let the children reach their waits
    t0 = time.monotonic()
    report = ks.sample_window(pids, t0, t0 + window, t0 + HANG_GUARD_S, **options)
    assert time.monotonic() - t0 < HANG_GUARD_S
    return report


def thread_doc(report: dict, tid: int) -> dict:
    found = [t for t in report["threads"] if t["tid"] == tid]
    assert found, f"thread {tid} not in {[t['tid'] for t in report['threads']]}"
    return found[0]


CONSUMER = """
    import json, socket, sys, threading, requests
    http_port, broker_port = int(sys.argv[1]), int(sys.argv[2])
    tids = {}
    ready = threading.Barrier(3)

    def work():
        tids["worker"] = threading.get_native_id()
        ready.wait()
        while True:
            requests.get(f"http://127.0.0.1:{http_port}/order", timeout=30)

    def broker():
        tids["broker"] = threading.get_native_id()
        conn = socket.create_connection(("127.0.0.1", broker_port))
        ready.wait()
        conn.recv(1)  # waits for a delivery that never comes

    for body in (work, broker):
        threading.Thread(target=body, daemon=True).start()
    ready.wait()
    print(json.dumps(tids), flush=True)
    threading.Event().wait()
"""


def test_a_consumer_blocked_on_a_slow_http_service_waits_on_that_peer(start, slow_http, silent_broker):
    child, tids = start(CONSUMER, slow_http, silent_broker)
    report = sample([child.pid], broker_ports={"amqp": {silent_broker}})[child.pid]
    peer = f"127.0.0.1:{slow_http}"
    worker = thread_doc(report, tids["worker"])
    assert worker["dominant"]["kind"] == "peer" and worker["dominant"]["target"] == peer
    assert worker["dominant"]["share"] >= 0.6, worker  # it sends a request, then waits ~500 ms for each answer
    idle = thread_doc(report, tids["broker"])
    assert idle["dominant"] == {"kind": "broker", "target": f"127.0.0.1:{silent_broker}", "share": 1.0}
    entry = next(e for e in report["attribution"] if e["target"] == peer)
    assert entry["kind"] == "peer" and entry["threads"] == 1 and entry["protocol_guess"] is None
    # The passive view of that connection: requests sat unanswered for hundreds of ms,
    # although the service accepts connections at once.
    tcp = next(p for p in report["peers"] if p["peer"] == peer)["tcp"]
    assert tcp is not None and tcp["awaiting_answer_share"] >= 0.5, tcp
    assert tcp["request_waits"]["requests"] >= 1 and tcp["request_waits"]["max_ms"] >= 200, tcp
    assert tcp["rtt_ms"] is not None and tcp["rtt_ms"] < 100  # loopback: the network is not the slow part
    broker_peer = next(p for p in report["peers"] if p["peer"] == f"127.0.0.1:{silent_broker}")
    assert broker_peer["kind"] == "broker" and broker_peer["protocol_guess"] == "amqp"
    assert report["tcp_info"] == "sampled" and report["syscall_table"] == os.uname().machine


DEADLOCK = """
    import json, threading, time
    lock_a = threading.Lock()
    lock_b = threading.Lock()
    tids = {}
    both_hold_one = threading.Barrier(2)

    def first(name, mine, other):
        tids[name] = threading.get_native_id()
        with mine:
            both_hold_one.wait()
            with other:
                pass

    threads = [threading.Thread(target=first, args=("one", lock_a, lock_b), daemon=True),
               threading.Thread(target=first, args=("two", lock_b, lock_a), daemon=True)]
    for t in threads:
        t.start()
    while len(tids) < 2:
        time.sleep(0.01)
    print(json.dumps(tids), flush=True)
    threads[0].join()
"""


def test_two_deadlocked_threads_wait_on_futexes_and_never_wake(start):
    child, tids = start(DEADLOCK)
    report = sample([child.pid])[child.pid]
    futexes = set()
    for name in ("one", "two"):
        doc = thread_doc(report, tids[name])
        assert doc["dominant"]["kind"] == "lock" and doc["dominant"]["share"] == 1.0
        assert doc["never_woke"] is True and doc["futex"].startswith("futex 0x")
        futexes.add(doc["futex"])
    assert len(futexes) == 2  # each waits on the lock the other holds
    assert {w["tid"] for w in report["lock_waits_never_woke"]} >= set(tids.values())
    assert report["shares"]["lock"] == 1.0  # the main thread waits in join(): a futex too


BUSY = """
    import json, threading
    def spin():
        n = 0
        while True:
            n += 1
    print(json.dumps({"main": threading.get_native_id()}), flush=True)
    spin()
"""


def test_a_busy_loop_is_on_cpu(start):
    child, tids = start(BUSY)
    report = sample([child.pid])[child.pid]
    doc = thread_doc(report, tids["main"])
    assert doc["dominant"]["kind"] == "cpu" and doc["dominant"]["share"] >= 0.5, doc
    assert doc["cpu_s"] and doc["cpu_s"] > 0 and doc["never_woke"] is False
    assert report["shares"]["cpu"] >= 0.5


C_CONSUMER = r"""
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One request per connection, answer read with a plain blocking read(). */
int main(int argc, char **argv) {
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    printf("{\"main\": %d}\n", getpid());
    fflush(stdout);
    char buf[4096];
    const char *request = "GET /c HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n";
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0 && write(fd, request, strlen(request)) > 0)
            while (read(fd, buf, sizeof buf) > 0) {}
        close(fd);
    }
}
"""


def test_a_c_consumer_blocked_in_read_waits_on_its_peer(start, slow_http, tmp_path):
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler (cc or gcc) on this machine to build the C consumer")
    source = tmp_path / "consumer.c"
    source.write_text(C_CONSUMER)
    binary = tmp_path / "consumer"
    subprocess.run([compiler, "-O1", "-o", str(binary), str(source)], check=True, capture_output=True,
                   timeout=HANG_GUARD_S)
    child, tids = start([str(binary)], slow_http)
    report = sample([child.pid])[child.pid]
    doc = thread_doc(report, tids["main"])
    assert doc["dominant"]["kind"] == "peer" and doc["dominant"]["target"] == f"127.0.0.1:{slow_http}", doc
    assert doc["detail"] == "read"


GO_CONSUMER = """
package main

import (
	"fmt"
	"net"
	"os"
)

// One request per connection; goroutines block in the runtime's netpoller
// (one thread in epoll_pwait), not in read().
func main() {
	fmt.Println("{}")
	buf := make([]byte, 4096)
	for {
		conn, err := net.Dial("tcp", "127.0.0.1:"+os.Args[1])
		if err != nil {
			continue
		}
		fmt.Fprint(conn, "GET /go HTTP/1.1\\r\\nHost: go\\r\\nConnection: close\\r\\n\\r\\n")
		for {
			if _, err := conn.Read(buf); err != nil {
				break
			}
		}
		conn.Close()
	}
}
"""


def test_a_go_consumer_waits_on_its_peer_through_the_netpoller(start, slow_http, tmp_path):
    go = shutil.which("go") or (os.path.exists("/usr/local/go/bin/go") and "/usr/local/go/bin/go")
    if not go:
        pytest.skip("no Go toolchain on this machine to build the Go consumer")
    (tmp_path / "main.go").write_text(GO_CONSUMER)
    binary = tmp_path / "consumer"
    env = {**os.environ, "GO111MODULE": "off", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(binary), str(tmp_path / "main.go")], check=True, capture_output=True,
                   timeout=300, env=env, cwd=tmp_path)
    child, _ = start([str(binary)], slow_http)
    report = sample([child.pid])[child.pid]
    peer = f"127.0.0.1:{slow_http}"
    waiting = [t for t in report["threads"] if t["dominant"]["target"] == peer]
    assert waiting and waiting[0]["detail"] in ("epoll_pwait", "epoll_wait"), report["threads"]
    assert next(e for e in report["attribution"] if e["target"] == peer)["kind"] == "peer"


def test_a_process_that_exits_mid_window_is_reported_gone_with_what_was_seen(start):
    child, _ = start("""
        import json, time
        print("{}", flush=True)
        time.sleep(1.0)
    """)
    report = sample([child.pid, 2 ** 22 + 7], settle=0)
    gone = report[child.pid]
    assert gone["gone"] is True and gone["ticks"] >= 1
    assert any("exited" in note for note in gone["notes"])
    assert gone["shares"]["sleep"] > 0.9  # the main thread slept in time.sleep() until it exited
    missing = report[2 ** 22 + 7]
    assert missing["error"] == f"no process with pid {2 ** 22 + 7}" and missing["shares"] is None


def test_an_unmapped_pointer_is_unreadable_not_an_error(start):
    child, _ = start("""
        import json, time
        print("{}", flush=True)
        time.sleep(60)
    """)
    sampler = ks.KernelSampler([child.pid])
    try:
        raw, problem = sampler.processes[child.pid]._memory(0x10, 8)  # page zero is never mapped
        assert raw is None and "EIO" in problem
        raw, problem = sampler.processes[child.pid]._memory(0x10, 8)
        assert raw is None  # the process's memory stays readable for the next call: EIO is per address
        assert sampler.processes[child.pid].mem_error is None
    finally:
        sampler.close()


UNREADABLE_SAMPLER = """
import json, sys, time
sys.path.insert(0, sys.argv[2])
from qdiag.probes import _kernel_sampler as ks
from tests.servers import silent_listener
t0 = time.monotonic()
print(json.dumps(ks.sample_window([int(sys.argv[1])], t0, t0 + 1.0, t0 + 30)[int(sys.argv[1])]))
"""


def test_without_ptrace_rights_the_sampler_says_what_it_could_not_read(start, slow_http, tmp_path):
    setpriv = shutil.which("setpriv")
    if setpriv is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run a sampler without CAP_SYS_PTRACE")
    child, tids = start("""
        import ctypes, json, socket, sys, threading
        ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0: only CAP_SYS_PTRACE may look inside
        conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
        conn.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
        print(json.dumps({"main": threading.get_native_id()}), flush=True)
        while True:
            conn.recv(4096)
    """, slow_http)
    script = tmp_path / "unprivileged.py"
    script.write_text(UNREADABLE_SAMPLER)
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([setpriv, "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--",
                          sys.executable, str(script), str(child.pid), str(root)],
                         capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=root)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert any("syscall unreadable" in note for note in report["notes"]), report["notes"]
    doc = thread_doc(report, tids["main"])
    # Without the system call nothing may be said about the peer: never a guessed dependency.
    assert doc["dominant"]["kind"] in ("unreadable", "unknown"), doc
    assert not [e for e in report["attribution"] if e["kind"] == "peer"]


def test_sampling_in_the_background_while_the_caller_works(start):
    child, tids = start(BUSY)
    sampler = ks.KernelSampler([child.pid])
    try:
        t0 = time.monotonic()
        sampler.start(t0, t0 + 1.5, t0 + HANG_GUARD_S, interval=0.05)
        time.sleep(0.5)  # the caller's own work (a probe takes thread dumps here)
        assert sampler.join(HANG_GUARD_S) is True
        report = sampler.report()[child.pid]
    finally:
        sampler.close()
    assert report["ticks"] >= 2 and thread_doc(report, tids["main"])["dominant"]["kind"] == "cpu"


def test_stopping_a_background_run_early_keeps_what_was_sampled(start):
    child, _ = start(BUSY)
    sampler = ks.KernelSampler([child.pid])
    try:
        t0 = time.monotonic()
        sampler.start(t0, t0 + HANG_GUARD_S, t0 + HANG_GUARD_S)
        time.sleep(0.5)
        assert sampler.join(0) is False  # asked to end now: stopped, not waited for
        report = sampler.report()[child.pid]
    finally:
        sampler.close()
    assert report["ticks"] >= 1 and report["shares"]["cpu"] > 0


def test_a_thread_reading_a_unix_socket_waits_on_the_path_its_peer_listens_on(start, tmp_path):
    path = str(tmp_path / "svc.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    try:
        child, tids = start("""
            import json, socket, sys, threading
            conn = socket.socket(socket.AF_UNIX)
            conn.connect(sys.argv[1])
            print(json.dumps({"main": threading.get_native_id()}), flush=True)
            conn.recv(1)
        """, path)
        accepted, _ = listener.accept()
        report = sample([child.pid])[child.pid]
        accepted.close()
    finally:
        listener.close()
    assert thread_doc(report, tids["main"])["dominant"] == {"kind": "peer", "target": f"unix:{path}", "share": 1.0}


RESUMED = """
    import json, socket, sys, threading
    peer_port = int(sys.argv[1])
    tids = {}
    ready = threading.Barrier(3)
    held = threading.Lock()
    held.acquire()

    def reader():
        tids["reader"] = threading.get_native_id()
        conn = socket.create_connection(("127.0.0.1", peer_port))
        conn.settimeout(120)  # CPython waits in poll() with a timeout, then recv()
        ready.wait()
        conn.recv(1)

    def waiter():
        tids["waiter"] = threading.get_native_id()
        ready.wait()
        held.acquire(timeout=120)  # a futex wait with a timeout

    for body in (reader, waiter):
        threading.Thread(target=body, daemon=True).start()
    ready.wait()
    print(json.dumps(tids), flush=True)
    threading.Event().wait()
"""


def test_waits_resumed_after_an_interruption_keep_their_peer_and_futex(start):
    """A timed poll or futex wait interrupted by a stop (SIGSTOP/SIGCONT here; py-spy
    attaching with ptrace does the same) resumes as restart_syscall, its arguments
    hidden from /proc: the sampler follows the wait through it from the sample before."""
    with silent_listener() as port:
        child, tids = start(RESUMED, port)
        time.sleep(0.5)  # both threads in their waits
        t0 = time.monotonic()
        sampler = ks.KernelSampler([child.pid])
        sampler.start(t0, t0 + WINDOW_S, t0 + HANG_GUARD_S)  # returns after the first sample
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.2)
        os.kill(child.pid, signal.SIGCONT)
        time.sleep(0.2)
        # The mechanism this test is about: the kernel now shows both waits as restart_syscall.
        for tid in tids.values():
            nr = Path(f"/proc/{child.pid}/task/{tid}/syscall").read_text().split()[0]
            assert nr == "219" or os.uname().machine != "x86_64", (tid, nr)
        assert sampler.join(HANG_GUARD_S)
        report = sampler.report()[child.pid]
        sampler.close()
    # Every sample but the ones taken while it was stopped (0.2 s of the 2.5 s window).
    reader = thread_doc(report, tids["reader"])
    assert reader["dominant"]["kind"] == "peer" and reader["dominant"]["target"] == f"127.0.0.1:{port}", reader
    assert reader["dominant"]["share"] >= 0.8, reader
    waiter = thread_doc(report, tids["waiter"])
    assert waiter["dominant"]["kind"] == "lock" and waiter["dominant"]["share"] >= 0.8, waiter
    assert (waiter["dominant"]["target"] or "").startswith("futex 0x"), waiter
    samples = sampler.processes[child.pid].threads[tids["reader"]]["samples"]
    assert sum(1 for s in samples if s.get("resumed")) >= len(samples) - 3, samples[:3]
