"""Benchmark: what the kernel wait sampler costs qdiag and the process it samples.  Not collected by pytest.

    python tests/bench/bench_kernel_sampler.py [--runs 3] [--window 5] [--interval 0.1]

1. qdiag's side: a sampler process sampling a 50-thread consumer over the
   window (threads blocked on sockets to a slow local service, on locks, in
   sleeps, one spinning), against a peer process that imports the same modules
   and sleeps as long.  Reports CPU seconds and peak RSS of both; the
   difference is the sampling.
2. The consumer's side: a CPU-bound process (one thread counting, 49 idle
   threads, so there are 50 to sample) counts for the window with and without
   a sampler on it, alternating runs; reports the median throughput of each,
   per wall second (which includes the CPU the sampler takes on a small
   machine) and per CPU-second of the consumer (its own speed while it runs).

Needs root (the sampler reads other processes' syscall files and memory).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.servers import silent_listener  # noqa: E402

CONSUMER = textwrap.dedent("""
    import socket, sys, threading, time
    port = int(sys.argv[1])
    lock = threading.Lock()
    lock.acquire()
    def on_socket():
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(b"x")
        conn.recv(1)
    def on_lock():
        lock.acquire()
    def sleeping():
        time.sleep(3600)
    def spinning():
        while True:
            pass
    kinds = [on_socket] * 20 + [on_lock] * 15 + [sleeping] * 13 + [spinning]
    for body in kinds:
        threading.Thread(target=body, daemon=True).start()
    time.sleep(0.5)
    print(threading.active_count(), flush=True)
    threading.Event().wait()
""")

COUNTER = textwrap.dedent("""
    import sys, threading, time
    for _ in range(49):
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    print("ready", flush=True)
    sys.stdin.readline()
    end = time.monotonic() + float(sys.argv[1])
    cpu = time.process_time()
    n = 0
    while time.monotonic() < end:
        for _ in range(10000):
            n += 1
    print(n, time.process_time() - cpu, flush=True)
""")

SAMPLER = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, sys.argv[1])
    from qdiag.probes import _kernel_sampler as ks
    pid, window, interval, sample = int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"
    t0 = time.monotonic()
    if sample:
        report = ks.sample_window([pid], t0, t0 + window, t0 + window + 5, interval=interval)[pid]
        print(json.dumps({"ticks": report["ticks"], "threads": report["threads_sampled"],
                          "top": report["attribution"][:3]}))
    else:
        time.sleep(window)
        print("{}")
""")


def run_sampler(pid: int, window: float, interval: float, sample: bool) -> tuple[float, int, dict]:
    """(CPU seconds, peak RSS KiB, its output) of one sampler process."""
    proc = subprocess.Popen([sys.executable, "-c", SAMPLER, str(ROOT), str(pid), str(window), str(interval),
                             "1" if sample else "0"], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss, json.loads(out or "{}")


def counter_throughput(window: float, interval: float, sampled: bool) -> tuple[int, float]:
    """(counts in the window, counts per CPU-second of the counter itself)."""
    counter = subprocess.Popen([sys.executable, "-c", COUNTER, str(window)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        assert counter.stdout.readline().strip() == "ready"
        sampler = None
        if sampled:
            sampler = subprocess.Popen([sys.executable, "-c", SAMPLER, str(ROOT), str(counter.pid),
                                        str(window + 1), str(interval), "1"], stdout=subprocess.DEVNULL)
            time.sleep(0.5)  # the sampler is importing and starting its ticks
        counter.stdin.write("go\n")
        counter.stdin.flush()
        count, cpu = counter.stdout.readline().split()
        if sampler is not None:
            sampler.wait(60)
        return int(count), int(count) / float(cpu)
    finally:
        counter.kill()
        counter.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the sampler reads other processes' syscall files and memory")

    with silent_listener() as port:
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, str(port)], stdout=subprocess.PIPE, text=True)
        try:
            threads = int(consumer.stdout.readline())
            sampled = [run_sampler(consumer.pid, args.window, args.interval, True) for _ in range(args.runs)]
            idle = [run_sampler(consumer.pid, args.window, args.interval, False) for _ in range(args.runs)]
        finally:
            consumer.kill()
            consumer.wait()
    cpu_s, rss = statistics.median(s[0] for s in sampled), statistics.median(s[1] for s in sampled)
    cpu_0, rss_0 = statistics.median(s[0] for s in idle), statistics.median(s[1] for s in idle)
    print(f"consumer: {threads} threads; window {args.window:.1f} s, interval {args.interval * 1000:.0f} ms, "
          f"{args.runs} runs (medians)")
    print(f"  sampler process      cpu {cpu_s:.3f} s  peak rss {rss / 1024:.1f} MB  "
          f"(ticks {sampled[0][2].get('ticks')}, threads sampled {sampled[0][2].get('threads')})")
    print(f"  peer (import, sleep) cpu {cpu_0:.3f} s  peak rss {rss_0 / 1024:.1f} MB")
    print(f"  sampling itself      cpu {cpu_s - cpu_0:.3f} s  ({100 * (cpu_s - cpu_0) / args.window:.1f}% of one core)"
          f"  rss +{(rss - rss_0) / 1024:.1f} MB")
    print(f"  top of the attribution: {json.dumps(sampled[0][2].get('top'))}")

    plain, with_sampler = [], []
    for _ in range(args.runs):  # alternate, so a neighbour's load hits both sides
        plain.append(counter_throughput(args.window, args.interval, False))
        with_sampler.append(counter_throughput(args.window, args.interval, True))
    for label, index in (("counts in the window", 0), ("counts per CPU-second of its own", 1)):
        base = statistics.median(r[index] for r in plain)
        loaded = statistics.median(r[index] for r in with_sampler)
        print(f"CPU-bound consumer (50 threads), {label} (medians of {args.runs}): alone {base:,.0f}, "
              f"sampled {loaded:,.0f} -> {100 * (base - loaded) / base:+.1f}% slower")
        print(f"  runs alone {[round(r[index]) for r in plain]}, sampled {[round(r[index]) for r in with_sampler]}")
    print("The first line includes the CPU the sampler and the neighbours take from the consumer; the second")
    print("is the consumer's own speed while it runs (the sampler never stops or attaches to it).")


if __name__ == "__main__":
    main()
