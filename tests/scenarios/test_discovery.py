"""Incidents diagnosed the way an on-call engineer runs qdiag: the broker, the
queue (or the group of their own service), at most the consumer's --pid, and
never the answer: no --dependency for the dependency that is slow.  What qdiag
needs it must find itself, from what the kernel says the consumer's threads
wait on and what the consumer's own connections show."""

from __future__ import annotations

import pytest

from tests.scenarios.conftest import KAFKA, REDIS_URL
from tests.scenarios.test_scenarios import RABBIT, _port

pytestmark = [pytest.mark.scenario, pytest.mark.broker]

# The service answers a connect at once and a request after this long: a bare
# TCP connect to it looks healthy; only the consumer's own waits show it is slow.
SLOW_ANSWER_S = "0.3"


def _slow_service(processes) -> tuple[object, str, str]:
    server = processes.start("httpd.py", "--delay", SLOW_ANSWER_S)
    port = _port(server)
    return server, f"http://127.0.0.1:{port}/price", f"dependency:tcp://127.0.0.1:{port}"


def test_rabbitmq_slow_dependency_found_without_being_named(rabbit, processes, investigate, expect):
    _, url, subject = _slow_service(processes)
    q = rabbit.queue("slowdep-found")
    processes.start("producer.py", "rabbitmq", q, "--rate", "20")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--http", url, "--prefetch", "1")
    rabbit.wait_backlog(q, 40)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    top = expect(inv, "slow-dependency", subject)
    assert any("%" in e and "127.0.0.1" in e for e in top["evidence"]), top["evidence"]


def test_kafka_slow_dependency_found_without_being_named(kafka, processes, investigate, expect):
    _, url, subject = _slow_service(processes)
    topic, group = kafka.topic("slowdep-found", 2), kafka.group("slowdep-found")
    processes.start("producer.py", "kafka", topic, "--rate", "20")
    consumer = processes.start("consumer.py", "kafka", topic, "--group", group, "--http", url, "--prefetch", "5")
    kafka.wait_lag(topic, group, 40)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, "--pid", str(consumer.pid))
    expect(inv, "slow-dependency", subject)


def test_redis_stream_slow_dependency_found_without_being_named(redis_db, processes, investigate, expect):
    _, url, subject = _slow_service(processes)
    stream = redis_db.stream("slowdep-found")
    processes.start("producer.py", "redis-stream", stream, "--rate", "20")
    consumer = processes.start("consumer.py", "redis-stream", stream, "--group", "workers", "--http", url,
                               "--prefetch", "1")
    redis_db.wait_stream_backlog(stream, "workers", 40)
    inv = investigate("--redis", REDIS_URL, "--queue", stream, "--pid", str(consumer.pid))
    expect(inv, "slow-dependency", subject)


def test_rabbitmq_consumer_hung_on_a_service_that_never_answers(rabbit, processes, investigate, expect):
    """The downstream service accepts and never answers: the consumer's one thread
    waits on it for the whole window, in a poll() with a timeout.  qdiag's own
    thread dumps (py-spy attaches with ptrace) interrupt that poll, and the kernel
    resumes it as restart_syscall, hiding its arguments: the wait must still be
    seen as a wait on that peer, not as "unknown"."""
    server = processes.start("httpd.py", "--delay", "600")
    port = _port(server)
    q = rabbit.queue("hung-dep")
    processes.start("producer.py", "rabbitmq", q, "--rate", "20")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--http", f"http://127.0.0.1:{port}/price",
                               "--http-timeout", "300", "--prefetch", "10")
    rabbit.wait_backlog(q, 40)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    top = expect(inv, "slow-dependency", f"dependency:tcp://127.0.0.1:{port}")
    assert any("100%" in e for e in top["evidence"]), top["evidence"]


def test_in_process_work_queue_full_with_deadlocked_workers(processes, investigate, expect, tmp_path):
    """No broker: a service's own bounded queue fills because two of its workers deadlocked on two
    plainly named locks; the service logs "works queue_full".  The on-call gives the pid and the log."""
    log = tmp_path / "service.log"
    worker = processes.start("work_queue.py", str(log), "--workers", "2", "--rate", "200", "--deadlock-after", "50")
    from tests.scenarios.conftest import wait_until

    wait_until(lambda: log.exists() and "queue_full" in log.read_text(), 30, "the service to log queue_full")
    inv = investigate("--pid", str(worker.pid), "--log", str(log))
    expect(inv, "consumer-stuck", f"process:{worker.pid}")
    assert inv.report["verdict"] != "healthy"
