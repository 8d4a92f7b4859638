"""The CLI in-process, against a fake environment: outputs, exit codes and bad
input.  Runs that probe are host-only (--no-auto-detect, --probe host) so they
do not depend on the brokers; they read this host, so they are marked live.
Runs from recorded snapshots are pure."""

import ast
import gzip
import json
import os
import re
from pathlib import Path

import pytest

from tests.cli_helper import run_cli, run_qdiag_process

FAST = ("--no-auto-detect", "--window", "0.5", "--probe", "host")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BACKLOG = FIXTURES / "snapshots" / "v1-rabbitmq-redis-backlog.json.gz"
QDIAG = Path(__file__).resolve().parents[2] / "qdiag"


@pytest.mark.live
def test_investigate_json_is_a_valid_report():
    r = run_cli("investigate", "--format", "json", "--no-auto-detect", "--window", "1")
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


@pytest.mark.live
def test_snapshot_then_report_reproduces_investigate(tmp_path):
    snap = tmp_path / "s.json.gz"
    live = run_cli("investigate", "--format", "json", "--snapshot", snap, *FAST)
    assert live.code == 0, live.err
    offline = run_cli("report", snap, "--format", "json")
    assert offline.code == 0, offline.err
    assert offline.json() == live.json()


@pytest.mark.live
def test_snapshot_command_writes_file(tmp_path):
    out = tmp_path / "incident.json.gz"
    r = run_cli("snapshot", "-o", out, *FAST)
    assert r.code == 0, r.err
    assert r.out.strip() == str(out)
    doc = json.loads(gzip.decompress(out.read_bytes()))
    assert doc["schema"] == "qdiag.snapshot/1"
    assert oct(os.stat(out).st_mode & 0o777) == "0o600"
    assert doc["command"][:3] == ["qdiag", "snapshot", "-o"]


@pytest.mark.live
@pytest.mark.parametrize("fmt, first", [("text", r"(HEALTHY|DEGRADED|CRITICAL|UNKNOWN): "), ("markdown", "# qdiag report: ")])
def test_text_and_markdown(fmt, first):
    r = run_cli("investigate", "--format", fmt, *FAST)
    assert r.code == 0 and re.match(first, r.out), r.out
    assert "The six steps" in r.out


@pytest.mark.live
def test_output_file(tmp_path):
    out = tmp_path / "r.md"
    r = run_cli("investigate", "--format", "markdown", "-o", out, *FAST)
    assert r.code == 0 and r.out == "" and out.read_text().startswith("# qdiag report")


@pytest.mark.parametrize("args, expected", [
    (("investigate", "--bogus"), "unknown option --bogus"),
    (("investigate", "--window", "abc"), "Invalid value for '--window'"),
    (("investigate", "--window", "10", "--timeout", "5"), "must be longer than --window"),
    (("investigate", "--format", "yaml", *FAST), "'yaml' is not one of 'text', 'json', 'markdown'"),
    (("check", "--max-fill", "2", *FAST), "Invalid value for '--max-fill'"),
    (("check", "--max-verdict", "bad", *FAST), "'bad' is not one of 'healthy', 'degraded'"),
    (("investigate", "--kafka", "nohostport"), "not HOST:PORT"),
    (("investigate", "--snapshot", "/nonexistent-dir/x.json.gz", *FAST), "does not exist"),
    (("snapshot", "-o", "/nonexistent-dir/x.json.gz", *FAST), "does not exist"),
    (("report", "/nonexistent.json.gz"), "no such file"),
    (("investigate", "--probe", "nosuch", "--no-auto-detect"), "--probe nosuch: no such probe"),
    (("investigate", "--playbook", "/nonexistent.toml", *FAST), "cannot read playbook"),
    (("investigate", "--probe", "host", "--no-probe", "host", "--no-auto-detect", "--window", "0.2"), "no probe produced data"),
])
def test_bad_input_is_one_line_exit_3(args, expected):
    r = run_cli(*args)
    assert r.code == 3
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qdiag: error:"), r.err
    assert expected in lines[0]
    assert "Traceback" not in r.err


