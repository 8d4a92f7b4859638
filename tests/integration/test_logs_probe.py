"""The log probe on real files (rendered from templates with timestamps relative
to now), a fake journalctl on PATH, and bad input."""

import gzip
import json
import os
import re
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from qdiag import probe as P
from qdiag import targets as tg
from qdiag.config import Settings
from qdiag.context import ProbeContext
from qdiag.runner import Runner

from qdiag.probes import logs  # noqa: E402  (registers the probe)

pytestmark = pytest.mark.live  # runs the probe against this host: spawned processes, sockets, files

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "logs"
MIB = 1024 * 1024


def make_ctx(*, options=None, journal=False, **targets):
    opts = {"journal": journal}
    opts.update(options or {})
    settings = Settings(targets=tg.Targets(**targets), window_s=1.0, probe_options={"logs": opts})
    now = time.monotonic()
    return ProbeContext(settings=settings, name="logs", deadline=now + 30, window_start=now)


def pylog(epoch):
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S,") + f"{int(epoch * 1000) % 1000:03d}"


_FORMATS = {
    "pylog": pylog,
    "epoch": lambda t: f"{t:.3f}",
    "isoz": lambda t: datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    "shortiso": lambda t: datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%dT%H:%M:%S%z"),
}


def render(template: str, now: float) -> str:
    """{-SECONDS:FORMAT} -> that moment relative to now, in that format."""
    return re.sub(r"\{(-?\d+):(\w+)\}", lambda m: _FORMATS[m[2]](now + int(m[1])), template)


def plant(tmp_path, name, now=None):
    now = time.time() if now is None else now
    path = tmp_path / name.replace(".tmpl", "")
    path.write_text(render((FIXTURES / name).read_text(), now))
    return path


def by_id(doc):
    return {p["id"]: p for p in doc["patterns"]}


def source(doc, path):
    return [s for s in doc["sources"] if s["source"] == str(path)][0]


def test_planted_lines_counted_only_inside_the_window(tmp_path):
    app = plant(tmp_path, "consumer.log.tmpl")
    worker = plant(tmp_path, "worker.jsonl.tmpl")
    doc = logs.collect(make_ctx(logs=(str(tmp_path / "*.log"), str(tmp_path / "*.jsonl")),
                                options={"patterns": {"poison": r"poison message"}}))
    counts = {pid: p["count"] for pid, p in by_id(doc).items()}
    assert counts == {
        "queue_full": 3,  # two "queue is full" and a traceback's "queue.Full"; the one an hour ago is out
        "rejected_execution": 0, "pool_exhausted": 0,  # 50 and 20 minutes ago
        "too_many_open_files": 1,  # 90 s ago; the other is 90 minutes old
        "oom": 0, "redis_oom": 1, "reject_publish": 1, "timeout": 1, "poison": 1,
    }
    queue_full = by_id(doc)["queue_full"]
    assert queue_full["first"]["source"] == str(app) and queue_full["first"]["line"] == 6
    assert queue_full["last"]["line"] == 13
    assert queue_full["first"]["time"] < queue_full["last"]["time"]
    # oldest to newest; the traceback line took the time of the line that began it
    samples = queue_full["samples"]
    assert len(samples) == 3 and "4711" in samples[0] and samples[1] == "queue.Full" and "4802" in samples[2]
    assert by_id(doc)["poison"]["builtin"] is False
    assert source(doc, app)["lines_in_window"] == 12 and source(doc, app)["time_from"] == "timestamps"
    assert source(doc, worker)["lines_in_window"] == 2
    assert doc["lines_matched"] == 6 + 2  # consumer.log lines 6, 11-15; worker.jsonl's last two
    text = json.dumps(doc)
    assert "s3cr3t-pw" not in text and "hunter2-secret" not in text


def test_lines_older_than_the_window_are_not_even_read(tmp_path):
    now = time.time()
    path = tmp_path / "long.log"
    with open(path, "w") as f:
        for i in range(60_000):  # ~4.3 MB, two hours to half an hour ago
            f.write(f"{pylog(now - 7200 + i * 0.09)} ERROR queue is full {i:06d}\n")
        for i in range(100):
            f.write(f"{pylog(now - 100 + i)} ERROR queue is full recent {i}\n")
    doc = logs.collect(make_ctx(logs=(str(path),), options={"minutes": 15, "max_bytes": 8 * MIB}))
    assert by_id(doc)["queue_full"]["count"] == 100
    info = source(doc, path)
    assert info["truncated"] is False and info["bytes_read"] < 1 * MIB


