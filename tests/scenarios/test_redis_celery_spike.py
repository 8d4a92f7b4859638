"""A Celery queue on Redis, a real worker attached, producers suddenly twenty
times faster than in a baseline snapshot taken with the same CLI a little
earlier: a traffic spike.  Redis lists keep no counters; the probe counts
pushes and pops exactly by finding the last sample's newest message again
(LPOS), so the baseline comparison works on job lists as on streams.

The queue carries a standing backlog in normal times (a prefill the worker
works through, as batch queues do): a list that workers empty the moment a
job arrives has nothing to find again between two samples, and its rates are
only lower bounds (the report says so).

Run as on-call would: the broker, the queue, the worker's pid; the baseline
with --baseline."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.scenarios.conftest import REDIS_URL, unique, wait_until

pytestmark = [pytest.mark.scenario, pytest.mark.broker]

pytest.importorskip("celery", reason="the Celery scenarios need celery (pip install -e .[test])")


def _queue_record(inv, name):
    import gzip
    import json

    snapshot = json.loads(gzip.decompress(inv.snapshot.read_bytes()))
    redis_obs = next(p["observations"] for p in snapshot["probes"] if p["name"] == "redis")
    return next(q for q in redis_obs["queues"] if q["name"] == name and q["layout"] == "celery")


def test_celery_traffic_spike_against_baseline(redis_db, processes, investigate, expect):
    queue = unique("celery")
    # What kombu creates for the queue (the list, its binding sets): removed afterwards.
    redis_db.keys += [queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}"]
    env = {"SCENARIO_CELERY_QUEUE": queue, "SCENARIO_REDIS": REDIS_URL}
    worker = processes.start("celery_worker.py", "--concurrency", "1", env=env)
    try:
        # The worker takes about 12 tasks/s (80 ms each); producers send 8/s over a backlog of 150.
        producer = processes.start("celery_producer.py", "--rate", "8", "--prefill", "150", "--work-ms", "80", env=env)
        time.sleep(5)  # a few seconds of normal traffic
        baseline = investigate("--redis", REDIS_URL, "--queue", queue, "--pid", str(worker.pid))
        measured = _queue_record(baseline, queue)
        assert measured["flow_exact"] and measured["rate_in"] > 0 and measured["rate_out"] > 0, measured["rate_source"]
        assert baseline.report["verdict"] == "healthy", "the baseline itself is not healthy"
        processes.stop(producer)
        depth = redis_db.r.llen(queue)
        processes.start("celery_producer.py", "--rate", "160", "--work-ms", "80", env=env)
        wait_until(lambda: redis_db.r.llen(queue) >= depth + 300, 30, f"celery queue {queue} to grow by 300")
        inv = investigate("--redis", REDIS_URL, "--queue", queue, "--pid", str(worker.pid), baseline=baseline.snapshot)
        top = expect(inv, "traffic-spike", f"redis:{queue}")
        assert "inflow-far-above-baseline" in top["rules"]
    finally:
        # The prefork pool's child shares the worker's session: none outlives the scenario.
        processes.stop(worker)
        try:
            os.killpg(worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
