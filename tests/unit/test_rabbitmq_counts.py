"""When a RabbitMQ depth is settled: exact counts (passive declare) against the
management API's statistics, and which AMQP listener they are read from.
The listener list is the shape /api/overview returns on RabbitMQ 3.10.8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdiag.probes import _rabbitmq_counts as rc

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rabbitmq"

LISTENERS = [
    {"node": "rabbit@vm", "protocol": "amqp", "ip_address": "::", "port": 5672},
    {"node": "rabbit@vm", "protocol": "clustering", "ip_address": "::", "port": 25672},
    {"node": "rabbit@vm", "protocol": "http", "ip_address": "::", "port": 15672},
]


def row(ready, unacked, consumers, prefetch=None):
    out = {"messages_ready": ready, "messages_unacknowledged": unacked, "consumers": consumers,
           "messages": ready + unacked}
    if prefetch is not None:
        out["consumer_details"] = [{"prefetch_count": p} for p in prefetch]
    return out


# ---------------------------------------------------------------- the listener


def test_listener_from_the_overview():
    assert rc.amqp_endpoint(LISTENERS, "http")[:2] == (5672, False)


def test_https_never_falls_back_to_plaintext_amqp():
    port, tls, why = rc.amqp_endpoint(LISTENERS, "https")
    assert port is None and tls and "plaintext" in why
    tls_listeners = LISTENERS + [{"protocol": "amqp/ssl", "port": 5671}]
    assert rc.amqp_endpoint(tls_listeners, "https")[:2] == (5671, True)


def test_override_and_unknown_listeners():
    assert rc.amqp_endpoint(LISTENERS, "http", 6000)[:2] == (6000, False)
    port, tls, why = rc.amqp_endpoint(None, "http")
    assert (port, tls) == (5672, False) and "default" in why
    assert rc.amqp_endpoint([{"protocol": "http", "port": 15672}], "http")[0] is None


def test_recorded_overview_has_no_listeners_column():
    # The fixture was recorded without `listeners`: the default port is assumed, and said so.
    overview = json.loads((FIXTURES / "overview.json").read_text())
    port, _, why = rc.amqp_endpoint(overview.get("listeners"), "http")
    assert port == 5672 and "default" in why


# ---------------------------------------------------------------- settled or not


def test_statistics_alone_are_never_settled():
    # A burst the statistics have not seen yet: they say 0, and without the
    # exact count that 0 is not a measurement of now.
    out = rc.settle(row(0, 0, 0), None, "connection refused by 127.0.0.1:5672", 5.0)
    assert out["depth"] == 0 and out["depth_settled"] is False
    assert "connection refused" in out["depth_settled_why"] and "5s" in out["depth_settled_why"]
    assert out["depth_bounds"] == [None, None]


def test_exact_ready_count_beats_stale_statistics():
    out = rc.settle(row(0, 0, 0), {"ready": 500, "consumers": 0}, None, 5.0)
    assert (out["depth"], out["messages_ready"], out["depth_settled"]) == (500, 500, True)
    assert out["depth_bounds"] == [500, 500]
    assert out["statistics"]["messages_ready"] == 0  # what the API said, kept for comparison


def test_consumers_that_left_gave_their_messages_back():
    # The statistics still show a consumer holding 40; the queue has none now:
    # those 40 were requeued and are in the exact ready count.
    out = rc.settle(row(60, 40, 1), {"ready": 100, "consumers": 0}, None, 5.0)
    assert (out["depth"], out["messages_unacknowledged"], out["depth_settled"]) == (100, 0, True)


def test_a_consumer_count_already_at_zero_does_not_make_a_stale_unacked_count_current():
    # The broker dropped the consumer (its count in the statistics is 0 already) and
    # requeued its 10 messages; the message counts are from the emission before.
    out = rc.settle(row(40, 10, 0), {"ready": 50, "consumers": 0}, None, 5.0)
    assert (out["depth"], out["messages_unacknowledged"], out["depth_settled"]) == (50, 0, True)
    # Caught up (the same ready count): 2 messages held by a basic.get without ack are real.
    out = rc.settle(row(50, 2, 0), {"ready": 50, "consumers": 0}, None, 5.0)
    assert (out["depth"], out["messages_unacknowledged"]) == (52, 2)


def test_caught_up_statistics_settle_the_unacknowledged_part():
    out = rc.settle(row(16, 4, 1, prefetch=[4]), {"ready": 16, "consumers": 1}, None, 5.0)
    assert (out["depth"], out["depth_settled"], out["depth_settled_why"]) == (20, True, None)
    assert out["depth_bounds"] == [16, 20]


def test_lagging_statistics_with_prefetch_give_bounds():
    out = rc.settle(row(0, 3, 2, prefetch=[10, 10]), {"ready": 7, "consumers": 2}, None, 5.0)
    assert out["depth_settled"] is False
    assert out["depth"] == 10 and out["depth_bounds"] == [7, 27]
    assert "prefetch" in out["depth_settled_why"] and "20" in out["depth_settled_why"]


def test_unlimited_prefetch_leaves_the_upper_bound_open():
    out = rc.settle(row(0, 3, 1, prefetch=[0]), {"ready": 7, "consumers": 1}, None, 5.0)
    assert out["depth_settled"] is False and out["depth_bounds"] == [7, None]
    assert "without a prefetch limit" in out["depth_settled_why"]


@pytest.mark.parametrize("details, consumers, expected", [
    ([{"prefetch_count": 5}, {"prefetch_count": 3}], 2, 8),
    ([{"prefetch_count": 5}], 2, None),  # a consumer the listing does not show
    ([{"prefetch_count": 5}, {"prefetch_count": 0}], 2, None),  # 0 is unlimited
    (None, 1, None),
])
def test_prefetch_bound(details, consumers, expected):
    assert rc.prefetch_bound(details, consumers)[0] == expected


def test_refusals_say_why():
    assert "no longer exists" in rc.exact_reason(404, "NOT_FOUND")
    assert "exclusive" in rc.exact_reason(405, "RESOURCE_LOCKED")
