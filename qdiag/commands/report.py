"""qdiag report SNAPSHOT: the same report, offline."""

from __future__ import annotations

from pathlib import Path

from qdiag import snapshot as snap
from qdiag.commands.output import emit_report
from qdiag.diagnosis import playbook
from qdiag.report.build import build_report


def load_rules(extra: list[str]) -> list:
    return playbook.load([Path(p) for p in extra])


def load_baseline(path: str | None) -> dict | None:
    return snap.load(Path(path)) if path else None


def run(snapshot_path: str, *, fmt: str, output: str | None, playbooks: list[str], baseline: str | None) -> None:
    rules = load_rules(playbooks)
    doc = snap.load(Path(snapshot_path))
    emit_report(build_report(doc, rules, load_baseline(baseline)), fmt, output)
