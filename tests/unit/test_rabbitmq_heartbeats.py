"""The connections behind RabbitMQ consumers: heartbeats of stuck queues'
consumers, and which connection pages are read.  Rows have the shape
/api/connections returns on RabbitMQ 3.10.8 (`timeout` is the heartbeat)."""

from __future__ import annotations

from qdiag.probes import _rabbitmq_consumers as rcn
from qdiag.probes import _rabbitmq_parse as rp

NAME = "127.0.0.1:40182 -> 127.0.0.1:5672"


def stuck(**fields):
    rec = {"name": "orders", "findings": ["prefetch-hoarding"], "consumer_connections": [NAME],
           "messages_unacknowledged": 10}
    rec.update(fields)
    return rec


def conn(timeout, name=NAME):
    return {"name": name, "timeout": timeout, "peer_host": "127.0.0.1", "peer_port": 40182, "user": "guest",
            "state": "running"}


def test_heartbeats_off_cannot_be_told_from_stuck_and_say_how_to_recover():
    rec = stuck()
    rcn.heartbeat_findings(rec, {NAME: conn(0)})
    assert rec["findings"] == ["prefetch-hoarding", "heartbeat-off"]
    assert rec["consumer_heartbeats"] == [{"connection": NAME, "peer": "127.0.0.1:40182", "heartbeat_s": 0,
                                           "user": "guest", "state": "running"}]
    info = rec["consumers_unverifiable"]
    assert info["connections"] == [NAME] and "10 unacknowledged" in info["why"]
    assert info["recover"][0].startswith("if nothing runs the consumer at 127.0.0.1:40182 any more: "
                                         f'rabbitmqctl close_connection "{NAME}"')


def test_heartbeats_on_are_listed_without_a_finding():
    rec = stuck()
    rcn.heartbeat_findings(rec, {NAME: conn(60)})
    assert rec["findings"] == ["prefetch-hoarding"] and rec["consumer_heartbeats"][0]["heartbeat_s"] == 60
    assert "consumers_unverifiable" not in rec


def test_only_queues_that_hold_and_move_nothing_are_looked_at():
    rec = stuck(findings=["no-consumers"])
    rcn.heartbeat_findings(rec, {NAME: conn(0)})
    assert "consumer_heartbeats" not in rec
    assert rcn.stuck_connection_names([rec, stuck(), stuck(consumer_connections=[NAME, "b", "c"])], cap=2) == [NAME, "b"]


def test_throttled_pages():
    # Sorted by state: blocked < blocking < closing < flow < running.
    assert not rcn.throttled_pages_done([{"state": "blocked"}, {"state": "flow"}])
    assert rcn.throttled_pages_done([{"state": "flow"}, {"state": "running"}])
    assert rcn.throttled_pages_done([])


def test_connection_summary_of_a_partial_listing():
    rows = [{"name": "a", "state": "blocked"}, {"name": "b", "state": "running"}]
    channels = [{"connection_details": {"name": "p", "peer_host": "10.0.0.1", "peer_port": 1},
                 "message_stats": {"publish_details": {"rate": 50.0}}}]
    got = rp.connection_summary(rows, channels, total=50_000,
                                others=[{"name": "p", "state": "flow", "client_properties": {"product": "pika"}}])
    assert (got["total"], got["read"], got["throttled_count"]) == (50_000, 2, 1)
    assert got["top_publishers"][0]["state"] == "flow" and got["top_publishers"][0]["client"] == "pika"
