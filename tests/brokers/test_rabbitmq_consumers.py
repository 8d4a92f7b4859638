"""Dead RabbitMQ consumers against the real broker: what RabbitMQ does when a
consumer's process or host goes away, and what the probe reports.

- A killed process: the kernel closes its connection, the broker drops the
  consumer at once and requeues its messages; only the queue's statistics keep
  it for up to one interval.  The probe reads the exact counts: no consumer.
- A host that vanished (played by a proxy that goes silent and keeps the
  broker's socket open): with heartbeats on the broker drops the consumer
  after about two heartbeat timeouts; with heartbeats off it keeps it forever,
  holding its messages, and the probe says it cannot tell it from a stuck one
  and how to recover.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from qdiag.probes._rabbitmq_amqp import PassiveClient
from tests.brokers.amqp_proxy import SilentProxy
from tests.brokers.test_rabbitmq_probe import (  # noqa: F401 (_rig: the rig's URLs; rig: queues made and removed)
    STATS_INTERVAL_S, _rig, record, rig, run_probe, wait_for_api)

pytestmark = pytest.mark.broker

CONSUMER = textwrap.dedent("""
    import sys, pika
    port, queue, heartbeat = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", port, credentials=pika.PlainCredentials("guest", "guest"), heartbeat=heartbeat))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    ch.basic_consume(queue, lambda *a: None)   # takes 10 and never acks
    print("consuming", flush=True)
    while True:
        conn.process_data_events(1)
""")


@pytest.fixture
def consumer(tmp_path):
    """Start a consumer process on `port` with `heartbeat`; killed at the end."""
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)
    procs = []

    def start(port, queue, heartbeat):
        proc = subprocess.Popen([sys.executable, str(script), str(port), queue, str(heartbeat)],
                                stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "consuming"
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def exact(queue):
    client = PassiveClient("127.0.0.1", 5672, username="guest", password="guest", vhost="/", tls=False,
                           timeout=lambda: 5.0)
    client.open()
    try:
        got = client.declare(queue)
        return got.ready, got.consumers
    finally:
        client.close()


def held(queue):
    return {queue: {"messages_ready": 40, "messages_unacknowledged": 10, "consumers": 1}}


def test_killed_consumer_is_gone_at_once(rig, consumer, tmp_path):
    q = rig.queue("killed")
    rig.publish(q, 50)
    proc = consumer(5672, q, 60)
    wait_for_api([q], expected=held(q))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    rec = record(result, q)
    # The broker requeued the 10 held messages when the connection closed.
    assert (rec["consumers"], rec["messages_ready"], rec["depth"]) == (0, 50, 50)
    assert rec["depth_settled"] is True and rec["status"] == "no-consumers"
    assert "heartbeat-off" not in rec["findings"]


@pytest.fixture
def vanished(rig, consumer):
    """vanished(stem, heartbeat) -> queue: a consumer holding 10 of the
    queue's 50 messages, whose host then goes away without closing TCP (the
    proxy goes silent, the process is killed)."""
    proxies = []

    def make(stem, heartbeat):
        q = rig.queue(stem)
        rig.publish(q, 50)
        proxy = SilentProxy(5672)
        proxies.append(proxy)
        proc = consumer(proxy.port, q, heartbeat)
        wait_for_api([q], expected=held(q))
        proxy.cut()
        os.kill(proc.pid, signal.SIGKILL)
        return q

    yield make
    for proxy in proxies:
        proxy.close()


def test_vanished_consumer_with_heartbeats_is_dropped_by_the_broker(vanished, tmp_path):
    q = vanished("vanished-hb", 2)
    deadline = time.monotonic() + 40
    while exact(q) != (50, 0) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert exact(q) == (50, 0), "the broker did not drop a consumer that missed its heartbeats"
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    rec = record(result, q)
    assert (rec["consumers"], rec["depth"], rec["status"]) == (0, 50, "no-consumers")


def test_vanished_consumer_without_heartbeats_stays_and_is_reported(vanished, tmp_path):
    q = vanished("vanished-nohb", 0)
    # Past one statistics interval after the consumer connected, so its
    # broker rates (no acks) are in.
    time.sleep(STATS_INTERVAL_S)
    result, _ = run_probe(queues=[q], window=STATS_INTERVAL_S + 0.5, tmp_path=tmp_path)
    rec = record(result, q)
    # The broker still lists it, with the 10 messages it holds: RabbitMQ's
    # own view, which the probe reports as it is...
    assert (rec["consumers"], rec["messages_ready"], rec["messages_unacknowledged"]) == (1, 40, 10)
    assert "prefetch-hoarding" in rec["findings"] and "heartbeat-off" in rec["findings"]
    # ...and says why it cannot be told from a stuck consumer, and how to recover.
    [hb] = rec["consumer_heartbeats"]
    assert hb["heartbeat_s"] == 0
    unverifiable = rec["consumers_unverifiable"]
    assert unverifiable["connections"] == [hb["connection"]]
    assert "heartbeats off" in unverifiable["why"] and "10 unacknowledged" in unverifiable["why"]
    assert any("rabbitmqctl close_connection" in r and hb["connection"] in r for r in unverifiable["recover"])
    assert exact(q) == (40, 1)  # still held after the probe: it changed nothing


def test_connections_are_read_in_pages(rig, tmp_path, monkeypatch):
    from urllib.parse import urlsplit

    import requests

    q = rig.queue("pages")
    urls = []
    original = requests.Session.request

    def spy(self, method, url, *args, **kwargs):
        urls.append((url, kwargs.get("params") or {}))
        return original(self, method, url, *args, **kwargs)

    # A connection of our own, listed by the API before the run (its list trails by a statistics
    # interval): the summary's floor is then at least 1 whatever else the broker serves.
    import time

    import pika

    own = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672, socket_timeout=10))
    try:
        deadline = time.monotonic() + 30
        while not requests.get("http://127.0.0.1:15672/api/connections", auth=("guest", "guest"), timeout=10).json():
            assert time.monotonic() < deadline, "the management API never listed our connection"
            time.sleep(0.5)
        monkeypatch.setattr(requests.Session, "request", spy)
        result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    finally:
        own.close()
    assert result["status"] == "ok", result["error"]
    listings = [params for url, params in urls if urlsplit(url).path == "/api/connections"]
    assert listings, "the connections were not read"
    for params in listings:
        assert (params.get("pagination"), params.get("page_size"), params.get("sort")) == ("true", 500, "state")
    summary = result["observations"]["connections"]
    assert summary["total"] >= summary["read"] >= 1  # at least the rig's own connection
