"""Real SSH to real hosts: qdiag investigate --collect ssh://... in a lab of
network namespaces (lab.py), each consumer host with its own sshd and host
name; the broker (a private Redis) in one namespace, qdiag in another.  The
consumer hosts run qdiag as the single file (qdiag.pyz) with the system's
Python, which has none of qdiag's libraries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from qdiag import snapshot as snapshots

from tests.fleet.lab import REPO, WORKLOADS, target_python

pytestmark = [pytest.mark.live]

WINDOW_S = 3.0
BACKLOG_TIMEOUT_S = 40.0


def _python_in(lab, node, code: str, env: dict) -> str:
    done = lab.run(node, [sys.executable, "-c", code], env=env, timeout=30)
    assert done.returncode == 0, done.stderr.decode()[-1000:]
    return done.stdout.decode()


def _collect_command(lab, pyz) -> str:
    # The remote side's own caches and config stay in the lab's directory; its PATH is the
    # system's alone, as on a host where nobody installed anything (no py-spy).
    return (f"env PATH=/usr/bin:/bin XDG_CACHE_HOME={lab.root}/cache XDG_CONFIG_HOME={lab.root}/config "
            f"{target_python()} {pyz}")


def _investigate(lab, node, tmp_path, *args: str, env: dict, timeout: float = 120) -> tuple[dict, Path]:
    snap = tmp_path / f"fleet-{uuid.uuid4().hex[:6]}.json.gz"
    argv = [sys.executable, "-m", "qdiag", "investigate", "--format", "json", "--no-auto-detect",
            "--window", str(WINDOW_S), "--snapshot", str(snap), *args]
    done = lab.run(node, argv, env=env, timeout=timeout, cwd=str(tmp_path))
    assert done.returncode == 0, f"investigate failed ({done.returncode}): {done.stderr.decode()[-3000:]}"
    report = json.loads(done.stdout)
    replay = subprocess.run([sys.executable, "-m", "qdiag", "report", str(snap), "-f", "json"], capture_output=True,
                            env=env, cwd=str(tmp_path), timeout=60)
    assert replay.returncode == 0, replay.stderr.decode()[-2000:]
    again = json.loads(replay.stdout)
    assert [(c["id"], c["subject"]) for c in again["root_causes"]] == \
        [(c["id"], c["subject"]) for c in report["root_causes"]], "the saved merged snapshot ranks differently"
    return report, snap


def _env(lab, url: str) -> dict:
    return {**os.environ, "SCENARIO_REDIS": url, "PYTHONPATH": str(REPO),
            "QDIAG_SSH_COMMAND": f"ssh -F {lab.ssh_config()}"}


def test_a_deadlocked_consumer_on_another_host_is_ranked_first_with_its_host(lab, pyz, tmp_path):
    ops, broker = lab.node("ops"), lab.node("broker")
    web1, web2 = lab.node("web-1"), lab.node("web-2")
    for node in (web1, web2):
        lab.sshd(node)
    url = lab.redis(broker)
    env = _env(lab, url)
    key = f"qdiag-fleet-{uuid.uuid4().hex[:8]}"
    _python_in(lab, ops, f"import redis; redis.Redis.from_url({url!r}).xgroup_create({key!r}, 'workers', id='0', "
                         "mkstream=True)", env)
    lab.start(ops, [sys.executable, str(WORKLOADS / "producer.py"), "redis-stream", key, "--rate", "40"], env=env)
    consumer = lab.start(web1, [sys.executable, str(WORKLOADS / "consumer.py"), "redis-stream", key, "--group",
                                "workers", "--deadlock-after", "20"], env=env)
    check = (f"import redis; r = redis.Redis.from_url({url!r}); "
             f"g = [g for g in r.xinfo_groups({key!r}) if g['name'] == b'workers'][0]; "
             "print((g.get('lag') or 0) + g['pending'])")
    deadline = time.monotonic() + BACKLOG_TIMEOUT_S
    while int(_python_in(lab, ops, check, env).strip() or 0) < 100:
        assert time.monotonic() < deadline, "the stream never backed up"
        assert consumer.poll() is None, f"the consumer died: {consumer.stderr.read().decode()[-2000:]}"
        time.sleep(0.5)

    # On-call knows the broker, the stream and the consumer hosts; not the pid on web-1.
    report, saved = _investigate(lab, ops, tmp_path, "--redis", url, "--queue", key,
                                 "--collect", "ssh://web-1,web-2", "--collect-command", _collect_command(lab, pyz),
                                 env=env)
    ranked = [(c["id"], c["subject"]) for c in report["root_causes"]]
    assert ranked and ranked[0] == ("consumer-stuck", f"process:web-1/{consumer.pid}"), \
        json.dumps(report["root_causes"][:3], indent=1)[:3000]
    top = report["root_causes"][0]
    # What to run next is said for the host it runs on, with its own pid.
    assert any(c.startswith("ssh ") and "web-1" in c and f"{consumer.pid}" in c and f"web-1/{consumer.pid}" not in c
               for c in top["next_commands"]), top["next_commands"]
    hosts = {h["name"]: h for h in report["fleet"]["hosts"]}
    assert hosts["web-1"]["status"] == hosts["web-2"]["status"] == "ok"
    # The broker listed the consumer by address and port; web-1's snapshot owned that socket.
    matched = [c for c in report["fleet"]["consumers"] if c["host"] == "web-1"]
    assert matched and matched[0]["pid"] == f"web-1/{consumer.pid}"
    assert matched[0]["peer"].startswith(web1.address + ":")
    # py-spy is not where the single file runs: the threads probe there says what it needs, and the
    # kernel's view of the threads is what found the consumer stuck.
    # No stack could be taken there, so the probe ends as a failure naming what it needs; the
    # kernel's view it sampled stays in its observations, and the rules read it.
    threads = next(p for p in report["probes"] if p["name"] == "threads@web-1")
    assert threads["status"] in ("error", "not_applicable") and "py-spy" in (threads["error"] or "")
    web1 = next(h["snapshot"] for h in snapshots.load(saved)["fleet"]["hosts"] if h["name"] == "web-1")
    dumped = next(p for p in web1["probes"] if p["name"] == "threads")["observations"]["processes"]
    assert "py-spy is not installed" in dumped[0]["error"] and "py_spy" in dumped[0]["error"]
    assert "consumer-threads-never-woke" in top["rules"]


def test_hosts_that_fail_are_reported_on_the_host_and_never_fail_the_run(lab, pyz, tmp_path):
    ops, broker, web1 = lab.node("ops"), lab.node("broker"), lab.node("web-1")
    lab.sshd(web1)
    url = lab.redis(broker)
    env = _env(lab, url)
    config = lab.ssh_config()
    # A host with no sshd (nothing answers at its address), and a user the host does not let in.
    with open(config, "a") as fh:
        fh.write(f"Host ghost\n  HostName {lab.subnet}.250\n  ConnectTimeout 3\n")
    report, _ = _investigate(lab, ops, tmp_path, "--redis", url, "--collect", "ssh://web-1,ghost,nobody@web-1",
                             "--collect-command", _collect_command(lab, pyz), env=env)
    hosts = {h["target"]: h for h in report["fleet"]["hosts"]}
    assert hosts["ssh://web-1"]["status"] == "ok"
    assert hosts["ssh://ghost"]["status"] == "failed" and "unreachable over ssh" in hosts["ssh://ghost"]["error"]
    assert "refused the login" in hosts["ssh://nobody@web-1"]["error"]
    reasons = " ".join(report["verdict_reasons"])
    assert "ghost" in reasons and "sent no snapshot" in reasons
    # Nothing found while hosts were not seen is not health.
    assert report["verdict"] != "healthy"

    # qdiag missing on the host: said so, with the way to get it there.
    report, _ = _investigate(lab, ops, tmp_path, "--redis", url, "--collect", "ssh://web-1",
                             "--collect-command", "/nonexistent/qdiag", env=env)
    error = report["fleet"]["hosts"][1]["error"]
    assert "qdiag is not installed there" in error and "zipapp" in error


def test_the_single_file_runs_with_a_python_that_has_none_of_the_libraries(pyz, tmp_path):
    python = target_python()
    bare = subprocess.run([python, "-c", "import typer"], capture_output=True)
    if bare.returncode == 0:
        pytest.skip(f"{python} has typer: it proves nothing about the single file")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": ""}
    done = subprocess.run([python, str(pyz), "snapshot", "-o", "-", "--no-auto-detect", "--window", "1",
                           "--probe", "host"], capture_output=True, env=env, timeout=120, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    import gzip

    doc = json.loads(gzip.decompress(done.stdout))
    assert doc["schema"] == "qdiag.snapshot/1" and doc["probes"][0]["status"] in ("ok", "skipped")
    # The compiled part went to a private cache, mode 0700.
    cache = tmp_path / "cache" / "qdiag"
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
