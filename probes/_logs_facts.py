"""What the log probe's matches mean to the diagnosis: one `log` subject per pattern that matched."""

from __future__ import annotations

from qdiag.diagnosis.facts import Subject
from qdiag.probe import Contribution


def _subjects(obs: dict, joined):
    for pattern in obs.get("patterns") or []:
        if isinstance(pattern, dict):
            yield Subject("log", f"log:{pattern.get('id')}", dict(pattern))


CONTRIBUTION = Contribution(steps=(1,), subjects=_subjects)
