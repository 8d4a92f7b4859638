"""Pure helpers of the log probe: reading the tail of a file within a byte
bound, telling when a line was written, and counting lines that match
overflow and rejection patterns.  Bytes and text in, dicts out."""

from __future__ import annotations

import functools
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from typing import BinaryIO, Callable, Iterable, Iterator


# Built-in patterns: id -> regex, matched case-insensitively.  A line can count
# for several (a pool timeout is also a timeout).
BUILTIN_PATTERNS: dict[str, str] = {
    # Python's queue.Full, Go/Java "queue is full", librdkafka's QUEUE_FULL.
    "queue_full": r"queue[ _.]?full|queue is full",
    "rejected_execution": r"RejectedExecution",
    "too_many_open_files": r"too many open files|\bEMFILE\b",
    # "OOM" only as a word of its own ("oom-killer" yes, "room" no), and not
    # Redis's refusal, which has its own id.
    "oom": r"(?<![a-z])oom(?![a-z])(?! command not allowed)|out of memory|OutOfMemoryError|(?<![a-z])MemoryError",
    # Client pools: generic wording, SQLAlchemy's QueuePool, HikariCP, urllib3.
    "pool_exhausted": (r"pool (?:is )?exhausted|pool ?timeout|QueuePool limit|"
                       r"timeout waiting for (?:an? )?(?:idle )?(?:connection|object)|"
                       r"connection is not available, request timed out|connection pool is full"),
    # RabbitMQ's x-overflow policy (publishers nacked).
    "reject_publish": r"reject[-_ ]publish",
    "redis_oom": r"OOM command not allowed",
    "timeout": r"timed out|time-?out",
}

# Lower-case words at least one of which is in every line a built-in pattern
# matches: a cheap substring test rules out most lines before any regex runs.
# (Keep in step with BUILTIN_PATTERNS; tests/fixtures/logs/patterns.tsv checks both.)
BUILTIN_HINTS = ("queue", "reject", "too many open files", "emfile", "oom", "out of memory", "memoryerror", "pool",
                 "connection is not available", "timed out", "timeout", "time-out")

SAMPLES_PER_PATTERN = 3
SAMPLE_CHARS = 300
# Patterns see at most this much of a line (a minified JSON payload, a base64
# blob), and a sample line is masked from at most this much: matching and
# masking cost grows with the line, and a sample keeps SAMPLE_CHARS anyway.
MAX_LINE_CHARS = 8192
# How far into a line a timestamp may start (prefixes like "[pid 12] ").
_STAMP_REACH = 80

_MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun",
                                        "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_ISO = re.compile(
    r"(?<!\d)(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d{1,9}))?"
    r"(?:\s?(Z(?![A-Za-z])|[+-]\d{2}(?::?\d{2})?(?!\d)))?"
)
# RFC 3164 syslog: no year, local time.
_SYSLOG = re.compile(r"^(?:<\d{1,3}>)?([A-Z][a-z]{2}) {1,2}(\d{1,2}) (\d{2}):(\d{2}):(\d{2})\b")
# Common Log Format (nginx, Apache): [10/Oct/2000:13:55:36 -0700]
_CLF = re.compile(r"\[(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-]\d{4})\]")
_JSON_TIME_KEYS = ("@timestamp", "timestamp", "time", "ts", "datetime", "date")


# ---------------------------------------------------------------- timestamps

def _zone(text: str | None, local: tzinfo | None) -> tzinfo | None:
    if not text:
        return local
    if text == "Z":
        return timezone.utc
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _epoch(dt: datetime) -> float:
    # A naive datetime's timestamp() is taken in the machine's local zone.
    return dt.timestamp()


def _iso_epoch(match: re.Match, local: tzinfo | None) -> float | None:
    year, month, day, hour, minute, second, frac, zone = match.groups()
    base = _whole_seconds(year, month, day, hour, minute, second, zone, local)
    if base is None:
        return None
    return base + (int(frac[:6].ljust(6, "0")) / 1e6 if frac else 0.0)


@functools.lru_cache(maxsize=4096)
def _whole_seconds(year: str, month: str, day: str, hour: str, minute: str, second: str, zone: str | None,
                   local: tzinfo | None) -> float | None:
    # Cached: consecutive lines mostly share their second, and building the
    # datetime is most of the cost of reading a stamp.
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=_zone(zone, local))
    except ValueError:
        return None
    return _epoch(dt)


