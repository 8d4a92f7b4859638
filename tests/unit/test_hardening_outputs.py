"""Issue 13 #4: -o, --snapshot and --junit replaced whatever was at the path.
As root, `-o /dev/null` or a symlink to /proc/self/fd/1 became a regular
root-owned file, and another user's file lost its owner and mode.  Now a device
or FIFO is written through, an existing file keeps its owner, group and mode (a
snapshot also stays private), the directory is synced after the rename, and a
failed write leaves neither a temporary file nor a changed output."""

from __future__ import annotations

import gzip
import json
import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from qdiag import snapshot
from tests.cli_helper import run_cli, run_qdiag_process

SNAPSHOT = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / "v1-host-only.json.gz"
NOBODY = 65534
HANG_GUARD_S = 60
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


@root_only
def test_a_null_device_stays_a_device(tmp_path):
    """`-o /dev/null`, on a private node of the same device (1, 3): a regression
    here must not break the machine's /dev/null for everything else on it."""
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.chmod(null, 0o666)
    result = run_cli("report", SNAPSHOT, "-o", null)
    assert result.code == 0, result.err
    info = os.stat(null)
    assert stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(1, 3)
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o666, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_a_symlink_to_standard_output_is_written_through(tmp_path):
    link = tmp_path / "out"
    link.symlink_to("/proc/self/fd/1")
    run = run_qdiag_process("report", SNAPSHOT, "--format", "json", "-o", link, timeout=HANG_GUARD_S)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["schema"] == "qdiag.report/1"  # arrived on the pipe
    assert link.is_symlink() and os.readlink(link) == "/proc/self/fd/1"


def test_a_fifo_with_a_reader_gets_the_report(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = run_cli("report", SNAPSHOT, "--format", "json", "-o", fifo)
    reader.join(HANG_GUARD_S)
    assert result.code == 0, result.err
    assert json.loads(received[0])["schema"] == "qdiag.report/1"
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_fifo_nobody_reads_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    run = run_qdiag_process("report", SNAPSHOT, "-o", fifo, timeout=HANG_GUARD_S)
    assert run.returncode == 3
    assert "is a FIFO that nothing reads" in run.stderr


def test_a_binary_snapshot_is_not_written_to_a_terminal(tmp_path):
    import pty

    leader, follower = pty.openpty()
    try:
        with pytest.raises(snapshot.OutputRefused, match="is a terminal"):
            snapshot.save(json.loads(gzip.decompress(SNAPSHOT.read_bytes())), Path(os.ttyname(follower)))
    finally:
        os.close(leader)
        os.close(follower)


def nobodys_file(path: Path, mode: int) -> Path:
    path.write_text("old\n")
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    return path


def owner_group_mode(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@root_only
def test_another_users_report_keeps_its_owner_group_and_mode(tmp_path):
    out = nobodys_file(tmp_path / "report.md", 0o640)
    result = run_cli("report", SNAPSHOT, "--format", "markdown", "-o", out)
    assert result.code == 0, result.err
    assert owner_group_mode(out) == (NOBODY, NOBODY, 0o640)
    assert out.read_text().startswith("#")
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


@root_only
def test_a_snapshot_over_a_readable_file_keeps_the_owner_and_becomes_private(tmp_path):
    out = nobodys_file(tmp_path / "s.json.gz", 0o644)
    snapshot.save(snapshot.load(SNAPSHOT), out)
    assert owner_group_mode(out) == (NOBODY, NOBODY, 0o600)
    assert snapshot.load(out)["schema"] == "qdiag.snapshot/1"


def test_a_symlink_to_a_file_writes_the_file_and_keeps_the_link(tmp_path):
    real = tmp_path / "reports" / "latest.md"
    real.parent.mkdir()
    real.write_text("old\n")
    real.chmod(0o600)
    link = tmp_path / "report.md"
    link.symlink_to(real)
    result = run_cli("report", SNAPSHOT, "--format", "markdown", "-o", link)
    assert result.code == 0, result.err
    assert link.is_symlink() and real.read_text().startswith("#")
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600


def test_the_directory_is_synced_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording(fd):
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    snapshot.write_atomic(tmp_path / "r.txt", b"x", 0o644)
    assert synced == [False, True]  # the file's data, then the directory's entry


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    out = tmp_path / "r.txt"
    out.write_text("old\n")

    def fails(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fails)
    with pytest.raises(OSError):
        snapshot.write_atomic(out, b"new\n", 0o644)
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.txt"]


@pytest.mark.parametrize("kind, expected", [("dir", "is a directory"), ("socket", "is a socket")])
def test_what_cannot_be_written_is_refused_before_probing(tmp_path, kind, expected):
    target = tmp_path / "x"
    if kind == "dir":
        target.mkdir()
    else:
        import socket

        server = socket.socket(socket.AF_UNIX)
        server.bind(str(target))
    result = run_cli("investigate", "--probe", "host", "--window", "0.2", "-o", target)
    assert result.code == 3 and expected in result.err
    assert "probing" not in result.err
