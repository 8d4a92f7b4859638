"""qdiag check's judgement on snapshots built here (pure: no broker).  The
record fields are the ones the broker probes write; which probes measure
queues comes from their registrations."""

from __future__ import annotations

import pytest

from qdiag.check import evaluate as ev
from qdiag.check import policy as pol
from qdiag.report.build import build_report


def snapshot(records=(), *, probe="rabbitmq", status="ok", queues=(), targets=None, extra_probes=(), obs=None):
    observations = {"queues": list(records), **(obs or {})}
    given = {"queues": list(queues), "groups": [], probe: "x://broker"}
    given.update(targets or {})
    return {"created_at": "2024-01-01T00:00:00Z", "host": {"hostname": "h"}, "window_s": 1.0,
            "settings": {"targets": given},
            "probes": [{"name": probe, "status": status, "error": None if status == "ok" else "it failed",
                        "observations": observations if status == "ok" else {}}, *extra_probes]}


def rabbit(name="orders", **fields):
    rec = {"system": "rabbitmq", "name": name, "queue": name, "vhost": "/", "group": None, "depth": 500,
           "messages_ready": 500, "consumers": 0, "rate_in": 0.0, "rate_out": 0.0, "status": "no-consumers",
           "depth_settled": True, "depth_bounds": [500, 500], "depth_trend": None, "depth_samples": [500, 500, 500]}
    rec.update(fields)
    return rec


def check(snap, queue_filter=None, **flags):
    policy = pol.merge_flags(pol.Policy(), flags)
    report = build_report(snap, [])
    if queue_filter is None:
        queue_filter = tuple(snap["settings"]["targets"]["queues"])
    return ev.evaluate(report, snap, policy, queue_filter)


def lines(results):
    return {r.name: r for r in results}


# ---------------------------------------------------------------- --must-drain


def test_a_backlog_that_moves_nothing_is_not_draining():
    # 500 ready, nothing in, nothing out: 0 >= 0 used to pass.
    [r] = check(snapshot([rabbit()]), min_draining=True)
    assert (r.status, r.value) == (ev.CRITICAL, 0.0)


@pytest.mark.parametrize("fields, expected", [
    ({"rate_in": 2.0, "rate_out": 5.0}, ev.OK),
    ({"rate_in": 5.0, "rate_out": 2.0}, ev.CRITICAL),
    ({"depth": 0, "messages_ready": 0, "depth_bounds": [0, 0]}, ev.OK),  # empty: nothing to drain
    ({"rate_in": None, "rate_out": None, "depth_trend": "shrinking"}, ev.OK),
    ({"rate_in": None, "rate_out": None, "depth_trend": "flat"}, ev.CRITICAL),
    # The probe says its samples cannot show a trend over this window: not known.
    ({"rate_in": None, "rate_out": None, "depth_trend": None}, ev.UNKNOWN),
    # A stale zero is not an empty queue.
    ({"depth": 0, "depth_settled": False, "depth_bounds": [None, None], "depth_settled_why": "stale"}, ev.UNKNOWN),
])
def test_draining(fields, expected):
    [r] = check(snapshot([rabbit(**fields)]), min_draining=True)
    assert r.status == expected, r.message


def test_draining_from_depth_samples_when_the_probe_has_no_trend_word():
    rec = {"system": "redis", "name": "jobs", "depth": 30, "depth_samples": [30, 30], "status": "ok"}
    [r] = check(snapshot([rec], probe="redis"), min_draining=True)
    assert r.status == ev.CRITICAL
    rec["depth_samples"] = [40, 30]
    [r] = check(snapshot([rec], probe="redis"), min_draining=True)
    assert r.status == ev.OK


# ---------------------------------------------------------------- settled or not


@pytest.mark.parametrize("bounds, warn, crit, expected", [
    ([None, None], None, 100, ev.UNKNOWN),
    ([500, None], None, 100, ev.CRITICAL),  # at least 500 is past 100 whatever the rest
    ([3, 23], None, 100, ev.OK),  # at most 23
    ([3, None], None, 100, ev.UNKNOWN),  # a consumer without prefetch limit may hold any number
    ([50, 150], 40, 100, ev.UNKNOWN),  # WARNING or CRITICAL: not known which
    ([50, 90], 40, 100, ev.WARNING),
])
def test_an_unsettled_depth_is_judged_on_its_bounds(bounds, warn, crit, expected):
    rec = rabbit(depth=10, depth_settled=False, depth_bounds=bounds, depth_settled_why="statistics 5s old")
    [r] = check(snapshot([rec]), warn_depth=warn, max_depth=crit)
    assert r.status == expected, r.message
    assert "statistics 5s old" in r.message


