"""The built-in rules and the engine on small hand-made snapshots: each
incident's observations (in the probes' real shapes) must rank its cause
first, consequences must rank below what explains them, and facts derived
across probes must join the right things."""

from __future__ import annotations

import copy
import re

import pytest

from qdiag.diagnosis import engine, facts, playbook
from qdiag.diagnosis.taxonomy import CAUSES
from qdiag.report.build import build_report

RULES = playbook.load()


# ---------------------------------------------------------------- snapshot builders

def snapshot(*probes, discovered=(), queues=(), groups=(), pids=()):
    return {
        "schema": "qdiag.snapshot/1", "created_at": "2026-01-01T00:00:00Z", "host": {"hostname": "h"},
        "window_s": 3.0, "discovered": list(discovered),
        "settings": {"targets": {"queues": list(queues), "groups": list(groups), "pids": list(pids)}},
        "probes": [{"name": name, "status": "ok", "observations": obs} for name, obs in probes],
    }


def host(**over):
    doc = {
        "cpu": {"busy_pct": 30.0, "steal_pct": 0.0, "cores": 2},
        "load": {"load1_per_core": 0.5},
        "psi": {"cpu": {"some": {"avg10": 1.0}}, "memory": {"some": {"avg10": 0.0}}, "io": {"full": {"avg10": 0.0}}},
        "memory": {"available_pct": 60.0, "swap_in_pages_per_s": 0.0, "swap_out_pages_per_s": 0.0},
        "oom": {"oom_kill": 0, "kernel_log": {"kills": []}},
        "disks": [{"device": "vda", "busy_pct": 5.0, "await_ms": 0.5}],
        "network": {"interfaces": [], "tcp": {"retrans_ratio": 0.0, "out_segs": 1000},
                    "listen": {"overflows": 0, "drops": 0}, "conntrack": None},
        "files": {"ratio": 0.01}, "window_s": 3.0,
    }
    for key, value in over.items():
        doc[key] = value
    return ("host", doc)


def processes(*targets, top=()):
    return ("process", {"targets": list(targets), "top_cpu": list(top), "ncpu": 2, "window_s": 3.0})


def target(pid, *, cpu=5.0, threads=2, selected=("--pid",), **over):
    doc = {"pid": pid, "name": "python", "selected_by": list(selected), "gone": False, "state": "S",
           "state_at_start": "S", "cpu_percent": cpu, "threads": threads,
           "fds": {"open": 20, "soft_limit": 1024, "ratio": 20 / 1024},
           "cgroup_stats": {"cpu": {"quota_cores": None, "throttled_ratio": None},
                            "memory": {"usage_ratio": None, "failcnt": 0, "oom_kill": 0}},
           "listening": [], "connections": {"remotes": {}}}
    doc.update(over)
    return doc


def rabbit_queue(name, **over):
    doc = {"system": "rabbitmq", "name": name, "queue": name, "vhost": "/", "group": None, "depth": 500,
           "messages_ready": 480, "messages_unacknowledged": 20, "rate_in": 50.0, "rate_out": 50.0,
           "consumers": 1, "fill_ratio": None, "status": "ok", "findings": [], "consumer_prefetch": [50],
           "consumer_utilisation": 0.9, "limits": {"overflow": "drop-head", "max_length": None},
           "rates_broker": {"publish": 50.0, "deliver_get": 50.0, "ack": 50.0, "redeliver": 0.0},
           "redeliver_ratio": 0.0, "selected_because": ["named"]}
    doc.update(over)
    return doc


def rabbitmq(*queues, nodes=(), by_state=None):
    return ("rabbitmq", {"broker": {"target": "http://127.0.0.1:15672", "mode": "management"}, "queues": list(queues),
                         "nodes": list(nodes) or [{"name": "rabbit@h", "mem_alarm": False, "disk_free_alarm": False,
                                                    "mem_ratio": 0.1, "fd_ratio": 0.01, "sockets_ratio": 0.01}],
                         "connections": {"total": 3, "by_state": by_state or {"running": 3}}})


