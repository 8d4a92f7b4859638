"""The cheaper ways the RabbitMQ probe lists every queue on large brokers,
against the real broker (the rig runs the rabbitmq_prometheus plugin; the
threshold is lowered so the rig's few queues take the large-broker path)."""

from __future__ import annotations

import pytest

from tests.brokers.test_rabbitmq_probe import (  # noqa: F401 (_rig: the rig's URLs; rig: queues made and removed)
    _rig, rabbitmqctl_queues, record, rig, run_probe)

pytestmark = pytest.mark.broker


@pytest.mark.parametrize("listing", ["totals", "prometheus"])
def test_cheaper_listing_finds_named_and_missing_queues(rig, tmp_path, listing):
    q = rig.queue("listed")
    rig.publish(q, 12)
    typo = rig.name("typo")
    result, _ = run_probe(queues=[q, typo], window=1.0, tmp_path=tmp_path, options={"listing": listing})
    assert result["status"] == "ok", result["error"]
    obs = result["observations"]
    assert obs["broker"]["listing"]["source"] == listing
    assert any(listing in n and "not in this listing" in n for n in obs["notes"])
    rec = record(result, q)
    assert "named" in rec["selected_because"]
    # The record itself still comes from the queue's own detail row and the exact count.
    assert (rec["depth"], rec["depth_settled"]) == (rabbitmqctl_queues()[q]["messages_ready"], True) == (12, True)
    assert obs["not_found"] == [{"kind": "queue", "name": typo}]
    summary = obs["queue_summary"]
    assert summary["queues"] >= 1
    if listing == "totals":
        assert summary["backlog_without_consumers"] is None  # not in that listing: not a 0
    else:
        assert summary["not_running_count"] is None and summary["backlog_without_consumers"] >= 1


def test_auto_takes_the_cheaper_listing_on_a_large_broker(rig, tmp_path):
    q = rig.queue("auto")
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path, options={"large_from_queues": 1})
    listing = result["observations"]["broker"]["listing"]
    assert listing["source"] == "prometheus" and "rabbitmq_prometheus" in listing["why"]
    small, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path, options={"large_from_queues": 10_000_000})
    assert small["observations"]["broker"]["listing"]["source"] == "management"


def test_dead_letter_queue_found_with_the_prometheus_listing(rig, tmp_path):
    dlx = rig.exchange("dlx", "fanout")
    dlq = rig.queue("dlq")
    rig.ch.queue_bind(dlq, dlx)
    q = rig.queue("src", arguments={"x-dead-letter-exchange": dlx})
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path, options={"listing": "prometheus"})
    rec = record(result, q)
    assert [d["name"] for d in rec["dead_letter"]["queues"]] == [dlq]