def test_a_settled_depth_is_judged_as_is():
    [r] = check(snapshot([rabbit()]), max_depth=100)
    assert (r.status, r.value) == (ev.CRITICAL, 500)
    assert r.message == "rabbitmq:orders depth = 500 (crit > 100)"


def test_consumers_from_old_statistics_are_unknown_unless_bounds_decide():
    rec = rabbit(consumers=1, consumers_settled=False, consumers_settled_why="no exact count: refused")
    [r] = check(snapshot([rec]), min_consumers=1)
    assert r.status == ev.UNKNOWN and "refused" in r.message


# ---------------------------------------------------------------- perfdata


def test_perfdata_writes_minimums_as_ranges():
    results = check(snapshot([rabbit(consumers=0)]), min_consumers=2, max_depth=1000)
    perf = ev.perfdata(results)
    assert "'rabbitmq:orders consumers'=0;;2:;0;" in perf
    assert "'rabbitmq:orders depth'=500;;1000;0;" in perf


def test_perfdata_warn_minimum():
    snap = snapshot([rabbit(consumers=1)])
    policy = pol.from_table({"warn_consumers": 3, "min_consumers": 1}, str)
    results = ev.evaluate(build_report(snap, []), snap, policy, ("orders",))
    assert ev.perfdata(results) == "'rabbitmq:orders consumers'=1;3:;1:;0;"


# ---------------------------------------------------------------- which queues


def test_a_job_list_named_by_its_key_is_checked():
    # The user names the list as Redis has it; the probe names the queue as RQ does.
    rec = {"system": "redis", "name": "jobs", "key": "rq:queue:jobs", "layout": "rq", "depth": 30, "status": "ok"}
    [r] = check(snapshot([rec], probe="redis", queues=["rq:queue:jobs"]), max_depth=10)
    assert (r.name, r.status) == ("redis:jobs depth", ev.CRITICAL)


def test_unnamed_queues_are_all_checked_and_context_queues_are_not():
    named = rabbit("orders", selected_because=["named"])
    context = rabbit("other", selected_because=["deepest"])
    results = check(snapshot([named, context], queues=["orders"]), max_depth=100)
    assert [r.name for r in results] == ["rabbitmq:orders depth"]
    results = check(snapshot([named, context]), max_depth=100)
    assert sorted(r.name for r in results) == ["rabbitmq:orders depth", "rabbitmq:other depth"]


def test_a_name_no_broker_has_is_unknown_naming_the_brokers_searched():
    results = check(snapshot([rabbit("orders")], queues=["orders", "orders-typo"]), max_depth=1000)
    by_name = lines(results)
    assert by_name["rabbitmq:orders depth"].status == ev.OK
    missing = by_name["queue orders-typo"]
    assert missing.status == ev.UNKNOWN and "'orders-typo' on rabbitmq" in missing.message


def test_a_name_found_on_one_broker_is_not_missing_because_another_lacks_it():
    redis_probe = {"name": "redis", "status": "ok", "error": None, "observations": {"queues": [], "not_found": [
        {"kind": "queue", "name": "orders"}]}}
    results = check(snapshot([rabbit("orders")], queues=["orders"], extra_probes=[redis_probe],
                             targets={"redis": "redis://x"}), max_depth=1000)
    assert [r.status for r in results] == [ev.OK]


def test_no_broker_probed_says_which_flags_to_give():
    snap = snapshot(status="not_applicable")
    snap["settings"]["targets"]["rabbitmq"] = None
    [r] = check(snap, max_depth=10)
    assert r.status == ev.UNKNOWN and "give --kafka, --rabbitmq or --redis" in r.message


def test_a_given_broker_that_could_not_apply_says_why():
    snap = snapshot(status="not_applicable")
    snap["probes"][0]["error"] = "an amqp:// URL cannot list queues: give --queue NAME"
    [r] = check(snap, max_depth=10)
    assert r.status == ev.UNKNOWN and "amqp:// URL cannot list queues" in r.message
    assert "--kafka" not in r.message


def test_a_failed_broker_probe_is_unknown_and_a_host_probe_is_not_a_queue_probe():
    host = {"name": "host", "status": "error", "error": "no /proc", "observations": {}}
    results = check(snapshot([rabbit(depth=1, depth_bounds=[1, 1])], extra_probes=[host]), max_depth=10)
    assert [r.status for r in results] == [ev.OK]
    results = check(snapshot(status="error"), max_depth=10)
    assert [(r.name, r.status) for r in results] == [("rabbitmq probe", ev.UNKNOWN)]
