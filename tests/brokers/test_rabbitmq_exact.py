"""Exact RabbitMQ counts against the real broker: the management API's figures
trail the queue by up to one statistics interval (5 s on the rig), so the
probe reads the examined queues' ready and consumer counts with a passive
queue.declare, and says when it could not (`depth_settled: false`).

A broker that takes the request and never answers is played by a proxy in
front of the real AMQP port that stops relaying once it sees a queue.declare
(the connection stays open, as with a queue process that is busy)."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.brokers.amqp_proxy import SilentProxy
from tests.brokers.test_rabbitmq_probe import (  # noqa: F401 (_rig: the rig's URLs; rig: queues made and removed)
    Rig, _rig, record, rig, run_probe, wait_for_api)

pytestmark = pytest.mark.broker


@pytest.fixture
def frozen_broker():
    proxy = SilentProxy(5672, on_declare=True)
    yield proxy
    proxy.close()


def test_a_burst_is_counted_at_once(rig, tmp_path):
    q = rig.queue("burst")
    # The statistics have seen the queue empty...
    wait_for_api([q], expected={q: {"messages_ready": 0, "messages_unacknowledged": 0, "consumers": 0}})
    rig.publish(q, 500)
    # ...and the probe looks within a second of the burst.
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    assert result["status"] == "ok", result["error"]
    rec = record(result, q)
    assert (rec["depth"], rec["messages_ready"], rec["consumers"]) == (500, 500, 0)
    assert rec["depth_settled"] is True and rec["depth_settled_why"] is None
    assert rec["status"] == "no-consumers"
    assert "passive queue.declare" in rec["counts_source"]
    # What the statistics said at the same moment is kept beside it (0 until they refresh).
    assert rec["statistics"]["messages_ready"] in (0, 500)


def test_consumer_count_is_exact(rig, tmp_path):
    q = rig.queue("consumed")
    rig.publish(q, 10)
    rig.consumer(q, prefetch=3)
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    rec = record(result, q)
    assert (rec["messages_ready"], rec["consumers"]) == (7, 1)
    if rec["depth_settled"]:
        assert rec["depth"] == 10
    else:  # the statistics had not caught up: the bounds still hold the truth
        low, high = rec["depth_bounds"]
        assert low == 7 and (high is None or high >= 10) and "prefetch" in rec["depth_settled_why"]


def test_without_exact_counts_the_depth_is_not_settled(rig, tmp_path):
    q = rig.queue("stale")
    rig.publish(q, 5)
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path, options={"exact_counts": False})
    rec = record(result, q)
    assert rec["depth_settled"] is False and "exact_counts = false" in rec["depth_settled_why"]
    assert rec["counts_source"] == "management statistics"
    assert any("no exact counts" in n for n in result["observations"]["notes"])


def test_a_passive_declare_without_answer_is_bounded(rig, frozen_broker, tmp_path):
    q = rig.queue("hung")
    other = rig.queue("hung-too")
    rig.publish(q, 5)
    began = time.monotonic()
    result, _ = run_probe(queues=[q, other], window=1.0, tmp_path=tmp_path,
                          options={"amqp_port": frozen_broker.port, "amqp_timeout_s": 1.0})
    took = time.monotonic() - began
    assert frozen_broker.silent.is_set(), "the proxy never saw a queue.declare"
    assert result["status"] == "ok", result["error"]
    for name in (q, other):
        rec = record(result, name)
        assert rec["depth_settled"] is False
        assert "no answer" in rec["depth_settled_why"] and "1.0s" in rec["depth_settled_why"]
    # One call's timeout for all queues, not one per queue; a wide hang guard.
    assert took < 30


def test_amqp_mode_hung_declare_is_one_line_error(frozen_broker, tmp_path):
    name = f"qdiag-test.hung.{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    result, _ = run_probe(url=f"amqp://guest:guest@127.0.0.1:{frozen_broker.port}/%2F", queues=[name],
                          window=1.0, tmp_path=tmp_path, options={"amqp_timeout_s": 1.0})
    assert result["status"] == "error" and "\n" not in result["error"]
    assert "no answer" in result["error"] and "queue.declare" in result["error"]
    assert time.monotonic() - began < 30  # a hang guard


def test_unknown_vhost_leaves_that_vhost_unsettled(tmp_path):
    # A queue listed by the API in a vhost the user cannot open over AMQP is
    # played by a vhost the test makes and then forbids itself.
    vhost = f"qdiag-test-noamqp-{uuid.uuid4().hex[:8]}"
    rig = Rig(vhost=vhost)
    try:
        q = rig.queue("locked")
        rig.publish(q, 3)
        import requests
        from urllib.parse import quote

        from tests.brokers import test_rabbitmq_probe as base

        requests.delete(f"{base.API}/permissions/{quote(vhost, safe='')}/guest", auth=("guest", "guest"),
                        timeout=30).raise_for_status()
        result, _ = run_probe(queues=[f"{vhost}/{q}"], window=1.0, tmp_path=tmp_path)
        [rec] = [r for r in result["observations"]["queues"] if r["vhost"] == vhost]
        assert rec["depth_settled"] is False and vhost in rec["depth_settled_why"]
    finally:
        rig.close()
