"""Rules on the kernel's view of a consumer's threads (the threads probe's
`kernel` record, shaped as probes/_kernel_waits.summarise_process returns it),
on hand-made snapshots: each must name the mechanism, not a function name."""

from __future__ import annotations

from probes._threads_facts import kernel_facts, nothing_drained, wait_summary
from tests.unit.test_diagnosis import (host, kafka, kafka_queue, processes, rabbit_queue, rabbitmq, ranked, snapshot,
                                       target, thread_probe, threads, top)

PEER = "10.1.2.3:8443"


def kernel(*, peer_share=0.0, lock_never_woke=(), cpu=0.02, broker=0.0, answers_ms=300.0):
    attribution, peers = [], []
    if peer_share:
        attribution.append({"kind": "peer", "target": PEER, "share": peer_share, "threads": 1,
                            "max_thread_share": peer_share, "protocol_guess": None})
        peers.append({"peer": PEER, "kind": "peer", "protocol_guess": None, "wait_share": peer_share,
                      "threads_waiting": 1, "connections": 1,
                      "tcp": {"rtt_ms": 0.2, "awaiting_answer_share": peer_share,
                              "request_waits": {"requests": 12, "exact": 10, "median_ms": answers_ms,
                                                "max_ms": answers_ms * 1.2}}})
    if broker:
        attribution.append({"kind": "broker", "target": "127.0.0.1:9092", "share": broker, "threads": 1,
                            "max_thread_share": 1.0, "protocol_guess": "kafka"})
    lock = 1.0 - peer_share - cpu - broker
    if lock > 0:
        attribution.append({"kind": "lock", "target": "futex 0x1", "share": round(lock, 3), "threads": 2,
                            "max_thread_share": 1.0})
    attribution.append({"kind": "cpu", "target": None, "share": cpu, "threads": 1, "max_thread_share": cpu})
    shares = {"cpu": cpu, "peer": peer_share, "lock": max(0.0, lock), "broker": broker}
    return {"thread_samples": 100, "window_s": 3.0, "shares": shares, "attribution": attribution,
            "threads": [{"tid": 10, "name": "main"}, {"tid": 11, "name": "worker"}], "peers": peers,
            "lock_waits_never_woke": [{"tid": t, "name": f"t{t}", "wait": "futex 0x1"} for t in lock_never_woke]}


def with_kernel(pid, record, **proc):
    doc = threads(pid, **proc)
    doc["kernel"] = record
    return doc


def test_a_consumer_waiting_on_one_peer_all_window_is_a_slow_dependency():
    """The peer answers TCP connects at once, so no active timing says it is slow; the consumer's
    own thread waited on it all window, and its connection's TCP info shows the answers' times."""
    proc = with_kernel(7, kernel(peer_share=0.92))
    snap = snapshot(host(), processes(target(7)), thread_probe(proc),
                    rabbitmq(rabbit_queue("orders", rate_in=20.0, rate_out=3.0, status="growing")),
                    queues=["orders"], pids=[7])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("slow-dependency", f"dependency:tcp://{PEER}")
    assert "92% of a thread's window waiting for 10.1.2.3:8443" in cause["evidence"][0]
    assert "300 ms at the median" in cause["evidence"][0]


def test_stalled_commits_under_a_slow_dependency_rank_below_it():
    proc = with_kernel(7, kernel(peer_share=0.9))
    stalled = kafka_queue("t", "g", status="STALL", rate_out=0.0, lag_trend="growing")
    snap = snapshot(host(), processes(target(7)), thread_probe(proc), kafka(stalled), queues=["t"], groups=["g"],
                    pids=[7])
    order = [(c["id"], c["subject"]) for c in ranked(snap)]
    assert order[0] == ("slow-dependency", f"dependency:tcp://{PEER}")
    stuck = next(c for c in ranked(snap) if c["id"] == "consumer-stuck")
    assert "slow-dependency" in stuck.get("explained_by", [])


def test_lock_waits_that_never_woke_while_nothing_drains_is_a_stuck_consumer():
    proc = with_kernel(7, kernel(lock_never_woke=(10, 11), cpu=0.0))
    queue = rabbit_queue("orders", rate_in=20.0, rate_out=0.0, status="growing")
    snap = snapshot(host(), processes(target(7, cpu=0.0)), thread_probe(proc), rabbitmq(queue), queues=["orders"],
                    pids=[7])
    assert top(snap) == ("consumer-stuck", "process:7")
    cause = ranked(snap)[0]
    assert any("without being scheduled once" in e for e in cause["evidence"])


def test_idle_workers_waiting_on_a_condition_are_not_stuck_while_the_queue_drains():
    """An idle pool's threads wait on a futex all window too; with the queue draining that is idle."""
    proc = with_kernel(7, kernel(lock_never_woke=(10, 11), cpu=0.0))
    queue = rabbit_queue("orders", depth=3, rate_in=20.0, rate_out=20.0)
    snap = snapshot(host(), processes(target(7)), thread_probe(proc), rabbitmq(queue), queues=["orders"], pids=[7])
    assert not [c for c in ranked(snap) if c["id"] == "consumer-stuck" and c["score"] >= 0.3]


