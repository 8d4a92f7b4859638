"""The first screen of a real 80x24 terminal for a backlog over several queues
whose one consumer waits on a slow service nobody named (a recorded snapshot):
the verdict, the top cause, its first evidence line and where the consumer's
threads spent the window are all visible without scrolling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helper import run_cli
from tests.unit.test_report_terminal import qdiag_command, terminal  # noqa: F401 (the fixture)

pytestmark = pytest.mark.live

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / "v1-slow-dependency-consumers.json.gz"


def test_the_first_screen_shows_the_consumers_wait_attribution_under_the_queues(terminal):  # noqa: F811
    report = json.loads(run_cli("report", SNAPSHOT, "--format", "json").out)
    assert len(report["queues"]) >= 3
    cause = report["root_causes"][0]
    consumer = next(c for c in report["consumers"] if c["kernel"]["sampled"])
    t = terminal(qdiag_command("report", str(SNAPSHOT)))
    screen = t.wait_for("Consumers")
    lines = screen.splitlines()
    assert lines[0].startswith(report["verdict"].upper() + ": "), screen
    assert any(line.startswith("1. ") for line in lines), screen
    measured = [line for line in lines if line.lstrip().startswith("measured")]
    first_evidence = cause["evidence"][0].removeprefix(f"{cause['subject']}: ")
    assert measured and first_evidence[:40] in measured[0], screen
    row = next(line for line in lines if line.startswith(f"  pid {consumer['pid']} "))
    assert f"of a thread waiting for {consumer['kernel']['waits'][0]['target']}" in row, screen
    t.keys("q")
    assert "__EXIT=0__" in t.wait_for("__EXIT")