def kafka(*queues, groups=()):
    return ("kafka", {"bootstrap": "127.0.0.1:9092", "queues": list(queues), "groups": list(groups)})


def kafka_queue(topic, group, **over):
    doc = {"system": "kafka", "name": topic, "group": group, "depth": 2000, "rate_in": 150.0, "rate_out": 90.0,
           "consumers": 1, "fill_ratio": None, "status": "WARN", "partitions": 8, "topic_partitions": 8,
           "partitions_per_consumer": 8.0, "lag_trend": "growing", "unowned_partitions": 0, "group_state": "Stable",
           "data_at_risk": False}
    doc.update(over)
    return doc


def redis(*queues, server=None):
    base = {"address": "redis://127.0.0.1:6379/0", "used_memory": 1_000_000, "maxmemory": None,
            "memory_ratio": None, "maxmemory_policy": "noeviction", "oom_errors_delta": 0, "evicted_keys_delta": 0,
            "rejected_connections_delta": 0, "blocked_clients": 1}
    base.update(server or {})
    return ("redis", {"queues": list(queues), "server": base, "clients": {"blocked_count": 1}, "hints": []})


def threads(pid, *, cpu=1.0, counts=None, threads_=(), hot=(), deadlock=None, stuck=(), dumps=3):
    full = {c: 0 for c in ("on-cpu", "lock-wait", "socket-io", "queue-wait", "sleep", "gil-wait", "unknown")}
    full.update(counts or {})
    return {"pid": pid, "name": "python", "runtime": "python", "dumps": dumps, "cpu_percent": cpu, "counts": full,
            "threads_total": sum(full.values()), "threads": list(threads_), "hot_functions": list(hot),
            "stuck": list(stuck), "deadlock": deadlock}


def thread_probe(*procs):
    return ("threads", {"processes": list(procs)})


def dependency(url, *, p50=5.0, errors=0, timeouts=0, kinds=None, statuses=None, samples=3, peers=()):
    return {"url": url, "kind": "http", "host": "127.0.0.1", "port": int(url.split(":")[2].split("/")[0]),
            "peers": list(peers), "samples": samples, "errors": errors, "error_rate": errors / samples,
            "timeouts": timeouts, "error_kinds": kinds or {}, "statuses": statuses or {"200": samples},
            "last_error": None, "latency_ms": {"total": {"p50": p50, "p95": p50, "max": p50},
                                               "ttfb": {"p50": p50, "p95": p50, "max": p50}}}


def ranked(snap, baseline=None):
    return engine.rank(engine.evaluate(RULES, snap, baseline))


def top(snap, baseline=None):
    causes = [c for c in ranked(snap, baseline) if c["score"] >= engine.SCORE_FLOOR]
    assert causes, "no cause above the floor"
    return causes[0]["id"], causes[0]["subject"]


# ---------------------------------------------------------------- one incident per cause

def test_queue_without_consumers():
    snap = snapshot(host(), rabbitmq(rabbit_queue("orders", consumers=0, rate_out=0.0, status="no-consumers")),
                    queues=["orders"])
    assert top(snap) == ("consumers-absent", "rabbitmq:orders")
    report = build_report(snap, RULES)
    assert report["verdict"] == "critical"


def test_kafka_group_without_members():
    snap = snapshot(host(), kafka(kafka_queue("t", "g", consumers=0, group_state="Empty", rate_out=None,
                                              status="STOP")), queues=["t"], groups=["g"])
    assert top(snap) == ("consumers-absent", "kafka:t/g")


def test_deadlocked_consumer_is_stuck():
    deadlock = {"source": "stack-analysis", "confirmed": False, "threads": ["MainThread", "flusher"],
                "evidence": "2 threads waited for a lock in every one of 3 dumps", "where": ["a.py:1", "b.py:2"]}
    snap = snapshot(host(), processes(target(42, cpu=0.0)),
                    rabbitmq(rabbit_queue("orders", rate_out=0.0, findings=["prefetch-hoarding"], status="stuck",
                                          rates_broker={"publish": 50.0, "deliver_get": 0.0, "ack": 0.0})),
                    thread_probe(threads(42, counts={"lock-wait": 2}, deadlock=deadlock)),
                    discovered=[{"pid": 42, "subject": "rabbitmq:orders"}], queues=["orders"], pids=[42])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("consumer-stuck", "process:42")
    # The broker's side of the same incident is filed under the same consumer.
    assert set(cause["rules"]) == {"consumer-deadlock", "rabbitmq-consumers-not-acking"}