def test_byte_bound_is_respected_on_a_large_file(tmp_path):
    now = time.time()
    path = tmp_path / "big.log"
    filler = " INFO consumer: processed batch " + "x" * 60 + "\n"
    with open(path, "w") as f:
        f.write(f"{pylog(now - 60)} ERROR queue is full (at the very start)\n")
        written = 0
        while written < 6 * MIB:
            line = pylog(now - 50) + filler
            f.write(line)
            written += len(line)
        f.write(f"{pylog(now - 5)} ERROR queue is full (at the end)\n")
    doc = logs.collect(make_ctx(logs=(str(path),), options={"max_bytes": 1 * MIB}))
    info = source(doc, path)
    assert info["truncated"] is True
    assert 1 * MIB - 200 <= info["bytes_read"] <= 1 * MIB
    queue_full = by_id(doc)["queue_full"]
    assert queue_full["count"] == 1 and "at the end" in queue_full["samples"][0]
    # Past the byte bound line numbers are unknown; the byte offset says where.
    assert queue_full["last"]["line"] is None and queue_full["last"]["offset"] > 5 * MIB


def test_invalid_user_pattern_is_a_probe_error_naming_it(tmp_path):
    plant(tmp_path, "consumer.log.tmpl")
    with pytest.raises(P.ProbeError, match=r"pattern 'stuck_batch' is not a valid regular expression"):
        logs.collect(make_ctx(logs=(str(tmp_path / "*.log"),), options={"patterns": {"stuck_batch": "batch ("}}))
    from qdiag.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[probes.logs\] patterns = \['x'\] is not a table"):
        logs.collect(make_ctx(logs=(str(tmp_path / "*.log"),), options={"patterns": ["x"]}))


def test_bad_input_gets_a_note_and_the_good_file_is_still_read(tmp_path, monkeypatch):
    good = plant(tmp_path, "consumer.log.tmpl")
    (tmp_path / "adir.log").mkdir()
    (tmp_path / "packed.log").write_bytes(gzip.compress(good.read_bytes() * 20))
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    locked = tmp_path / "locked.log"
    locked.write_text(f"{pylog(time.time())} queue is full\n")
    locked.chmod(0)
    if os.geteuid() == 0:
        # root reads anything: make this one file fail the way it does for others.
        real_open = open

        def deny(path, *args, **kwargs):
            if str(path) == str(locked):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(logs, "open", deny, raising=False)
    (tmp_path / "sub").mkdir()
    doc = logs.collect(make_ctx(logs=(str(tmp_path / "*.log"), str(tmp_path / "nothing-*.txt"),
                                      str(tmp_path / "missing.log"), str(tmp_path / "adir.log"),
                                      str(tmp_path / "s*b"))))
    notes = "\n".join(doc["notes"])
    assert "nothing-*.txt: matched no file" in notes
    assert "missing.log: no such file" in notes
    # named on its own, a directory gets a note; matched by a wildcard among files, it is left out
    assert notes.count(f"{tmp_path / 'adir.log'} is a directory") == 1
    assert "s*b: matched only directories" in notes
    assert f"{tmp_path / 'packed.log'} is not a text file" in notes
    assert f"{fifo} is not a regular file" in notes
    assert f"cannot read {locked}: permission denied" in notes
    assert by_id(doc)["queue_full"]["count"] == 3
    assert source(doc, good)["skipped"] is None
    # skipped or read, every file is described with the same keys
    assert len({frozenset(s) for s in doc["sources"]}) == 1 and len(doc["sources"]) == 5


