"""Issue 13 #2: the user's regexes (--process, [probes.logs] patterns) cannot
defeat a deadline.  They run in a child process killed at the deadline."""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from qdiag import targets as tg
from qdiag.regex_worker import RegexTimeout, Worker, search_all
from tests.unit.test_security_redact import hang_guard

EVIL = r"(a+)+$"
# 2^40 paths for the backtracking engine: hours, were it to run to the end.
EVIL_TEXT = "a" * 40 + "!"


def children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def test_worker_answers_like_re():
    texts = ["alpha beta", "GAMMA", "", "beta\ngamma"]
    patterns = [r"beta", r"^gamma", r"a\s+b"]
    got = search_all(patterns, texts, deadline=time.monotonic() + 30, flags=re.IGNORECASE | re.MULTILINE)
    want = [[i for i, t in enumerate(texts) if re.search(p, t, re.IGNORECASE | re.MULTILINE)] for p in patterns]
    assert got == want


def test_worker_is_killed_at_the_deadline():
    before = children()
    start = time.monotonic()
    with hang_guard(30):
        with pytest.raises(RegexTimeout) as info:
            search_all(["fine", EVIL], ["fine", EVIL_TEXT], deadline=time.monotonic() + 1.0)
    assert time.monotonic() - start < 20  # a wide guard: the deadline was 1 s
    assert info.value.index == 1 and info.value.pattern == EVIL
    assert info.value.partial == [[0]]  # the pattern before it had answered
    assert children() <= before  # no child left spinning


def test_other_threads_keep_running_while_a_pattern_backtracks():
    """The old way (re in a probe thread) held the GIL: nothing else ran until it ended."""
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.05)

    def slow():
        with pytest.raises(RegexTimeout):
            search_all([EVIL], [EVIL_TEXT], deadline=time.monotonic() + 1.5)

    worker = threading.Thread(target=slow)
    ticker = threading.Thread(target=tick)
    ticker.start()
    worker.start()
    worker.join(30)
    stop.set()
    ticker.join(5)
    assert not worker.is_alive()
    assert len(ticks) >= 10  # 1.5 s of 50 ms ticks; zero if the GIL had been held


def test_a_pattern_that_does_not_compile_is_a_value_error():
    with Worker(["("], deadline=time.monotonic() + 30) as worker, pytest.raises(ValueError):
        worker.search(["x"])


def detached(*args: str) -> int:
    """Start a process that is not our descendant (qdiag leaves its own family
    out of --process matches): the shell exits at once, and it is reparented."""
    quoted = " ".join(f"'{a}'" for a in args)
    spawn = subprocess.run(["sh", "-c", f"{quoted} >/dev/null 2>&1 & echo $!"], capture_output=True, text=True,
                           check=True)
    pid = int(spawn.stdout.strip())
    time.sleep(0.2)
    return pid


@pytest.fixture
def evil_process():
    """A process whose command line makes (a+)+$ backtrack."""
    pid = detached(sys.executable, "-c", "import time; time.sleep(120)", EVIL_TEXT)
    yield pid
    os.kill(pid, signal.SIGKILL)


def test_process_pattern_cannot_defeat_the_deadline(evil_process):
    from qdiag import target_processes

    targets = tg.Targets(process_patterns=(tg.parse_process_pattern(EVIL), tg.parse_process_pattern("time.sleep")))
    start = time.monotonic()
    with hang_guard(30):
        selection = target_processes.select(targets, [], deadline=time.monotonic() + 1.5)
    assert time.monotonic() - start < 20
    assert any(EVIL in note and "did not finish" in note for note in selection.notes)
    assert EVIL not in selection.unmatched  # unknown is not "matched nothing"


def test_process_pattern_selects_a_process_that_is_not_ours():
    from qdiag import target_processes

    token = f"qdiag-sec-{os.getpid()}-{time.monotonic_ns()}"
    pid = detached(sys.executable, "-c", "import time; time.sleep(60)", token)
    try:
        selection = target_processes.select(tg.Targets(process_patterns=(token,)), [],
                                            deadline=time.monotonic() + 20)
    finally:
        os.kill(pid, signal.SIGKILL)
    assert list(selection.targets) == [pid] and selection.unmatched == [] and selection.notes == []
