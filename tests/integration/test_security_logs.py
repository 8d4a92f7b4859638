"""Issue 13 #2, #10, #14 on the log probe, with real files, real owners and the
real CLI: symlinks planted by an unprivileged user, a deeply nested JSON line,
a megabyte-long line and a backtracking user pattern under --timeout."""

import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from qdiag import targets as tg
from qdiag.config import Settings
from qdiag.context import ProbeContext

from qdiag.probes import logs  # noqa: E402  (registers the probe)

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def pylog(epoch: float) -> str:
    return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S,000")


def make_ctx(paths, options=None, redis=None):
    settings = Settings(targets=tg.Targets(logs=tuple(str(p) for p in paths), redis=redis), window_s=1.0,
                        probe_options={"logs": {"journal": False, **(options or {})}})
    now = time.monotonic()
    return ProbeContext(settings=settings, name="logs", deadline=now + 30, window_start=now)


def as_nobody(*argv: str) -> None:
    """Run a command as uid/gid 65534, the way an unprivileged user would."""
    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    subprocess.run(argv, preexec_fn=drop, check=True, timeout=30)


@pytest.fixture
def shared_dir():
    """A log directory others can write to (under /tmp: pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="qdiag-sec-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def root_only(shared_dir):
    """A file only root may read, holding lines the log probe would count."""
    secret_dir = Path(tempfile.mkdtemp(prefix="qdiag-sec-root-"))
    path = secret_dir / "secret.log"
    path.write_text(f"{pylog(time.time() - 5)} queue is full password hunter2 ROOTONLYLINE\n")
    path.chmod(0o600)
    yield path
    shutil.rmtree(secret_dir)


# ---------------------------------------------------------------- #10 symlinks

@needs_root
def test_symlink_planted_by_another_user_is_not_followed(shared_dir, root_only):
    as_nobody("ln", "-s", str(root_only), str(shared_dir / "app.log"))
    assert (shared_dir / "app.log").lstat().st_uid == NOBODY
    doc = logs.collect(make_ctx([shared_dir / "*.log"]))
    text = json.dumps(doc)
    assert "ROOTONLYLINE" not in text and "hunter2" not in text
    [source] = doc["sources"]
    assert "symlink owned by uid 65534" in source["skipped"]
    assert {p["id"]: p["count"] for p in doc["patterns"]}["queue_full"] == 0


@needs_root
def test_directory_symlink_planted_by_another_user_is_not_followed(shared_dir, root_only):
    as_nobody("ln", "-s", str(root_only.parent), str(shared_dir / "sub"))
    doc = logs.collect(make_ctx([shared_dir / "sub" / "*.log"]))
    assert "ROOTONLYLINE" not in json.dumps(doc)
    assert "symlink owned by uid 65534" in doc["sources"][0]["skipped"]


@needs_root
def test_symlink_chain_through_another_users_link_is_not_followed(shared_dir, root_only):
    """root's link -> nobody's link -> root's file: every link on the way is checked."""
    as_nobody("ln", "-s", str(root_only), str(shared_dir / "hop"))
    (shared_dir / "app.log").symlink_to(shared_dir / "hop")
    doc = logs.collect(make_ctx([shared_dir / "app.log"]))
    assert "ROOTONLYLINE" not in json.dumps(doc)
    assert "skipped" in doc["sources"][0] and doc["sources"][0]["skipped"]


@needs_root
def test_users_link_to_their_own_file_is_followed(shared_dir):
    """An application's own "current" link: nothing gained by following it."""
    as_nobody("sh", "-c", f"echo '{pylog(time.time() - 5)} queue is full' > {shared_dir}/app.2024.log && "
                          f"ln -s {shared_dir}/app.2024.log {shared_dir}/current")
    doc = logs.collect(make_ctx([shared_dir / "current"]))
    assert doc["sources"][0]["skipped"] is None
    assert {p["id"]: p["count"] for p in doc["patterns"]}["queue_full"] == 1


def test_roots_link_is_followed(tmp_path, root_only):
    """Kubernetes' /var/log/containers/*.log are root's links to the pods' files."""
    (tmp_path / "app.log").symlink_to(root_only)
    doc = logs.collect(make_ctx([tmp_path / "app.log"]))
    assert doc["sources"][0]["skipped"] is None
    sample = {p["id"]: p for p in doc["patterns"]}["queue_full"]["samples"][0]
    assert "hunter2" not in sample and "password ***" in sample  # "password VALUE" is masked


# ---------------------------------------------------------------- #14 nested JSON

def test_deeply_nested_json_line_does_not_fail_the_probe(tmp_path):
    now = time.time()
    path = tmp_path / "app.log"
    path.write_text("\n".join([
        f"{pylog(now - 10)} INFO starting",
        '{"a":' * 100_000 + "1" + "}" * 100_000,  # valid JSON, deeper than the decoder's recursion
        f"{pylog(now - 5)} ERROR queue is full",
        json.dumps({"time": now - 4, "msg": "queue is full"}),
    ]) + "\n")
    doc = logs.collect(make_ctx([path]))
    assert {p["id"]: p["count"] for p in doc["patterns"]}["queue_full"] == 2
    assert doc["sources"][0]["lines"] == 4


# ---------------------------------------------------------------- #2 through the CLI

def qdiag(*args, cwd: Path, guard: float = 60):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "qdiag", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=guard)
    return proc, time.monotonic() - start


def load(path: Path) -> dict:
    return json.loads(gzip.decompress(path.read_bytes()))


def test_megabyte_line_does_not_stall_the_snapshot(tmp_path):
    """The old masking took 10.5 s on one 10 KB line under --timeout 3; this line is 100 times longer."""
    log = tmp_path / "app.log"
    log.write_text(f"{pylog(time.time() - 5)} ERROR queue is full " + "x" * (1 << 20)
                   + " password=hunter2 http://u:pa55@h/ " + "a" * 10_000 + "\n")
    out = tmp_path / "s.json.gz"
    proc, took = qdiag("snapshot", "--log", log, "--probe", "logs", "--no-auto-detect", "--window", "1",
                       "--timeout", "3", "-o", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    [probe] = [p for p in load(out)["probes"] if p["name"] == "logs"]
    assert probe["status"] == "ok", probe["error"]
    sample = {p["id"]: p for p in probe["observations"]["patterns"]}["queue_full"]["samples"][0]
    assert len(sample) <= 300 and "queue is full" in sample
    assert "hunter2" not in json.dumps(probe) and "pa55" not in json.dumps(probe)


def test_backtracking_pattern_cannot_defeat_the_timeout(tmp_path):
    """(a+)+$ took 5.4 s under --timeout 2 before (it would have taken hours on this line)."""
    log = tmp_path / "app.log"
    log.write_text(f"{pylog(time.time() - 5)} " + "a" * 40 + "!\n")
    config = tmp_path / "q.toml"
    config.write_text('[probes.logs]\njournal = false\npatterns = { slow = "(a+)+$" }\n')
    out = tmp_path / "s.json.gz"
    proc, took = qdiag("snapshot", "--config", config, "--log", log, "--probe", "logs", "--no-auto-detect",
                       "--window", "1", "--timeout", "3", "-o", out, cwd=tmp_path)
    assert took < 30  # a wide guard: the deadline is 3 s
    [probe] = [p for p in load(out)["probes"] if p["name"] == "logs"]
    assert probe["status"] == "error" and "pattern 'slow'" in probe["error"], probe
