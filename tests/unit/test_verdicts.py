"""Honest verdicts: "healthy" only when the queues in focus were measured and
nothing scored; "unknown", with the reason and what to give, whenever qdiag
was blind; a backlog seen only in a log is still a backlog."""

from __future__ import annotations

from qdiag.report.build import build_report
from tests.unit.test_diagnosis import (RULES, host, processes, rabbit_queue, rabbitmq, snapshot, target, thread_probe,
                                       threads)


def report(snap):
    return build_report(snap, RULES)


def test_nothing_observed_is_unknown_and_says_what_to_give():
    doc = report(snapshot(host()))
    assert doc["verdict"] == "unknown"
    assert any("no queue was observed" in r and "--queue" in r for r in doc["verdict_reasons"])


def test_no_probe_with_data_is_unknown():
    snap = snapshot()
    snap["probes"] = [{"name": "host", "status": "error", "error": "cannot read /proc", "observations": {}}]
    doc = report(snap)
    assert doc["verdict"] == "unknown" and "cannot read /proc" in doc["verdict_reasons"][0]


def test_a_named_queue_found_on_no_broker_is_unknown_naming_it():
    snap = snapshot(host(), rabbitmq(rabbit_queue("orders", selected_because=[])), queues=["orders-typo"])
    doc = report(snap)
    assert doc["verdict"] == "unknown"
    assert any("'orders-typo'" in r and "rabbitmq" in r for r in doc["verdict_reasons"])


def test_a_named_queue_that_is_measured_and_quiet_is_healthy():
    quiet = rabbit_queue("orders", depth=0, messages_ready=0, rate_in=5.0, rate_out=5.0)
    doc = report(snapshot(host(), rabbitmq(quiet), queues=["orders"]))
    assert doc["verdict"] == "healthy" and doc["verdict_reasons"] == []


def test_a_glob_matching_a_queue_is_found():
    quiet = rabbit_queue("orders-eu", depth=0, messages_ready=0, selected_because=[])
    doc = report(snapshot(host(), rabbitmq(quiet), queues=["orders-*"]))
    assert doc["verdict"] == "healthy"


def test_a_queue_in_focus_not_measured_is_unknown():
    unsettled = rabbit_queue("orders", depth=0, status="UNSETTLED-WORD", status_reason="statistics not settled")
    doc = report(snapshot(host(), rabbitmq(unsettled), queues=["orders"]))
    assert doc["verdict"] == "unknown"
    assert any("rabbitmq:orders was not measured" in r for r in doc["verdict_reasons"])


def test_a_failed_probe_keeps_a_quiet_run_from_being_healthy():
    quiet = rabbit_queue("orders", depth=0, messages_ready=0)
    snap = snapshot(host(), rabbitmq(quiet), queues=["orders"])
    snap["probes"].append({"name": "threads", "status": "timeout", "error": "no answer within 20s",
                           "observations": {}})
    doc = report(snap)
    assert doc["verdict"] == "unknown"
    assert any("threads probe timed out" in r for r in doc["verdict_reasons"])


def _log_probe(count=3, pattern="queue_full"):
    return ("logs", {"patterns": [{"id": pattern, "builtin": True, "count": count,
                                   "first": {"source": "/var/log/app.log", "line": 10},
                                   "last": {"source": "/var/log/app.log", "line": 42},
                                   "samples": ["2026-11-30 works queue_full: dropping job 17"]}]})


def test_an_in_process_queue_full_in_a_log_is_a_backlog_and_the_consumer_side_explains_it():
    """The seed's case: no broker, a worker given by --pid, its log says the queue is full, its
    threads are deadlocked.  Not healthy; the stuck worker explains the full queue."""
    stuck = [{"class": "lock-wait", "where": "worker.py:20", "threads": [1, 2]}]
    proc = threads(4242, counts={"lock-wait": 2, "queue-wait": 1}, stuck=stuck,
                   deadlock={"threads": [1, 2], "suspected": True})
    snap = snapshot(host(), processes(target(4242)), thread_probe(proc), _log_probe(), pids=[4242])
    doc = report(snap)
    assert doc["verdict"] != "healthy"
    assert doc["root_causes"][0]["id"] == "consumer-stuck"
    assert any("queue_full" in r for r in doc["verdict_reasons"])


def test_a_log_symptom_alone_is_not_healthy():
    doc = report(snapshot(host(), _log_probe(count=1)))
    assert doc["verdict"] == "degraded"