def test_cpu_bound_consumer_too_slow_even_with_a_whole_core():
    hot = [{"function": "score", "where": "score (c.py:10)", "samples": 2, "threads": ["MainThread"]},
           {"function": "score", "where": "score (c.py:11)", "samples": 1, "threads": ["MainThread"]}]
    snap = snapshot(host(cpu={"busy_pct": 60.0}), processes(target(7, cpu=98.0, threads=1)),
                    kafka(kafka_queue("t", "g", partitions_per_consumer=2.0, rate_in=80.0, rate_out=30.0)),
                    thread_probe(threads(7, cpu=98.0, counts={"on-cpu": 1}, hot=hot)),
                    queues=["t"], groups=["g"], pids=[7])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("slow-consumer-logic", "process:7")
    assert "score" in cause["evidence"][0] and "3 of 3 dumps" in cause["evidence"][0]


def test_starved_consumer_is_short_of_cpu_not_slow():
    """The same busy consumer, but it gets a third of a core on a saturated host and a whole
    core would keep up: the host's CPU is the cause."""
    hot = [{"function": "score", "where": "score (c.py:10)", "samples": 3, "threads": ["MainThread"]}]
    neighbour = {"pid": 99, "name": "batch", "cpu_percent": 100.0, "is_target": False}
    snap = snapshot(host(cpu={"busy_pct": 100.0, "steal_pct": 0.0}, psi={"cpu": {"some": {"avg10": 70.0}},
                                                                        "memory": {"some": {"avg10": 0}},
                                                                        "io": {"full": {"avg10": 0}}}),
                    processes(target(7, cpu=33.0, threads=1), top=[neighbour]),
                    kafka(kafka_queue("t", "g", rate_in=60.0, rate_out=33.0)),
                    thread_probe(threads(7, cpu=33.0, counts={"on-cpu": 1}, hot=hot)),
                    queues=["t"], groups=["g"], pids=[7])
    assert top(snap) == ("cpu-saturation", "process:7")


def test_throttled_consumer():
    snap = snapshot(host(), processes(target(7, cpu=20.0, cgroup_stats={
        "cpu": {"quota_cores": 0.2, "throttled_ratio": 0.9, "throttled_s": 2.4, "path": "/c"},
        "memory": {"usage_ratio": None, "failcnt": 0, "oom_kill": 0}})),
        rabbitmq(rabbit_queue("q", rate_in=30.0, rate_out=10.0, status="growing")), queues=["q"], pids=[7])
    assert top(snap) == ("cpu-saturation", "process:7")
    # The throttled consumer is busy (at its quota), not idle: no "too few consumers".
    assert all(c["id"] != "undersized-consumer-pool" or c.get("explained_by") for c in ranked(snap))


def test_consumer_oom_killed_in_its_cgroup():
    snap = snapshot(host(oom={"oom_kill": 3, "kernel_log": {"kills": []}}),
                    processes(target(7, cgroup_stats={"cpu": {}, "memory": {
                        "usage_ratio": 0.99, "failcnt": 400, "oom_kill": 3, "limit_bytes": 64 << 20, "path": "/m"}})),
                    redis({"system": "redis", "name": "jobs", "group": None, "layout": "list", "depth": 80,
                           "rate_in": None, "rate_out": None, "consumers": None, "status": "WARN",
                           "depth_trend": "growing", "consumed_in_window": True}),
                    queues=["jobs"], pids=[7])
    assert top(snap) == ("memory-pressure", "process:7")


