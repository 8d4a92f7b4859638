"""qdiag snapshot: record everything observed into one file for a ticket."""

from __future__ import annotations

from pathlib import Path

from qdiag import outputs, snapshot as snap
from qdiag.collect import anything_probed, collect, guard
from qdiag.config import Settings
from qdiag.environment import Environment
from qdiag.errors import NothingProbed, UsageError


def run(env: Environment, settings: Settings, argv: list[str], *, output: str | None) -> None:
    to_stdout = output == outputs.STDOUT
    if to_stdout and env.stdout_isatty:
        raise UsageError("refusing to write the snapshot (gzip) to a terminal", "redirect it: qdiag snapshot -o - > FILE")
    outputs.check_writable(output, "--output", "incident.json.gz")
    with guard(env.stderr, settings):
        doc = collect(settings, argv, progress=env.stderr if env.stderr_isatty else None,
                      color=env.color(env.stderr_isatty))
    ok = sum(1 for p in doc["probes"] if p["status"] == "ok")
    if to_stdout:
        outputs.write_bytes(env, output, snap.dumps(doc), mode=0o600, what="the snapshot")
        env.stderr.write(f"{ok} of {len(doc['probes'])} probes ok; re-render with: qdiag report FILE\n")
        where = "the snapshot on standard output"
    else:
        path = Path(output) if output else Path(snap.default_filename(doc))
        snap.save(doc, path)
        env.stdout.write(f"{path}\n")
        env.stderr.write(f"{ok} of {len(doc['probes'])} probes ok; re-render with: qdiag report {path}\n")
        where = f"the snapshot {path}"
    if not anything_probed(doc):
        raise NothingProbed("no probe produced data", f"{where} still records why each one failed")
