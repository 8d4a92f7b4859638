"""snapshot -> report document (`qdiag.report/1`).  Pure: no I/O, so a
snapshot re-renders to the same report anywhere.

Format history: qdiag.report/1 first version.  Keys may be added; renaming or
removing one means qdiag.report/2.
"""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis import engine
from qdiag.diagnosis import facts
from qdiag.diagnosis.facts import queue_facts, queue_records
from qdiag.diagnosis.playbook import Rule

SCHEMA = "qdiag.report/1"
QUEUE_KEYS = ("system", "name", "group", "depth", "rate_in", "rate_out", "consumers", "fill_ratio", "status")
# Detail keys worth carrying into the report's queue rows (the snapshot keeps everything).
QUEUE_DETAIL_KEYS = ("depth_samples", "lag_seconds", "lag_seconds_source", "max_lag", "worst_partition",
                     "partitions", "overflow", "limit", "data_at_risk", "trend", "rate_source", "notes",
                     "time_to_full_s", "time_to_drain_s", "vhost", "pending", "oldest_age_s", "layout")


def _queue_row(facts: dict) -> dict[str, Any]:
    row = {key: facts.get(key) for key in QUEUE_KEYS}
    for key in QUEUE_DETAIL_KEYS:
        if facts.get(key) is not None:
            row[key] = facts[key]
    row["subject"] = facts["subject"]
    row["backing_up"] = facts["backing_up"]
    return row


def _queue_order(row: dict) -> tuple:
    """Biggest problem first: backing up, fuller, deeper."""
    fill = row.get("fill_ratio") if isinstance(row.get("fill_ratio"), (int, float)) else -1
    depth = row.get("depth") if isinstance(row.get("depth"), (int, float)) else -1
    return (not row["backing_up"], -fill, -depth, row["subject"])


def _verdict(assessed: dict) -> dict[str, Any]:
    return {"verdict": assessed["verdict"], "verdict_reasons": assessed["reasons"]}


def build_report(snapshot: dict, rules: list[Rule], baseline: dict | None = None) -> dict[str, Any]:
    queues = sorted((_queue_row(queue_facts(r, None)) for r in queue_records(snapshot)), key=_queue_order)
    joined, contributors = facts.join(snapshot, baseline)
    hits = engine.evaluate_subjects(rules, list(facts.subjects_of(joined, contributors)))
    ranked = engine.rank(hits)
    root_causes = [c for c in ranked if c["score"] >= engine.SCORE_FLOOR]
    return {
        "schema": SCHEMA,
        "generated_at": snapshot["created_at"],
        "host": snapshot["host"].get("hostname"),
        "window_s": snapshot["window_s"],
        **_verdict(engine.assess(snapshot, queues, ranked, joined.shared)),
        "queues": queues,
        "root_causes": root_causes,
        "steps": engine.steps(hits, snapshot),
        "probes": [{"name": p["name"], "status": p["status"], "duration_s": p.get("duration_s", 0.0),
                    "error": p.get("error")} for p in snapshot["probes"]],
        "baseline": baseline.get("created_at") if baseline else None,
    }
