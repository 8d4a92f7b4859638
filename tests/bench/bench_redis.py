"""Benchmark: one Redis probe run over 2,000 streams.  Not collected by pytest.

    python tests/bench/bench_redis.py [--url redis://127.0.0.1:6379/14] [--streams 2000]
                                      [--filler 0] [--window 5] [--runs 3]

Builds N streams under a unique prefix in a separate database (14 by
default; never 0), each with 20 entries and one consumer group with a lag
and pending entries (a quarter also get a second, idle group), plus 50 RQ
queues, and optionally `--filler` plain string keys (a bigger keyspace for
SCAN to walk).  Then runs the probe `--runs` times and reports, per run: wall
time, the time spent outside the sampling window (the probe's own cost),
round trips and commands, and the bytes the server sent (INFO
total_net_output_bytes delta: server-wide, so other clients' traffic counts
too).  Deletes everything it made.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid

import redis

from qdiag import targets as tg
from qdiag.config import Settings
from qdiag.context import ProbeContext
from qdiag.probes import redis_queues


def build(r: redis.Redis, prefix: str, streams: int, rq_queues: int, filler: int, made: list[str]) -> None:
    """Creates the keys, recording each in `made` first, so a failure half-way still cleans up."""
    pipe = r.pipeline(transaction=False)
    for start in range(0, filler, 1000):
        batch = {f"{prefix}f{i:07d}": "x" for i in range(start, min(filler, start + 1000))}
        made.extend(batch)
        pipe.mset(batch)
    pipe.execute()
    stream_keys = [f"{prefix}s{i:05d}" for i in range(streams)]
    made.extend(stream_keys)
    for i, key in enumerate(stream_keys):
        for n in range(20):
            pipe.xadd(key, {"job": f"payload-{n}", "attempt": 1})
        pipe.xgroup_create(key, "workers", id="0")
        if i % 4 == 0:
            pipe.xgroup_create(key, "audit", id="$")
        if len(pipe) > 2000:
            pipe.execute()
    pipe.execute()
    for i, key in enumerate(stream_keys):  # 5 delivered (pending), 15 undelivered per group
        pipe.xreadgroup("workers", f"c{i % 3}", {key: ">"}, count=5)
        if len(pipe) > 2000:
            pipe.execute()
    pipe.execute()
    for i in range(rq_queues):
        q = f"{prefix}rq{i}"
        made.append(f"rq:queue:{q}")
        pipe.rpush(f"rq:queue:{q}", *[f"{q}-j{n}" for n in range(10)])
        pipe.sadd("rq:queues", f"rq:queue:{q}")
    pipe.execute()


def cleanup(r: redis.Redis, prefix: str, keys: list[str], rq_queues: int) -> None:
    for start in range(0, len(keys), 500):
        r.unlink(*keys[start:start + 500])
    members = [f"rq:queue:{prefix}rq{i}" for i in range(rq_queues)]
    if members:
        r.srem("rq:queues", *members)


def one_run(url: str, window: float) -> tuple[float, dict]:
    settings = Settings(targets=tg.Targets(redis=tg.parse_redis(url)), window_s=window)
    now = time.monotonic()
    ctx = ProbeContext(settings=settings, name="redis", deadline=now + window + 15, window_start=now)
    began = time.perf_counter()
    out = redis_queues.collect(ctx)
    return time.perf_counter() - began, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--streams", type=int, default=2000)
    parser.add_argument("--rq-queues", type=int, default=50)
    parser.add_argument("--filler", type=int, default=0, help="plain string keys added to the keyspace")
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    target = tg.parse_redis(args.url)
    if target.db == 0:
        raise SystemExit("use a separate database for the benchmark, e.g. redis://127.0.0.1:6379/14")
    r = redis.Redis(host=target.host, port=target.port, db=target.db, username=target.username,
                    password=target.password, protocol=2)
    prefix = f"qdbench-{uuid.uuid4().hex[:8]}:"
    keys: list[str] = []
    try:
        began = time.perf_counter()
        build(r, prefix, args.streams, args.rq_queues, args.filler, keys)
        print(f"built {args.streams} streams, {args.rq_queues} RQ queues and {args.filler} other keys in db {target.db} "
              f"in {time.perf_counter() - began:.1f} s (DBSIZE {r.dbsize()})")
        walls, own, bytes_out = [], [], []
        for run in range(args.runs):
            sent_before = r.info("stats")["total_net_output_bytes"]
            wall, out = one_run(args.url, args.window)
            sent = r.info("stats")["total_net_output_bytes"] - sent_before
            mine = [q for q in out["queues"] if q["name"].startswith(prefix) or q["name"].startswith(f"{prefix}rq")]
            groups = [q for q in mine if q["layout"] == "stream"]
            span = out["window"]["span_s"]
            walls.append(wall)
            own.append(wall - span)
            bytes_out.append(sent)
            req = out["requests"]
            scan_calls = sum(p["scan_calls"] for p in (out["discovery"]["scan"] or {}).values() if isinstance(p, dict))
            print(f"run {run + 1}: wall {wall:.2f} s (window span {span:.2f} s, outside it {wall - span:.2f} s), "
                  f"{req['round_trips']} round trips ({scan_calls} SCAN calls), {req['commands']} commands, "
                  f"{sent / 1e6:.1f} MB sent by the server, {len(groups)} group records, "
                  f"{out['window']['samples']} samples, notes: {out['notes'] or 'none'}")
        print(f"median: wall {statistics.median(walls):.2f} s, outside the window {statistics.median(own):.2f} s, "
              f"{statistics.median(bytes_out) / 1e6:.1f} MB")
    finally:
        cleanup(r, prefix, keys, args.rq_queues)
        print(f"cleaned up; DBSIZE {r.dbsize()}")


if __name__ == "__main__":
    main()
