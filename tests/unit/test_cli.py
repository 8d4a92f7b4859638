"""The CLI in-process: outputs, exit codes and bad input.  Host-only runs
(--no-auto-detect) so they do not depend on the brokers."""

import gzip
import json
import os
import subprocess
import sys

import pytest

from tests.cli_helper import run_cli

FAST = ("--no-auto-detect", "--window", "0.5", "--probe", "host")


def test_investigate_json_is_a_valid_report(capsys):
    r = run_cli(capsys, "investigate", "--format", "json", "--no-auto-detect", "--window", "1")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["schema"] == "qdiag.report/1"
    # Nothing to look at: not "healthy", and the report says what to give.
    assert doc["verdict"] == "unknown"
    assert any("no queue was observed" in r for r in doc["verdict_reasons"])
    assert [s["number"] for s in doc["steps"]] == [1, 2, 3, 4, 5, 6]
    statuses = {p["name"]: p["status"] for p in doc["probes"]}
    assert statuses["host"] == "ok" and statuses["process"] == "ok"
    assert statuses["kafka"] == statuses["rabbitmq"] == statuses["redis"] == "not_applicable"
    for key in ("generated_at", "host", "window_s", "queues", "root_causes", "probes"):
        assert key in doc


def test_snapshot_then_report_reproduces_investigate(capsys, tmp_path):
    snap = tmp_path / "s.json.gz"
    live = run_cli(capsys, "investigate", "--format", "json", "--snapshot", snap, *FAST)
    assert live.code == 0, live.err
    offline = run_cli(capsys, "report", snap, "--format", "json")
    assert offline.code == 0, offline.err
    assert offline.json() == live.json()


def test_snapshot_command_writes_file(capsys, tmp_path):
    out = tmp_path / "incident.json.gz"
    r = run_cli(capsys, "snapshot", "-o", out, *FAST)
    assert r.code == 0, r.err
    assert r.out.strip() == str(out)
    doc = json.loads(gzip.decompress(out.read_bytes()))
    assert doc["schema"] == "qdiag.snapshot/1"
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert doc["command"][:3] == ["qdiag", "snapshot", "-o"]


@pytest.mark.parametrize("fmt, marker", [("text", "verdict:"), ("markdown", "# qdiag report")])
def test_text_and_markdown(capsys, fmt, marker):
    r = run_cli(capsys, "investigate", "--format", fmt, *FAST)
    assert r.code == 0 and marker in r.out
    assert "The six steps" in r.out


def test_output_file(capsys, tmp_path):
    out = tmp_path / "r.md"
    r = run_cli(capsys, "investigate", "--format", "markdown", "-o", out, *FAST)
    assert r.code == 0 and r.out == "" and out.read_text().startswith("# qdiag report")


@pytest.mark.parametrize("args, expected", [
    (("investigate", "--bogus"), "unknown option --bogus"),
    (("investigate", "--window", "abc"), "Invalid value for '--window'"),
    (("investigate", "--window", "10", "--timeout", "5"), "must be longer than --window"),
    (("investigate", "--format", "yaml", *FAST), "--format 'yaml' is not known"),
    (("investigate", "--kafka", "nohostport"), "not HOST:PORT"),
    (("investigate", "--snapshot", "/nonexistent-dir/x.json.gz", *FAST), "does not exist"),
    (("snapshot", "-o", "/nonexistent-dir/x.json.gz", *FAST), "does not exist"),
    (("report", "/nonexistent.json.gz"), "no such file"),
    (("investigate", "--probe", "nosuch", "--no-auto-detect"), "--probe nosuch: no such probe"),
    (("investigate", "--playbook", "/nonexistent.toml", *FAST), "cannot read playbook"),
    (("investigate", "--probe", "host", "--no-probe", "host", "--no-auto-detect", "--window", "0.2"), "no probe produced data"),
])
def test_bad_input_is_one_line_exit_3(capsys, args, expected):
    r = run_cli(capsys, *args)
    assert r.code == 3
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdiag: error:"), r.err
    assert expected in lines[0]
    assert "Traceback" not in r.err


def test_not_a_snapshot(capsys, tmp_path):
    bogus = tmp_path / "x.json.gz"
    bogus.write_bytes(gzip.compress(b'{"hello": 1}'))
    r = run_cli(capsys, "report", bogus)
    assert r.code == 3 and "not a qdiag snapshot" in r.err


def test_bad_config_file(capsys, tmp_path):
    cfg = tmp_path / "q.toml"
    cfg.write_text("[run]\nwindow = [\n")
    r = run_cli(capsys, "investigate", "--config", cfg, *FAST)
    assert r.code == 3 and f"{cfg}: not valid TOML" in r.err


def test_debug_shows_traceback(capsys):
    r = run_cli(capsys, "--debug", "report", "/nonexistent.json.gz")
    assert r.code == 3 and "Traceback" in r.err


def test_command_line_is_redacted_in_snapshot(capsys, tmp_path):
    out = tmp_path / "s.json.gz"
    r = run_cli(capsys, "snapshot", "-o", out, "--redis", "redis://:hunter2-pw@127.0.0.1:1/0", *FAST)
    assert r.code == 0, r.err
    raw = gzip.decompress(out.read_bytes()).decode()
    assert "hunter2-pw" not in raw and "redis://:***@127.0.0.1:1/0" in raw


def test_unreachable_target_still_reports(capsys):
    # Nothing listens on port 1: the redis probe fails, the host probe still reports.
    r = run_cli(capsys, "investigate", "--format", "json", "--no-auto-detect", "--window", "0.5",
                "--redis", "redis://:sekret-pw@127.0.0.1:1/0", "--probe", "host", "--probe", "redis")
    assert r.code == 0, r.err
    probes = {p["name"]: p for p in r.json()["probes"]}
    assert probes["host"]["status"] == "ok"
    assert probes["redis"]["status"] in ("error", "timeout")
    assert "sekret-pw" not in r.out and "sekret-pw" not in r.err


def test_help_lists_every_command(capsys):
    r = run_cli(capsys, "--help")
    assert r.code == 0
    for command in ("investigate", "snapshot", "report", "probes", "playbooks"):
        assert command in r.out


def test_real_subprocess_smoke(tmp_path):
    """One real process end to end: the installed console script."""
    proc = subprocess.run([sys.executable, "-m", "qdiag", "investigate", "--format", "json", *FAST],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema"] == "qdiag.report/1"
    assert proc.stderr == ""  # no progress noise when stderr is not a terminal
