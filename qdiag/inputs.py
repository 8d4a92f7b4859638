"""What the report-building commands read: snapshots (a file, or `-` for
standard input), baselines and extra playbooks."""

from __future__ import annotations

import tempfile
from pathlib import Path

from qdiag import snapshot as snap
from qdiag.environment import Environment
from qdiag.errors import SnapshotError, UsageError

STDIN = "-"
# A snapshot on standard input is spooled to a temporary file and read like any
# other, so it gets the same checks; this bounds the spool (gzip snapshots are
# a few MB; 64 MiB is far above any real one).
MAX_STDIN_BYTES = 64 << 20
CHUNK = 1 << 16


def load_rules(extra: list[str]) -> list:
    """The built-in playbooks plus `--playbook` files (a bad one fails before any probing)."""
    from qdiag.diagnosis import playbook

    return playbook.load([Path(p) for p in extra])


def load_snapshot(env: Environment, path: str) -> dict:
    if path != STDIN:
        return snap.load(Path(path))
    if env.stdin_isatty:
        raise UsageError("'-' reads the snapshot from standard input, which is a terminal",
                         "pipe one in: qdiag report - < FILE")
    source = env.stdin_bytes
    with tempfile.TemporaryDirectory(prefix="qdiag-stdin-") as scratch:
        spool = Path(scratch) / "snapshot"
        copied = 0
        with open(spool, "wb") as out:
            while chunk := source.read(CHUNK):
                copied += len(chunk)
                if copied > MAX_STDIN_BYTES:
                    raise SnapshotError(f"standard input: more than {MAX_STDIN_BYTES >> 20} MiB, not a qdiag snapshot",
                                        "give a file written by 'qdiag snapshot'")
                out.write(chunk)
        try:
            return snap.load(spool)
        except SnapshotError as exc:
            raise SnapshotError(exc.message.replace(str(spool), "standard input"), exc.hint) from None


def load_baseline(env: Environment, path: str | None) -> dict | None:
    return load_snapshot(env, path) if path else None
