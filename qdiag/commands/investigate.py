"""qdiag investigate: snapshot then report, in one process."""

from __future__ import annotations

from pathlib import Path

from qdiag import snapshot as snap
from qdiag.commands.collect import anything_probed, collect, lower_priority
from qdiag.commands.output import emit_report
from qdiag.commands.report import load_baseline, load_rules
from qdiag.commands.snapshot import check_snapshot_path
from qdiag.config import Settings
from qdiag.errors import NothingProbed
from qdiag.report.build import build_report


def run(settings: Settings, argv: list[str], *, fmt: str, output: str | None, playbooks: list[str],
        baseline: str | None, save: str | None = None) -> None:
    rules = load_rules(playbooks)  # a bad playbook fails before minutes of probing, not after
    base = load_baseline(baseline)
    if save:
        check_snapshot_path(save)
    lower_priority()
    doc = collect(settings, argv)
    if save:
        snap.save(doc, Path(save))
    emit_report(build_report(doc, rules, base), fmt, output)
    if not anything_probed(doc):
        raise NothingProbed("no probe produced data", "see the probe table above for why each one failed")