# Epoch values outside these bounds are not timestamps (a "time" field can
# also be a duration): 2000-01-01 up to a year past now.
_EPOCH_FLOOR = 946684800.0
_EPOCH_AHEAD = 366 * 86400.0


def _plausible_epoch(value: float, now: float) -> float | None:
    # Seconds, or milliseconds / microseconds / nanoseconds from loggers that use those.
    for scale in (1.0, 1e3, 1e6, 1e9):
        seconds = value / scale
        if _EPOCH_FLOOR <= seconds <= now + _EPOCH_AHEAD:
            return seconds
    return None


def _json_epoch(line: str, now: float, local: tzinfo | None) -> float | None:
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the decoder's stack
        return None
    if not isinstance(doc, dict):
        return None
    for key in _JSON_TIME_KEYS:
        value = doc.get(key)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            found = _plausible_epoch(float(value), now)
        elif isinstance(value, str):
            match = _ISO.search(value)
            if match:
                found = _iso_epoch(match, local)
            else:
                try:
                    found = _plausible_epoch(float(value), now)
                except ValueError:
                    found = None
        else:
            found = None
        if found is not None:
            return found
    return None


def parse_timestamp(line: str, now: float, local: tzinfo | None = None) -> float | None:
    """Epoch seconds of the moment `line` was logged, or None when no known
    format is found.  Stamps without a zone are in `local` (None = the
    machine's zone).  `now` places year-less syslog stamps in the right year."""
    if line.startswith("{"):
        found = _json_epoch(line, now, local)
        if found is not None:
            return found
    match = _ISO.search(line, 0, _STAMP_REACH)
    if match:
        return _iso_epoch(match, local)
    match = _SYSLOG.match(line)
    if match and match.group(1).lower() in _MONTHS:
        month = _MONTHS[match.group(1).lower()]
        year = datetime.fromtimestamp(now, local).year
        for candidate in (year, year - 1):
            try:
                dt = datetime(candidate, month, int(match.group(2)), int(match.group(3)), int(match.group(4)),
                              int(match.group(5)), tzinfo=local)
            except ValueError:
                return None
            # A stamp more than a day ahead is from last December, read in January.
            if _epoch(dt) <= now + 86400:
                return _epoch(dt)
        return None
    match = _CLF.search(line, 0, _STAMP_REACH + 40)
    if match and match.group(2).lower() in _MONTHS:
        day, mon, year, hour, minute, second, zone = match.groups()
        try:
            dt = datetime(int(year), _MONTHS[mon.lower()], int(day), int(hour), int(minute), int(second),
                          tzinfo=_zone(zone, local))
        except ValueError:
            return None
        return _epoch(dt)
    return None


