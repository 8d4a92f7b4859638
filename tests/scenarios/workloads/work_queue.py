"""Scenario worker with an in-process work queue and no broker: a producer
thread feeds a bounded queue.Queue, worker threads drain it.  When the queue
is full the producer logs "works queue_full" and drops the job, as many
services do.

    python work_queue.py LOG_FILE [--workers 4] [--rate 200] [--deadlock-after N] [--http URL]

Faults:
  --deadlock-after N  after N jobs two workers take two plainly named locks in opposite order
  --http URL          every job calls URL (a slow downstream service)

Prints "ready" once the workers run.  Runs until killed.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import threading
import time
import urllib.request


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("log")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rate", type=float, default=200.0)
    ap.add_argument("--maxsize", type=int, default=100)
    ap.add_argument("--deadlock-after", type=int, default=None)
    ap.add_argument("--http", default=None)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logging.basicConfig(filename=args.log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log = logging.getLogger("works")

    jobs: queue.Queue = queue.Queue(maxsize=args.maxsize)
    done = [0]
    accounts, ledger = threading.Lock(), threading.Lock()

    def handle(job: int, worker: int) -> None:
        if args.http:
            with urllib.request.urlopen(args.http, timeout=30) as resp:
                resp.read()
        if args.deadlock_after is not None and done[0] >= args.deadlock_after and worker in (0, 1):
            first, second = (accounts, ledger) if worker == 0 else (ledger, accounts)
            with first:
                time.sleep(0.3)
                with second:
                    pass
        done[0] += 1

    def work(worker: int) -> None:
        while True:
            job = jobs.get()
            handle(job, worker)
            jobs.task_done()

    for n in range(args.workers):
        threading.Thread(target=work, args=(n,), name=f"worker-{n}", daemon=True).start()

    print("ready", flush=True)
    n = 0
    interval = 1.0 / args.rate
    dropped = 0
    while True:
        n += 1
        try:
            jobs.put_nowait(n)
        except queue.Full:
            dropped += 1
            if dropped % 50 == 1:
                log.warning("works queue_full: dropped job %d (%d dropped so far)", n, dropped)
        time.sleep(interval)


if __name__ == "__main__":
    main()
