"""qdiag report SNAPSHOT: the same report, offline (`-` reads the snapshot from standard input)."""

from __future__ import annotations

from qdiag import outputs
from qdiag.environment import Environment
from qdiag.errors import UsageError
from qdiag.inputs import load_baseline, load_rules, load_snapshot
from qdiag.report.build import build_report
from qdiag.report.emit import emit_report


def run(env: Environment, snapshot_path: str, *, fmt: str, output: str | None, playbooks: list[str],
        baseline: str | None) -> None:
    if snapshot_path == baseline == "-":
        raise UsageError("the snapshot and --baseline cannot both come from standard input", "give one as a file")
    outputs.check_writable(output, "--output", "report.md")
    rules = load_rules(playbooks)
    base = load_baseline(env, baseline)
    doc = load_snapshot(env, snapshot_path)
    emit_report(env, build_report(doc, rules, base), fmt, output)
