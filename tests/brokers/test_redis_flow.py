"""Inflow and outflow of Redis job lists (probes/_redis_flow.py) against the
rig's real Redis: a producer and a worker thread at known rates, each
layout's push and pop ends as its library uses them, elements unique as in
the real layouts.  Tolerances are wide: the assertion is that the probe
counts what the threads did, not the threads' pacing on a busy machine."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
import redis

from tests.brokers.test_redis_probe import TEST_DB, made, r, record, run_probe, uid, url  # noqa: F401 (fixtures)
from qdiag import targets as tg

pytestmark = pytest.mark.broker

SEP = "\x06\x16"


class Traffic:
    """A producer and a worker thread, each paced at its own rate and counting what it did."""

    def __init__(self, url, push, pop, rate_in: float, rate_out: float):
        self.url, self.push, self.pop = url, push, pop
        self.rate_in, self.rate_out = rate_in, rate_out
        self.pushed = self.popped = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(self._produce, rate_in), daemon=True),
                        threading.Thread(target=self._loop, args=(self._consume, rate_out), daemon=True)]

    def _produce(self, c):
        self.push(c, f"{uuid.uuid4().hex}-{self.pushed}")
        self.pushed += 1

    def _consume(self, c):
        if self.pop(c) is not None:
            self.popped += 1

    def _loop(self, step, rate):
        c = redis.Redis.from_url(self.url, protocol=2)
        tick = time.monotonic()
        while not self.stop.is_set():
            step(c)
            tick = max(tick + 1.0 / rate, time.monotonic() - 0.5)
            time.sleep(max(0.0, tick - time.monotonic()))
        c.close()

    def __enter__(self):
        self.began = time.monotonic()
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.span = time.monotonic() - self.began

    def rates(self) -> tuple[float, float]:
        return self.pushed / self.span, self.popped / self.span


def _bind(r, made, q):
    """kombu's binding set for queue q on an exchange of the same name (Celery's default)."""
    r.sadd(made.key(f"_kombu.binding.{q}"), f"{q}{SEP}{SEP}{q}")


def _prefill(r, key, jobs, at_head: bool):
    (r.lpush if at_head else r.rpush)(key, *jobs)


def _close(measured, actual, tolerance=0.4):
    return abs(measured - actual) <= tolerance * actual


def _celery_job(tag):
    return json.dumps({"body": "e30=", "headers": {"task": "app.add", "id": tag},
                       "properties": {"delivery_tag": tag, "delivery_info": {"routing_key": "celery"}}})


LAYOUTS = {
    # layout: (list key for queue Q, push at head?, job payload, registry setup)
    "celery": (lambda q: q, True, _celery_job),
    "rq": (lambda q: f"rq:queue:{q}", False, lambda tag: tag),
    "sidekiq": (lambda q: f"queue:{q}", True, lambda tag: json.dumps({"class": "Job", "jid": tag, "enqueued_at": time.time()})),
    "dramatiq": (lambda q: f"dramatiq:{q}", False, lambda tag: tag),
    "list": (lambda q: q, True, lambda tag: json.dumps({"n": tag})),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_exact_rates_for_each_layout(url, r, made, layout):
    """Producer at 60/s, worker at 25/s, a backlog so the newest job at each
    sample is still there at the next: exact counts, both rates close to what
    the threads did, and the record's status says growing."""
    key_of, at_head, job = LAYOUTS[layout]
    q = uid(f"qdt_flow_{layout}")
    key = made.key(key_of(q))
    if layout == "celery":
        _bind(r, made, q)
    _prefill(r, key, [job(f"pre-{i}") for i in range(80)], at_head)

    def push(c, tag):
        (c.lpush if at_head else c.rpush)(key, job(tag))

    def pop(c):
        return (c.rpop if at_head else c.lpop)(key)

    with Traffic(url, push, pop, rate_in=60, rate_out=25) as traffic:
        time.sleep(0.3)
        out = run_probe(url, window=2.0, queues=[q if layout != "list" else key], options={"samples": 3})
    actual_in, actual_out = traffic.rates()
    rec = record(out, q if layout != "list" else key, layout=layout)
    assert rec["flow_exact"] is True, rec["rate_source"]
    assert "exact" in rec["rate_source"]
    assert _close(rec["rate_in"], actual_in), (rec["rate_in"], actual_in)
    assert _close(rec["rate_out"], actual_out), (rec["rate_out"], actual_out)
    assert rec["jobs_pushed"] - rec["jobs_taken"] == rec["depth_samples"][-1] - rec["depth_samples"][0]
    assert rec["status"] == "WARN" and "in," in rec["status_reason"]


def test_rates_are_lower_bounds_when_workers_take_everything(url, r, made):
    """A worker waiting in BRPOP takes each job the moment it arrives: the
    list is empty at the samples, nothing to find again, so no exact rate;
    the record says so and keeps what it saw as a lower bound."""
    q = uid("qdt-flowidle")
    key = made.key(q)
    _bind(r, made, q)

    def push(c, tag):
        c.lpush(key, _celery_job(tag))

    def pop(c):
        return c.brpop([key], timeout=0.2)

    with Traffic(url, push, pop, rate_in=20, rate_out=1000):
        time.sleep(0.2)
        out = run_probe(url, window=1.5, queues=[q], options={"samples": 3})
    rec = record(out, q, layout="celery")
    assert rec["flow_exact"] is False
    assert rec["rate_in"] is None and rec["rate_out"] is None
    assert rec["rate_in_min"] is not None and rec["rate_in_min"] >= 0
    assert "lower bounds" in rec["rate_source"]


def test_more_pushes_than_maxlen_is_a_lower_bound(url, r, made):
    """With flow_maxlen below what is pushed between two samples, LPOS gives up:
    the counts are lower bounds, never a wrong exact number."""
    q = uid("qdt-flowmax")
    key = made.key(f"rq:queue:{q}")
    r.rpush(key, *[f"pre-{i}" for i in range(50)])

    def push(c, tag):
        c.rpush(key, tag)

    with Traffic(url, push, lambda c: None, rate_in=80, rate_out=1):
        time.sleep(0.2)
        out = run_probe(url, window=1.5, queues=[q], options={"samples": 3, "flow_maxlen": 5})
    rec = record(out, q, layout="rq")
    assert rec["flow_exact"] is False and "more than 5 jobs pushed" in rec["rate_source"]
    assert rec["jobs_pushed"] >= 5  # what was seen: at least MAXLEN new jobs per interval


def test_lpos_refused_means_rates_unknown(url, r, made):
    """A server without LPOS (Redis before 6.0.6) or a user who may not run it:
    the job list has no rates, and the record says why, not zero."""
    q = uid("qdt-flownolpos")
    key = made.key(q)
    _bind(r, made, q)
    r.lpush(key, *[_celery_job(f"j{i}") for i in range(30)])
    user, password = uid("qdt-nolpos"), uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "-@all", "+@read", "-lpos",
                      "+info", "+time", "+client|id", "+client|list", "+memory|doctor", "+select", "+ping")
    try:
        parts = tg.parse_redis(url)
        out = run_probe(f"redis://{user}:{password}@{parts.host}:{parts.port}/{TEST_DB}", window=0.6,
                        queues=[q], options={"samples": 2})
    finally:
        r.execute_command("ACL", "DELUSER", user)
    rec = record(out, q, layout="celery")
    assert rec["rate_in"] is None and rec["rate_out"] is None
    assert "LPOS failed" in rec["rate_source"]
