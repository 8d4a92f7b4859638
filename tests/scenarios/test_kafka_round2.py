"""Kafka incidents a healthy-looking group hides, run as on-call would: the
broker, the topic, and the group of their own service (--group), nothing else.

- a group whose members consume but never commit (was: verdict HEALTHY);
- a rebalance storm: every batch outlasts max.poll.interval.ms, members are
  evicted and rejoin, offsets never move;
- a member whose process was killed: still listed by the broker until its
  session times out, gone from this host (dead, not stuck).
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.scenarios.conftest import KAFKA, wait_until

pytestmark = [pytest.mark.scenario, pytest.mark.broker]


def _group_state(kafka, group: str) -> str | None:
    return next((g["group_state"] for g in kafka.admin.list_groups() if g["group_id"] == group), None)


def test_kafka_group_consuming_without_commits(kafka, processes, investigate, expect):
    """The consumer runs with enable.auto.commit=false and never commits; records keep arriving."""
    topic, group = kafka.topic("nocommit", 2), kafka.group("nocommit")
    processes.start("producer.py", "kafka", topic, "--rate", "30")
    consumer = processes.start("kafka_poll_loop.py", topic, "--group", group, "--never-commit")
    consumer.wait_for("batch")
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group)
    top = expect(inv, "consumer-stuck", f"kafka:{topic}/{group}")
    assert inv.report["verdict"] != "healthy"
    assert "kafka-group-never-commits" in top["rules"]
    assert "log start" in top["evidence"][0] and "auto.offset.reset" in top["evidence"][0]


def test_kafka_rebalance_storm(kafka, processes, investigate, expect):
    """Two instances of a service whose batches (60 records x 80 ms) outlast max.poll.interval.ms (3 s):
    each is evicted mid-batch, its commit fails, it rejoins and gets the same records again."""
    topic, group = kafka.topic("storm", 4), kafka.group("storm")
    processes.start("producer.py", "kafka", topic, "--rate", "30")
    slow = ("--per-record-ms", "80", "--max-poll-records", "60", "--max-poll-interval-ms", "3000")
    members = [processes.start("kafka_poll_loop.py", topic, "--group", group, *slow, ready=None) for _ in range(2)]
    for member in members:
        member.wait_for("commit failed", timeout=60)  # the storm is under way for both
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, window=5.0)
    top = expect(inv, "slow-consumer-logic", f"kafka:{topic}/{group}")
    assert top["rules"][0] == "kafka-rebalance-storm"
    assert "max.poll.interval.ms" in top["evidence"][0]
    assert any("max.poll.records" in m for m in top["mitigations"]["immediate"])


def test_kafka_member_killed_is_gone_not_stuck(kafka, processes, investigate, expect):
    """The only consumer (on its own address, 127.0.0.2) is killed with SIGKILL: the broker keeps
    listing it until its session times out (10 s); nothing on the host connects from there any more."""
    topic, group = kafka.topic("gone", 2), kafka.group("gone")
    processes.start("producer.py", "kafka", topic, "--rate", "20")
    consumer = processes.start("kafka_poll_loop.py", topic, "--group", group, "--bind", "127.0.0.2")
    wait_until(lambda: kafka.lag(topic, group) < 40, 30, "the consumer to commit")
    os.kill(consumer.pid, signal.SIGKILL)
    consumer.proc.wait(10)
    try:
        inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group)
        top = expect(inv, "consumers-absent", f"kafka:{topic}/{group}")
        assert top["rules"][0] == "kafka-members-gone"
        assert "127.0.0.2" in top["evidence"][0]
        assert inv.report["verdict"] == "critical"
    finally:
        # Only an empty group can be deleted: the dead member goes when its session times out.
        wait_until(lambda: _group_state(kafka, group) == "Empty", 30, f"group {group} to drop its dead member")