def _broker_link(record, bytes_out, samples=30):
    """The consumer's connection to the broker, as the kernel's TCP counters saw it over the window."""
    record["peers"].append({"peer": "127.0.0.1:5672", "kind": "broker", "protocol_guess": "amqp", "wait_share": 0.1,
                            "threads_waiting": 1, "connections": 1,
                            "tcp": {"connections_sampled": 1, "samples": samples, "bytes_out": bytes_out,
                                    "bytes_in": 0}})
    return record


def test_broker_rates_from_before_the_wedge_do_not_hide_it_when_the_one_consumer_sent_nothing():
    """RabbitMQ's rates describe its last statistics interval: a second after the consumer wedged
    they still show its acks.  Its connection to the broker says what happened in the window."""
    stale = rabbit_queue("orders", rate_in=30.0, rate_out=7.8, status="growing")  # acks of the last interval
    for bytes_out, expected in ((0, True), (8, True), (21, False), (400, False)):  # a heartbeat frame is 8 bytes
        proc = with_kernel(7, _broker_link(kernel(lock_never_woke=(10, 11), cpu=0.0), bytes_out))
        snap = snapshot(host(), processes(target(7, cpu=0.0)), thread_probe(proc), rabbitmq(stale),
                        queues=["orders"], pids=[7])
        fired = any("consumer-threads-never-woke" in c["rules"] for c in ranked(snap))
        assert fired is expected, bytes_out
        if expected:
            assert top(snap) == ("consumer-stuck", "process:7")
    # Other consumers may be what moves the queue: the broker's rate stands.
    shared = dict(stale, consumers=2)
    proc = with_kernel(7, _broker_link(kernel(lock_never_woke=(10, 11), cpu=0.0), 0))
    snap = snapshot(host(), processes(target(7, cpu=0.0)), thread_probe(proc), rabbitmq(shared),
                    queues=["orders"], pids=[7])
    assert not any("consumer-threads-never-woke" in c["rules"] for c in ranked(snap))
    # Counters read at one sample only: nothing said.
    proc = with_kernel(7, _broker_link(kernel(lock_never_woke=(10, 11), cpu=0.0), 0, samples=1))
    assert kernel_facts(proc)["broker_silent"] is None


def test_nothing_drained():
    assert nothing_drained({}, None) and nothing_drained({"rate_out": 0.0, "consumers": 3}, False)
    assert not nothing_drained({"rate_out": 4.0, "consumers": 1}, None)  # counters not read: the broker stands
    assert not nothing_drained({"rate_out": 4.0, "consumers": 1}, False)
    assert nothing_drained({"rate_out": 4.0, "consumers": 1}, True)
    assert not nothing_drained({"rate_out": 4.0, "consumers": 2}, True)


def test_a_consumer_idle_on_its_broker_has_no_dependency():
    proc = with_kernel(7, kernel(broker=0.95, cpu=0.01))
    snap = snapshot(host(), processes(target(7)), thread_probe(proc),
                    rabbitmq(rabbit_queue("orders", rate_in=20.0, rate_out=3.0, status="growing")),
                    queues=["orders"], pids=[7])
    assert not [c for c in ranked(snap) if c["id"] == "slow-dependency"]


def test_kernel_facts_and_summary():
    facts = kernel_facts({"kernel": kernel(peer_share=0.6, cpu=0.1)})
    assert facts["peer_waited"] == PEER and facts["peer_thread_share"] == 0.6
    assert facts["peer_answer_ms"] == 300.0 and facts["kernel_cpu_share"] == 0.1
    assert wait_summary(kernel(peer_share=0.6, cpu=0.1)) == "60% waiting for 10.1.2.3:8443, 30% on locks, 10% on CPU"
    # Not sampled: no facts claimed.
    empty = kernel_facts({})
    assert empty["kernel_sampled"] is False and empty["peer_waited"] is None and empty["wait_summary"] is None


def test_a_consumer_blocked_writing_to_a_full_pipe_is_stuck_and_named_so():
    """Its stdout goes to a reader that stopped: one write() that never returns, on a pipe."""
    record = kernel(cpu=0.0)
    record.update(shares={"cpu": 0.0, "local": 1.0, "lock": 0.0, "peer": 0.0, "broker": 0.0},
                  attribution=[{"kind": "local", "target": "pipe", "share": 1.0, "threads": 1, "max_thread_share": 1.0}],
                  threads=[{"tid": 10, "name": "main", "dominant": {"kind": "local", "target": "pipe", "share": 1.0},
                            "detail": "write", "never_woke": True}],
                  lock_waits_never_woke=[])
    queue = rabbit_queue("orders", rate_in=20.0, rate_out=0.0, status="growing")
    snap = snapshot(host(), processes(target(7, cpu=0.0)), thread_probe(with_kernel(7, record)), rabbitmq(queue),
                    queues=["orders"], pids=[7])
    assert top(snap) == ("consumer-stuck", "process:7")
    assert any("writing to a pipe" in e and "reader does not read" in e for e in ranked(snap)[0]["evidence"])
    # The same thread reading from the pipe (waiting for input) is not a full pipe.
    record["threads"][0]["detail"] = "read"
    snap = snapshot(host(), processes(target(7, cpu=0.0)), thread_probe(with_kernel(7, record)), rabbitmq(queue),
                    queues=["orders"], pids=[7])
    assert not any("writing to a pipe" in e for c in ranked(snap) for e in c["evidence"])


