"""The thread-dump parsers and classifier on recorded real dumps.

tests/fixtures/threads/ holds py-spy 0.4.3 JSON dumps of the scenarios in
src/ under CPython 3.10, 3.11 and 3.13, and `jcmd Thread.print -l` / `jstack -l`
output of src/Scenario.java on OpenJDK 17 (regenerate with record.py).  The
scenario scripts double as the source the classifier reads: a thread blocked in
a C call (time.sleep, Lock.acquire) shows only its caller's line.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from qdiag.probes import _threads_classify as tc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "threads"
SRC = FIXTURES / "src"
PYTHONS = ("py310", "py311", "py313")


def read_scenario_line(filename: str, line: int):
    """Source lines of the recorded scenarios, wherever the repository was when they were recorded."""
    marker = "/tests/fixtures/threads/src/"
    if marker not in filename:
        return None  # the standard library of the recording machine is not part of the fixtures
    lines = (SRC / filename.split(marker, 1)[1]).read_text().splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else None


def py_dumps(tag: str, scenario: str, read_line=read_scenario_line) -> list[dict]:
    files = sorted((FIXTURES / tag).glob(f"{scenario}.[0-9].json"))
    assert files, f"no recorded dumps for {tag}/{scenario}"
    dumps = []
    for i, path in enumerate(files):
        threads = tc.parse_pyspy(path.read_text())
        tc.classify_python_dump(threads, read_line)
        dumps.append({"offset_s": float(i), "threads": threads})
    return dumps


def by_name(summary: dict) -> dict:
    return {t["name"]: t for t in summary["threads"]}


def java_dumps() -> tuple[list[dict], list[dict]]:
    dumps, deadlocks = [], []
    for i, path in enumerate(sorted((FIXTURES / "java17").glob("scenario.[0-9].txt"))):
        parsed = tc.parse_thread_print(path.read_text())
        tc.classify_java_dump(parsed)
        dumps.append({"offset_s": float(i), "threads": parsed["threads"]})
        deadlocks = parsed["deadlocks"]
    return dumps, deadlocks


# --------------------------------------------------------------------------- py-spy JSON


def test_parse_pyspy_keeps_innermost_frame_first_and_the_flags():
    threads = tc.parse_pyspy((FIXTURES / "py311" / "mixed.1.json").read_text())
    raw = json.loads((FIXTURES / "py311" / "mixed.1.json").read_text())
    assert len(threads) == len(raw)
    crunch = next(t for t in threads if t["name"] == "crunch")
    raw_crunch = next(t for t in raw if t["thread_name"] == "crunch")
    assert crunch["id"] == raw_crunch["os_thread_id"]
    assert crunch["owns_gil"] is raw_crunch["owns_gil"] and crunch["active"] is raw_crunch["active"]
    # checksum() is called by crunch(): the callee comes first.
    assert [f["function"] for f in crunch["frames"][:2]] == ["checksum", "crunch"]
    assert crunch["frames"][0]["short_file"] == "mixed.py" and isinstance(crunch["frames"][0]["line"], int)


@pytest.mark.parametrize("text", ["not json", '{"threads": []}', ""])
def test_parse_pyspy_rejects_what_is_not_a_dump(text):
    with pytest.raises(ValueError):
        tc.parse_pyspy(text)


# --------------------------------------------------------------------------- Python classification


@pytest.mark.parametrize("tag", PYTHONS)
def test_every_kind_of_thread_in_the_mixed_scenario(tag):
    summary = tc.summarise(py_dumps(tag, "mixed"), runtime="python")
    threads = by_name(summary)
    expected = {
        "crunch": tc.ON_CPU,
        "transfer_ab": tc.LOCK_WAIT,      # `with lock_b:` while holding lock_a
        "transfer_ba": tc.LOCK_WAIT,      # `lock_a.acquire()` while holding lock_b
        "call_api": tc.SOCKET_IO,         # urllib waiting for an HTTP status line
        "tls_handshake": tc.SOCKET_IO,    # silent peer during the TLS handshake
        "consume": tc.QUEUE_WAIT,         # queue.Queue().get()
        "consume_simple": tc.QUEUE_WAIT,  # queue.SimpleQueue().get(), a C call
        "multiplex": tc.QUEUE_WAIT,       # select.select() with nothing ready
        "wait_notify": tc.QUEUE_WAIT,     # Condition.wait()
        "MainThread": tc.QUEUE_WAIT,      # Event().wait()
        "nap": tc.SLEEP,                  # time.sleep()
    }
    assert {name: threads[name]["class"] for name in expected} == expected
    assert summary["counts"][tc.LOCK_WAIT] == 2 and summary["threads_total"] == len(expected)
    assert "http" in threads["call_api"]["detail"]
    assert "TLS handshake" in threads["tls_handshake"]["detail"]
    assert "with lock_b" in threads["transfer_ab"]["detail"]


@pytest.mark.parametrize("tag", PYTHONS)
def test_the_hot_function_of_a_cpu_bound_thread_is_named_with_its_line(tag):
    summary = tc.summarise(py_dumps(tag, "mixed"), runtime="python")
    hot = summary["hot_functions"][0]
    assert hot["function"] == "checksum" and hot["threads"] == ["crunch"]
    assert hot["where"].startswith("checksum (mixed.py:")


@pytest.mark.parametrize("tag", PYTHONS)
def test_two_threads_stuck_on_each_others_locks_are_a_suspected_deadlock(tag):
    summary = tc.summarise(py_dumps(tag, "mixed"), runtime="python")
    deadlock = summary["deadlock"]
    assert deadlock["source"] == "stack-analysis" and deadlock["confirmed"] is False
    assert sorted(deadlock["threads"]) == ["transfer_ab", "transfer_ba"]
    stuck = {s["thread"] for s in summary["stuck"]}
    assert {"transfer_ab", "transfer_ba", "call_api", "tls_handshake"} <= stuck
    # Idle threads never moved either, but waiting for work is not being stuck.
    assert not stuck & {"consume", "nap", "MainThread", "multiplex"}


def test_one_dump_cannot_show_a_deadlock_or_a_stuck_thread():
    summary = tc.summarise(py_dumps("py311", "mixed")[:1], runtime="python")
    assert summary["deadlock"] is None and summary["stuck"] == []
    assert all(t["unchanged"] is None for t in summary["threads"])


def test_dumps_taken_back_to_back_are_not_compared():
    dumps = py_dumps("py311", "mixed")
    for i, dump in enumerate(dumps):
        dump["offset_s"] = i * 0.1  # a zero-second window
    summary = tc.summarise(dumps, runtime="python")
    assert summary["compared_over_s"] is None
    assert summary["deadlock"] is None and summary["stuck"] == []
    assert tc.summarise(py_dumps("py311", "mixed"), runtime="python")["compared_over_s"] == 2.0


def test_a_lock_waiter_whose_stack_moved_is_not_part_of_a_deadlock():
    dumps = py_dumps("py311", "mixed")
    moved = copy.deepcopy(dumps)
    waiter = next(t for t in moved[-1]["threads"] if t["name"] == "transfer_ab")
    waiter["frames"][0] = dict(waiter["frames"][0], line=waiter["frames"][0]["line"] - 1)
    summary = tc.summarise(moved, runtime="python")
    assert summary["deadlock"] is None
    assert "transfer_ab" not in {s["thread"] for s in summary["stuck"]}


def test_a_lock_waiter_missing_from_one_dump_is_not_part_of_a_deadlock():
    dumps = copy.deepcopy(py_dumps("py311", "mixed"))
    dumps[1]["threads"] = [t for t in dumps[1]["threads"] if t["name"] != "transfer_ba"]
    assert tc.summarise(dumps, runtime="python")["deadlock"] is None


def test_without_readable_source_a_c_level_wait_is_unknown_not_guessed():
    summary = tc.summarise(py_dumps("py311", "mixed", read_line=lambda f, n: None), runtime="python")
    threads = by_name(summary)
    for name in ("nap", "transfer_ab", "transfer_ba", "consume_simple"):
        assert threads[name]["class"] == tc.UNKNOWN, name
        assert "source not readable" in threads[name]["detail"]
    # Frames of the standard library are recognised by name, source or not.
    assert threads["consume"]["class"] == tc.QUEUE_WAIT
    assert threads["call_api"]["class"] == tc.SOCKET_IO
    assert summary["deadlock"] is None


@pytest.mark.parametrize("tag", PYTHONS)
def test_gil_contention_and_native_code(tag):
    dumps = py_dumps(tag, "gil")
    for dump in dumps:
        threads = {t["name"]: t for t in dump["threads"]}
        for name in ("count_up", "mix"):
            t = threads[name]
            if t["owns_gil"]:
                assert t["verdict"]["class"] == tc.ON_CPU
            elif not t["active"]:
                # Paused at a line that calls nothing while the other thread holds the GIL.
                assert t["verdict"]["class"] == tc.GIL_WAIT, (name, t["frames"][0])
    summary = tc.summarise(dumps, runtime="python")
    # The hashing thread runs sha256 with the GIL released: on CPU in native code.
    assert by_name(summary)["digest"]["class"] == tc.ON_CPU
    assert any(h["function"] == "digest" for h in summary["hot_functions"])


def test_a_thread_that_used_most_of_a_core_is_on_cpu_whatever_one_dump_caught():
    dumps = py_dumps("py311", "gil")
    gil_waiter = next(t for t in by_name(tc.summarise(dumps, runtime="python")).values() if t["class"] == tc.GIL_WAIT)
    busy = tc.summarise(dumps, runtime="python", cpu_percent={gil_waiter["id"]: 95.0})
    assert by_name(busy)[gil_waiter["name"]]["class"] == tc.ON_CPU
    idle = tc.summarise(dumps, runtime="python", cpu_percent={gil_waiter["id"]: 2.0})
    assert by_name(idle)[gil_waiter["name"]]["class"] == tc.GIL_WAIT


def test_idle_broker_consumers_wait_for_messages():
    summary = tc.summarise(py_dumps("py311", "brokers"), runtime="python")
    threads = by_name(summary)
    for name, words in (("redis_worker", "redis brpop"), ("rabbit_worker", "pika"), ("kafka_worker", "kafka-python"),
                        ("event_loop", "asyncio")):
        assert threads[name]["class"] == tc.QUEUE_WAIT, name
        assert words in threads[name]["detail"], (name, threads[name]["detail"])
    assert summary["counts"][tc.SOCKET_IO] == 0 and summary["stuck"] == []


def _frame(function, file, line=10):
    return {"function": function, "file": file, "short_file": file.rsplit("/", 1)[-1], "line": line}


SITE = "/usr/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"


def test_an_http_call_inside_a_consumer_callback_is_socket_io_not_idle():
    # pika delivered a message; the application's handler calls an HTTP API.
    thread = {"id": 1, "name": "worker", "active": False, "owns_gil": False, "frames": [
        _frame("SocketIO.readinto", f"{STDLIB}/socket.py"),
        _frame("HTTPResponse.begin", f"{STDLIB}/http/client.py"),
        _frame("HTTPConnectionPool._make_request", f"{SITE}/urllib3/connectionpool.py"),
        _frame("handle_order", "/srv/app/worker.py"),
        _frame("BlockingChannel._dispatch_events", f"{SITE}/pika/adapters/blocking_connection.py"),
        _frame("BlockingConnection.process_data_events", f"{SITE}/pika/adapters/blocking_connection.py"),
        _frame("BlockingChannel.start_consuming", f"{SITE}/pika/adapters/blocking_connection.py"),
    ]}
    verdict = tc.classify_python(thread)
    assert verdict["class"] == tc.SOCKET_IO and verdict["client"] == "http"


def test_waiting_for_a_pooled_connection_is_a_lock_wait_but_not_a_deadlock_candidate():
    thread = {"id": 1, "name": "worker", "active": False, "owns_gil": False, "frames": [
        _frame("Condition.wait", f"{STDLIB}/threading.py"),
        _frame("LifoQueue.get", f"{STDLIB}/queue.py"),
        _frame("HTTPConnectionPool._get_conn", f"{SITE}/urllib3/connectionpool.py"),
        _frame("handle_order", "/srv/app/worker.py"),
    ]}
    verdict = tc.classify_python(thread)
    assert verdict["class"] == tc.LOCK_WAIT and verdict["kind"] == "pool"


def test_a_thread_without_frames_is_unknown():
    assert tc.classify_python({"id": 1, "name": "x", "frames": [], "active": False, "owns_gil": False})["class"] \
        == tc.UNKNOWN


# --------------------------------------------------------------------------- Java


def test_parse_thread_print_reads_threads_states_frames_and_monitors():
    parsed = tc.parse_thread_print((FIXTURES / "java17" / "scenario.1.txt").read_text())
    threads = {t["name"]: t for t in parsed["threads"]}
    ab = threads["monitor-ab"]
    assert ab["state"] == "BLOCKED" and ab["waiting_to_lock"].startswith("0x") and len(ab["locked"]) == 1
    assert ab["frames"][0]["function"].startswith("Scenario.lambda$main$")
    assert ab["frames"][0]["short_file"] == "Scenario.java" and isinstance(ab["frames"][0]["line"], int)
    assert threads["monitor-ba"]["locked"] == [ab["waiting_to_lock"]]
    lock_ab = threads["lock-ab"]
    assert lock_ab["state"] == "WAITING" and lock_ab["parking_for"] and "ReentrantLock" in lock_ab["lock_type"]
    # Without -l the java.util.concurrent locks a thread holds are not listed.
    assert lock_ab["parking_for"] not in threads["lock-ba"]["locked"]
    assert threads["crunch"]["cpu_ms"] > 0 and threads["crunch"]["os_status"] == "runnable"
    assert threads["VM Thread"]["internal"] and not threads["crunch"]["internal"]
    assert threads["napper"]["frames"][0]["native"] is True  # Thread.sleep(Native Method)


def test_with_dash_l_the_holder_of_a_reentrant_lock_is_known():
    parsed = tc.parse_thread_print((FIXTURES / "java17" / "scenario-l.txt").read_text())
    threads = {t["name"]: t for t in parsed["threads"]}
    assert threads["lock-ab"]["parking_for"] in threads["lock-ba"]["locked"]
    tc.classify_java_dump(parsed)
    assert 'held by "lock-ba"' in threads["lock-ab"]["verdict"]["detail"]
    assert 'held by "monitor-ba"' in threads["monitor-ab"]["verdict"]["detail"]


def test_the_jvms_own_deadlock_report_is_parsed_per_cycle():
    parsed = tc.parse_thread_print((FIXTURES / "java17" / "scenario.1.txt").read_text())
    cycles = [d["cycle"] for d in parsed["deadlocks"]]
    assert len(cycles) == 2
    pairs = sorted(sorted((link["thread"], link["held_by"]) for link in cycle) for cycle in cycles)
    assert pairs == [[("lock-ab", "lock-ba"), ("lock-ba", "lock-ab")],
                     [("monitor-ab", "monitor-ba"), ("monitor-ba", "monitor-ab")]]
    assert all(link["waiting_for"].startswith("0x") and link["lock_type"] for c in cycles for link in c)


def test_jstack_output_parses_like_jcmd():
    jstack = tc.parse_thread_print((FIXTURES / "java17" / "scenario.jstack.txt").read_text())
    jcmd = tc.parse_thread_print((FIXTURES / "java17" / "scenario.3.txt").read_text())
    assert sorted(t["name"] for t in jstack["threads"]) == sorted(t["name"] for t in jcmd["threads"])
    assert len(jstack["deadlocks"]) == 2


def test_java_threads_are_classified():
    dumps, deadlocks = java_dumps()
    summary = tc.summarise(dumps, runtime="java", jvm_deadlocks=deadlocks)
    threads = by_name(summary)
    expected = {
        "monitor-ab": tc.LOCK_WAIT, "monitor-ba": tc.LOCK_WAIT, "lock-ab": tc.LOCK_WAIT, "lock-ba": tc.LOCK_WAIT,
        "crunch": tc.ON_CPU, "napper": tc.SLEEP, "http-client": tc.SOCKET_IO, "job-taker": tc.QUEUE_WAIT,
        "selector": tc.QUEUE_WAIT, "pool-1-thread-1": tc.QUEUE_WAIT, "main": tc.QUEUE_WAIT,
        # RUNNABLE to Java, but the header says the OS thread waits: not on CPU.
        "Reference Handler": tc.QUEUE_WAIT,
    }
    assert {n: threads[n]["class"] for n in expected} == expected
    assert 'held by "monitor-ba"' in threads["monitor-ab"]["detail"]
    # The JVM's own threads (GC, compiler) have no Java frames and are not counted.
    assert "VM Thread" not in threads and "C2 CompilerThread0" not in threads
    # CPU from the JVM's cumulative cpu=/elapsed= counters, as a delta.
    assert threads["crunch"]["cpu_percent"] > tc.BUSY_CPU_PERCENT
    assert threads["napper"]["cpu_percent"] < 5
    assert summary["hot_functions"][0]["function"] == "Scenario.checksum"


def test_a_java_deadlock_comes_from_the_jvm_report():
    dumps, deadlocks = java_dumps()
    deadlock = tc.summarise(dumps, runtime="java", jvm_deadlocks=deadlocks)["deadlock"]
    assert deadlock["source"] == "jvm" and deadlock["confirmed"] is True
    assert sorted(deadlock["threads"]) == ["lock-ab", "lock-ba", "monitor-ab", "monitor-ba"]
    assert len(deadlock["where"]) == 4 and any(w.startswith("Scenario.lambda$main$") for w in deadlock["where"])
    # Without the JVM's report, blocked Java threads are not called a deadlock from stacks alone.
    assert tc.summarise(dumps, runtime="java", jvm_deadlocks=[])["deadlock"] is None


def test_parse_thread_print_rejects_other_text():
    with pytest.raises(ValueError):
        tc.parse_thread_print((FIXTURES / "errors" / "jcmd-no-such-pid.txt").read_text())


# --------------------------------------------------------------------------- tool errors


@pytest.mark.parametrize("name, kind", [
    ("pyspy-no-such-pid.txt", "no-process"),
    ("pyspy-not-python.txt", "not-python"),
    ("pyspy-permission-nonroot.txt", "permission"),
    ("pyspy-permission-noptrace.txt", "permission"),
])
def test_pyspy_errors(name, kind):
    got_kind, message = tc.pyspy_error((FIXTURES / "errors" / name).read_text())
    assert got_kind == kind
    assert "\n" not in message and "Stack backtrace" not in message and message


@pytest.mark.parametrize("name, kind", [
    ("jcmd-no-such-pid.txt", "no-process"),
    ("jcmd-not-java.txt", "not-java"),
    ("jcmd-permission.txt", "permission"),
])
def test_jcmd_errors(name, kind):
    got_kind, message = tc.jcmd_error((FIXTURES / "errors" / name).read_text())
    assert got_kind == kind
    assert "\n" not in message and not message.startswith("at ") and message


def test_attach_denied_reason_names_the_missing_rights():
    without = format(0x000001FFFEFFFFFF & ~(1 << 19), "016x")
    assert tc.attach_denied_reason(euid=1000, cap_eff_hex="0000000000000000", ptrace_scope=1) == \
        "not running as root, no CAP_SYS_PTRACE, kernel.yama.ptrace_scope=1"
    assert tc.attach_denied_reason(euid=0, cap_eff_hex=without, ptrace_scope=None) == "no CAP_SYS_PTRACE"
    assert tc.attach_denied_reason(euid=0, cap_eff_hex="000001fffeffffff", ptrace_scope=0) == ""


# --------------------------------------------------------------------------- peers

BROKERS = {"kafka": {9092}, "amqp": {5672}, "redis": {6379}}


def conn(raddr, status="ESTABLISHED", inbound=False):
    return {"raddr": raddr, "rport": int(raddr.rsplit(":", 1)[1]), "status": status, "inbound": inbound}


def test_the_peer_is_given_only_when_unambiguous():
    conns = [conn("10.0.0.5:443"), conn("127.0.0.1:6379"), conn("127.0.0.1:9092")]
    assert tc.pick_peer(conns, client="http", broker_ports=BROKERS) == "10.0.0.5:443"
    assert tc.pick_peer(conns, client="redis", broker_ports=BROKERS) == "127.0.0.1:6379"
    two = conns + [conn("10.0.0.6:5432")]
    assert tc.pick_peer(two, client=None, broker_ports=BROKERS) is None
    # A client connected to us, or a closed socket, is not a peer we wait on.
    served = [conn("10.0.0.5:443"), conn("10.0.0.9:51234", inbound=True), conn("10.0.0.7:80", status="TIME_WAIT")]
    assert tc.pick_peer(served, client=None, broker_ports=BROKERS) == "10.0.0.5:443"
    assert tc.pick_peer([], client="http", broker_ports=BROKERS) is None
