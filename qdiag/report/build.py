"""snapshot -> report document (`qdiag.report/1`).  Pure: no I/O, so a
snapshot re-renders to the same report anywhere.

Format history: qdiag.report/1 first version.  Keys may be added; renaming or
removing one means qdiag.report/2.  Added since: "qdiag_version", "command",
"targets", "named", "discovered" (what produced the snapshot and what it looked
at); "focus" on each queue row; more queue detail keys (QUEUE_DETAIL_KEYS);
"broken_rules" (rules that raised and were left out; only when there are some).
"""

from __future__ import annotations

from typing import Any

from qdiag.diagnosis import engine, facts
from qdiag.diagnosis.facts import queue_facts, queue_records
from qdiag.diagnosis.playbook import Rule

SCHEMA = "qdiag.report/1"
QUEUE_KEYS = ("system", "name", "group", "depth", "rate_in", "rate_out", "consumers", "fill_ratio", "status")
# Detail keys worth carrying into the report's queue rows (the snapshot keeps everything).
QUEUE_DETAIL_KEYS = ("depth_samples", "lag_seconds", "lag_seconds_source", "max_lag", "worst_partition",
                     "partitions", "overflow", "limit", "data_at_risk", "trend", "rate_source", "notes",
                     "time_to_full_s", "time_to_drain_s", "vhost", "pending", "oldest_age_s", "layout",
                     # Lag detail: the worst partitions and who owns them, when a probe gives them.
                     "partition_lags", "lag_seconds_min", "topic_partitions", "unowned_partitions",
                     "at_risk_partitions", "idle_members", "parallelism", "group_state")


def _queue_row(facts: dict) -> dict[str, Any]:
    row = {key: facts.get(key) for key in QUEUE_KEYS}
    for key in QUEUE_DETAIL_KEYS:
        if facts.get(key) is not None:
            row[key] = facts[key]
    row["subject"] = facts["subject"]
    row["backing_up"] = facts["backing_up"]
    row["focus"] = facts.get("focus", True) is not False
    return row


def _queue_order(row: dict) -> tuple:
    """Biggest problem first: backing up, fuller, deeper."""
    fill = row.get("fill_ratio") if isinstance(row.get("fill_ratio"), (int, float)) else -1
    depth = row.get("depth") if isinstance(row.get("depth"), (int, float)) else -1
    return (not row["backing_up"], -fill, -depth, row["subject"])


def _targets(settings: dict) -> list[dict[str, str]]:
    """The endpoints probed (broker URLs, passwords already masked) and how each was found."""
    auto = {str(found).split(" ", 1)[0] for found in settings.get("auto_detected") or []}
    return [{"kind": kind, "target": value, "found": "auto-detected" if kind in auto else "given"}
            for kind, value in (settings.get("targets") or {}).items() if isinstance(value, str) and value]


def _named(settings: dict) -> dict[str, list]:
    """What the user pointed at: queues, groups, pids, process patterns, dependencies, logs."""
    return {kind: list(value) for kind, value in (settings.get("targets") or {}).items()
            if isinstance(value, list) and value}


def _verdict(assessed: dict) -> dict[str, Any]:
    return {"verdict": assessed["verdict"], "verdict_reasons": assessed["reasons"]}


def build_report(snapshot: dict, rules: list[Rule], baseline: dict | None = None) -> dict[str, Any]:
    queues = sorted((_queue_row(queue_facts(r, None, snapshot)) for r in queue_records(snapshot)), key=_queue_order)
    settings = snapshot.get("settings") or {}
    joined, contributors = facts.join(snapshot, baseline)
    broken: list[dict] = []  # rules that raised: left out, and said so (engine.evaluate_subjects)
    hits = engine.evaluate_subjects(rules, list(facts.subjects_of(joined, contributors)), broken)
    ranked = engine.rank(hits)
    root_causes = [c for c in ranked if c["score"] >= engine.SCORE_FLOOR]
    return {
        "schema": SCHEMA,
        "generated_at": snapshot["created_at"],
        "host": snapshot["host"].get("hostname"),
        "window_s": snapshot["window_s"],
        **_verdict(engine.assess(snapshot, queues, ranked, joined.shared, broken)),
        "queues": queues,
        "root_causes": root_causes,
        "steps": engine.steps(hits, snapshot),
        **({"broken_rules": broken} if broken else {}),
        "probes": [{"name": p["name"], "status": p["status"], "duration_s": p.get("duration_s", 0.0),
                    "error": p.get("error")} for p in snapshot["probes"]],
        "baseline": baseline.get("created_at") if baseline else None,
        "qdiag_version": snapshot.get("qdiag_version"),
        "command": list(snapshot.get("command") or []),
        "targets": _targets(settings),
        "named": _named(settings),
        "discovered": [{"pid": d.get("pid"), "via": d.get("via"), "subject": d.get("subject")}
                       for d in snapshot.get("discovered") or [] if isinstance(d, dict)],
    }
