"""The snapshot file: everything one run observed, as one gzip-compressed,
versioned JSON document.  `investigate` is snapshot-then-report in one process,
so a snapshot re-renders to the same report anywhere.

Format history (bump SCHEMA and add a step to MIGRATIONS when a change is not
purely additive):
  qdiag.snapshot/1  first version.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import math
import platform
import re
import socket
import stat
import tempfile
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from qdiag import __version__
from qdiag.brokers import BROKERS
from qdiag.errors import SnapshotError, UsageError

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


# Output files (-o, --snapshot, --junit): what is at the path decides how it is written.
#   nothing            a new file, created atomically with `mode`;
#   a regular file     replaced atomically (temporary file, fsync, rename, fsync of
#                      the directory), keeping its owner, group and permission bits;
#                      a private output (a snapshot, mode 0600) also drops group and
#                      other bits.  Not run as root, a file of another user is
#                      refused: replacing it would silently make it ours;
#   anything else      (/dev/null, a terminal, a FIFO, a symlink to /proc/self/fd/1)
#                      written through like a stream, never replaced by a file.
# Symlinks are followed by the kernel's own open(), so its protected_symlinks rule
# (a link planted in a sticky world-writable directory such as /tmp) still applies.


class OutputRefused(UsageError):
    """An output path qdiag will not write to; the message says why, the hint what to do."""

    def __init__(self, path: Path, problem: str, hint: str):
        super().__init__(f"{path}: {problem}", hint)
        self.problem = problem


def inspect_output(path: Path) -> os.stat_result | None:
    """What is at `path`, symlinks followed: None when nothing is.  Checked before
    any probing, without opening it (opening a FIFO would end its reader's input).

    Raises OutputRefused for what cannot be written: a directory, a socket, a
    file not writable, another user's file when not root."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # the parent's problem, said by the caller
        return None
    except OSError as exc:
        raise OutputRefused(path, f"cannot be checked ({exc.strerror or exc})", "choose another path") from None
    _refuse(path, info)
    if not os.access(path, os.W_OK):
        raise OutputRefused(path, "is not writable", "check its permissions or choose another path")
    return info


def _refuse(path: Path, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        raise OutputRefused(path, "is a directory", "give a file name")
    if stat.S_ISSOCK(info.st_mode):
        raise OutputRefused(path, "is a socket", "choose another path")
    if stat.S_ISREG(info.st_mode) and info.st_uid != os.geteuid() and os.geteuid() != 0:
        raise OutputRefused(path, f"belongs to {_user_name(info.st_uid)}; replacing it would make it yours",
                            "remove it first or choose another path")


def _user_name(uid: int) -> str:
    try:
        import pwd

        return f"user {pwd.getpwuid(uid).pw_name}"
    except (ImportError, KeyError):
        return f"uid {uid}"


def _open_existing(path: Path) -> tuple[int, os.stat_result] | None:
    """Open what is at `path` for writing, without creating or truncating it:
    (fd, its stat), or None when nothing is there.  The kernel follows symlinks
    here, with its protected_symlinks rule."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except IsADirectoryError:
        raise OutputRefused(path, "is a directory", "give a file name") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a FIFO nobody reads (a socket cannot be opened at all)
            raise OutputRefused(path, "is a FIFO that nothing reads, or a socket",
                                "start its reader first, or choose another path") from None
        raise OutputRefused(path, f"cannot be written ({exc.strerror or exc})",
                            "check its permissions or choose another path") from None
    try:
        info = os.fstat(fd)
        _refuse(path, info)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, binary: bool = False) -> None:
    """Write `data` to the output `path` as described above: a reader never sees
    half a file, an interrupted write leaves the old one and no temporary file."""
    path = Path(path)
    opened = _open_existing(path)
    existing = None
    if opened is not None:
        fd, existing = opened
        if not stat.S_ISREG(existing.st_mode):
            _write_through(path, fd, data, binary)
            return
        os.close(fd)
        target = Path(os.path.realpath(path))
        current = os.stat(target)
        if (current.st_dev, current.st_ino) != (existing.st_dev, existing.st_ino):
            raise OutputRefused(path, "changed while it was being written", "run again")
        keep = existing.st_mode & 0o777
        mode = keep & ~0o077 if not mode & 0o077 else keep
    else:
        target = path
    directory = target.parent if str(target.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    try:
        if existing is not None and (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, existing.st_uid if os.geteuid() == 0 else -1, existing.st_gid)
            except PermissionError:  # not a member of the file's group: it gets ours
                pass
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _write_through(path: Path, fd: int, data: bytes, binary: bool) -> None:
    """A device, FIFO or terminal: written like a stream, as `> path` would."""
    try:
        if binary and os.isatty(fd):
            raise OutputRefused(path, "is a terminal; refusing to write a gzip snapshot to it",
                                "redirect it to a file instead")
        os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    """The rename is durable only once the directory is on disk too."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the data itself is synced
        pass
    finally:
        os.close(fd)


def dumps(snapshot: dict) -> bytes:
    text = json.dumps(snapshot, sort_keys=True, separators=(",", ":"), default=str)
    # mtime=0: the same snapshot compresses to the same bytes.
    return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)


def save(snapshot: dict, path: Path) -> Path:
    write_atomic(path, dumps(snapshot), binary=True)
    return path


# Limits on what the loader reads: a real snapshot is a few MB of JSON nested
# about a dozen levels deep.  A file past these is refused with one line, so a
# gzip bomb, a device or a crafted document cannot exhaust memory or the stack.
MAX_FILE_BYTES = 64 << 20       # the file (or standard input) as stored
MAX_JSON_BYTES = 64 << 20       # the JSON text once decompressed
MAX_DEPTH = 64                  # nesting of objects and arrays
CHUNK = 1 << 16
_DAMAGED = "the file is damaged; take a new snapshot"
_NOT_OURS = "give a file written by 'qdiag snapshot'"


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file, at most MAX_FILE_BYTES.

    Opened non-blocking so that a FIFO cannot hang the open, then refused unless
    fstat says it is a regular file (a device such as /dev/zero never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SnapshotError(f"{path}: no such file", _NOT_OURS) from None
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read ({exc.strerror or exc})", "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise SnapshotError(f"{path}: {kind}",
                                "give a snapshot file, or '-' to read one from standard input")
        if info.st_size > MAX_FILE_BYTES:
            raise SnapshotError(f"{path}: {info.st_size:,} bytes, more than a snapshot can be "
                                f"({MAX_FILE_BYTES >> 20} MiB)", _NOT_OURS)
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_FILE_BYTES:  # the file grew while being read
                raise SnapshotError(f"{path}: more than {MAX_FILE_BYTES >> 20} MiB, not a qdiag snapshot", _NOT_OURS)
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot read ({exc.strerror or exc})", "check the path and its permissions") from None
    finally:
        os.close(fd)


def _gunzip(raw: bytes, where: str) -> bytes:
    """Decompress into one buffer of at most MAX_JSON_BYTES (+1 to tell "more"): zlib is told the
    most it may return, so a bomb is refused without inflating it, and no growing buffer is
    copied on the way (a bytearray grown chunk by chunk held two copies at its peak)."""
    members, total, data = [], 0, raw
    try:
        while data:
            inflate = zlib.decompressobj(wbits=31)  # gzip framing
            out = inflate.decompress(data, MAX_JSON_BYTES + 1 - total)
            total += len(out)
            if total > MAX_JSON_BYTES or inflate.unconsumed_tail:
                raise SnapshotError(f"{where}: decompresses to more than {MAX_JSON_BYTES >> 20} MiB, "
                                    "not a qdiag snapshot", _NOT_OURS)
            if not inflate.eof:
                raise EOFError("compressed data ends before the end-of-stream marker")
            members.append(out)
            data = inflate.unused_data.lstrip(b"\0")  # another gzip member, or padding
    except (EOFError, zlib.error) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SnapshotError(f"{where}: not a qdiag snapshot (cannot decode: {reason})", _NOT_OURS) from None
    return members[0] if len(members) == 1 else b"".join(members)


def _depth_exceeds(doc: Any, limit: int) -> bool:
    """Whether objects/arrays nest deeper than `limit` (iterative: no recursion to exhaust)."""
    stack = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def decode(raw: bytes, where: str) -> Any:
    """Bytes as stored (gzip or plain JSON) -> the JSON document, within the limits above."""
    if len(raw) > MAX_FILE_BYTES:
        raise SnapshotError(f"{where}: more than {MAX_FILE_BYTES >> 20} MiB, not a qdiag snapshot", _NOT_OURS)
    if raw[:2] == b"\x1f\x8b":
        raw = _gunzip(raw, where)
    elif len(raw) > MAX_JSON_BYTES:
        raise SnapshotError(f"{where}: more than {MAX_JSON_BYTES >> 20} MiB of JSON, not a qdiag snapshot", _NOT_OURS)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except RecursionError:
        doc = None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise SnapshotError(f"{where}: not a qdiag snapshot (cannot decode: {str(exc).splitlines()[0]})",
                            _NOT_OURS) from None
    else:
        if not _depth_exceeds(doc, MAX_DEPTH):
            return doc
    raise SnapshotError(f"{where}: nested deeper than {MAX_DEPTH} levels, not a qdiag snapshot", _NOT_OURS)


def load(path: Path) -> dict[str, Any]:
    path = Path(path)
    return upgrade(decode(_read_regular(path), str(path)), str(path))


_SCHEMA_VERSION = re.compile(r"[1-9][0-9]{0,5}")


def upgrade(doc: Any, where: str = "snapshot") -> dict[str, Any]:
    """Validate a decoded document and migrate it to the current version."""
    if not isinstance(doc, dict) or not isinstance(doc.get("schema"), str) or not doc["schema"].startswith(SCHEMA_PREFIX):
        raise SnapshotError(f"{where}: not a qdiag snapshot (no '{SCHEMA_PREFIX}N' schema)", _NOT_OURS)
    number = doc["schema"][len(SCHEMA_PREFIX):]
    if not _SCHEMA_VERSION.fullmatch(number):  # versions start at 1: "/0", "/-1", "/ 1" are not ours
        raise SnapshotError(f"{where}: unreadable schema {doc['schema'][:60]!r}", _NOT_OURS)
    version = int(number)
    if version > VERSION:
        raise SnapshotError(f"{where}: written by a newer qdiag (schema {doc['schema']}, this one reads up to {SCHEMA})",
                            "upgrade qdiag to read it")
    while version < VERSION:
        doc = MIGRATIONS[version](doc)
        version += 1
        doc["schema"] = f"{SCHEMA_PREFIX}{version}"
    _validate(doc, where)
    return doc


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_KINDS: dict[str, Callable[[Any], bool]] = {
    "a string": lambda v: isinstance(v, str),
    "a string or null": lambda v: v is None or isinstance(v, str),
    "a number": _is_number,
    "a non-negative number": lambda v: _is_number(v) and v >= 0,
    "an object": lambda v: isinstance(v, dict),
    "an array": lambda v: isinstance(v, list),
    "an array of strings": lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v),
    "an array of objects": lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v),
}
# Every field outside the probes' observations that reading a snapshot uses:
# (field, what it must be, required).  A field that is absent and not required
# gets an empty default; one of the wrong type is refused, named.
_ENVELOPE = (
    ("created_at", "a string", True),
    ("window_s", "a non-negative number", True),
    ("host", "an object", True),
    ("probes", "an array of objects", True),
    ("qdiag_version", "a string or null", False),
    ("command", "an array of strings", False),
    ("settings", "an object", False),
    ("discovered", "an array of objects", False),
    ("versions", "an object", False),
)
_PROBE = (
    ("name", "a string", True),
    ("status", "a string", True),
    ("error", "a string or null", False),
    ("duration_s", "a non-negative number", False),
    ("observations", "an object", False),
    ("traceback", "a string or null", False),
)
_TARGET_LISTS = ("queues", "groups", "processes", "dependencies", "logs")
_DEFAULTS = {"an object": dict, "an array of strings": list, "an array of objects": list}