def test_redis_poison_entries():
    record = {"system": "redis", "name": "s", "group": "g", "layout": "stream", "depth": 10, "pending": 5,
              "rate_in": 20.0, "rate_out": 18.0, "consumers": 1, "consumers_recently_active": 1, "status": "WARN",
              "poison_candidates": [{"id": "1-0", "consumer": "c1", "deliveries": 9, "idle_s": 0.1}],
              "poison_threshold": 3}
    snap = snapshot(host(), redis(record), queues=["s"])
    assert top(snap) == ("poison-message", "redis:s/g")


def test_slow_dependency_named_and_joined_to_the_waiting_threads():
    url = "http://127.0.0.1:8080/price"
    waiting = {"name": "MainThread", "class": "socket-io", "peer": None, "detail": "reading (http client)"}
    snap = snapshot(host(), processes(target(7, cpu=1.0, connections={"remotes": {"127.0.0.1:8080": 1}})),
                    rabbitmq(rabbit_queue("q", rate_in=20.0, rate_out=1.2, status="growing")),
                    thread_probe(threads(7, counts={"socket-io": 1}, threads_=[waiting])),
                    ("dependencies", {"endpoints": [dependency(url, p50=800.0, peers=["127.0.0.1:8080"])]}),
                    queues=["q"], pids=[7])
    causes = ranked(snap)
    assert (causes[0]["id"], causes[0]["subject"]) == ("slow-dependency", f"dependency:{url}")
    assert set(causes[0]["rules"]) == {"dependency-slow-answers", "consumer-threads-wait-on-dependency"}
    undersized = next(c for c in causes if c["id"] == "undersized-consumer-pool")
    assert undersized["explained_by"] == ["slow-dependency"]


def test_failing_dependency():
    url = "http://127.0.0.1:8080/price"
    snap = snapshot(host(), ("dependencies", {"endpoints": [dependency(
        url, errors=3, kinds={"http_5xx": 3}, statuses={"503": 3})]}))
    assert top(snap) == ("dependency-failure", f"dependency:{url}")


def test_queue_at_its_length_limit():
    snap = snapshot(host(), rabbitmq(rabbit_queue(
        "q", fill_ratio=1.0, status="full", findings=["full"], limits={"overflow": "reject-publish", "max_length": 200,
                                                                        "overflow_meaning": "publishers nacked"})),
        queues=["q"])
    assert top(snap) == ("queue-limit-reached", "rabbitmq:q")
    assert build_report(snap, RULES)["verdict"] == "critical"


def test_queue_limit_is_explained_by_its_own_consumers_only():
    """A stuck consumer on another queue does not explain why this one is full."""
    full = rabbit_queue("q", fill_ratio=1.0, status="full", findings=["full"],
                        limits={"overflow": "drop-head", "max_length": 200})
    other = rabbit_queue("other", findings=["consumers-idle"], status="stuck", selected_because=["deepest"])
    causes = ranked(snapshot(host(), rabbitmq(full, other), queues=["q"]))
    assert (causes[0]["id"], causes[0]["subject"]) == ("queue-limit-reached", "rabbitmq:q")
    stuck = next(c for c in causes if c["subject"] == "rabbitmq:other")
    assert stuck.get("out_of_focus") is True and stuck["score"] < causes[0]["score"]


def test_rabbitmq_memory_alarm():
    node = {"name": "rabbit@h", "mem_alarm": True, "disk_free_alarm": False, "mem_ratio": 1.02, "fd_ratio": 0.01,
            "sockets_ratio": 0.01}
    snap = snapshot(host(), rabbitmq(rabbit_queue("q", depth=0), nodes=[node], by_state={"blocked": 2}))
    assert top(snap) == ("broker-resource-alarm", "rabbitmq")


def test_redis_refusing_writes_at_maxmemory():
    snap = snapshot(host(), redis(server={"maxmemory": 8 << 20, "used_memory": 9 << 20, "memory_ratio": 1.1,
                                          "oom_errors_delta": 150}))
    assert top(snap) == ("broker-resource-alarm", "redis")


def test_consumer_out_of_file_descriptors():
    snap = snapshot(host(), processes(target(7, fds={"open": 64, "soft_limit": 64, "ratio": 1.0})),
                    redis({"system": "redis", "name": "jobs", "group": None, "layout": "list", "depth": 80,
                           "rate_in": None, "rate_out": None, "consumers": None, "status": "WARN",
                           "depth_trend": "growing", "consumed_in_window": True}),
                    queues=["jobs"], pids=[7])
    assert top(snap) == ("os-limit-reached", "process:7")


