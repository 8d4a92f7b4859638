"""The one selection of local target processes shared by the process, threads
and dependencies probes."""

import os
import subprocess
import sys
import uuid

import pytest

from qdiag import target_processes
from qdiag.targets import Targets

LAUNCHER = """import subprocess, sys
child = subprocess.Popen(sys.argv[1:], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
"""

pytestmark = pytest.mark.live  # spawns processes and reads this host's /proc


def test_pid_pattern_discovered_and_missing():
    marker = f"qdiag-sel-{uuid.uuid4().hex[:8]}"
    launcher = subprocess.run([sys.executable, "-c", LAUNCHER, sys.executable, "-c",
                               "import time; time.sleep(60)", marker], capture_output=True, text=True, timeout=30)
    detached = int(launcher.stdout.strip())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])  # qdiag's own child
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        targets = Targets(pids=(detached, gone.pid), process_patterns=(marker, "no-such-x"))
        selection = target_processes.select(targets, [{"pid": 4242424, "via": "kafka member c1", "subject": "kafka:t/g"}])
        assert selection.missing == [gone.pid]
        assert selection.unmatched == ["no-such-x"]
        assert selection.targets[detached]["selected_by"] == ["--pid", f"--process {marker}"]
        assert child.pid not in selection.targets  # qdiag's own family is never a target
        assert selection.how(4242424) == "discovered: kafka member c1 kafka:t/g"
        assert selection.how(detached) == "--pid"
    finally:
        child.kill()
        child.wait()
        os.kill(detached, 9)


def test_own_family_contains_self_and_parents():
    family = target_processes.own_family()
    assert os.getpid() in family and os.getppid() in family
