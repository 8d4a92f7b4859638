"""Pure parts of the log probe: timestamps, patterns, tail reading, scanning and tallies."""

import gzip
import io
import os
import random
import resource
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qdiag.redact import scrub_pairs

from qdiag.probes._log_scan import (
    BUILTIN_PATTERNS, Matcher, compile_patterns, looks_binary, parse_timestamp, read_tail, scan, tally,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
UTC = timezone.utc
# 2024-05-01 12:34:56 UTC, the moment the timestamp fixture is written around.
FIXTURE_EPOCH = 1714566896


def _tsv(name):
    for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            expected, text = line.split("\t", 1)
            yield expected, text


# ---------------------------------------------------------------- timestamps

@pytest.mark.parametrize("expected, line", list(_tsv("timestamps.tsv")))
def test_timestamp_formats(expected, line):
    got = parse_timestamp(line, now=FIXTURE_EPOCH + 60, local=UTC)
    if expected == "-":
        assert got is None
    else:
        assert got == pytest.approx(float(expected), abs=1e-6)


def test_stamps_without_zone_are_local_time():
    # The same wall-clock text means different instants in different zones.
    from datetime import timedelta

    plus2 = timezone(timedelta(hours=2))
    line = "2024-05-01 12:34:56,000 INFO x"
    assert parse_timestamp(line, FIXTURE_EPOCH, UTC) - parse_timestamp(line, FIXTURE_EPOCH, plus2) == 7200
    # An explicit zone wins over the local one.
    assert parse_timestamp("2024-05-01T12:34:56Z x", FIXTURE_EPOCH, plus2) == FIXTURE_EPOCH


def test_syslog_stamp_read_in_january_belongs_to_last_year():
    new_year = datetime(2025, 1, 1, 0, 5, tzinfo=UTC).timestamp()
    got = parse_timestamp("Dec 31 23:59:00 host app: queue is full", new_year, UTC)
    assert got == datetime(2024, 12, 31, 23, 59, tzinfo=UTC).timestamp()
    got = parse_timestamp("Jan  1 00:04:00 host app: x", new_year, UTC)
    assert got == datetime(2025, 1, 1, 0, 4, tzinfo=UTC).timestamp()


# ---------------------------------------------------------------- patterns

@pytest.mark.parametrize("expected, line", list(_tsv("patterns.tsv")))
def test_builtin_patterns(expected, line):
    want = [] if expected == "-" else expected.split(",")
    assert sorted(Matcher(compile_patterns()).ids(line)) == sorted(want)


def test_every_builtin_pattern_has_a_positive_fixture_line():
    covered = {pid for expected, _ in _tsv("patterns.tsv") if expected != "-" for pid in expected.split(",")}
    assert covered == set(BUILTIN_PATTERNS)


def test_user_patterns_add_and_replace():
    patterns = compile_patterns({"poison": r"poison message|dead.?letter", "timeout": r"deadline exceeded"})
    ids = [p.id for p in patterns]
    assert ids.count("timeout") == 1 and "poison" in ids
    matcher = Matcher(patterns)
    assert matcher.ids("POISON MESSAGE 12 moved") == ["poison"]
    # The user's "timeout" replaced the built-in one.
    assert matcher.ids("read timed out") == []
    assert matcher.ids("rpc error: Deadline Exceeded") == ["timeout"]


def test_invalid_user_pattern_names_its_id():
    with pytest.raises(ValueError, match=r"^broken: "):
        compile_patterns({"fine": "ok", "broken": "queue(full"})
    with pytest.raises(ValueError, match=r"^empty: "):
        compile_patterns({"empty": ""})


def test_user_pattern_with_groups_and_inline_flags():
    matcher = Matcher(compile_patterns({"retry": r"(?s)retry (\d+)/\1"}))
    assert matcher.ids("retry 3/3 giving up") == ["retry"]
    assert matcher.ids("retry 3/4") == []


# ---------------------------------------------------------------- reading

def _numbered_lines(count, width=100):
    return b"".join(f"line {i:08d} ".encode().ljust(width - 1, b".") + b"\n" for i in range(count))


def test_read_tail_is_bounded_and_starts_on_a_line():
    data = _numbered_lines(50_000)  # 5 MB of 100-byte lines
    tail = read_tail(io.BytesIO(data), len(data), 1_000_050, chunk_size=64 * 1024)
    # 1,000,050 bytes back lands mid-line: that partial line is dropped.
    assert len(tail.data) == 1_000_000 and tail.start == 4_000_000
    assert tail.truncated and not tail.reached_older
    assert tail.data.startswith(b"line 00040000 ") and tail.data.endswith(b"\n")
    assert data[tail.start:] == tail.data
    assert tail.data.endswith(b"line 00049999 " + b"." * 85 + b"\n")


def test_read_tail_keeps_a_first_line_that_starts_exactly_at_the_bound():
    data = _numbered_lines(1000)
    tail = read_tail(io.BytesIO(data), len(data), 10_000)
    assert tail.start == 90_000 and tail.data.startswith(b"line 00000900 ") and len(tail.data) == 10_000


def test_read_tail_of_a_small_file_is_the_whole_file():
    data = b"a\nb\nc"
    tail = read_tail(io.BytesIO(data), len(data), 1024)
    assert (tail.data, tail.start, tail.truncated) == (data, 0, False)


def test_read_tail_of_one_huge_line_is_empty():
    data = b"x" * 10_000
    tail = read_tail(io.BytesIO(data), len(data), 1000)
    assert tail.data == b"" and tail.truncated


def test_read_tail_stops_once_lines_are_older_than_the_window():
    now = FIXTURE_EPOCH
    old = b"".join(f"2024-05-01 10:{i // 60 % 60:02d}:{i % 60:02d},000 INFO old {i}\n".encode() for i in range(40_000))
    recent = b"".join(f"2024-05-01 12:34:{i % 60:02d},000 INFO recent {i}\n".encode() for i in range(100))
    data = old + recent
    tail = read_tail(io.BytesIO(data), len(data), 4 * 1024 * 1024, older_than=now - 900, now=now, local=UTC,
                     chunk_size=16 * 1024)
    assert tail.reached_older and not tail.truncated
    assert len(tail.data) < 64 * 1024  # not the whole 1.5 MB
    assert tail.data.endswith(recent)


def test_looks_binary():
    assert looks_binary(gzip.compress(_numbered_lines(2000))[:8192])
    rng = random.Random(1)
    assert looks_binary(bytes(rng.getrandbits(8) for _ in range(8192)))
    assert not looks_binary(_numbered_lines(80))
    assert not looks_binary("größe überschritten: queue is full\n".encode() * 50)
    # copytruncate leaves a run of NULs before the new lines
    assert not looks_binary(b"\x00" * 4000 + _numbered_lines(40))
    assert not looks_binary(b"\x1b[31mERROR\x1b[0m queue is full\n" * 40)


# ---------------------------------------------------------------- scanning

def _stamp(epoch):
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S,000")


def test_scan_keeps_only_the_window_and_inherits_stamps():
    now = FIXTURE_EPOCH
    text = "\n".join([
        f"{_stamp(now - 3600)} ERROR queue is full (old)",
        "   continuation of the old one: queue is full",
        f"{_stamp(now - 60)} ERROR handler failed",
        "queue.Full",
        f"{_stamp(now - 30)} INFO fine",
    ]).encode()
    result = scan(text, source="app.log", matcher=Matcher(compile_patterns()), cutoff=now - 900, now=now, local=UTC)
    assert result.lines == 5 and result.stamped == 3 and result.lines_in_window == 3
    [(ids, hit, line)] = result.matches
    assert ids == ["queue_full"] and line == "queue.Full"
    assert hit.time == now - 60 and hit.line == 4 and hit.source == "app.log"
    assert hit.offset == text.index(b"queue.Full\n")


def test_scan_drops_matches_before_the_first_stamp():
    now = FIXTURE_EPOCH
    text = f"timed out (when?)\n{_stamp(now - 10)} ERROR timed out\n".encode()
    result = scan(text, source="a", matcher=Matcher(compile_patterns()), cutoff=now - 900, now=now, local=UTC,
                  start_offset=5000, numbered=False)
    assert [m[2] for m in result.matches] == [f"{_stamp(now - 10)} ERROR timed out"]
    assert result.untimed_skipped == 1
    assert result.matches[0][1].line is None and result.matches[0][1].offset == 5000 + len("timed out (when?)\n")


def test_scan_without_any_stamp_keeps_everything_for_the_mtime_decision():
    text = b"queue is full\nall good\nOutOfMemoryError\n"
    result = scan(text, source="a", matcher=Matcher(compile_patterns()), cutoff=FIXTURE_EPOCH, now=FIXTURE_EPOCH)
    assert result.stamped == 0
    assert [m[0] for m in result.matches] == [["queue_full"], ["oom"]]
    assert all(m[1].time is None for m in result.matches)


def test_tally_first_last_and_most_recent_samples():
    now = FIXTURE_EPOCH
    lines = [f"{_stamp(now - 600 + 60 * i)} ERROR queue is full #{i} password=pw{i}" for i in range(6)]
    result = scan("\n".join(lines).encode(), source="app.log", matcher=Matcher(compile_patterns()),
                  cutoff=now - 900, now=now, local=UTC)
    [doc] = [d for d in tally([result], compile_patterns(), scrub_pairs) if d["id"] == "queue_full"]
    assert doc["count"] == 6
    assert doc["first"]["line"] == 1 and doc["last"]["line"] == 6
    assert doc["first"]["time"] is not None and doc["first"]["time"] < doc["last"]["time"]
    assert [s.split("#")[1][0] for s in doc["samples"]] == ["3", "4", "5"]
    assert all("pw" not in s and "password=***" in s for s in doc["samples"])
    untouched = [d for d in tally([result], compile_patterns(), scrub_pairs) if d["id"] == "oom"][0]
    assert untouched == {"id": "oom", "builtin": True, "count": 0, "first": None, "last": None, "samples": []}


def test_tally_shortens_samples():
    line = f"{_stamp(FIXTURE_EPOCH)} queue is full " + "x" * 1000
    result = scan(line.encode(), source="a", matcher=Matcher(compile_patterns()), cutoff=0, now=FIXTURE_EPOCH)
    doc = tally([result], compile_patterns(), lambda s: s)[0]
    assert len(doc["samples"][0]) == 300 and doc["samples"][0].endswith("…")


@pytest.mark.parametrize("line, leaked", [
    ('{"user": "bob", "password": "hunter2"}', "hunter2"),
    ("db password: hunter2 retrying", "hunter2"),
    ("api_key=abc123&x=1", "abc123"),
    ("Authorization: Bearer eyJhbGciOi.xyz", "eyJhbGciOi"),
    ("'client_secret': 'shh-123'", "shh-123"),
])
def test_scrub_pairs(line, leaked):
    out = scrub_pairs(line)
    assert leaked not in out and "***" in out


def test_scrub_pairs_leaves_ordinary_words_alone():
    line = "tokens: 5 passed: 3 queue is full"
    assert scrub_pairs(line) == line


# ---------------------------------------------------------------- cost

@pytest.mark.bench
@pytest.mark.skipif(not os.environ.get("QDIAG_BENCH"), reason="benchmark: set QDIAG_BENCH=1")
def test_bench_scan_4_mib(tmp_path):
    """Time and CPU to read and scan a 4 MiB log whose lines are all in the window."""
    now = time.time()
    rng = random.Random(7)
    words = ["consumer", "processed", "batch", "offset", "lag", "commit", "partition", "handler", "ok", "msg"]
    lines = []
    size = 0
    i = 0
    while True:
        extra = " queue is full" if i % 500 == 0 else (" read timed out" if i % 700 == 0 else "")
        line = f"{datetime.fromtimestamp(now - 600 + i * 0.01).strftime('%Y-%m-%d %H:%M:%S,%f')[:-3]} INFO " \
               + " ".join(rng.choice(words) for _ in range(12)) + extra + "\n"
        if size + len(line) > 4 * 1024 * 1024:
            break
        lines.append(line)
        size += len(line)
        i += 1
    path = tmp_path / "big.log"
    path.write_text("".join(lines))
    matcher = Matcher(compile_patterns())
    wall0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    with open(path, "rb") as f:
        tail = read_tail(f, path.stat().st_size, 4 * 1024 * 1024, older_than=now - 900, now=now)
    result = scan(tail.data, source=str(path), matcher=matcher, cutoff=now - 900, now=now)
    tally([result], compile_patterns(), scrub_pairs)
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    print(f"\nscan of {len(tail.data) / 2**20:.2f} MiB, {result.lines} lines, {len(result.matches)} matches: "
          f"wall {wall:.3f}s, cpu {cpu:.3f}s")
    assert result.lines_in_window == result.lines == len(lines)
    assert len(result.matches) == len([x for x in lines if "queue is full" in x or "timed out" in x])
