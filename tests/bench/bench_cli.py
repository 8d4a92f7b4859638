"""Benchmark: start-up and the cost of a host-only run.  Not collected by pytest.

    python tests/bench/bench_cli.py [--runs 7]

Reports medians, and ratios against a peer measured in the same run (a bare
`python -c pass` start-up), so a busy machine shifts both sides alike.
Goals (issue 2): `qdiag --help` under 0.2 s; a whole host-only run under
0.5 CPU-seconds and under 100 MB peak RSS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time


def run(cmd: list[str]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS KiB) of one child process."""
    began = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


def median_of(cmd: list[str], runs: int) -> tuple[float, float, int]:
    samples = [run(cmd) for _ in range(runs)]
    return (statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples),
            int(statistics.median(s[2] for s in samples)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    qdiag = [sys.executable, "-m", "qdiag"]
    peer = median_of([sys.executable, "-c", "pass"], args.runs)
    help_ = median_of(qdiag + ["--help"], args.runs)
    host = median_of(qdiag + ["investigate", "--no-auto-detect", "--window", "1", "--probe", "host",
                              "--probe", "process", "--format", "json"], max(3, args.runs // 2))
    print(f"python -c pass          wall {peer[0]:.3f} s  cpu {peer[1]:.3f} s  rss {peer[2] / 1024:.1f} MB")
    print(f"qdiag --help            wall {help_[0]:.3f} s  cpu {help_[1]:.3f} s  rss {help_[2] / 1024:.1f} MB"
          f"  ({help_[0] / peer[0]:.1f}x bare python; goal < 0.2 s)")
    print(f"host+process, window 1  wall {host[0]:.3f} s  cpu {host[1]:.3f} s  rss {host[2] / 1024:.1f} MB"
          f"  (goals: cpu < 0.5 s, rss < 100 MB)")


if __name__ == "__main__":
    main()
