"""The RabbitMQ probe's pure logic, on management-API answers recorded from
RabbitMQ 3.10.8 (tests/fixtures/rabbitmq/record.py made them; scenario.json
says what the recording run set up, and the expectations come from there)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from qdiag.probes import _rabbitmq_parse as rp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "rabbitmq"


def load(name):
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def scenario():
    return load("scenario")


@pytest.fixture(scope="module")
def listing():
    return {row["name"]: row for row in load("queues_list")}


@pytest.fixture(scope="module")
def samples():
    return load("samples")


def series(samples, name):
    return [(s[name]["t"], s[name]["row"]) for s in samples]


def last_row(samples, name):
    return samples[-1][name]["row"]


# ---------------------------------------------------------------- limits and fill


def test_full_queue_with_reject_publish(listing, scenario):
    facts = scenario["q.full"]
    row = listing["q.full"]
    lim = rp.limits(row)
    assert lim["max_length"] == facts["max_length"] and lim["max_length_source"] == "argument"
    assert lim["overflow"] == facts["overflow"] and lim["overflow_source"] == "argument"
    assert "refused" in lim["overflow_meaning"] and "nack" in lim["overflow_meaning"]
    assert lim["dead_letter_exchange"] == facts["dead_letter_exchange"]
    # More were published than the limit: the queue stopped at it.
    assert facts["published"] > facts["max_length"] == row["messages_ready"]
    assert rp.fill(row, lim)["fill_ratio"] == 1.0


def test_policy_lower_than_argument_wins(listing, scenario):
    facts = scenario["q.policy"]
    row = listing["q.policy"]
    lim = rp.limits(row)
    assert lim["max_length"] == min(facts["argument_max_length"], facts["policy_max_length"])
    assert lim["max_length_source"] == "policy"
    assert lim["overflow"] == "drop-head" and lim["overflow_source"] == "default"
    assert "oldest" in lim["overflow_meaning"]
    assert rp.fill(row, lim)["fill_ratio"] == pytest.approx(facts["ready"] / facts["policy_max_length"])


def test_byte_limit(listing, scenario):
    facts = scenario["q.bytes"]
    row = listing["q.bytes"]
    lim = rp.limits(row)
    assert lim["max_length"] is None and lim["max_length_bytes"] == facts["max_length_bytes"]
    got = rp.fill(row, lim)
    assert row["message_bytes_ready"] == facts["ready_bytes"]
    assert got["fill_ratio_bytes"] == pytest.approx(facts["ready_bytes"] / facts["max_length_bytes"])
    assert got["fill_ratio"] == got["fill_ratio_bytes"] and got["fill_ratio_messages"] is None


def test_no_limit_means_no_fill_ratio(listing):
    for name in ("q.idle", "q.noconsumer", "q.quorum"):
        row = listing[name]
        assert rp.fill(row, rp.limits(row))["fill_ratio"] is None, name


def test_argument_beats_policy_for_overflow_and_dead_letter_exchange():
    # Checked on 3.10.8: x-overflow=reject-publish under a policy overflow=drop-head
    # rejects publishes; x-dead-letter-exchange beats the policy's exchange.
    row = {"arguments": {"x-overflow": "reject-publish", "x-dead-letter-exchange": "a", "x-max-length": 100},
           "effective_policy_definition": {"overflow": "drop-head", "dead-letter-exchange": "b", "max-length": 60}}
    lim = rp.limits(row)
    assert (lim["overflow"], lim["dead_letter_exchange"], lim["max_length"]) == ("reject-publish", "a", 60)


def test_max_length_zero_is_always_full():
    row = {"arguments": {"x-max-length": 0}, "messages_ready": 0}
    assert rp.fill(row, rp.limits(row))["fill_ratio"] == 1.0


def test_stream_lengths_are_retention_not_fill():
    row = {"type": "stream", "arguments": {"x-max-length-bytes": 1000}, "message_bytes_ready": 5000}
    lim = rp.limits(row)
    assert "retention" in lim["note"] and rp.fill(row, lim)["fill_ratio"] is None


# ---------------------------------------------------------------- rates


def test_measured_rates_match_the_load_that_was_generated(samples, scenario):
    points = [(t, rp.counters(row)) for t, row in series(samples, "q.busy")]
    got = rp.measured_rates(points, stats_interval_s=5.0)
    assert got["reason"] is None
    assert got["window_s"] == pytest.approx(scenario["sample_gap_s"], abs=0.5)
    assert got["rates"]["publish"] == pytest.approx(scenario["publish_per_s"], rel=0.1)
    assert got["rates"]["ack"] == pytest.approx(scenario["ack_per_s"], rel=0.1)


def test_window_shorter_than_stats_interval_gives_no_measured_rate(samples, scenario):
    points = [(t, rp.counters(row)) for t, row in series(samples, "q.busy")]
    got = rp.measured_rates(points, stats_interval_s=scenario["sample_gap_s"] * 2)
    assert got["rates"] is None and "statistics interval" in got["reason"]


def test_unchanged_counters_give_no_measured_rate(samples):
    points = [(t, rp.counters(row)) for t, row in series(samples, "q.noconsumer")]
    assert points[0][1] == points[-1][1]
    got = rp.measured_rates(points, stats_interval_s=5.0)
    assert got["rates"] is None and "did not change" in got["reason"]


def test_counters_going_backwards_give_no_rate():
    got = rp.measured_rates([(0.0, {"publish": 10}), (6.0, {"publish": 2})], 5.0)
    assert got["rates"] is None and "backwards" in got["reason"]


def test_one_sample_gives_no_rate():
    assert rp.measured_rates([(0.0, {"publish": 1})], 5.0)["rates"] is None


def test_rates_off_on_the_broker():
    got = rp.measured_rates([(0.0, {"publish": 1}), (9.0, {"publish": 9})], 5.0, stats_enabled=False)
    assert got["rates"] is None and "rates_mode" in got["reason"]


def test_queue_without_activity_has_no_message_stats_and_zero_counters(listing):
    # The API omits message_stats for a queue that never saw a message.
    row = listing["q.idle"]
    assert "message_stats" not in row
    assert set(rp.counters(row).values()) == {0}
    assert rp.broker_rates(row) == {c: 0.0 for c in rp.COUNTERS}
    assert rp.broker_rates(row, requested=False) is None


def test_broker_rates_from_the_detail_row(samples, scenario):
    rates = rp.broker_rates(last_row(samples, "q.busy"))
    assert rates["publish"] == pytest.approx(scenario["publish_per_s"], rel=0.2)


# ---------------------------------------------------------------- derived figures and status


def derive_for(samples, name, stats_interval_s=5.0):
    rows = series(samples, name)
    row = rows[-1][1]
    lim = rp.limits(row)
    measured = rp.measured_rates([(t, rp.counters(r)) for t, r in rows], stats_interval_s)
    change, window = rp.depth_delta([(t, r.get("messages")) for t, r in rows])
    return rp.derive(ready=row.get("messages_ready"), unacked=row.get("messages_unacknowledged"),
                     messages=row.get("messages"), consumers=row.get("consumers"), state=row.get("state"),
                     lim=lim, fill_info=rp.fill(row, lim), message_bytes_ready=row.get("message_bytes_ready"),
                     measured=measured, broker=rp.broker_rates(row), depth_change=change, depth_window_s=window,
                     stats_interval_s=stats_interval_s)


def test_busy_queue_grows_at_publish_minus_ack(samples, scenario):
    got = derive_for(samples, "q.busy")
    assert got["rate_source"] == "qdiag"
    assert got["net_growth_per_s"] == pytest.approx(scenario["publish_per_s"] - scenario["ack_per_s"], rel=0.2)
    assert got["status"] == "growing"
    assert got["time_to_full_s"] is None  # no limit
    assert got["time_to_drain_s"] is None  # growing never drains


def test_short_window_falls_back_to_broker_rates(samples, scenario):
    got = derive_for(samples, "q.busy", stats_interval_s=scenario["sample_gap_s"] * 2)
    assert got["rate_source"] == "broker"
    assert got["net_growth_source"].startswith("broker")
    assert got["rate_in"] == pytest.approx(scenario["publish_per_s"], rel=0.2)


def test_prefetch_hoarding(samples, scenario):
    facts = scenario["q.hoard"]
    row = last_row(samples, "q.hoard")
    assert row["messages_unacknowledged"] == facts["prefetch"]
    assert row["messages_ready"] == facts["published"] - facts["prefetch"]
    assert [c["prefetch_count"] for c in row["consumer_details"]] == [facts["prefetch"]]
    got = derive_for(samples, "q.hoard")
    assert "prefetch-hoarding" in got["findings"]
    assert "consumers-idle" in got["findings"]  # ready messages wait, nothing delivered in the window
    assert got["status"] == "stuck"


def test_backlog_without_consumers(samples):
    got = derive_for(samples, "q.noconsumer")
    assert got["status"] == "no-consumers" and got["findings"] == ["no-consumers"]


def test_full_queue_status(samples):
    got = derive_for(samples, "q.full")
    assert got["status"] == "full" and got["time_to_full_s"] == 0.0


def test_idle_empty_queue_is_ok(samples):
    got = derive_for(samples, "q.idle")
    assert got["status"] == "ok" and got["time_to_drain_s"] == 0.0


def _derive(**overrides):
    base = dict(ready=100, unacked=0, messages=100, consumers=1, state="running", lim={}, fill_info={},
                message_bytes_ready=None, measured={"rates": None}, broker=None, depth_change=None,
                depth_window_s=None, stats_interval_s=5.0)
    base.update(overrides)
    return rp.derive(**base)


def test_time_to_drain_and_until_full():
    rates = {"publish": 10.0, "deliver_get": 30.0, "ack": 30.0, "redeliver": 0.0, "deliver_no_ack": 0.0, "get_no_ack": 0.0}
    draining = _derive(measured={"rates": rates})
    assert draining["net_growth_per_s"] == -20.0 and draining["time_to_drain_s"] == 5.0
    filling = _derive(measured={"rates": dict(rates, publish=50.0)}, lim={"max_length": 300},
                      fill_info={"fill_ratio": 100 / 300})
    assert filling["net_growth_per_s"] == 20.0 and filling["time_to_full_s"] == 10.0


def test_growing_needs_the_depth_to_rise_too():
    rates = {"publish": 30.2, "deliver_get": 30.0, "ack": 30.0, "redeliver": 0.0, "deliver_no_ack": 0.0, "get_no_ack": 0.0}
    balanced = _derive(measured={"rates": rates}, depth_change=-2, depth_window_s=10.0)
    assert balanced["net_growth_per_s"] > 0 and balanced["status"] == "ok"
    rising = _derive(measured={"rates": rates}, depth_change=3, depth_window_s=10.0)
    assert rising["status"] == "growing"


@pytest.mark.parametrize("change,window,expected", [
    (5, 10.0, "growing"), (-5, 10.0, "shrinking"), (0, 10.0, "flat"), (5, 2.0, None), (None, None, None)])
def test_trend_word(change, window, expected):
    assert rp.trend(change, window, 5.0) == expected


def test_depth_delta_used_when_no_rates():
    got = _derive(depth_change=50, depth_window_s=10.0)
    assert got["net_growth_per_s"] == 5.0 and got["net_growth_source"].startswith("depth")
    short = _derive(depth_change=50, depth_window_s=2.0)
    assert short["net_growth_per_s"] is None


def test_poison_messages():
    rates = {"publish": 0.0, "deliver_get": 10.0, "ack": 1.0, "redeliver": 9.0, "deliver_no_ack": 0.0, "get_no_ack": 0.0}
    got = _derive(measured={"rates": rates})
    assert got["redeliver_ratio"] == 0.9 and "redeliveries-high" in got["findings"]


def test_down_queue_outranks_everything():
    assert _derive(state="minority", consumers=0)["status"] == "down"


def test_unknown_consumer_utilisation_is_not_zero():
    # consumer_utilisation null must stay null: derive never invents it.
    got = _derive()
    assert "consumer_utilisation" not in got


# ---------------------------------------------------------------- selection and names


def test_select_named_deepest_and_full(listing):
    rows = list(listing.values())
    chosen = rp.select(rows, ["q.idle", "qdiag-fixture/q.dl*"], top_n=2)
    vh = "qdiag-fixture"
    assert "named" in chosen[(vh, "q.idle")]
    assert "named" in chosen[(vh, "q.dlq")] and "named" in chosen[(vh, "q.dlq-direct")]
    deepest = sorted(rows, key=lambda r: -r["messages"])[:2]
    for row in deepest:
        assert "deepest" in chosen[(vh, row["name"])]
    assert "nearly full" in chosen[(vh, "q.full")]
    # Named queues come first: a cap on the examined set keeps them.
    assert all("named" in chosen[k] for k in list(chosen)[:3])


def test_missing_patterns(listing):
    rows = list(listing.values())
    assert rp.missing_patterns(rows, ["q.full", "nope", "q.*", "x*"]) == ["nope", "x*"]


@pytest.mark.parametrize("pattern,vhost,name,expected", [
    ("orders", "/", "orders", True),
    ("orders", "shop", "orders", True),
    ("shop/orders", "shop", "orders", True),
    ("shop/orders", "/", "orders", False),
    ("ord*", "/", "orders", True),
    ("ord", "/", "orders", False),
    ("a/b", "/", "a/b", True),
])
def test_matches(pattern, vhost, name, expected):
    assert rp.matches(pattern, vhost, name) is expected


def test_display_name():
    assert rp.display_name("/", "q") == "q" and rp.display_name("shop", "q") == "shop/q"


# ---------------------------------------------------------------- dead letters


def test_fanout_dead_letter_exchange(scenario):
    facts = scenario["q.full"]
    got = rp.dead_letter_queues(exchange=facts["dead_letter_exchange"], routing_key=None,
                                exchange_type=load("exchange_fx.dlx")["type"], bindings=load("bindings_fx.dlx"))
    assert got["queues"] == [facts["dead_letter_queue"]]


def test_direct_dead_letter_exchange_follows_the_routing_key(scenario):
    facts = scenario["q.direct"]
    ex = facts["dead_letter_exchange"]
    kwargs = dict(exchange=ex, exchange_type=load(f"exchange_{ex}")["type"], bindings=load(f"bindings_{ex}"))
    got = rp.dead_letter_queues(routing_key=facts["routing_key"], **kwargs)
    assert got["queues"] == [facts["dead_letter_queue"]]
    candidates = rp.dead_letter_queues(routing_key=None, **kwargs)
    assert set(candidates["queues"]) == {facts["dead_letter_queue"], facts["not_dead_letter_queue"]}
    assert "candidates" in candidates["how"]


def test_missing_dead_letter_exchange(scenario):
    got = rp.dead_letter_queues(exchange=scenario["q.nodlx"]["dead_letter_exchange"], routing_key=None,
                                exchange_type=None, bindings=None)
    assert got["queues"] == [] and "does not exist" in got["how"]


def test_default_exchange_dead_lettering():
    assert rp.dead_letter_queues(exchange="", routing_key="dlq", exchange_type=None, bindings=None)["queues"] == ["dlq"]
    assert rp.dead_letter_queues(exchange="", routing_key=None, exchange_type=None, bindings=None)["queues"] == []


@pytest.mark.parametrize("pattern,key,expected", [
    ("a.*", "a.b", True), ("a.*", "a.b.c", False), ("a.#", "a", True), ("a.#", "a.b.c", True),
    ("#", "anything.at.all", True), ("*.b", "a.b", True), ("*.b", "a.c", False), ("a.b", "a.b", True),
    ("#.c", "a.b.c", True), ("#.c", "a.b", False),
])
def test_topic_matches(pattern, key, expected):
    assert rp.topic_matches(pattern, key) is expected


# ---------------------------------------------------------------- node and connections


def test_node_without_alarms():
    nodes, problems = rp.node_health(load("nodes"))
    node = nodes[0]
    assert node["mem_alarm"] is False and node["disk_free_alarm"] is False
    assert node["fd_ratio"] == pytest.approx(node["fd_used"] / node["fd_total"], abs=1e-3)
    assert problems == []


def test_node_alarms_are_problems():
    raw = copy.deepcopy(load("nodes"))
    raw[0].update(mem_alarm=True, disk_free_alarm=True, fd_used=raw[0]["fd_total"])
    _, problems = rp.node_health(raw)
    assert any("memory alarm" in p for p in problems) and any("disk alarm" in p for p in problems)
    assert any("file descriptors" in p for p in problems)


def test_memory_and_disk_close_to_their_alarms():
    raw = copy.deepcopy(load("nodes"))
    raw[0].update(mem_used=int(raw[0]["mem_limit"] * 0.95), disk_free=int(raw[0]["disk_free_limit"] * 1.5))
    _, problems = rp.node_health(raw)
    assert any("memory at 95%" in p for p in problems) and any("free disk" in p for p in problems)


def test_top_publisher_and_states(scenario):
    conns = load("connections")
    chans = load("channels")["items"]
    # The API writes an empty message_stats as [] (an empty Erlang list).
    assert any(c.get("message_stats") == [] for c in chans)
    got = rp.connection_summary(conns, chans)
    assert got["total"] == len(conns) and got["throttled"] == []
    assert got["top_publishers"][0]["publish_rate"] == pytest.approx(scenario["publish_per_s"], rel=0.2)
    assert len(got["top_publishers"]) == 1  # channels with rate 0 are no publishers


def test_throttled_connections_listed():
    conns = copy.deepcopy(load("connections"))
    conns[0]["state"] = "blocked"
    conns[1]["state"] = "flow"
    got = rp.connection_summary(conns, [])
    assert got["throttled_count"] == 2 and {c["state"] for c in got["throttled"]} == {"blocked", "flow"}
    assert got["by_state"]["blocked"] == 1


def test_severity_orders_worst_first():
    records = [{"status": "ok", "depth": 1000}, {"status": "growing", "depth": 5}, {"status": "full", "depth": 1},
               {"status": "growing", "depth": 50}]
    assert [(r["status"], r["depth"]) for r in sorted(records, key=rp.severity)] == [
        ("full", 1), ("growing", 50), ("growing", 5), ("ok", 1000)]


def test_young_consumer_is_not_called_stuck_on_broker_rates():
    record = {"rate_source": "broker", "findings": ["full", "prefetch-hoarding"], "status": "full",
              "consumer_connections": ["127.0.0.1:5000 -> 127.0.0.1:5672"], "net_growth_per_s": 0.0,
              "depth_change": 0}
    ages = rp.connection_ages([{"name": "127.0.0.1:5000 -> 127.0.0.1:5672", "connected_at": 1_000_000}],
                              now_ms=1_004_000)
    assert ages == {"127.0.0.1:5000 -> 127.0.0.1:5672": 4.0}
    rp.discount_young_consumers(record, ages, stats_interval_s=5.0)
    assert record["findings"] == ["full"] and record["status"] == "full"
    assert "connected 4s ago" in record["rates_settling"]


def test_old_consumer_or_measured_rates_keep_the_finding():
    base = {"findings": ["prefetch-hoarding"], "status": "stuck", "consumer_connections": ["c"],
            "net_growth_per_s": None, "depth_change": None}
    old = dict(base, rate_source="broker")
    rp.discount_young_consumers(old, {"c": 30.0}, stats_interval_s=5.0)
    assert old["findings"] == ["prefetch-hoarding"] and old["status"] == "stuck"
    measured = dict(base, rate_source="qdiag")
    rp.discount_young_consumers(measured, {"c": 1.0}, stats_interval_s=5.0)
    assert measured["status"] == "stuck"  # qdiag's own rates cover the window: no discount


def test_statistics_behind_the_queue_withdraw_stuck():
    assert rp.stats_behind({"deliver_get": 3}, unacked=10).startswith("the broker's statistics count 3 deliveries")
    assert rp.stats_behind({"deliver_get": 50}, unacked=10) is None
    assert rp.stats_behind(None, unacked=10) is None
    record = {"rate_source": "broker", "findings": ["consumers-idle", "prefetch-hoarding"], "status": "stuck",
              "consumer_connections": ["c"], "net_growth_per_s": None, "depth_change": 0,
              "stats_behind": rp.stats_behind({"deliver_get": 0}, unacked=10)}
    rp.discount_young_consumers(record, {"c": 60.0}, stats_interval_s=5.0)
    assert record["findings"] == [] and record["status"] == "ok" and "lag behind" in record["rates_settling"]
