"""Scenario consumer: consumes one queue with the real client library and
handles each message with one injected fault.

    python consumer.py rabbitmq QUEUE [--prefetch 50] [fault options]
    python consumer.py kafka TOPIC --group G
    python consumer.py redis-stream STREAM --group G
    python consumer.py redis-list LIST

Faults (combine sparingly: a scenario injects one):
  --work-ms N         burn N ms of CPU per message in score_document()
  --sleep-ms N        wait N ms per message (serial work bound by latency, not CPU)
  --http URL          call URL once per message (timeout --http-timeout); an error means retry
  --deadlock-after N  after N messages the handler and a background thread take two plainly named
                      locks in opposite order and deadlock
  --poison            messages marked poison raise, and are retried for ever
  --retry-backoff-ms N  wait N ms before a failed message is put back (default 50; 0: at once, a hot loop)
  --never-ack         a handler bug: every message is left unacknowledged (RabbitMQ: neither acked nor
                      rejected; Redis stream: no XACK, and nothing claimed back)
  --nofile N          lower RLIMIT_NOFILE to N; with --leak-fds every message leaks a descriptor
  --hold-mb N         keep N MiB of anonymous memory resident
  --fill-cgroup N     grow resident memory until only N MiB of the memory cgroup's limit is left
                      for everything else (code, libraries, page cache): the working set thrashes
  --churn-mb N        write N MiB through the page cache per message (memory-limit pressure)
  --leak-mb N         keep N MiB more resident for every message (a leak: an OOM kill waits at the limit)
  --fsync N           append to a local journal and fsync it N times per message (a disk-bound handler)

Prints "ready" once subscribed.  Runs until killed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brokers  # noqa: E402


class PoisonMessage(Exception):
    pass


def parse(body: bytes) -> dict:
    doc = json.loads(body)
    if doc.get("poison"):
        raise PoisonMessage(f"message {doc.get('n')} has a field this consumer cannot handle")
    return doc


def score_document(doc: dict, millis: float) -> str:
    """The hot path: CPU-bound hashing, standing in for real per-message work."""
    deadline = time.thread_time() + millis / 1000.0
    digest = json.dumps(doc).encode()
    while time.thread_time() < deadline:
        for _ in range(200):
            digest = hashlib.sha256(digest).digest()
    return digest.hex()


def write_audit_record(millis: float) -> None:
    time.sleep(millis / 1000.0)


def call_pricing_service(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


def append_to_journal(journal, body: bytes, times: int) -> None:
    """Durable writes, one fsync each: a handler bound by the disk's write latency."""
    for _ in range(times):
        journal.write(body[:4096].ljust(4096, b" "))
        journal.flush()
        os.fsync(journal.fileno())


class Deadlock:
    """Two plain locks taken in opposite order by two threads: the classic deadlock.

    Nothing here is named after locks or waiting (no "lock" in a name, no Event):
    what qdiag sees must come from what the kernel and the runtime report."""

    def __init__(self, after: int):
        self.after = after
        self.seen = 0
        self.accounts = threading.Lock()
        self.orders = threading.Lock()
        threading.Thread(target=self.reconcile, name="reconciler", daemon=True).start()

    def reconcile(self) -> None:
        while True:
            with self.orders:
                if self.seen >= self.after:
                    time.sleep(0.5)  # the handler takes the accounts meanwhile
                    with self.accounts:
                        pass
            time.sleep(0.05)

    def update_ledger(self) -> None:
        self.seen += 1
        with self.accounts:
            if self.seen >= self.after:
                time.sleep(0.5)  # the reconciler takes the orders meanwhile
            with self.orders:
                pass


def _memory_cgroup() -> str | None:
    for line in open("/proc/self/cgroup"):
        _, controllers, path = line.rstrip("\n").split(":", 2)
        if "memory" in controllers.split(","):
            return "/sys/fs/cgroup/memory" + path
        if controllers == "" and os.path.exists(f"/sys/fs/cgroup{path}/memory.max"):
            return "/sys/fs/cgroup" + path
    return None