def iso_local(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


# ---------------------------------------------------------------- reading

@dataclass
class Tail:
    data: bytes
    start: int  # offset in the file of data[0]
    size: int  # file size when reading began
    truncated: bool  # the byte bound stopped reading before the start of the file
    reached_older: bool  # stopped early: what comes before is older than the window


def _earliest_stamp(chunk: bytes, now: float, local: tzinfo | None, lines: int = 50) -> float | None:
    found = None
    for raw in chunk.split(b"\n")[1:lines + 1]:  # [0] may be a partial line
        ts = parse_timestamp(raw.decode("utf-8", "replace"), now, local)
        if ts is not None and (found is None or ts < found):
            found = ts
    return found


def read_tail(f: BinaryIO, size: int, max_bytes: int, *, older_than: float | None = None, now: float = 0.0,
              local: tzinfo | None = None, chunk_size: int = 256 * 1024) -> Tail:
    """The end of a file, read backwards in chunks: at most `max_bytes`, and no
    further back than the first chunk that starts with lines older than
    `older_than` (epoch seconds; the scan filters line by line after that).
    The data starts at a line boundary."""
    chunks: list[bytes] = []
    pos = size
    total = 0
    reached_older = False
    while pos > 0 and total < max_bytes:
        want = min(chunk_size, pos, max_bytes - total)
        pos -= want
        f.seek(pos)
        chunk = f.read(want)
        chunks.append(chunk)
        total += len(chunk)
        if older_than is not None and pos > 0:
            earliest = _earliest_stamp(chunk, now, local)
            if earliest is not None and earliest < older_than:
                reached_older = True
                break
    data = b"".join(reversed(chunks))
    start = pos
    if pos > 0:
        f.seek(pos - 1)
        at_line_start = f.read(1) == b"\n"
    if pos > 0 and not at_line_start:  # drop the partial line the first chunk began in
        cut = data.find(b"\n")
        if cut < 0:
            start, data = pos + len(data), b""
        else:
            start, data = pos + cut + 1, data[cut + 1:]
    return Tail(data, start, size, truncated=pos > 0 and not reached_older, reached_older=reached_older)


_TEXT_CONTROLS = {7, 8, 9, 10, 11, 12, 13, 27}


def looks_binary(sample: bytes) -> bool:
    """True for data that is not text: control bytes or invalid UTF-8 in more
    than a sliver of it.  NUL runs alone are allowed (the hole copytruncate
    leaves at the start of a rotated log)."""
    sample = sample.replace(b"\x00", b"")
    if not sample:
        return False
    controls = sum(1 for b in sample if (b < 32 and b not in _TEXT_CONTROLS) or b == 127)
    if controls > len(sample) * 0.01:
        return True
    decoded = sample.decode("utf-8", "replace")
    return decoded.count("\ufffd") > len(decoded) * 0.05


# ---------------------------------------------------------------- matching

@dataclass
class Pattern:
    id: str
    regex: re.Pattern
    builtin: bool = True


def compile_patterns(user: dict[str, str] | None = None) -> list[Pattern]:
    """Built-ins plus the user's (which replace a built-in of the same id).
    Raises ValueError("id: reason") for a regex that does not compile."""
    patterns = {pid: Pattern(pid, re.compile(rx, re.IGNORECASE)) for pid, rx in BUILTIN_PATTERNS.items()}
    for pid, rx in (user or {}).items():
        if not isinstance(rx, str) or not rx:
            raise ValueError(f"{pid}: the pattern must be a non-empty string")
        try:
            patterns[pid] = Pattern(pid, re.compile(rx, re.IGNORECASE), builtin=False)
        except re.error as exc:
            raise ValueError(f"{pid}: {exc}") from None
    return list(patterns.values())


@dataclass
class Hit:
    time: float | None
    source: str
    line: int | None
    offset: int | None
    seq: int  # order of discovery, to break ties between equal or unknown times


@dataclass
class Tally:
    count: int = 0
    first: Hit | None = None
    last: Hit | None = None
    samples: list[tuple[Hit, str]] = field(default_factory=list)

    def add(self, hit: Hit, text: str) -> None:
        self.count += 1
        key = _order(hit)
        if self.first is None or key < _order(self.first):
            self.first = hit
        if self.last is None or key >= _order(self.last):
            self.last = hit
        # Keep the most recent few (lines mostly arrive in time order).
        if len(self.samples) < SAMPLES_PER_PATTERN:
            self.samples.append((hit, text))
            self.samples.sort(key=lambda s: _order(s[0]))
        elif key > _order(self.samples[0][0]):
            self.samples[0] = (hit, text)
            self.samples.sort(key=lambda s: _order(s[0]))


def _order(hit: Hit) -> tuple:
    return (hit.time if hit.time is not None else float("-inf"), hit.seq)


class Matcher:
    """Which patterns each line matches.  Built-in regexes run here; the
    user's (untrusted: they may backtrack without end) run in a child process
    killed at `deadline` (qdiag/regex_worker.py).  Close it when done."""

    def __init__(self, patterns: list[Pattern], *, deadline: float | None = None):
        self.patterns = patterns
        # Built-in regexes run only on lines holding one of their hint words.
        self._builtin = [p for p in patterns if p.builtin]
        self._user = [p for p in patterns if not p.builtin]
        self._deadline = deadline
        self._worker = None

    def __enter__(self) -> "Matcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def builtin_ids(self, line: str) -> list[str]:
        line = line[:MAX_LINE_CHARS]
        low = line.lower()
        if self._builtin and any(hint in low for hint in BUILTIN_HINTS):
            return [p.id for p in self._builtin if p.regex.search(line)]
        return []

    def user_ids(self, lines: list[str]) -> list[list[str]]:
        """The user patterns each line matches.  Raises regex_worker.RegexTimeout."""
        found: list[list[str]] = [[] for _ in lines]
        if not self._user or not lines:
            return found
        if self._worker is None:
            from qdiag.regex_worker import Worker

            deadline = self._deadline if self._deadline is not None else time.monotonic() + 10.0
            self._worker = Worker([p.regex.pattern for p in self._user], deadline=deadline, flags=re.IGNORECASE)
        hits = self._worker.search([line[:MAX_LINE_CHARS] for line in lines])
        for pattern, indices in zip(self._user, hits):
            for i in indices:
                found[i].append(pattern.id)
        return found

    def ids(self, line: str) -> list[str]:
        return self.builtin_ids(line) + self.user_ids([line])[0]


@dataclass
class SourceScan:
    """What one file (or the journal) gave."""

    lines: int = 0  # lines looked at
    lines_in_window: int = 0
    stamped: int = 0  # lines with a timestamp of their own
    untimed_skipped: int = 0  # lines before the first timestamp: cannot be placed in time
    matches: list[tuple[list[str], Hit, str]] = field(default_factory=list)


def scan(data: bytes, *, source: str, matcher: Matcher, cutoff: float, now: float, start_offset: int | None = 0,
         numbered: bool = True, local: tzinfo | None = None, counter: Iterator[int] | None = None) -> SourceScan:
    """Match every line of `data` (text starting at a line boundary) and keep
    the matches written at or after `cutoff`.

    A line without a timestamp of its own (a stack trace, a continuation)
    inherits the previous line's.  Lines before the first stamped line cannot
    be placed in time: they are dropped (counted in `untimed_skipped`), unless
    the text has no stamp at all; then every match is kept with time None and
    `stamped` is 0, for the caller to judge by the file's mtime.
    """
    out = SourceScan()
    counter = counter if counter is not None else itertools.count()
    current: float | None = None
    offset = start_offset
    untimed = 0
    # Lines to match: (time or None when before any stamp, line number, offset, text).
    candidates: list[tuple[float | None, int, int | None, str]] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        here = offset
        if offset is not None:
            offset += len(raw) + 1
        raw = raw.rstrip(b"\r")
        if not raw.strip(b"\x00 \t"):
            continue
        line = raw.decode("utf-8", "replace").replace("\x00", "")
        out.lines += 1
        ts = parse_timestamp(line, now, local)
        if ts is not None:
            out.stamped += 1
            current = ts
        elif current is None:
            untimed += 1
            candidates.append((None, number, here, line))
            continue
        if current < cutoff:
            continue
        out.lines_in_window += 1
        candidates.append((current, number, here, line))
    # The user's patterns see every candidate line in one request to their worker.
    user = matcher.user_ids([c[3] for c in candidates])
    pending: list[tuple[list[str], Hit, str]] = []
    for (when, number, here, line), user_ids in zip(candidates, user):
        ids = matcher.builtin_ids(line) + user_ids
        if ids:
            hit = Hit(when, source, number if numbered else None, here, next(counter))
            (pending if when is None else out.matches).append((ids, hit, line[:MAX_LINE_CHARS]))
    if out.stamped == 0:
        out.matches = pending
    else:
        out.untimed_skipped = untimed
    return out


class Tallies:
    """Running per-pattern tallies, fed one source at a time."""

    def __init__(self, patterns: list[Pattern]):
        self.patterns = patterns
        self._by_id = {p.id: Tally() for p in patterns}
        self.lines_matched = 0

    def add(self, result: SourceScan) -> None:
        self.lines_matched += len(result.matches)
        for ids, hit, line in result.matches:
            for pid in ids:
                self._by_id[pid].add(hit, line)

    def doc(self, clean: Callable[[str], str]) -> list[dict]:
        """Per pattern, in definition order: count, first and last occurrence,
        the most recent sample lines (passed through `clean`, then shortened)."""
        out = []
        for p in self.patterns:
            t = self._by_id[p.id]
            out.append({
                "id": p.id,
                "builtin": p.builtin,
                "count": t.count,
                "first": _where(t.first),
                "last": _where(t.last),
                "samples": [_shorten(clean(_cap(text))) for _, text in sorted(t.samples, key=lambda s: _order(s[0]))],
            })
        return out


def tally(scans: Iterable[SourceScan], patterns: list[Pattern], clean: Callable[[str], str]) -> list[dict]:
    tallies = Tallies(patterns)
    for result in scans:
        tallies.add(result)
    return tallies.doc(clean)


def _where(hit: Hit | None) -> dict | None:
    if hit is None:
        return None
    return {"time": iso_local(hit.time), "source": hit.source, "line": hit.line, "offset": hit.offset}


_CUT_AT = re.compile(r"[\s,;\"'(){}\[\]<>]")


def _cap(text: str, limit: int = 4 * SAMPLE_CHARS) -> str:
    """At most `limit` characters, cut where a word ends: masking a cut word
    could leave a secret's first half in view."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.start() for m in _CUT_AT.finditer(head, limit // 2)]
    return head[:ends[-1]] if ends else head[:limit // 2]


def _shorten(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SAMPLE_CHARS else text[: SAMPLE_CHARS - 1] + "…"
