"""Faults: qdiag run by an unprivileged user (issue 13, "thread dumps without
permission"; #4's refusal of another user's file).

qdiag really runs as nobody here: the system's python3 (same minor version)
with a copy of the packages qdiag imports, since this interpreter's own tree
under /root is closed to other users.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.live
REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
HANG_GUARD_S = 60
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
PY_SPY = shutil.which("py-spy", path=os.path.dirname(sys.executable)) or shutil.which("py-spy")

# The top-level modules qdiag imports from site-packages (CLI, every probe, the report).
LIST_IMPORTS = """
import sys, sysconfig
from tests.cli_helper import run_cli
from qdiag.probe import all_probes
all_probes()
import kafka, pika, redis, requests
# Some imports happen only when a command runs (typer's adapters, the progress display).
for args in (["--version"], ["report", sys.argv[1]], ["investigate", "--probe", "host", "--window", "0.2"]):
    run_cli(*args)
site = sysconfig.get_paths()["purelib"]
tops = set()
for module in list(sys.modules.values()):
    where = getattr(module, "__file__", None) or ""
    if where.startswith(site + "/"):
        tops.add(where[len(site) + 1:].split("/")[0])
print("\\n".join(sorted(tops)))
"""


@pytest.fixture(scope="module")
def as_nobody():
    """Run `python3 -m qdiag ARGS` as nobody; yields run(args, cwd) -> CompletedProcess."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to become nobody")
    if SYSTEM_PYTHON is None:
        pytest.skip("no system python3 that nobody may run")
    system_version = subprocess.run([SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                                    capture_output=True, text=True).stdout.strip()
    if system_version != str(tuple(sys.version_info[:2])):
        pytest.skip(f"the system python3 is {system_version}, not this {sys.version_info[:2]}")
    fixture = REPO / "tests" / "fixtures" / "snapshots" / "v1-host-only.json.gz"
    listing = subprocess.run([sys.executable, "-c", LIST_IMPORTS, str(fixture)], capture_output=True, text=True,
                             check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=HANG_GUARD_S)
    site = Path(sysconfig.get_paths()["purelib"])
    # Outside pytest's 0700 temporary tree, so that nobody can read it.
    root = Path(tempfile.mkdtemp(prefix="qdiag-nobody-"))
    try:
        packages, tools = root / "site", root / "bin"
        packages.mkdir()
        tools.mkdir()
        for name in listing.stdout.split():
            source = site / name
            if source.is_dir():
                shutil.copytree(source, packages / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif source.is_file():
                shutil.copy2(source, packages / name)
        # qdiag itself as an install lays it out (qdiag.probes and qdiag.playbooks inside the
        # package): the checkout keeps them at the top, and only an editable install maps them.
        app = root / "app"
        ignore = shutil.ignore_patterns("__pycache__", "probes", "playbooks")
        shutil.copytree(REPO / "qdiag", app / "qdiag", ignore=ignore, symlinks=False)
        shutil.copytree(REPO / "probes", app / "qdiag" / "probes", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(REPO / "playbooks", app / "qdiag" / "playbooks", ignore=shutil.ignore_patterns("__pycache__"))
        if PY_SPY:
            shutil.copy2(PY_SPY, tools / "py-spy")
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() or os.access(path, os.X_OK) else 0o644)
        work = root / "cwd"
        work.mkdir(mode=0o1777)
        work.chmod(0o1777)

        def run(*args, cwd: Path = work, timeout: float = HANG_GUARD_S * 2) -> subprocess.CompletedProcess:
            env = {"PATH": f"{tools}:/usr/bin:/bin", "PYTHONPATH": f"{app}:{packages}", "HOME": str(work),
                   "XDG_CONFIG_HOME": str(work / ".config"), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
            return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                   SYSTEM_PYTHON, "-m", "qdiag", *map(str, args)],
                                  capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)

        run.work = work
        yield run
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_qdiag_runs_as_nobody(as_nobody):
    result = as_nobody("--version")
    assert result.returncode == 0, result.stderr
    whoami = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "id", "-u"],
                            capture_output=True, text=True)
    assert whoami.stdout.strip() == str(NOBODY)


@pytest.mark.skipif(PY_SPY is None, reason="py-spy is not installed")
def test_thread_dumps_without_permission_still_give_a_report_naming_the_fix(as_nobody, tmp_path):
    consumer = subprocess.Popen([sys.executable, "-c", "import time\nprint('ready', flush=True)\ntime.sleep(600)"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout.readline().strip() == "ready"
        began = time.monotonic()
        result = as_nobody("investigate", "--pid", consumer.pid, "--window", "1", "--timeout", "10",
                           "--format", "json", "--no-probe", "logs", "--no-auto-detect")
        elapsed = time.monotonic() - began
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(result.stdout)
        probes = {p["name"]: p for p in report["probes"]}
        threads = probes["threads"]
        assert threads["status"] == "not_applicable", threads
        assert f"cannot attach to Python pid {consumer.pid}" in threads["error"]
        assert "run as root" in threads["error"] and "CAP_SYS_PTRACE" in threads["error"]
        # Step 3 says it has no stacks and why, not "nothing found".
        step3 = next(step for step in report["steps"] if step["number"] == 3)
        assert "cannot attach" in step3.get("note", "") or step3["findings"]
        assert probes["host"]["status"] == "ok"
        assert elapsed < 10 + HANG_GUARD_S
        assert consumer.poll() is None
    finally:
        consumer.kill()
        consumer.wait()


def test_another_users_output_file_is_refused_before_probing(as_nobody):
    work = as_nobody.work
    target = work / "report.md"
    target.write_text("root's report\n")  # owned by root, in a sticky world-writable directory
    target.chmod(0o666)  # writable by nobody, still root's
    try:
        result = as_nobody("investigate", "--probe", "host", "--window", "0.2", "-o", target)
        assert result.returncode == 3
        assert "belongs to user root" in result.stderr and "remove it first or choose another path" in result.stderr
        assert target.read_text() == "root's report\n" and target.stat().st_uid == 0
    finally:
        target.unlink()
