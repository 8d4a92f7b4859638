"""Scenario Celery producer: sends the scenario's task with apply_async (the
real kombu Redis transport writes the real layout) at a steady rate.

    python celery_producer.py --rate 8 [--prefill 150] [--work-ms 80]

--prefill sends that many tasks at once first: a queue that carries a
standing backlog, as batch queues do.  Prints "ready" once the prefill is
sent.  Runs until killed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from celery_app import render_invoice  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=10.0, help="tasks per second")
    ap.add_argument("--prefill", type=int, default=0)
    ap.add_argument("--work-ms", type=float, default=80.0, help="what each task takes in the worker")
    args = ap.parse_args()
    for n in range(args.prefill):
        render_invoice.apply_async((n, args.work_ms))
    print("ready", flush=True)
    n, tick = args.prefill, time.monotonic()
    while True:
        render_invoice.apply_async((n, args.work_ms))
        n += 1
        # Pace on a schedule, never catching up more than a second of lost time.
        tick = max(tick + 1.0 / args.rate, time.monotonic() - 1.0)
        time.sleep(max(0.0, tick - time.monotonic()))


if __name__ == "__main__":
    main()
