"""What the log probe's matches mean to the diagnosis: one `log` subject per pattern that matched."""

from __future__ import annotations

from qdiag.diagnosis.facts import Subject
from qdiag.probe import Contribution


# Built-in patterns whose lines say work is piling up somewhere: a backlog a
# broker probe may never see (an in-process queue, a thread pool's queue).
BACKLOG_PATTERNS = ("queue_full", "rejected_execution", "reject_publish")


def _context(obs: dict, joined) -> dict:
    symptoms = []
    for pattern in obs.get("patterns") or []:
        if isinstance(pattern, dict) and pattern.get("id") in BACKLOG_PATTERNS and (pattern.get("count") or 0) > 0:
            last = pattern.get("last") or {}
            symptoms.append({"source": "log", "id": pattern["id"], "count": pattern["count"],
                             "where": f"{last.get('source')}:{last.get('line')}" if last.get("source") else None,
                             "text": (pattern.get("samples") or [None])[-1]})
    return {"symptoms": symptoms} if symptoms else {}


def _subjects(obs: dict, joined):
    for pattern in obs.get("patterns") or []:
        if isinstance(pattern, dict):
            yield Subject("log", f"log:{pattern.get('id')}", dict(pattern))


CONTRIBUTION = Contribution(steps=(1,), context=_context, subjects=_subjects)
