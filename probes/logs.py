"""Overflow and rejection messages in the logs: the last N minutes of every
--log file and of the systemd journal, counted per pattern with the first and
last occurrence and a few redacted sample lines."""

from __future__ import annotations

import collections
import glob
import itertools
import os
import shutil
import stat
import subprocess
import threading
from typing import Any

from qdiag.context import ProbeContext
from qdiag.probe import NotApplicable, ProbeError, Option, register
from qdiag.redact import Redactor
from qdiag.regex_worker import RegexTimeout

from . import _logs_facts
from ._log_scan import Matcher, SourceScan, Tallies, compile_patterns, iso_local, looks_binary, read_tail, scan

DEFAULTS: dict[str, Any] = {
    "minutes": 15,                 # how far back to look
    "max_bytes": 4 * 1024 * 1024,  # read at most this much of each file (and of the journal), from the end
    "max_files": 50,               # most recently written first
    "journal": True,               # also read the systemd journal when there is one
    "journal_units": [],           # only these units (journalctl -u), all when empty
    "patterns": {},                # id -> regex, added to the built-in ones
}
_BINARY_PROBE_BYTES = 8192
# Time kept back from the probe's deadline when the user's patterns run out of
# it, so that the probe's own error (naming the pattern) wins over a bare timeout.
_PATTERN_MARGIN_S = 0.5
# Every source (file or journal) is reported with these keys; None = unknown or not read.
_SOURCE_KEYS: dict[str, Any] = {
    "source": None, "kind": None, "skipped": None, "modified": None, "size": None, "bytes_read": None,
    "truncated": None, "time_from": None, "lines": None, "lines_in_window": None, "untimed_skipped": None,
    "matching_lines": None,
}


def _patterns(ctx: ProbeContext):
    user = ctx.options["patterns"]
    try:
        return compile_patterns({str(k): v for k, v in user.items()})
    except ValueError as exc:
        pid, _, reason = str(exc).partition(": ")
        raise ProbeError(f"[probes.logs] pattern '{pid}' is not a valid regular expression: {reason} "
                         "(fix it in qdiag.toml)") from None


def expand_globs(globs: tuple[str, ...], max_files: int) -> tuple[list[str], list[str]]:
    """Existing paths the --log globs name (deduplicated, newest first) and a note per glob that gave nothing."""
    notes: list[str] = []
    seen: dict[str, str] = {}
    for pattern in globs:
        expanded = os.path.expanduser(pattern)
        matches = sorted(glob.glob(expanded, recursive=True))
        if not matches:
            if glob.has_magic(expanded):
                notes.append(f"--log {pattern}: matched no file")
            else:
                notes.append(f"--log {pattern}: no such file")
            continue
        if glob.has_magic(expanded):
            # A wildcard (above all **) also matches directories: leave those
            # out quietly, unless that is all it matched.
            files = [m for m in matches if not os.path.isdir(m)]
            if not files:
                notes.append(f"--log {pattern}: matched only directories (give a glob for the files in them, "
                             f"e.g. '{matches[0].rstrip('/')}/*.log')")
                continue
            matches = files
        for path in matches:
            seen.setdefault(os.path.realpath(path), path)

    def mtime(path: str) -> float:
        try:
            return os.stat(path).st_mtime
        except OSError:
            return 0.0

    paths = sorted(seen.values(), key=mtime, reverse=True)
    if len(paths) > max_files:
        notes.append(f"{len(paths) - max_files} more log file(s) left out, the least recently written "
                     f"(max_files = {max_files} under [probes.logs])")
        paths = paths[:max_files]
    return paths, notes


def untrusted_symlink(path: str, euid: int | None = None) -> str | None:
    """Why `path` must not be read, or None.

    qdiag reads logs as root; a user who can write to a log directory could
    plant a symlink to a file only root may read (/etc/shadow, another
    service's secrets) and have its lines land in a snapshot.  The rule: a
    symlink anywhere on the path is followed only if it is owned by root, by
    the user running qdiag, or by the owner of what it points to (a link that
    gives its owner nothing they could not read already).  Kubernetes'
    /var/log/containers links (root's) and an application's own "current"
    link pass."""
    euid = os.geteuid() if euid is None else euid
    pending = collections.deque(os.path.abspath(path).split("/"))
    current = "/"
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            current = os.path.dirname(current)
            continue
        candidate = os.path.join(current, part)
        try:
            link = os.lstat(candidate)
        except OSError:
            return None  # the open that follows reports it
        if not stat.S_ISLNK(link.st_mode):
            current = candidate
            continue
        hops += 1
        try:
            target = os.stat(candidate)
            to = os.readlink(candidate)
        except OSError:
            return None
        if hops > 40:
            return f"{path}: too many symlinks"
        if link.st_uid not in (0, euid, target.st_uid):
            return (f"{path}: not followed: {candidate} is a symlink owned by uid {link.st_uid} to something "
                    f"owned by uid {target.st_uid} (give the real path if it is meant to be read)")
        if to.startswith("/"):
            current = "/"
        pending.extendleft(reversed(to.split("/")))
    return None


