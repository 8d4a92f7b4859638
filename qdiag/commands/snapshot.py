"""qdiag snapshot: record everything observed into one file for a ticket."""

from __future__ import annotations

import sys
from pathlib import Path

from qdiag import snapshot as snap
from qdiag.commands.collect import anything_probed, collect, lower_priority
from qdiag.config import Settings
from qdiag.errors import NothingProbed, UsageError


def run(settings: Settings, argv: list[str], *, output: str | None) -> None:
    if output:
        target = Path(output)
        if target.is_dir():
            raise UsageError(f"-o {output} is a directory", "give a file name, e.g. -o incident.json.gz")
        if not target.parent.exists():
            raise UsageError(f"-o {output}: directory {target.parent} does not exist", "create it or choose another path")
    lower_priority()
    doc = collect(settings, argv)
    path = Path(output) if output else Path(snap.default_filename(doc))
    snap.save(doc, path)
    print(str(path))
    ok = sum(1 for p in doc["probes"] if p["status"] == "ok")
    print(f"{ok} of {len(doc['probes'])} probes ok; re-render with: qdiag report {path}", file=sys.stderr)
    if not anything_probed(doc):
        raise NothingProbed("no probe produced data", f"the snapshot {path} still records why each one failed")