def test_a_saturated_host_is_a_step_2_finding_even_with_no_consumer_linked():
    busy = host(cpu={"busy_pct": 99.0, "steal_pct": 0.0, "cores": 2},
                psi={"cpu": {"some": {"avg10": 70.0}}, "memory": {"some": {"avg10": 0.0}},
                     "io": {"full": {"avg10": 0.0}}})
    doc = report(snapshot(busy))
    step2 = doc["steps"][1]
    assert [f["rule"] for f in step2["findings"]] == ["host-saturated-cpu"]
    assert "99% busy" in step2["findings"][0]["text"]
    # A finding, not a root cause on its own.
    assert not doc["root_causes"]


def test_a_quiet_host_has_no_step_2_finding():
    doc = report(snapshot(host()))
    assert doc["steps"][1]["findings"] == [] and "nothing found" in doc["steps"][1]["note"]


def test_a_depth_the_broker_had_not_settled_is_not_a_healthy_zero():
    """The management API trails the queue by a statistics interval: a zero it reports before
    the exact count could be read is no measurement."""
    stale = rabbit_queue("orders", depth=0, messages_ready=0, depth_settled=False,
                         depth_settled_why="no exact count: AMQP unreachable")
    doc = report(snapshot(host(), rabbitmq(stale), queues=["orders"]))
    assert doc["verdict"] == "unknown"
    assert any("not a measurement of now" in r and "AMQP unreachable" in r for r in doc["verdict_reasons"])


def test_the_brokers_own_process_is_not_taken_for_a_consumer():
    """Discovery by host claims every local process connected to the broker, the broker included;
    its threads wait on its controller and clients, which says nothing about the consumers."""
    from tests.unit.test_diagnosis import kafka, kafka_queue

    broker = target(3598, selected=("discovered",), name="java",
                    listening=[{"local": "127.0.0.1:9092"}, {"local": "127.0.0.1:9093"}])
    consumer = target(7, selected=("--pid", "discovered"))
    discovered = [{"pid": 3598, "subject": "kafka:t/g", "via": "kafka member"},
                  {"pid": 7, "subject": "kafka:t/g", "via": "kafka member"}]
    snap = snapshot(host(), processes(consumer, broker), kafka(kafka_queue("t", "g")), discovered=discovered,
                    queues=["t"], groups=["g"], pids=[7])
    from qdiag.diagnosis.facts import join

    joined, _ = join(snap)
    assert joined.consumer_of.get(7) == "kafka:t/g" and 3598 not in joined.consumer_of
    assert joined.focus(3598) is False


def test_a_cause_out_of_focus_does_not_demote_one_in_focus():
    from qdiag.diagnosis import engine
    from qdiag.diagnosis.playbook import Rule

    def hit(cause, kind, strength, facts):
        rule = Rule(id=f"r-{cause}", cause=cause, kind=kind, when="True", weight=1.0, evidence="e")
        return engine.Hit(rule, f"s-{cause}", strength, "e", facts)

    in_focus = hit("undersized-consumer-pool", "queue", 0.8, {"subject": "kafka:t/g", "focus": True})
    aside = hit("slow-dependency", "threads", 0.9, {"queue": {}, "focus": False})
    ranked = engine.rank([in_focus, aside])
    assert ranked[0]["id"] == "undersized-consumer-pool" and ranked[0]["score"] == 0.8
    assert "explained_by" not in ranked[0]


def test_causes_in_focus_rank_before_causes_out_of_focus():
    from qdiag.diagnosis import engine
    from qdiag.diagnosis.playbook import Rule

    def hit(cause, strength, focus):
        rule = Rule(id=f"r-{cause}", cause=cause, kind="queue", when="True", weight=1.0, evidence="e")
        return engine.Hit(rule, f"s-{cause}", strength, "e", {"subject": f"q-{cause}", "focus": focus})

    ranked = engine.rank([hit("consumers-absent", 0.99, False), hit("slow-dependency", 0.4, True)])
    assert [c["id"] for c in ranked] == ["slow-dependency", "consumers-absent"]
    assert ranked[1]["out_of_focus"] is True


def test_an_unmeasured_queue_does_not_silence_the_consumer_side():
    """A depth the broker had not settled is no proof of a backlog, nor of its absence: the
    consumer's own evidence (here its thread waiting on one peer all window) still speaks."""
    from tests.unit.test_kernel_rules import PEER, kernel, with_kernel

    stale = rabbit_queue("orders", depth=0, messages_ready=0, rate_in=None, rate_out=None, depth_settled=False,
                         depth_settled_why="no exact count")
    proc = with_kernel(7, kernel(peer_share=0.9))
    doc = report(snapshot(host(), processes(target(7)), thread_probe(proc), rabbitmq(stale), queues=["orders"],
                          pids=[7]))
    assert doc["root_causes"][0]["id"] == "slow-dependency"
    assert doc["root_causes"][0]["subject"] == f"dependency:tcp://{PEER}"
