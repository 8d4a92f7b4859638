"""End to end from a recorded snapshot to each rendered format, compared with
golden files.  After an intended change to rules or rendering, regenerate with

    QDIAG_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden_report.py

and review the diff of tests/fixtures/golden/ like any other change."""

import io
import json
import os
from pathlib import Path

import pytest

from qdiag import snapshot
from qdiag.diagnosis import playbook
from qdiag.report import render
from qdiag.report.build import build_report

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UPDATE = os.environ.get("QDIAG_UPDATE_GOLDEN") == "1"
CASES = ["v1-rabbitmq-redis-backlog", "v1-host-only"]


def rendered(case: str) -> dict[str, str]:
    doc = snapshot.load(FIXTURES / "snapshots" / f"{case}.json.gz")
    report = build_report(doc, playbook.load())
    text = io.StringIO()
    render.render_text(report, text, color=False, width=100)
    return {"json": render.render_json(report), "md": render.render_markdown(report), "txt": text.getvalue()}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("fmt", ["json", "md", "txt"])
def test_golden(case, fmt):
    got = rendered(case)[fmt]
    golden = FIXTURES / "golden" / f"{case}.{fmt}"
    if UPDATE:
        golden.write_text(got, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run with QDIAG_UPDATE_GOLDEN=1"
    assert got == golden.read_text(encoding="utf-8")


def test_report_from_snapshot_is_deterministic():
    assert rendered(CASES[0]) == rendered(CASES[0])


def test_json_report_shape():
    report = json.loads(rendered(CASES[0])["json"])
    assert report["schema"] == "qdiag.report/1"
    assert {q["system"] for q in report["queues"]} >= {"rabbitmq", "redis"}
    for queue in report["queues"]:
        for key in ("system", "name", "group", "depth", "rate_in", "rate_out", "consumers", "fill_ratio", "status"):
            assert key in queue
    for cause in report["root_causes"]:
        assert set(cause) >= {"id", "score", "step", "subject", "title", "evidence", "mitigations"}
        assert 0 <= cause["score"] <= 1
    scores = [c["score"] for c in report["root_causes"]]
    assert scores == sorted(scores, reverse=True)
