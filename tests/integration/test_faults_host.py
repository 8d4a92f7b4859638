"""Faults of the host itself (issue 13, "faults still untested"): a kernel
without /proc/pressure and a host whose cgroup files are missing (fixture trees
through ctx.paths), and `investigate` while both cores are saturated."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from qdiag import probe as P
from qdiag import snapshot as snap
from qdiag.config import resolve
from qdiag.context import Paths
from qdiag.inputs import load_rules
from qdiag.report import render
from qdiag.report.build import build_report
from qdiag.runner import Runner
import qdiag.probes.host  # noqa: F401  (registers the probe)
from tests.cli_helper import run_qdiag_process

HOST_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "host"
HANG_GUARD_S = 60


def host_tree(tmp_path: Path, *, drop: tuple[str, ...]) -> Paths:
    """A recorded /proc and /sys (tests/fixtures/host/v1_throttled) with `drop` removed."""
    root = tmp_path / "tree"
    shutil.copytree(HOST_FIXTURES / "v1_throttled" / "t0", root, symlinks=True)
    for relative in drop:
        victim = root / relative
        assert victim.exists(), f"the fixture has no {relative}"
        shutil.rmtree(victim) if victim.is_dir() else victim.unlink()
    return Paths(proc=str(root / "proc"), sys=str(root / "sys"), dev_kmsg=str(root / "no-kmsg"))


def run_host(tmp_path: Path, paths: Paths):
    settings = resolve({"window": 0.5, "timeout": 10, "auto_detect": False}, env={}, cwd=tmp_path)
    results, discovered = Runner(settings, [P.REGISTRY["host"]], paths=paths).run()
    doc = snap.build(probes=[r.as_dict() for r in results], settings_doc={}, command=["qdiag", "investigate"],
                     window_s=0.5, discovered=discovered)
    report = build_report(doc, load_rules([]))
    render.render_text(report, color=False, unicode=True, width=100)
    render.render_markdown(report)
    return results[0], report


@pytest.mark.parametrize("drop, missing", [
    (("proc/pressure",), ["psi.cpu: {root}/proc/pressure/cpu: not found", "psi.io: {root}/proc/pressure/io: not found"]),
    (("proc/self/cgroup",), ["cgroup.{root}/proc/self/cgroup: not found"]),
    (("sys/fs/cgroup",), ["cgroup.{root}/sys/fs/cgroup/cpu/cpu.stat: not found",
                          "cgroup.{root}/sys/fs/cgroup/memory/memory.usage_in_bytes: not found"]),
    (("proc/pressure", "proc/self/cgroup", "proc/self/mountinfo", "sys/fs/cgroup"),
     ["psi.memory: {root}/proc/pressure/memory: not found", "cgroup.{root}/proc/self/cgroup: not found"]),
])
def test_missing_pressure_and_cgroup_files_are_named_and_the_report_is_built(tmp_path, drop, missing):
    result, report = run_host(tmp_path, host_tree(tmp_path, drop=drop))
    assert result.status == P.OK, result.error
    notes = result.observations["notes"]
    for expected in missing:
        assert any(note.startswith(expected.format(root=tmp_path / "tree")) for note in notes), notes
    # What was still there is still measured.
    assert result.observations["memory"] and result.observations["load"]
    assert report["schema"] == "qdiag.report/1"
    host_step = next(step for step in report["steps"] if step["number"] == 2)
    assert host_step["findings"] or "host" in host_step.get("note", "")


def test_without_pressure_files_no_pressure_is_claimed(tmp_path):
    result, _ = run_host(tmp_path, host_tree(tmp_path, drop=("proc/pressure",)))
    psi = result.observations["psi"]
    assert all(value in (None, {}) for value in psi.values()), psi  # unknown, not zero


# --------------------------------------------------------------------------- both cores saturated

BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


@pytest.mark.live
def test_investigate_while_every_core_is_saturated():
    """Bounded busy loops, one per core (they end by themselves), as consumers
    that are busy in their own code; qdiag runs at a lower priority than they do."""
    marker = f"qdiag-busy-{uuid.uuid4().hex[:8]}"
    timeout = 12
    busy = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=timeout + 20), marker])
            for _ in range(os.cpu_count() or 2)]
    try:
        time.sleep(1.0)
        began = time.monotonic()
        run = run_qdiag_process("investigate", "--format", "json", "--window", "2", "--timeout", timeout,
                                "--no-auto-detect", "--process", marker, "--no-probe", "logs",
                                timeout=timeout + HANG_GUARD_S)
        elapsed = time.monotonic() - began
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert elapsed < timeout + HANG_GUARD_S
    for probe in report["probes"]:
        assert probe["status"] in ("ok", "timeout", "not_applicable", "skipped"), probe
        if probe["status"] != "ok":
            assert probe["error"], probe  # a probe the load cut short says so
    ran = {p["name"]: p for p in report["probes"]}
    assert ran["host"]["status"] in ("ok", "timeout") and ran["process"]["status"] in ("ok", "timeout")
    if ran["process"]["status"] == "ok":
        # The report is about the busy consumers: their own code, or the CPU they share.
        assert {c["id"] for c in report["root_causes"]} & {"slow-consumer-logic", "cpu-saturation"}, \
            report["root_causes"]
