"""qdiag report SNAPSHOT...: the same report, offline (`-` reads a snapshot from standard input).

Several snapshots (one per host, taken around the same time) make one report:
qdiag/fleet merges them.  A merged snapshot (investigate --collect --snapshot)
re-renders the same way on its own."""

from __future__ import annotations

from qdiag import outputs
from qdiag.environment import Environment
from qdiag.errors import UsageError
from qdiag.inputs import STDIN, load_baseline, load_rules, load_snapshot
from qdiag.fleet.report import build_any
from qdiag.report.emit import emit_report


def merge_files(env: Environment, paths: list[str]) -> dict:
    """One document from one or several snapshot files."""
    docs = [(path, load_snapshot(env, path)) for path in paths]
    if len(docs) == 1:
        return docs[0][1]
    from qdiag.fleet.merge import Taken, hostname, merge

    return merge([Taken(name=hostname(doc), target=path, doc=doc) for path, doc in docs])


def run(env: Environment, snapshot_paths: list[str] | str, *, fmt: str, output: str | None, playbooks: list[str],
        baseline: str | None) -> None:
    paths = [snapshot_paths] if isinstance(snapshot_paths, str) else list(snapshot_paths)
    if not paths:
        raise UsageError("no snapshot given", "qdiag report FILE [FILE...]")
    if sum(1 for p in paths + [baseline] if p == STDIN) > 1:
        raise UsageError("the snapshots and --baseline cannot both come from standard input", "give one as a file")
    outputs.check_writable(output, "--output", "report.md")
    rules = load_rules(playbooks)
    base = load_baseline(env, baseline)
    doc = merge_files(env, paths)
    emit_report(env, build_any(doc, rules, base), fmt, output)
