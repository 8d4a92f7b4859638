"""The snapshot file: everything one run observed, as one gzip-compressed,
versioned JSON document.  `investigate` is snapshot-then-report in one process,
so a snapshot re-renders to the same report anywhere.

Format history (bump SCHEMA and add a step to MIGRATIONS when a change is not
purely additive):
  qdiag.snapshot/1  first version.
"""

from __future__ import annotations

import gzip
import json
import os
import platform
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from qdiag import __version__
from qdiag.errors import SnapshotError

SCHEMA_PREFIX = "qdiag.snapshot/"
VERSION = 1
SCHEMA = f"{SCHEMA_PREFIX}{VERSION}"

# version N -> function upgrading a version-N document to N+1.
MIGRATIONS: dict[int, Callable[[dict], dict]] = {}



def utc_now_iso(wall: float | None = None) -> str:
    moment = datetime.fromtimestamp(wall, timezone.utc) if wall is not None else datetime.now(timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def host_identity() -> dict[str, Any]:
    uname = platform.uname()
    return {"hostname": socket.gethostname(), "system": uname.system, "kernel": uname.release,
            "machine": uname.machine, "cpu_count": os.cpu_count(), "python": platform.python_version()}


def _dependencies(metadata) -> list[tuple[str, bool]]:
    """The distributions qdiag depends on, as its installed metadata declares them."""
    import re

    try:
        requirements = metadata.requires("qdiag") or []
    except metadata.PackageNotFoundError:
        return []
    # A requirement with an environment marker (tomli before 3.11) is listed only where installed.
    return [(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0], ";" in r) for r in requirements if "extra ==" not in r]


def library_versions() -> dict[str, str | None]:
    from importlib import metadata

    versions: dict[str, str | None] = {"qdiag": __version__}
    for name, conditional in _dependencies(metadata):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if not conditional:
                versions[name] = None
    return versions


def build(*, probes: list[dict], settings_doc: dict, command: list[str], window_s: float,
          discovered: list[dict], created_at: str | None = None) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "created_at": created_at or utc_now_iso(),
        "qdiag_version": __version__,
        "host": host_identity(),
        "versions": library_versions(),
        "command": command,
        "settings": settings_doc,
        "window_s": window_s,
        "discovered": discovered,
        "probes": probes,
    }


def default_filename(snapshot: dict) -> str:
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in snapshot["host"]["hostname"]) or "host"
    stamp = snapshot["created_at"].replace("-", "").replace(":", "")
    return f"qdiag-{host}-{stamp}.json.gz"


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write via a temporary file in the same directory, fsync, rename: a reader
    never sees half a file, and an interrupted write leaves the old one."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def dumps(snapshot: dict) -> bytes:
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
    # mtime=0: the same snapshot compresses to the same bytes.
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def save(snapshot: dict, path: Path) -> Path:
    write_atomic(path, dumps(snapshot))
    return path


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no such file", "give the path of a file written by 'qdiag snapshot'") from None
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read ({exc.strerror or exc})", "check the path and its permissions") from None
    try:
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        doc = json.loads(raw.decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{path}: not a qdiag snapshot (cannot decode: {str(exc).splitlines()[0]})",
                            "give a file written by 'qdiag snapshot'") from None
    return upgrade(doc, str(path))


def upgrade(doc: Any, where: str = "snapshot") -> dict[str, Any]:
    """Validate a decoded document and migrate it to the current version."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str) or not doc["schema"].startswith(SCHEMA_PREFIX):
        raise SnapshotError(f"{where}: not a qdiag snapshot (no '{SCHEMA_PREFIX}N' schema)",
                            "give a file written by 'qdiag snapshot'")
    try:
        version = int(doc["schema"][len(SCHEMA_PREFIX):])
    except ValueError:
        raise SnapshotError(f"{where}: unreadable schema '{doc['schema']}'", "give a file written by 'qdiag snapshot'") from None
    if version > VERSION:
        raise SnapshotError(f"{where}: written by a newer qdiag (schema {doc['schema']}, this one reads up to {SCHEMA})",
                            "upgrade qdiag to read it")
    while version < VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema"] = f"{SCHEMA_PREFIX}{version}"
    for key, kind in (("probes", list), ("window_s", (int, float)), ("host", dict), ("created_at", str)):
        if not isinstance(doc.get(key), kind):
            raise SnapshotError(f"{where}: snapshot is missing '{key}'", "the file is damaged; take a new snapshot")
    for item in doc["probes"]:
        if not isinstance(item, dict) or "name" not in item or "status" not in item:
            raise SnapshotError(f"{where}: snapshot has a malformed probe entry", "the file is damaged; take a new snapshot")
        item.setdefault("observations", {})
        item.setdefault("error", None)
        item.setdefault("duration_s", 0.0)
    return doc