def _open_nonblocking(path: str, flags: int) -> int:
    # Should the path become a FIFO after the stat in scan_file, opening it must not hang.
    return os.open(path, flags | os.O_NONBLOCK | os.O_NOCTTY)


def scan_file(path: str, *, matcher: Matcher, cutoff: float, now: float, minutes: float, max_bytes: int,
              counter) -> tuple[dict, SourceScan | None]:
    """One file: its description for the report, and its matches (None when skipped)."""
    doc: dict[str, Any] = dict(_SOURCE_KEYS, source=path, kind="file")
    try:
        st = os.stat(path)
    except PermissionError:
        doc["skipped"] = f"cannot read {path}: permission denied (run qdiag as root or as a user of the file's group)"
        return doc, None
    except OSError as exc:
        doc["skipped"] = f"cannot read {path}: {exc.strerror or exc}"
        return doc, None
    doc["modified"] = iso_local(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        doc["skipped"] = f"{path} is a directory (give a glob for its files, e.g. --log '{path.rstrip('/')}/*.log')"
        return doc, None
    if not stat.S_ISREG(st.st_mode):
        # A FIFO or device: opening one can block, reading one never ends.
        doc["skipped"] = f"{path} is not a regular file"
        return doc, None
    if st.st_mtime < cutoff:
        # Nothing was written to it within the window.
        doc["skipped"] = f"{path} not written in the last {minutes:g} minutes"
        return doc, None
    why = untrusted_symlink(path)
    if why:
        doc["skipped"] = why
        return doc, None
    try:
        with open(path, "rb", opener=_open_nonblocking) as f:
            opened = os.fstat(f.fileno())
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                doc["skipped"] = f"{path} was replaced while qdiag was opening it"
                return doc, None
            size = opened.st_size
            tail = read_tail(f, size, max_bytes, older_than=cutoff, now=now)
    except PermissionError:
        doc["skipped"] = f"cannot read {path}: permission denied (run qdiag as root or as a user of the file's group)"
        return doc, None
    except OSError as exc:
        doc["skipped"] = f"cannot read {path}: {exc.strerror or exc}"
        return doc, None
    doc.update(size=tail.size, bytes_read=len(tail.data), truncated=tail.truncated)
    if looks_binary(tail.data[-_BINARY_PROBE_BYTES:]) or looks_binary(tail.data[:_BINARY_PROBE_BYTES]):
        doc["skipped"] = f"{path} is not a text file"
        return doc, None
    result = scan(tail.data, source=path, matcher=matcher, cutoff=cutoff, now=now, start_offset=tail.start,
                  numbered=tail.start == 0, counter=counter)
    if result.stamped == 0 and result.lines:
        # No timestamp in a known format: the recent mtime (checked above) is all
        # that places these lines in the window.
        doc["time_from"] = "mtime"
        result.lines_in_window = result.lines
    else:
        doc["time_from"] = "timestamps"
    doc.update(lines=result.lines, lines_in_window=result.lines_in_window, untimed_skipped=result.untimed_skipped,
               matching_lines=len(result.matches))
    return doc, result


def read_journal(minutes: float, max_bytes: int, units: list[str], timeout: float) -> tuple[bytes | None, str | None, bool]:
    """(text, None, truncated) from journalctl, oldest line first; (None, why, False) when there is no
    readable journal.  Read newest first so the byte bound keeps the most recent lines."""
    exe = shutil.which("journalctl")
    if exe is None:
        return None, "journalctl not found", False
    cmd = [exe, f"--since=-{max(1, int(minutes * 60))}s", "-o", "short-iso", "--no-pager", "--reverse"]
    for unit in units:
        cmd += ["-u", str(unit)]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return None, f"cannot run journalctl: {exc.strerror or exc}", False
    out = bytearray()
    err = bytearray()

    def pump_out() -> None:
        while len(out) < max_bytes:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                return
            out.extend(chunk)

    def pump_err() -> None:
        while len(err) < 65536:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                return
            err.extend(chunk)

    readers = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for r in readers:
        r.start()
    readers[0].join(timeout)
    timed_out = readers[0].is_alive()
    stopped = proc.poll() is None  # still writing: cut off at the byte bound or the timeout
    if stopped:
        proc.kill()
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        pass
    readers[1].join(0.5)
    stderr = bytes(err).decode("utf-8", "replace").strip()
    if "No journal files were found" in stderr:
        return None, "no journal files on this host", False
    if timed_out and not out:
        return None, f"journalctl gave nothing within {timeout:.3g}s", False
    if not stopped and proc.returncode != 0 and not out:
        first = stderr.splitlines()[0] if stderr else f"exit status {proc.returncode}"
        return None, f"journalctl failed: {first}", False
    truncated = stopped or len(out) >= max_bytes
    data = bytes(out[:max_bytes])
    if truncated:
        cut = data.rfind(b"\n")  # the oldest line read may be cut short
        data = data[:cut] if cut >= 0 else b""
        truncated = True
    lines = [line for line in data.split(b"\n") if line and not line.startswith(b"-- ")]
    return b"\n".join(reversed(lines)), None, truncated


@register("logs", timeout_s=10,
          description="Overflow and rejection messages (queue full, OOM, pool exhausted, timeouts) in recent log lines",
          options=(
              Option("minutes", "float", DEFAULTS["minutes"], "how far back to look", low=0.1, high=24 * 60),
              Option("max_bytes", "int", DEFAULTS["max_bytes"], "bytes read from the end of each file and the journal",
                     low=1024, high=1024 ** 3),
              Option("max_files", "int", DEFAULTS["max_files"], "files read, most recently written first",
                     low=1, high=10000),
              Option("journal", "bool", DEFAULTS["journal"], "also read the systemd journal"),
              Option("journal_units", "list", DEFAULTS["journal_units"], "only these units (all when empty)"),
              Option("patterns", "table", DEFAULTS["patterns"], "id = \"regex\" added to the built-in patterns"),
          ), diagnosis=_logs_facts.CONTRIBUTION)
def collect(ctx: ProbeContext) -> dict:
    patterns = _patterns(ctx)
    with Matcher(patterns, deadline=ctx.deadline - _PATTERN_MARGIN_S) as matcher:
        try:
            return _collect(ctx, patterns, matcher)
        except RegexTimeout as exc:
            user = [p for p in patterns if not p.builtin]
            pid = user[exc.index].id if exc.index < len(user) else "?"
            raise ProbeError(f"[probes.logs] pattern '{pid}' did not finish on {exc.texts} lines within the probe's "
                             "deadline: it backtracks (nested repeats such as (a+)+, or several .* in a row); "
                             "simplify it in qdiag.toml") from None


def _collect(ctx: ProbeContext, patterns, matcher: Matcher) -> dict:
    minutes = ctx.options["minutes"]
    max_bytes = ctx.options["max_bytes"]
    max_files = ctx.options["max_files"]
    use_journal = ctx.options["journal"]
    units = ctx.options["journal_units"]
    now = ctx.wall_clock()
    cutoff = now - minutes * 60
    counter = itertools.count()
    redactor = Redactor(ctx.targets.secrets())

    def clean(line: str) -> str:
        return redactor.text(line)

    journal_data, journal_why, journal_truncated = None, "turned off (journal = false under [probes.logs])", False
    if use_journal:
        journal_data, journal_why, journal_truncated = read_journal(minutes, max_bytes, units, ctx.io_timeout(5.0))
    if not ctx.targets.logs and journal_data is None:
        raise NotApplicable(f"no log to read: give --log GLOB (no systemd journal: {journal_why})")

    paths, notes = expand_globs(ctx.targets.logs, max_files) if ctx.targets.logs else ([], [])
    if journal_data is None and use_journal:
        notes.append(f"journal not read: {journal_why}")
    sources: list[dict] = []
    tallies = Tallies(patterns)

    def publish() -> None:
        ctx.partial.update(window_minutes=minutes, sources=list(sources), notes=list(notes),
                           patterns=tallies.doc(clean))

    for path in paths:
        ctx.check_deadline()
        doc, result = scan_file(path, matcher=matcher, cutoff=cutoff, now=now, minutes=minutes,
                                max_bytes=max_bytes, counter=counter)
        sources.append(doc)
        if doc["skipped"]:
            notes.append(doc["skipped"])
        if result is not None:
            tallies.add(result)
        publish()
    if journal_data is not None:
        result = scan(journal_data, source="journal", matcher=matcher, cutoff=cutoff, now=now, start_offset=None,
                      numbered=False, counter=counter)
        sources.append(dict(_SOURCE_KEYS, source="journal", kind="journal", bytes_read=len(journal_data),
                            truncated=journal_truncated, time_from="timestamps", lines=result.lines,
                            lines_in_window=result.lines_in_window, untimed_skipped=result.untimed_skipped,
                            matching_lines=len(result.matches), units=[str(u) for u in units]))
        tallies.add(result)

    # Sample lines are redacted by tallies.doc(); the rest is paths and counts.
    return {
        "window_minutes": minutes,
        "max_bytes": max_bytes,
        "sources": sources,
        "patterns": tallies.doc(clean),
        "lines_matched": tallies.lines_matched,
        "notes": notes,
    }
