"""End to end from a recorded snapshot to each rendered format, through the
CLI (`qdiag report SNAPSHOT --format F`, off a terminal), compared with the
golden files stored in tests/fixtures/golden/.  After an intended change to
rules or rendering, regenerate with

    QDIAG_UPDATE_GOLDEN=1 python -m pytest tests/unit/test_golden_report.py

and review the diff of tests/fixtures/golden/ like any other change."""

import json
import os
from pathlib import Path

import pytest

from tests.cli_helper import run_cli, run_qdiag_process

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UPDATE = os.environ.get("QDIAG_UPDATE_GOLDEN") == "1"
CASES = ["v1-rabbitmq-redis-backlog", "v1-host-only", "v1-multi-queue-backlog", "v1-slow-dependency-consumers"]
FORMATS = {"json": "json", "md": "markdown", "txt": "text"}


def snapshot_of(case: str) -> Path:
    return FIXTURES / "snapshots" / f"{case}.json.gz"


def golden_of(case: str, ext: str) -> Path:
    return FIXTURES / "golden" / f"{case}.{ext}"


def rendered(case: str, ext: str) -> str:
    r = run_cli("report", snapshot_of(case), "--format", FORMATS[ext])
    assert r.code == 0, r.err
    return r.out


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("ext", FORMATS)
def test_golden(case, ext):
    got = rendered(case, ext)
    golden = golden_of(case, ext)
    if UPDATE:
        golden.write_text(got, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden.name}: run with QDIAG_UPDATE_GOLDEN=1"
    assert got == golden.read_text(encoding="utf-8")


@pytest.mark.live
@pytest.mark.parametrize("ext", ["json", "txt"])
def test_a_fresh_process_with_another_hash_seed_and_locale_renders_the_stored_file(ext):
    """The report does not depend on set ordering, the time zone or the locale of the machine rendering it."""
    case = CASES[0]
    proc = run_qdiag_process("report", snapshot_of(case), "--format", FORMATS[ext],
                             env={"PYTHONHASHSEED": "4242", "TZ": "Pacific/Chatham", "LC_ALL": "C"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == golden_of(case, ext).read_text(encoding="utf-8")


def test_json_report_shape():
    report = json.loads(rendered(CASES[0], "json"))
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
