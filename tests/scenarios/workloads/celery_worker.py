"""Scenario Celery worker: a real `celery worker` (prefork pool) consuming the
scenario's queue.  Prints "ready" when the worker is ready.  Runs until killed.

    python celery_worker.py [--concurrency 1]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from celery.signals import worker_ready  # noqa: E402

from celery_app import QUEUE, app  # noqa: E402


@worker_ready.connect
def _ready(**_):
    print("ready", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", type=int, default=1)
    args = ap.parse_args()
    app.worker_main(["worker", "-Q", QUEUE, "--concurrency", str(args.concurrency), "--pool", "prefork",
                     "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "WARNING"])


if __name__ == "__main__":
    main()