def test_traffic_spike_against_baseline():
    base = snapshot(kafka(kafka_queue("t", "g", depth=0, rate_in=20.0, rate_out=20.0, lag_trend="steady",
                                      status="OK")))
    now = snapshot(host(), kafka(kafka_queue("t", "g", rate_in=300.0, rate_out=110.0, partitions_per_consumer=4.0)),
                   queues=["t"], groups=["g"])
    assert top(now, base) == ("traffic-spike", "kafka:t/g")
    # Without the baseline the same numbers are no spike worth naming first.
    assert top(now)[0] != "traffic-spike"


def test_partition_skew():
    rows = [{"topic": "t", "partition": p, "lag": 1900 if p == 2 else 0, "rate_in": 150.0 if p == 2 else 0.0}
            for p in range(4)]
    snap = snapshot(host(), kafka(kafka_queue("t", "g", consumers=2, partitions=4, topic_partitions=4,
                                              partitions_per_consumer=2.0),
                                  groups=[{"group": "g", "partitions": rows}]), queues=["t"], groups=["g"])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("partition-skew", "kafka:t/g")
    assert "partition 2" in cause["evidence"][0]


def test_undersized_pool_with_idle_consumer():
    snap = snapshot(host(), processes(target(7, cpu=8.0)), kafka(kafka_queue("t", "g")),
                    queues=["t"], groups=["g"], pids=[7])
    assert top(snap) == ("undersized-consumer-pool", "kafka:t/g")


def test_busy_disk():
    snap = snapshot(host(disks=[{"device": "vda", "busy_pct": 99.0, "await_ms": 20.0}]),
                    processes(target(7, state="D")),
                    rabbitmq(rabbit_queue("q", rate_in=60.0, rate_out=20.0, status="growing")), queues=["q"], pids=[7])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("io-saturation", "host")
    # the disk rule, the consumer in disk wait, and the host-wide saturation finding
    assert len(cause["evidence"]) == 3


def test_nic_drops():
    nic = {"name": "eth0", "rx_errors": 0, "tx_errors": 0, "rx_drops": 300, "tx_drops": 0}
    snap = snapshot(host(network={"interfaces": [nic], "tcp": {"retrans_ratio": 0.05, "out_segs": 5000,
                                                               "retrans_per_s": 80.0},
                                  "listen": {"overflows": 0}, "conntrack": None}),
                    rabbitmq(rabbit_queue("q", rate_in=60.0, rate_out=20.0, status="growing")), queues=["q"])
    assert top(snap) == ("network-saturation", "host")


# ---------------------------------------------------------------- healthy, focus, facts

def test_healthy_system_has_no_cause_and_messages_in_flight_are_no_backlog():
    # 30 messages at 50/s is 0.6 s of work: in flight, whatever the trend says.
    snap = snapshot(host(), processes(target(7, cpu=10.0)),
                    rabbitmq(rabbit_queue("q", depth=30, rate_in=52.0, rate_out=50.0, status="growing")),
                    queues=["q"], pids=[7])
    report = build_report(snap, RULES)
    assert report["verdict"] == "healthy" and report["root_causes"] == []
    assert report["queues"][0]["backing_up"] is False


def test_other_tenants_queues_do_not_decide_the_verdict():
    named = rabbit_queue("q", depth=10, rate_in=50.0, rate_out=50.0)
    abandoned = rabbit_queue("left-over", consumers=0, rate_in=5.0, rate_out=0.0, status="no-consumers",
                             selected_because=["deepest"])
    report = build_report(snapshot(host(), rabbitmq(named, abandoned), queues=["q"]), RULES)
    assert report["verdict"] == "healthy"
    assert [c["out_of_focus"] for c in report["root_causes"]] == [True]


