"""Benchmark: `qdiag investigate --collect ssh://...` over 1, 2, 4, 8 consumer hosts.  Not
collected by pytest (needs root: it builds the namespace lab of lab.py).

    python tests/fleet/bench_collect.py [--hosts 1,2,4,8] [--window 5] [--runs 2]

Each host is a network namespace with its own sshd and one healthy consumer of
a Redis stream (the broker in its own namespace, a producer and qdiag in a
third); the remote side runs the single file (qdiag.pyz) with the system's
Python.  Reports the wall time of the whole run (local probes, every host's
snapshot, the merged report) against the window, and the same run without
--collect (0 hosts) measured in the same lab.  Goal (issue 14): 8 hosts within
the window plus a few seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.fleet import lab as lab_module  # noqa: E402
from tests.fleet.lab import REPO, WORKLOADS, target_python  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", default="1,2,4,8")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    counts = [int(n) for n in args.hosts.split(",")]
    why = lab_module.available()
    if why:
        print(f"cannot run: {why}")
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="qdiag-fleet-bench-"))
    pyz = scratch / "qdiag.pyz"
    subprocess.run([sys.executable, "-m", "qdiag.fleet.zipapp", "--no-fetch", "-o", str(pyz)], cwd=REPO, check=True,
                   capture_output=True)
    lab = lab_module.Lab()
    try:
        ops, broker = lab.node("ops"), lab.node("broker")
        hosts = [lab.node(f"web-{i}") for i in range(1, max(counts) + 1)]
        for host in hosts:
            lab.sshd(host)
        url = lab.redis(broker)
        env = {**os.environ, "SCENARIO_REDIS": url, "PYTHONPATH": str(REPO),
               "QDIAG_SSH_COMMAND": f"ssh -F {lab.ssh_config()}"}
        key = f"qdiag-fleet-bench-{uuid.uuid4().hex[:6]}"
        lab.run(ops, [sys.executable, "-c", f"import redis; redis.Redis.from_url({url!r}).xgroup_create({key!r}, "
                                            "'workers', id='0', mkstream=True)"], env=env, timeout=30)
        lab.start(ops, [sys.executable, str(WORKLOADS / "producer.py"), "redis-stream", key, "--rate", "20"], env=env)
        for host in hosts:
            lab.start(host, [sys.executable, str(WORKLOADS / "consumer.py"), "redis-stream", key, "--group",
                             "workers"], env=env)
        time.sleep(3)
        command = f"env XDG_CACHE_HOME={lab.root}/cache XDG_CONFIG_HOME={lab.root}/config {target_python()} {pyz}"
        # What one consumer host's snapshot costs, run there directly (ip execs it: its rusage is the run's).
        endpoint = url.split("//", 1)[1].rsplit("/", 1)[0]
        one = subprocess.Popen(["ip", "netns", "exec", hosts[0].netns, "env", f"XDG_CACHE_HOME={lab.root}/cache",
                                target_python(), str(pyz), "snapshot", "-o", "-", "--no-auto-detect", "--window",
                                f"{args.window:g}", "--connected-to", endpoint], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(one.pid, 0)
        cpu = usage.ru_utime + usage.ru_stime
        print(f"one consumer host's snapshot (single file, system Python): {cpu:.2f} CPU-seconds; here every "
              f"host shares the same {os.cpu_count()} CPUs, so N hosts need about N x {cpu:.2f} / {os.cpu_count()} s "
              "of this machine's time")
        print(f"window {args.window:g}s, {args.runs} run(s) each, {os.cpu_count()} CPUs; wall seconds of the whole run")
        for n in [0] + counts:
            walls, oks = [], []
            for _ in range(args.runs):
                argv = [sys.executable, "-m", "qdiag", "investigate", "--format", "json", "--no-auto-detect",
                        "--window", f"{args.window:g}", "--redis", url, "--queue", key]
                if n:
                    argv += ["--collect", "ssh://" + ",".join(h.name for h in hosts[:n]), "--collect-command", command]
                began = time.perf_counter()
                done = lab.run(ops, argv, env=env, timeout=180, cwd=str(scratch))
                walls.append(time.perf_counter() - began)
                if done.returncode != 0:
                    print(f"  {n} hosts: failed: {done.stderr.decode()[-500:]}")
                    continue
                import json

                report = json.loads(done.stdout)
                oks.append(sum(1 for h in (report.get("fleet") or {}).get("hosts") or [] if h["status"] == "ok"
                               and not h["primary"]))
            print(f"  {n} host(s): median {statistics.median(walls):5.1f}s (runs: "
                  f"{', '.join(f'{w:.1f}' for w in walls)}), {statistics.median(walls) - args.window:+.1f}s over "
                  f"the window; snapshots received: {oks}")
    finally:
        lab.close()
        left = lab.leftovers()
        subprocess.run(["rm", "-rf", str(scratch)])
        if left:
            print(f"left behind: {left}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
