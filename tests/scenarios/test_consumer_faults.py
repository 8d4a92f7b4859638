"""Consumer faults the broker shows only half of, diagnosed as on call: the broker,
the queue, at most the consumer's --pid, never the answer.  Each rule that decides
them follows a mechanism: how RabbitMQ counts redeliveries and acks, what Redis
does with a blocked list pop, what the kernel says a thread waits on."""

from __future__ import annotations

import os
import signal

import pytest

from tests.freezer import frozen
from tests.scenarios.conftest import REDIS_URL, wait_until
from tests.scenarios.test_scenarios import RABBIT, _port

pytestmark = [pytest.mark.scenario, pytest.mark.broker]


def _redelivering(rabbit, q: str) -> bool:
    stats = rabbit.stats(q).get("message_stats") or {}
    return (stats.get("redeliver_details") or {}).get("rate", 0) > 5


def test_rabbitmq_every_message_fails_at_a_dependency_nobody_named(rabbit, processes, investigate, expect):
    """Every call to the downstream service answers 500 at once; the consumer nacks with
    requeue and takes the next delivery straight away.  The broker shows redeliveries at
    the delivery rate and no ack (systemic, not a few poison messages); the kernel shows
    the consumer's thread waiting on one peer besides the broker: that peer."""
    server = processes.start("httpd.py", "--status", "500")
    port = _port(server)
    q = rabbit.queue("all-fail")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--http", f"http://127.0.0.1:{port}/price",
                               "--retry-backoff-ms", "0", "--prefetch", "10")
    rabbit.wait_backlog(q, 40)
    wait_until(lambda: _redelivering(rabbit, q), 30, "the broker to report redeliveries")
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    top = expect(inv, "dependency-failure", f"dependency:tcp://127.0.0.1:{port}")
    assert any("redeliver" in e or "come back" in e for e in top["evidence"]), top["evidence"]
    assert not any(c["id"] == "poison-message" and c["score"] > top["score"] for c in inv.report["root_causes"])


def test_rabbitmq_consumer_that_never_acknowledges(rabbit, processes, investigate, expect):
    """A handler returns without acking: the consumer holds its prefetch, the broker
    sends nothing more, and the consumer's one thread sits idle on the broker's socket."""
    q = rabbit.queue("never-acked")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--never-ack", "--prefetch", "25")
    rabbit.wait_backlog(q, 60)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    top = expect(inv, "consumer-stuck", f"process:{consumer.pid}")
    assert any("idle" in e and "unacknowledged" in e for e in top["evidence"]), top["evidence"]


def test_rabbitmq_workers_wait_for_a_leaked_session_pool(rabbit, processes, investigate, expect):
    """Worker threads borrow sessions from a pool that a rare branch never refills: every
    worker waits to borrow one for ever, on a condition nobody signals.  The downstream
    service is fast; what holds the queue is inside the consumer."""
    server = processes.start("httpd.py")
    q = rabbit.queue("pool-leak")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30")
    consumer = processes.start("session_pool.py", q, f"http://127.0.0.1:{_port(server)}/price")
    consumer.wait_for("pool empty")  # on a loaded machine the leaks take seconds to happen
    rabbit.wait_backlog(q, 80)  # the broker's rates may still show the acks from before the pool emptied
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    top = expect(inv, "consumer-stuck", f"process:{consumer.pid}")
    assert any("never" in e or "without being scheduled" in e for e in top["evidence"]), top["evidence"]


def test_rabbitmq_consumer_stopped_by_a_signal(rabbit, processes, investigate, expect):
    """Someone pressed Ctrl-Z in the consumer's terminal (here: SIGSTOP).  The broker still
    lists the consumer (its heartbeats time out only after a minute) holding its prefetch;
    only the kernel says why: the process is stopped.  No --pid: discovery finds it."""
    q = rabbit.queue("stopped")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--prefetch", "10")
    rabbit.wait_acking(q)
    os.kill(consumer.pid, signal.SIGSTOP)
    try:
        rabbit.wait_backlog(q, 60)
        inv = investigate("--rabbitmq", RABBIT, "--queue", q)
        top = expect(inv, "consumer-stuck", f"process:{consumer.pid}")
        assert "consumer-process-stopped" in top["rules"], top["rules"]
        assert any("state T" in e for e in top["evidence"]), top["evidence"]
    finally:
        os.kill(consumer.pid, signal.SIGCONT)


def test_rabbitmq_consumer_paused_by_the_cgroup_freezer(rabbit, processes, investigate, expect):
    """`docker pause` on the consumer's container: the cgroup freezer holds every thread.  The
    kernel's state letter says S and its system call is the one it was in (it looks idle on the
    broker); only the cgroup says frozen.  No --pid: discovery finds it."""
    q = rabbit.queue("paused")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--prefetch", "10")
    rabbit.wait_acking(q)
    with frozen(consumer.pid, "v2"):
        rabbit.wait_backlog(q, 60)
        inv = investigate("--rabbitmq", RABBIT, "--queue", q)
        top = expect(inv, "consumer-stuck", f"process:{consumer.pid}")
        assert "consumer-process-frozen" in top["rules"], top["rules"]
        assert any("frozen 1" in e for e in top["evidence"]), top["evidence"]


def test_redis_list_workers_listening_on_another_key(redis_db, processes, investigate, expect):
    """The workers were deployed with another queue name: connected, blocked in BRPOP,
    and the list they should drain grows.  No --pid: only the broker's side is given."""
    key = redis_db.list("renamed")
    processes.start("producer.py", "redis-list", key, "--rate", "20")
    processes.start("consumer.py", "redis-list", f"{key}-v2")
    redis_db.wait_list_backlog(key, 60)
    inv = investigate("--redis", REDIS_URL, "--queue", key)
    top = expect(inv, "consumers-absent", f"redis:{key}")
    assert any("blocked" in e and "brpop" in e for e in top["evidence"]), top["evidence"]


def test_redis_stream_consumer_that_never_acknowledges(redis_db, processes, investigate, expect):
    """The consumer reads every entry with XREADGROUP and never XACKs: the lag stays at
    zero (everything is delivered) while the pending list grows by the delivery rate."""
    key = redis_db.stream("never-acked")
    processes.start("producer.py", "redis-stream", key, "--rate", "30")
    processes.start("consumer.py", "redis-stream", key, "--group", "workers", "--never-ack", "--prefetch", "10")
    wait_until(lambda: redis_db.r.xpending(key, "workers")["pending"] >= 150, 30, "the pending list to grow")
    inv = investigate("--redis", REDIS_URL, "--queue", key)
    top = expect(inv, "consumer-stuck", f"redis:{key}/workers")
    assert "redis-stream-entries-never-acknowledged" in top["rules"]
    assert inv.report["verdict"] != "healthy"
