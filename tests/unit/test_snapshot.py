import gzip
import json
import os
import stat

import pytest

from qdiag import snapshot
from qdiag.errors import SnapshotError


def sample(**over):
    doc = snapshot.build(probes=[{"name": "host", "status": "ok", "duration_s": 1.0, "error": None,
                                  "observations": {"cpu": {"busy_pct": 12.5}}}],
                         settings_doc={}, command=["qdiag", "snapshot"], window_s=1.0, discovered=[])
    doc.update(over)
    return doc


def test_round_trip_and_mode(tmp_path):
    path = tmp_path / "s.json.gz"
    doc = sample()
    snapshot.save(doc, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert snapshot.load(path) == doc
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "s.json.gz"
    snapshot.save(sample(), path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        snapshot.save(sample(window_s=2.0), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json.gz"]  # no temp file left behind


def test_plain_json_is_accepted(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(sample()))
    assert snapshot.load(path)["schema"] == snapshot.SCHEMA


@pytest.mark.parametrize("content, expected", [
    (b"", "not a qdiag snapshot"),
    (b"hello", "not a qdiag snapshot"),
    (gzip.compress(b"{broken"), "not a qdiag snapshot"),
    (b"\x1f\x8bgarbage", "not a qdiag snapshot"),
    (json.dumps({"schema": "other/1"}).encode(), "no 'qdiag.snapshot/N' schema"),
    (json.dumps({"schema": "qdiag.snapshot/99"}).encode(), "newer qdiag"),
    (json.dumps({"schema": "qdiag.snapshot/1", "probes": [], "host": {}, "created_at": "x"}).encode(), "missing 'window_s'"),
])
def test_bad_files(tmp_path, content, expected):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(SnapshotError, match=expected):
        snapshot.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(SnapshotError, match="no such file"):
        snapshot.load(tmp_path / "absent.json.gz")


def test_v1_fixture_still_loads():
    """Old samples stay readable: this file was written by qdiag 0.1.0."""
    path = os.path.join(os.path.dirname(__file__), "..", "fixtures", "snapshots", "v1-host-only.json.gz")
    doc = snapshot.load(path)
    assert doc["schema"] == "qdiag.snapshot/1"
    assert any(p["name"] == "host" for p in doc["probes"])


def test_default_filename():
    doc = sample(created_at="2026-11-29T04:05:06Z")
    doc["host"]["hostname"] = "web 1/a"
    assert snapshot.default_filename(doc) == "qdiag-web_1_a-20261129T040506Z.json.gz"