def test_not_a_snapshot(tmp_path):
    bogus = tmp_path / "x.json.gz"
    bogus.write_bytes(gzip.compress(b'{"hello": 1}'))
    r = run_cli("report", bogus)
    assert r.code == 3 and "not a qdiag snapshot" in r.err


@pytest.mark.live
def test_bad_config_file(tmp_path):
    cfg = tmp_path / "q.toml"
    cfg.write_text("[run]\nwindow = [\n")
    r = run_cli("investigate", "--config", cfg, *FAST)
    assert r.code == 3 and f"{cfg}: not valid TOML" in r.err


def test_debug_shows_traceback():
    r = run_cli("--debug", "report", "/nonexistent.json.gz")
    assert r.code == 3 and "Traceback" in r.err


@pytest.mark.live
def test_command_line_is_redacted_in_snapshot(tmp_path):
    out = tmp_path / "s.json.gz"
    r = run_cli("snapshot", "-o", out, "--redis", "redis://:hunter2-pw@127.0.0.1:1/0", *FAST)
    assert r.code == 0, r.err
    raw = gzip.decompress(out.read_bytes()).decode()
    assert "hunter2-pw" not in raw and "redis://:***@127.0.0.1:1/0" in raw


@pytest.mark.live
def test_unreachable_target_still_reports():
    # Nothing listens on port 1: the redis probe fails, the host probe still reports.
    r = run_cli("investigate", "--format", "json", "--no-auto-detect", "--window", "0.5",
                "--redis", "redis://:sekret-pw@127.0.0.1:1/0", "--probe", "host", "--probe", "redis")
    assert r.code == 0, r.err
    probes = {p["name"]: p for p in r.json()["probes"]}
    assert probes["host"]["status"] == "ok"
    assert probes["redis"]["status"] in ("error", "timeout")
    assert "sekret-pw" not in r.out and "sekret-pw" not in r.err


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.code == 0
    for command in ("investigate", "snapshot", "report", "probes", "playbooks"):
        assert command in r.out


@pytest.mark.live
def test_real_subprocess_smoke(tmp_path):
    """One real process end to end: the installed console script."""
    proc = run_qdiag_process("investigate", "--format", "json", *FAST, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["schema"] == "qdiag.report/1"
    assert proc.stderr == ""  # no progress noise when stderr is not a terminal


# --- the environment: in-process runs touch nothing of the real process ---------------

def test_in_process_runs_write_only_to_the_fake_environment(capsys):
    for args in (("report", BACKLOG), ("--help",), ("report", "--help"), ("report", "/nonexistent.json.gz"),
                 ("investigate", "--bogus"), ("--version",), ("playbooks", "list")):
        r = run_cli(*args)
        assert r.out or r.err, args
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_user_config_comes_from_the_home_and_directory_the_environment_gives(isolated_from_the_user):
    # The autouse fixture gave this test a fresh HOME: a broken config there is read (and
    # reported), which is why a developer's real ~/.config/qdiag cannot leak into other tests.
    config = isolated_from_the_user / ".config" / "qdiag" / "qdiag.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[run]\nwindow = [\n")
    r = run_cli("investigate", "--no-auto-detect", "--probe", "host")
    assert r.code == 3 and f"{config}: not valid TOML" in r.err
    config.unlink()
    Path("qdiag.toml").write_text("[nosuch]\n")
    r = run_cli("investigate", "--no-auto-detect", "--probe", "host")
    assert r.code == 3 and "unknown table [nosuch]" in r.err


