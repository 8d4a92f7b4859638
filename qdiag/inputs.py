"""What the report-building commands read: snapshots (a file, or `-` for
standard input), baselines and extra playbooks.

A snapshot is data from elsewhere (a ticket, another host): everything about
it is checked before a report is built from it.  The loader (qdiag/snapshot.py)
bounds its size and nesting and type-checks its envelope; the probes'
observations are checked by reading them the way the report will, and a value
the report cannot read is named by its path in the document."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from qdiag import snapshot as snap
from qdiag.environment import Environment
from qdiag.errors import SnapshotError, UsageError

STDIN = "-"
CHUNK = 1 << 16


def load_rules(extra: list[str]) -> list:
    """The built-in playbooks plus `--playbook` files (a bad one fails before any probing)."""
    from qdiag.diagnosis import playbook

    return playbook.load([Path(p) for p in extra])


def _read_stdin(env: Environment) -> bytes:
    """Standard input, at most snap.MAX_FILE_BYTES: a snapshot piped in gets the file's limits."""
    if env.stdin_isatty:
        raise UsageError("'-' reads the snapshot from standard input, which is a terminal",
                         "pipe one in: qdiag report - < FILE")
    source = env.stdin_bytes
    chunks, total = [], 0
    while chunk := source.read(CHUNK):
        total += len(chunk)
        if total > snap.MAX_FILE_BYTES:
            raise SnapshotError(f"standard input: more than {snap.MAX_FILE_BYTES >> 20} MiB, not a qdiag snapshot",
                                "give a file written by 'qdiag snapshot'")
        chunks.append(chunk)
    return b"".join(chunks)


def load_snapshot(env: Environment, path: str) -> dict:
    if path == STDIN:
        where = "standard input"
        doc = snap.upgrade(snap.decode(_read_stdin(env), where), where)
    else:
        where = path
        doc = snap.load(Path(path))
    check_readable(doc, where)
    return doc


def load_baseline(env: Environment, path: str | None) -> dict | None:
    return load_snapshot(env, path) if path else None


# --------------------------------------------------------------------------- observations


def _build(doc: dict) -> None:
    from qdiag.report.build import build_report

    build_report(doc, [])


def check_readable(doc: dict, where: str, trial: Callable[[dict], Any] = _build) -> None:
    """Raise a SnapshotError naming the field when the report cannot be built from `doc`.

    What each probe's observations must look like is known only to the code
    that reads them (each probe's facts), so they are checked by reading: a
    report is built without rules, and when that fails the value to blame is
    found by taking parts of the document away until it succeeds."""
    try:
        trial(doc)
        return
    except Exception as exc:  # noqa: BLE001 - any failure to read is a damaged snapshot
        failure = exc
    field = _locate(doc, trial)
    owner = ""
    if field.startswith("probes["):
        owner = f" (the {str(doc['probes'][int(field[7:field.index(']')])].get('name'))[:40]} probe)"
    detail = str(failure).splitlines()[0][:120] if str(failure) else ""
    raise SnapshotError(f"{where}: snapshot field '{field}'{owner} has a value the report cannot read "
                        f"({type(failure).__name__}{': ' + detail if detail else ''})",
                        "the file is damaged or was edited; take a new snapshot") from None


def _passes(trial: Callable[[dict], Any], doc: dict) -> bool:
    try:
        trial(doc)
    except Exception:  # noqa: BLE001
        return False
    return True


def _pruned(node: Any, drop: set) -> Any:
    if isinstance(node, dict):
        return {k: v for k, v in node.items() if k not in drop}
    return [v for i, v in enumerate(node) if i not in drop]


def _locate(doc: dict, trial: Callable[[dict], Any]) -> str:
    """The path of the smallest part of `doc` whose removal alone lets `trial` pass.

    Bisects the children at each level, so a damaged value costs a few dozen
    trials, not one per value."""
    regions = [(item, "observations", f"probes[{i}].observations") for i, item in enumerate(doc["probes"])
               if isinstance(item.get("observations"), dict)]
    regions += [(doc, key, key) for key in ("settings", "discovered", "host") if isinstance(doc.get(key), (dict, list))]
    for holder, key, name in regions:
        original = holder[key]
        holder[key] = type(original)()
        try:
            emptied_passes = _passes(trial, doc)
        finally:
            holder[key] = original
        if emptied_passes:
            return _narrow(doc, holder, key, name, trial)
    return "probes"  # no single region to blame: several are damaged


def _narrow(doc: dict, holder: Any, key: Any, name: str, trial: Callable[[dict], Any]) -> str:
    while isinstance(holder[key], (dict, list)) and holder[key]:
        node = holder[key]

        def fixes(drop: list) -> bool:
            holder[key] = _pruned(node, set(drop))
            try:
                return _passes(trial, doc)
            finally:
                holder[key] = node

        candidates = list(node.keys()) if isinstance(node, dict) else list(range(len(node)))
        while len(candidates) > 1:
            half = len(candidates) // 2
            if fixes(candidates[:half]):
                candidates = candidates[:half]
            elif fixes(candidates[half:]):
                candidates = candidates[half:]
            else:
                return name  # it takes more than one of them: blame the container
        child = candidates[0]
        # Blame the child only when it is the trouble by itself: if the rest
        # without it also reads (a queue record without its name is skipped,
        # so its bad status is never read), the container is what is damaged.
        if not fixes([child]) or fixes([k for k in (node.keys() if isinstance(node, dict) else range(len(node)))
                                         if k != child]):
            return name
        name = f"{name}[{child}]" if isinstance(node, list) else f"{name}.{child}"
        holder, key = node, child
    return name