def test_crowded_kafka_discovery_trusts_only_the_named_pid():
    """Kafka names only a member's host, so discovery offers every local client of the broker;
    more claimants than members means only --pid is taken as the consumer."""
    claim = "kafka:t/g"
    discovered = [{"pid": p, "subject": claim, "via": "kafka member (one of 3 local processes)"} for p in (7, 8, 9)]
    snap = snapshot(host(), processes(target(7, cpu=8.0, selected=("--pid", "discovered")),
                                      target(8, cpu=90.0, selected=("discovered",)),
                                      target(9, gone=True, selected=("discovered",))),
                    kafka(kafka_queue("t", "g")), discovered=discovered, queues=["t"], groups=["g"], pids=[7])
    subjects = {s.id: s for s in facts.subjects(snap)}
    assert subjects["kafka:t/g"].facts["consumer_pids"] == [7]
    assert subjects["process:8"].facts["focus"] is False and subjects["process:7"].facts["focus"] is True
    assert top(snap) == ("undersized-consumer-pool", "kafka:t/g")


def test_partition_facts():
    rows = [{"partition": 0, "lag": 10, "rate_in": 1.0}, {"partition": 1, "lag": 990, "rate_in": 9.0},
            {"partition": 2, "lag": 0, "rate_in": 0.0}]
    from qdiag.probes._kafka_facts import partition_facts

    got = partition_facts(rows)
    assert got["hot_partition"] == 1 and got["hot_lag_share"] == 0.99 and got["hot_rate_share"] == 0.9
    assert got["lagging_partitions"] == 1 and got["other_partitions_lag"] == 10


def test_cpu_busy_counts_against_the_quota():
    quota = {"cgroup_stats": {"cpu": {"quota_cores": 0.25}}}
    assert facts.cpu_busy({"cpu_percent": 25.0, **quota}) == 100.0
    assert facts.cpu_busy({"cpu_percent": 25.0}) == 25.0
    assert facts.cpu_busy({"cpu_percent": None}) is None


def test_report_replays_the_same_ranking_from_a_copy():
    snap = snapshot(host(), rabbitmq(rabbit_queue("orders", consumers=0, status="no-consumers")), queues=["orders"])
    first = build_report(snap, RULES)
    again = build_report(copy.deepcopy(snap), RULES)
    assert [(c["id"], c["subject"], c["score"]) for c in first["root_causes"]] == \
        [(c["id"], c["subject"], c["score"]) for c in again["root_causes"]]


# ---------------------------------------------------------------- the rules themselves

# Commands the playbooks may tell an engineer to run: real tools only.
KNOWN_COMMANDS = {
    "kafka-consumer-groups", "kafka-topics", "kafka-configs", "kafka-console-consumer", "kafka-get-offsets",
    "rabbitmqctl", "rabbitmq-diagnostics", "redis-cli", "py-spy", "jcmd", "ss", "nstat", "top", "pidstat",
    "vmstat", "mpstat", "free", "ps", "dmesg", "journalctl", "cat", "ls", "prlimit", "iostat", "iotop", "ip",
    "ethtool", "curl", "sysctl", "conntrack", "systemd-cgtop", "qdiag", "grep", "docker",
}


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.id)
def test_every_rule_names_real_commands_and_a_threshold(rule):
    for command in rule.next:
        assert command.split()[0] in KNOWN_COMMANDS, f"{rule.id}: unknown command {command!r}"
    assert rule.immediate and rule.long_term, f"{rule.id} needs immediate and long-term mitigations"
    assert re.search(r"threshold", rule.evidence), f"{rule.id}: the evidence must state its threshold"


def test_every_cause_is_reachable_and_every_step_has_rules():
    assert {r.cause for r in RULES} == set(CAUSES)
    assert {r.step for r in RULES} == {1, 2, 3, 4, 5, 6}


def test_broker_ports_follow_the_run_targets():
    from qdiag.brokers import client_ports

    targets = {"kafka": "k1:19092,k2:19093", "rabbitmq": "amqp://u:***@r:5673/%2F", "redis": "redis://:***@h:6380/0"}
    assert client_ports(targets) >= {19092, 19093, 5673, 6380, 9092, 5672, 6379}
    assert client_ports({}) == {9092, 5672, 5671, 6379}