def _check(holder: dict, fields, prefix: str, where: str) -> None:
    for key, kind, required in fields:
        name = f"{prefix}{key}"
        if key not in holder:
            if required:
                raise SnapshotError(f"{where}: snapshot is missing '{name}'", _DAMAGED)
            if kind in _DEFAULTS:
                holder[key] = _DEFAULTS[kind]()
            continue
        value = holder[key]
        if _KINDS[kind](value):
            continue
        if kind.startswith("an array of ") and isinstance(value, list):
            # Name the item: "command[2] must be a string".
            item = "a string" if kind.endswith("strings") else "an object"
            index = next(i for i, v in enumerate(value) if not _KINDS[item](v))
            name, kind, value = f"{name}[{index}]", item, value[index]
        raise SnapshotError(f"{where}: snapshot field '{name}' must be {kind} (found {_describe(value)})", _DAMAGED)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60] if math.isfinite(value) else f"{value!r}"
    return {dict: "an object", list: "an array", str: "a string"}.get(type(value), type(value).__name__)


def _validate(doc: dict, where: str) -> None:
    """Type-check every field the report reads outside the observations (those are checked by reading them)."""
    _check(doc, _ENVELOPE, "", where)
    _check(doc["host"], (("hostname", "a string or null", False),), "host.", where)
    targets = doc["settings"].get("targets")
    if targets is not None:
        _check(doc["settings"], (("targets", "an object", False),), "settings.", where)
        _check(targets, [(k, "an array of strings", False) for k in _TARGET_LISTS if k in targets]
               + [(k, "a string or null", False) for k in BROKERS if k in targets],
               "settings.targets.", where)
    for index, item in enumerate(doc["probes"]):
        _check(item, _PROBE, f"probes[{index}].", where)
        item.setdefault("error", None)
        item.setdefault("duration_s", 0.0)