def _failing_queue(ack: float) -> dict:
    return rabbit_queue("orders", rate_in=30.0, rate_out=0.0, status="stuck", depth=500,
                        rates_broker={"publish": 30.0, "deliver_get": 600.0, "ack": ack, "redeliver": 600.0 - ack},
                        redeliver_ratio=round((600.0 - ack) / 600.0, 3))


def test_every_delivery_coming_back_while_the_consumer_calls_one_peer_is_that_peer_failing():
    """Redelivered at the delivery rate, no ack: systemic, not a few poison messages; the kernel
    caught the consumer waiting on one peer besides the broker, if only briefly (fast errors)."""
    proc = with_kernel(7, kernel(peer_share=0.1, cpu=0.6, broker=0.3))
    snap = snapshot(host(), processes(target(7)), thread_probe(proc), rabbitmq(_failing_queue(ack=0.0)),
                    queues=["orders"], pids=[7])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("dependency-failure", f"dependency:tcp://{PEER}")
    assert "every-delivery-fails-at-peer" in cause["rules"]


def test_redeliveries_among_messages_that_are_acknowledged_stay_poison():
    """Four messages in five acked (24 of 30/s) while the bad ones spin: a few poison messages."""
    proc = with_kernel(7, kernel(peer_share=0.1, cpu=0.6, broker=0.3))
    queue = _failing_queue(ack=24.0)
    snap = snapshot(host(), processes(target(7)), thread_probe(proc), rabbitmq(queue), queues=["orders"], pids=[7])
    assert top(snap) == ("poison-message", "rabbitmq:orders")
    assert not any(c["id"] == "dependency-failure" for c in ranked(snap))


def test_a_consumer_stopped_by_a_signal_is_stuck_and_named_so():
    """State T at both ends of the window: it runs nothing, whatever its code."""
    queue = rabbit_queue("orders", rate_in=20.0, rate_out=0.0, status="growing")
    snap = snapshot(host(), processes(target(7, cpu=0.0, state="T", state_at_start="T")), rabbitmq(queue),
                    queues=["orders"], pids=[7])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("consumer-stuck", "process:7")
    assert "consumer-process-stopped" in cause["rules"] and "kill -CONT 7" in cause["mitigations"]["immediate"][0]
    # Stopped for a moment only (resumed by the end), or in a ptrace stop (a debugger, py-spy): not this rule.
    for start, end in (("T", "S"), ("S", "T"), ("t", "t")):
        snap = snapshot(host(), processes(target(7, cpu=0.0, state=end, state_at_start=start)), rabbitmq(queue),
                        queues=["orders"], pids=[7])
        assert not any("consumer-process-stopped" in c["rules"] for c in ranked(snap)), (start, end)


def test_a_consumer_frozen_by_its_cgroup_is_stuck_and_named_so():
    """docker pause: the cgroup freezer holds it at both ends; its state letter says S (v2)."""
    queue = rabbit_queue("orders", rate_in=20.0, rate_out=0.0, status="growing")
    freezer = {"frozen": True, "version": "v2", "path": "/system.slice/docker-ab12.scope", "file": "cgroup.events",
               "value": "frozen 1"}
    snap = snapshot(host(), processes(target(7, cpu=0.0, state="S", frozen=True, frozen_at_start=True,
                                             freezer=freezer)),
                    rabbitmq(queue), queues=["orders"], pids=[7])
    cause = ranked(snap)[0]
    assert (cause["id"], cause["subject"]) == ("consumer-stuck", "process:7")
    assert "consumer-process-frozen" in cause["rules"]
    assert any("/system.slice/docker-ab12.scope: cgroup.events says frozen 1" in e for e in cause["evidence"])
    assert "docker unpause" in cause["mitigations"]["immediate"][0]
    # Frozen at one end only (thawed during the window, or frozen just now), or unknown: not this rule.
    for start, end in ((True, False), (False, True), (None, None)):
        snap = snapshot(host(), processes(target(7, cpu=0.0, frozen=end, frozen_at_start=start,
                                                 freezer=dict(freezer, frozen=end))),
                        rabbitmq(queue), queues=["orders"], pids=[7])
        assert not any("consumer-process-frozen" in c["rules"] for c in ranked(snap)), (start, end)