def test_unreadable_file_for_real(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can read a mode-000 file")
    locked = tmp_path / "locked.log"
    locked.write_text("x\n")
    locked.chmod(0)
    doc = logs.collect(make_ctx(logs=(str(locked),)))
    assert "permission denied" in doc["notes"][0]


def test_file_without_timestamps_falls_back_to_its_mtime(tmp_path):
    recent = tmp_path / "plain.log"
    recent.write_text("starting\nERROR: Too many open files\nqueue is full\n")
    old = tmp_path / "stale.log"
    old.write_text("queue is full\n")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    doc = logs.collect(make_ctx(logs=(str(tmp_path / "*.log"),)))
    assert source(doc, recent)["time_from"] == "mtime"
    assert by_id(doc)["queue_full"]["count"] == 1 and by_id(doc)["too_many_open_files"]["count"] == 1
    assert by_id(doc)["queue_full"]["last"]["time"] is None and by_id(doc)["queue_full"]["last"]["line"] == 3
    assert f"{old} not written in the last 15 minutes" in doc["notes"]


def test_not_applicable_without_logs_or_journal():
    with pytest.raises(P.NotApplicable, match="--log"):
        logs.collect(make_ctx())


@pytest.fixture
def fake_journalctl(tmp_path, monkeypatch):
    """A journalctl on PATH that prints given stdout/stderr and records its arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")

    def make(stdout: str = "", stderr: str = "", status: int = 0):
        (bindir / "out.txt").write_text(stdout)
        (bindir / "err.txt").write_text(stderr)
        script = bindir / "journalctl"
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > '{bindir}/args.txt'\n"
                          f"cat '{bindir}/out.txt'\ncat '{bindir}/err.txt' >&2\nexit {status}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        return bindir / "args.txt"

    return make


def test_journal_is_read_newest_first_and_counted(fake_journalctl):
    now = time.time()
    shortiso = _FORMATS["shortiso"]
    newest_first = "\n".join([
        f"{shortiso(now - 20)} host kernel: Out of memory: Killed process 4242 (python3)",
        f"{shortiso(now - 60)} host worker[99]: queue is full, dropping",
        f"{shortiso(now - 3000)} host worker[99]: queue is full, long ago",
    ]) + "\n"
    args_file = fake_journalctl(stdout=newest_first)
    doc = logs.collect(make_ctx(journal=True, options={"journal_units": ["worker.service"]}))
    args = args_file.read_text().split("\n")
    assert "--since=-900s" in args and "--reverse" in args and "short-iso" in args
    assert args[args.index("-u") + 1] == "worker.service"
    counts = {pid: p["count"] for pid, p in by_id(doc).items()}
    assert counts["oom"] == 1 and counts["queue_full"] == 1
    journal = source(doc, "journal")
    assert journal["kind"] == "journal" and journal["lines"] == 3 and journal["lines_in_window"] == 2
    # first/last in time order although journalctl printed newest first
    assert by_id(doc)["oom"]["last"]["source"] == "journal"


def test_journal_without_files_is_not_applicable_alone(fake_journalctl):
    fake_journalctl(stdout="-- No entries --\n", stderr="No journal files were found.\n")
    with pytest.raises(P.NotApplicable, match="no journal files"):
        logs.collect(make_ctx(journal=True))


def test_journal_missing_is_a_note_next_to_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    plant(tmp_path, "consumer.log.tmpl")
    doc = logs.collect(make_ctx(journal=True, logs=(str(tmp_path / "*.log"),)))
    assert "journal not read: journalctl not found" in doc["notes"]
    assert by_id(doc)["queue_full"]["count"] == 3


def test_secrets_in_log_lines_never_come_out(tmp_path):
    redis_password = "rds-" + os.urandom(6).hex()
    path = tmp_path / "app.log"
    now = time.time()
    path.write_text("\n".join([
        f"{pylog(now - 5)} ERROR redis AUTH {redis_password} failed: timed out",
        f"{pylog(now - 4)} ERROR POST https://u:pa55w0rd@api/x timed out password=hunter22 token: abc123tok",
    ]) + "\n")
    doc = logs.collect(make_ctx(logs=(str(path),), redis=tg.parse_redis(f"redis://:{redis_password}@127.0.0.1:6379/0")))
    text = json.dumps(doc)
    assert by_id(doc)["timeout"]["count"] == 2
    for secret in (redis_password, "pa55w0rd", "hunter22", "abc123tok"):
        assert secret not in text


def test_runs_under_the_runner(tmp_path):
    plant(tmp_path, "consumer.log.tmpl")
    settings = Settings(targets=tg.Targets(logs=(str(tmp_path / "*.log"),)), window_s=1.0, timeout_s=20.0,
                        probe_options={"logs": {"journal": False}})
    [result], _ = Runner(settings, [P.REGISTRY["logs"]]).run()
    assert result.status == P.OK, result.error
    assert by_id(result.observations)["queue_full"]["count"] == 3
