"""qdiag snapshot: record everything observed into one file for a ticket."""

from __future__ import annotations

import sys
from pathlib import Path

from qdiag import snapshot as snap
from qdiag.commands.collect import anything_probed, collect, lower_priority
from qdiag.config import Settings
from qdiag.errors import NothingProbed, UsageError


def check_snapshot_path(output: str) -> None:
    """Fail before probing, not after, when the snapshot could not be written."""
    target = Path(output)
    if target.is_dir():
        raise UsageError(f"{output} is a directory", "give a file name, e.g. incident.json.gz")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{output}: directory {parent} does not exist", "create it or choose another path")


def run(settings: Settings, argv: list[str], *, output: str | None) -> None:
    if output:
        check_snapshot_path(output)
    lower_priority()
    doc = collect(settings, argv)
    path = Path(output) if output else Path(snap.default_filename(doc))
    snap.save(doc, path)
    print(str(path))
    ok = sum(1 for p in doc["probes"] if p["status"] == "ok")
    print(f"{ok} of {len(doc['probes'])} probes ok; re-render with: qdiag report {path}", file=sys.stderr)
    if not anything_probed(doc):
        raise NothingProbed("no probe produced data", f"the snapshot {path} still records why each one failed")
