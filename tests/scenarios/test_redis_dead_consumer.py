"""A Redis stream whose only consumer process was killed (SIGKILL) while it
held pending entries; producers go on.  Redis still lists the consumer, with
its pending entries and a growing idle time, and no client connection is
left for it: the on-call must hear "nobody consumes" (start a consumer, claim
its entries), not "the consumer is stuck".

Run as on-call would: the broker and the stream, nothing else (there is one
group on the stream, so no --group; the consumer is dead, so no --pid).  The
contrast, a consumer that is alive but deadlocked, is
test_scenarios.py::test_redis_stream_consumer_deadlock (consumer-stuck)."""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import REDIS_URL, wait_until

pytestmark = [pytest.mark.scenario, pytest.mark.broker]


def test_redis_stream_consumer_killed_holding_entries(redis_db, processes, investigate, expect):
    key = redis_db.stream("killed")
    processes.start("producer.py", "redis-stream", key, "--rate", "40")
    # 50 ms per entry, batches of 20: the consumer always holds entries it has not acknowledged.
    consumer = processes.start("consumer.py", "redis-stream", key, "--group", "workers", "--sleep-ms", "50",
                               "--prefetch", "20")
    wait_until(lambda: redis_db.r.xpending(key, "workers")["pending"] >= 5, 30, "the consumer to hold pending entries")
    consumer.proc.kill()  # SIGKILL: no clean-up, the entries stay pending with the dead consumer
    consumer.proc.wait(10)
    redis_db.wait_stream_backlog(key, "workers", 100)
    inv = investigate("--redis", REDIS_URL, "--queue", key)
    top = expect(inv, "consumers-absent", f"redis:{key}/workers")
    assert "redis-stream-consumers-gone" in top["rules"]
    assert any("XAUTOCLAIM" in m for m in top["mitigations"]["immediate"])
    assert inv.report["verdict"] == "critical"
