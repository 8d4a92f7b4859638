"""Scenario producer: publishes at a steady rate to one broker, optionally
switching to a higher rate after a delay (a traffic spike).

    python producer.py rabbitmq QUEUE --rate 50
    python producer.py kafka TOPIC --rate 200 --keys one
    python producer.py redis-stream STREAM --rate 100 --poison-every 10
    python producer.py redis-list LIST --rate 100

Prints "ready" once connected.  Runs until killed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("broker", choices=brokers.KINDS)
    ap.add_argument("name")
    ap.add_argument("--rate", type=float, default=50.0, help="messages per second")
    ap.add_argument("--spike-after", type=float, default=None, help="seconds before switching to --spike-rate")
    ap.add_argument("--spike-rate", type=float, default=None)
    ap.add_argument("--keys", choices=("many", "one"), default="many", help="Kafka keys: spread or all the same")
    ap.add_argument("--poison-every", type=int, default=0, help="every Nth message is one the consumer cannot handle")
    ap.add_argument("--size", type=int, default=200, help="payload bytes")
    ap.add_argument("--batch", type=int, default=1, help="messages sent per tick")
    args = ap.parse_args()

    out = brokers.producer(args.broker, args.name)
    print("ready", flush=True)
    started = time.monotonic()
    next_tick = started
    sent = 0
    pad = "x" * max(0, args.size - 60)
    while True:
        elapsed = time.monotonic() - started
        rate = args.rate
        if args.spike_after is not None and elapsed >= args.spike_after:
            rate = args.spike_rate or rate
        for _ in range(args.batch):
            poison = bool(args.poison_every) and sent % args.poison_every == 0
            key = "k-0" if args.keys == "one" else f"k-{sent % 64}"
            body = json.dumps({"n": sent, "poison": poison, "pad": pad}).encode()
            out.send(body, key=key)
            sent += 1
        out.tick()
        # Pace on a schedule, not on the last send, so slow sends do not lower the rate;
        # never try to catch up more than a second of lost time.
        next_tick = max(next_tick + args.batch / rate, time.monotonic() - 1.0)
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main()
