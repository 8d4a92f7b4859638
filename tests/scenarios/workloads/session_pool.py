"""Scenario consumer: RabbitMQ deliveries handed to worker threads that each borrow
a client session from a small shared pool for one downstream call.

    python session_pool.py QUEUE URL [--workers 6] [--sessions 2] [--prefetch 50]

The fault: one rare branch of the handler (every 40th message) returns without
giving its session back.  After two such messages the pool is empty and every
worker waits to borrow a session for ever; the downstream service itself is
fast.  Nothing here is named after locks or waiting: what qdiag sees must come
from what the kernel and the runtime report.

Prints "ready" once subscribed, and "pool empty" once the last session has
leaked (for the harness to start qdiag after the fault has taken hold; qdiag
never reads this output).  Runs until killed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import queue
import signal
import sys
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("url")
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--sessions", type=int, default=2)
    ap.add_argument("--prefetch", type=int, default=50)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    sessions: queue.Queue = queue.Queue()
    for n in range(args.sessions):
        sessions.put(f"session-{n}")
    inbox: queue.Queue = queue.Queue()
    done: queue.Queue = queue.Queue()
    leaked = itertools.count(1)

    def work() -> None:
        while True:
            n, tag = inbox.get()
            session = sessions.get()
            try:
                urllib.request.urlopen(args.url, timeout=5).read()
            except OSError:
                pass
            if n % 40 == 7:  # the bug: this branch never returns its session
                if next(leaked) == args.sessions:
                    print("pool empty", flush=True)
                continue
            sessions.put(session)
            done.put(tag)

    for _ in range(args.workers):
        threading.Thread(target=work, daemon=True).start()

    import pika

    conn = pika.BlockingConnection(pika.URLParameters(brokers.AMQP))
    channel = conn.channel()
    channel.basic_qos(prefetch_count=args.prefetch)
    numbers = itertools.count()
    channel.basic_consume(args.name, lambda ch, method, props, body: inbox.put((next(numbers), method.delivery_tag)))
    print("ready", flush=True)
    while True:
        conn.process_data_events(time_limit=0.2)
        while not done.empty():
            channel.basic_ack(done.get())


if __name__ == "__main__":
    main()