def fill_memory_cgroup(held: bytearray, left_mb: float) -> list:
    """Allocate 1 MiB chunks until anonymous memory is within left_mb of the cgroup limit."""
    root = _memory_cgroup()
    if root is None:
        raise SystemExit("--fill-cgroup: not in a memory cgroup")
    v1 = os.path.exists(f"{root}/memory.limit_in_bytes")
    limit = int(open(f"{root}/memory.limit_in_bytes" if v1 else f"{root}/memory.max").read())
    chunks = [held]

    def anon() -> int:
        for line in open(f"{root}/memory.stat"):
            key, value = line.split()
            if key == ("rss" if v1 else "anon"):
                return int(value)
        return 0

    while anon() < limit - left_mb * (1 << 20):
        chunk = bytearray(1 << 20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        chunks.append(chunk)
    return chunks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("broker", choices=brokers.KINDS)
    ap.add_argument("name")
    ap.add_argument("--group", default=None)
    ap.add_argument("--prefetch", type=int, default=50, help="RabbitMQ prefetch / Kafka max_poll_records / stream COUNT")
    ap.add_argument("--work-ms", type=float, default=0.0)
    ap.add_argument("--sleep-ms", type=float, default=0.0)
    ap.add_argument("--http", default=None)
    ap.add_argument("--http-timeout", type=float, default=10.0)
    ap.add_argument("--deadlock-after", type=int, default=None)
    ap.add_argument("--poison", action="store_true")
    ap.add_argument("--retry-backoff-ms", type=float, default=50.0)
    ap.add_argument("--never-ack", action="store_true")
    ap.add_argument("--nofile", type=int, default=None)
    ap.add_argument("--leak-fds", action="store_true")
    ap.add_argument("--hold-mb", type=int, default=0)
    ap.add_argument("--churn-mb", type=float, default=0.0)
    ap.add_argument("--fill-cgroup", type=float, default=None)
    ap.add_argument("--leak-mb", type=float, default=0.0)
    ap.add_argument("--fsync", type=int, default=0)
    args = ap.parse_args()
    # SIGTERM unwinds normally, so clients close their connections (a Kafka
    # consumer leaves its group) when the harness stops the workload.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    if args.nofile:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    held = bytearray(args.hold_mb << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1  # touch every page so it is resident
    if args.fill_cgroup is not None:
        held = fill_memory_cgroup(held, args.fill_cgroup)
    leaked = []
    deadlock = Deadlock(args.deadlock_after) if args.deadlock_after is not None else None
    churn = tempfile.TemporaryFile(dir="/var/tmp") if args.churn_mb else None
    chunk = os.urandom(1 << 20)
    journal = tempfile.TemporaryFile(dir="/var/tmp") if args.fsync else None

    def handle(body: bytes) -> str:
        try:
            doc = parse(body)
        except PoisonMessage:
            if args.poison:
                return "retry"
            raise
        if args.leak_fds:
            try:
                leaked.append(open("/dev/null", "rb"))
            except OSError:  # EMFILE: the message cannot be processed now
                time.sleep(0.05)
                return "retry"
        if args.work_ms:
            score_document(doc, args.work_ms)
        if args.sleep_ms:
            write_audit_record(args.sleep_ms)
        if args.http:
            try:
                call_pricing_service(args.http, args.http_timeout)
            except (urllib.error.URLError, OSError, TimeoutError):
                time.sleep(args.retry_backoff_ms / 1000.0)  # back off (or not), then the message is retried
                return "retry"
        if journal is not None:
            append_to_journal(journal, body, args.fsync)
        if args.leak_mb:
            block = bytearray(int(args.leak_mb * (1 << 20)))
            for i in range(0, len(block), 4096):
                block[i] = 1
            leaked.append(block)
        if churn is not None:
            churn.seek(0)
            for _ in range(max(1, int(args.churn_mb))):
                churn.write(chunk)
            churn.flush()
        if deadlock is not None:
            deadlock.update_ledger()
        if args.never_ack:
            return "hold"  # the bug: the handler returns without acknowledging
        return "ack"

    if args.broker == "rabbitmq":
        brokers.consume_rabbitmq(args.name, handle, args.prefetch)
    elif args.broker == "kafka":
        brokers.consume_kafka(args.name, args.group, handle, args.prefetch)
    elif args.broker == "redis-stream":
        brokers.consume_redis_stream(args.name, args.group, handle, args.prefetch, claim=not args.never_ack)
    else:
        brokers.consume_redis_list(args.name, handle)
    del held


if __name__ == "__main__":
    main()
