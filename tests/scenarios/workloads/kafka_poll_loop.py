"""Scenario consumer for Kafka poll-loop faults: a real kafka-python group
member whose poll loop is misconfigured or too slow for its settings.

    python kafka_poll_loop.py TOPIC --group G --never-commit
    python kafka_poll_loop.py TOPIC --group G --per-record-ms 100 --max-poll-records 60 --max-poll-interval-ms 3000

--never-commit      enable.auto.commit=false and no commit call: the member consumes every
                    record, and the group never records any progress
--bind IP           open every connection from this local address (a consumer on a host of
                    its own, e.g. 127.0.0.2: the broker lists the member under that host)
--per-record-ms N   wait N ms per record (an I/O-bound handler), then commit the batch; with
                    N x max.poll.records above max.poll.interval.ms the member's heartbeat
                    thread leaves the group in the middle of every batch, the commit fails,
                    and the next poll() rejoins and gets the same records again (a rebalance
                    storm that never makes progress)

Prints "ready" once it has an assignment, "batch N records" after each batch.  Runs until killed.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

KAFKA = os.environ.get("SCENARIO_KAFKA", "127.0.0.1:9092")


def handle_record(value: bytes, per_record_ms: float) -> None:
    time.sleep(per_record_ms / 1000.0)


def bind_connections_to(ip: str) -> None:
    """Every TCP connection this process opens leaves from `ip` (kafka-python has no
    source-address setting; the kernel picks the port)."""
    original_connect, original_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def bind_first(sock: socket.socket) -> None:
        if sock.family == socket.AF_INET and sock.type == socket.SOCK_STREAM and sock.getsockname()[1] == 0:
            sock.bind((ip, 0))

    def connect(self, address):
        bind_first(self)
        return original_connect(self, address)

    def connect_ex(self, address):
        bind_first(self)
        return original_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("topic")
    ap.add_argument("--group", required=True)
    ap.add_argument("--never-commit", action="store_true")
    ap.add_argument("--per-record-ms", type=float, default=0.0)
    ap.add_argument("--max-poll-records", type=int, default=500)
    ap.add_argument("--max-poll-interval-ms", type=int, default=300000)
    ap.add_argument("--session-timeout-ms", type=int, default=10000)
    ap.add_argument("--bind", default=None)
    args = ap.parse_args()
    if args.bind:
        bind_connections_to(args.bind)
    # SIGTERM unwinds normally, so the member leaves its group when the harness stops it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from kafka import KafkaConsumer
    from kafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError, UnknownMemberIdError

    consumer = KafkaConsumer(args.topic, bootstrap_servers=KAFKA, group_id=args.group, enable_auto_commit=False,
                             auto_offset_reset="earliest", allow_auto_create_topics=False,
                             max_poll_records=args.max_poll_records, max_poll_interval_ms=args.max_poll_interval_ms,
                             session_timeout_ms=args.session_timeout_ms, heartbeat_interval_ms=1000)
    ready = False
    try:
        while True:
            batch = consumer.poll(timeout_ms=500)
            if not ready and consumer.assignment():
                print("ready", flush=True)
                ready = True
            records = [rec for recs in batch.values() for rec in recs]
            for rec in records:
                handle_record(rec.value, args.per_record_ms)
            if records:
                print(f"batch {len(records)} records", flush=True)
            if records and not args.never_commit:
                try:
                    consumer.commit()
                except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError,
                        UnknownMemberIdError) as exc:
                    # What applications do: log it and go on polling; the records come again.
                    print(f"commit failed: {type(exc).__name__}", flush=True)
    finally:
        consumer.close(autocommit=False)


if __name__ == "__main__":
    main()