def test_commands_do_not_import_each_other():
    """Commands share code through modules named for what they hold (qdiag/collect.py,
    outputs.py, inputs.py, report/emit.py), never through another command's module."""
    offenders = []
    for path in sorted((QDIAG / "commands").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qdiag.commands"):
                offenders.append(f"{path.name}: from {node.module} import ...")
            if isinstance(node, ast.ImportFrom) and any(a.name.startswith("_") for a in node.names):
                offenders.append(f"{path.name}: imports private {[a.name for a in node.names]} from {node.module}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                    and isinstance(node.value, ast.Name) and node.value.id not in ("self", "cls"):
                offenders.append(f"{path.name}: uses {node.value.id}.{node.attr}")
    assert offenders == []


# --- conventions: help, types, environment variables, standard streams ---------------

COMMANDS = ["investigate", "snapshot", "report", "check", "probes", "playbooks list", "playbooks validate"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_has_examples_real_types_and_visible_panels(command):
    short = run_cli(*command.split(), "-h")
    long = run_cli(*command.split(), "--help")
    assert short.code == long.code == 0 and short.out == long.out
    assert "Examples:" in long.out and f"$ qdiag {command}" in long.out
    # Types by what they mean (SECONDS, URL, FILE...), never Python's names.
    assert not any(t in long.out for t in ("<float>", "<str>", "<int>", "<bool>", "list[")), long.out
    assert "╭─ Options" in long.out or "+- Options" in long.out


def test_probing_commands_show_their_panels_and_choices():
    out = run_cli("investigate", "--help").out
    for panel in ("Targets", "Run", "Output", "Diagnosis"):
        assert f"─ {panel} ─" in out
    assert "<text|json|markdown>" in out
    check = run_cli("check", "--help").out
    assert "─ Thresholds ─" in check and "<healthy|degraded>" in check and "RATIO [0<=x<=1]" in check


def test_help_lists_every_environment_variable_config_reads():
    from qdiag import config

    variables = {"QDIAG_CONFIG"} | {f"QDIAG_{key.upper()}" for key in {**config._TARGET_KEYS, **config._RUN_KEYS}}
    helps = run_cli("investigate", "--help").out + run_cli("check", "--help").out
    assert sorted(v for v in variables if v not in helps) == []


def test_root_help_offers_shell_completion_and_names_the_conventions():
    out = run_cli("-h").out
    assert "--install-completion" in out and "--show-completion" in out
    assert "NO_COLOR" in out and "FORCE_COLOR" in out and "QDIAG_" in out


@pytest.mark.live
def test_list_variables_keep_their_comma_syntax(tmp_path):
    # click would split QDIAG_QUEUES on blanks; config.py's comma lists must win.
    out = tmp_path / "s.json.gz"
    r = run_cli("snapshot", "-o", out, *FAST, vars={"QDIAG_QUEUES": "orders,jobs:*", "QDIAG_PIDS": "1"})
    assert r.code == 0, r.err
    targets = json.loads(gzip.decompress(out.read_bytes()))["settings"]["targets"]
    assert targets["queues"] == ["orders", "jobs:*"] and targets["pids"] == [1]


def test_report_reads_the_snapshot_from_stdin():
    piped = run_cli("report", "-", "--format", "json", stdin=BACKLOG.read_bytes())
    from_file = run_cli("report", BACKLOG, "--format", "json")
    assert piped.code == 0, piped.err
    assert piped.out == from_file.out


def test_report_from_stdin_names_standard_input_when_it_is_not_a_snapshot():
    r = run_cli("report", "-", stdin=b"hello")
    assert r.code == 3 and r.err.startswith("qdiag: error: standard input: not a qdiag snapshot"), r.err


def test_report_baseline_from_stdin_and_both_from_stdin():
    r = run_cli("report", BACKLOG, "--baseline", "-", "-f", "json", stdin=BACKLOG.read_bytes())
    assert r.code == 0 and r.json()["baseline"] == "2026-11-29T04:40:25Z"
    r = run_cli("report", "-", "--baseline", "-", stdin=BACKLOG.read_bytes())
    assert r.code == 3 and "cannot both come from standard input" in r.err


def test_report_dash_o_dash_is_stdout():
    r = run_cli("report", BACKLOG, "-f", "json", "-o", "-")
    assert r.code == 0 and r.json()["schema"] == "qdiag.report/1"
    assert not Path("-").exists()


@pytest.mark.live
def test_snapshot_dash_o_dash_writes_gzip_to_stdout_and_no_file():
    r = run_cli("snapshot", "-o", "-", *FAST)
    assert r.code == 0, r.err
    assert json.loads(gzip.decompress(r.out_bytes))["schema"] == "qdiag.snapshot/1"
    assert not Path("-").exists() and "re-render with: qdiag report" in r.err


def test_snapshot_refuses_to_write_gzip_to_a_terminal():
    r = run_cli("snapshot", "-o", "-", *FAST, tty=True)
    assert r.code == 3 and "to a terminal" in r.err and r.out == ""


@pytest.mark.parametrize("args, expected", [
    (("investigate", "-o", "{missing}/r.md"), "--output {missing}/r.md: directory {missing} does not exist"),
    (("investigate", "--snapshot", "{missing}/s.json.gz"), "directory {missing} does not exist"),
    (("investigate", "-o", "{tmp}"), "is a directory"),
    (("investigate", "-o", "{file}/r.md"), "is not a directory"),
    (("snapshot", "-o", "{missing}/s.json.gz"), "does not exist"),
    (("check", "--max-depth", "1", "--junit", "{missing}/j.xml"), "--junit {missing}/j.xml: directory"),
])
def test_output_paths_are_checked_before_any_probe_runs(monkeypatch, tmp_path, args, expected):
    import qdiag.collect

    def no_probing(*a, **k):
        raise AssertionError("a probe ran before the output path was checked")

    monkeypatch.setattr(qdiag.collect, "run_probes", no_probing)
    (tmp_path / "file").write_text("")
    names = {"missing": tmp_path / "missing", "tmp": tmp_path, "file": tmp_path / "file"}
    r = run_cli(*[a.format(**names) for a in args], *FAST)
    assert r.code == 3, r.err
    assert r.err.count("\n") == 1 and expected.format(**names) in r.err, r.err


def test_report_output_path_is_checked_before_reading(tmp_path):
    r = run_cli("report", "/nonexistent.json.gz", "-o", tmp_path / "missing" / "r.md")
    assert r.code == 3 and "directory" in r.err and "does not exist" in r.err


def test_unwritable_directory_is_refused(tmp_path):
    # Root may write to a mode 0500 directory, but not create files in /proc/1.
    locked = Path("/proc/1") if os.geteuid() == 0 else tmp_path / "locked"
    if locked != Path("/proc/1"):
        locked.mkdir(mode=0o500)
    r = run_cli("report", BACKLOG, "-o", locked / "r.md")
    assert r.code == 3 and f"directory {locked} is not writable" in r.err, r.err


def test_the_process_ends_with_its_output_flushed_and_exit_handlers_run(tmp_path):
    """qdiag ends with os._exit once the report is out (qdiag/cli.py _leave): the whole
    report still reaches a pipe, the exit status is kept, and the atexit handlers
    (qdiag's own, logging's) still run."""
    import subprocess
    import sys

    marker = tmp_path / "atexit-ran"
    code = ("import atexit, pathlib, sys\n"
            f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
            "sys.argv = ['qdiag'] + sys.argv[1:]\n"
            "from qdiag.cli import main\n"
            "main()\n")
    run = subprocess.run([sys.executable, "-c", code, "report", str(BACKLOG), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["schema"] == "qdiag.report/1"  # the whole document, not a cut buffer
    assert marker.read_text() == "yes"
    bad = subprocess.run([sys.executable, "-c", code, "report", str(tmp_path / "missing.json.gz")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 3 and bad.stderr.startswith("qdiag: error:"), (bad.returncode, bad.stderr)
