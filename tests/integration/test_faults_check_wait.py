"""Issue 13 #9: `check --wait` leaked threads and descriptors while a broker
hung (18 threads and 50 fds after 24 s): every attempt abandoned a client
stuck on the silent socket.  Each attempt now probes in a child process, so
the checking process stays the same size however many attempts it makes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.cli_helper import run_cli

pytestmark = pytest.mark.live
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / "v1-host-only.json.gz"
HANG_GUARD_S = 60


# In its own process: the connections it accepts must not count as this one's descriptors.
SILENT_SERVER = """
import socket, sys, time
listener = socket.create_server(("127.0.0.1", 0))
print(listener.getsockname()[1], flush=True)
held = []
while True:
    held.append(listener.accept()[0])
"""


@pytest.fixture
def silent_port():
    server = subprocess.Popen([sys.executable, "-c", SILENT_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        yield int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()


def _threads_and_fds() -> tuple[int, int]:
    return threading.active_count(), len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("flag, url", [("--kafka", "127.0.0.1:{port}"), ("--redis", "redis://127.0.0.1:{port}/0")])
def test_attempts_against_a_hung_broker_leave_nothing_behind(flag, url, silent_port):
    peak = {"threads": 0, "fds": 0}
    stop = threading.Event()

    def watch():
        while not stop.wait(0.1):
            threads, fds = _threads_and_fds()
            peak["threads"], peak["fds"] = max(peak["threads"], threads), max(peak["fds"], fds)

    # Imports and playbook reads open files for a moment: done once before counting.
    assert run_cli("report", FIXTURE, "--format", "json").code == 0
    threads_before, fds_before = _threads_and_fds()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    began = time.monotonic()
    result = run_cli("check", flag, url.format(port=silent_port), "--queue", "q", "--max-depth", "10",
                     "--probe", flag[2:], "--wait", "9", "--timeout", "2", "--window", "0.5", "--format", "json")
    elapsed = time.monotonic() - began
    stop.set()
    watcher.join()
    threads_after, fds_after = _threads_and_fds()
    doc = result.json()
    assert result.code == 3 and doc["status"] == "UNKNOWN"
    assert doc["attempts"] >= 3, doc["attempts"]
    # The probe's failure is still named, attempt after attempt.
    probe = next(p for p in doc["probes"] if p["name"] == flag[2:])
    assert probe["status"] in ("error", "timeout") and probe["error"]
    # Bounded: the watcher's thread, the run's watchdog (qdiag/watchdog.py), the
    # pipes to the current child and a file read for a moment; leaking, each
    # attempt added two threads and six fds.
    assert peak["threads"] <= threads_before + 2, (peak, threads_before)
    assert peak["fds"] <= fds_before + 8, (peak, fds_before)
    # At most as many as before: a daemon thread an earlier test left may end meanwhile.
    assert threads_after <= threads_before and fds_after <= fds_before, (threads_after, threads_before, fds_after, fds_before)
    assert elapsed < 9 + 2 + HANG_GUARD_S
