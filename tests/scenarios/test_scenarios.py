"""Real incidents, reproduced on the rig's brokers with real clients and real
processes, each diagnosed by the real CLI.

Every scenario injects one fault and asserts the top-ranked root cause and its
subject.  Rates and sizes are chosen so the fault dominates on a busy 2-core
machine; the assertions are about which cause wins, never about scores.
"""

from __future__ import annotations

import os
import sys
import time

import pytest

from tests.scenarios.conftest import KAFKA, REDIS_URL, wait_until

pytestmark = [pytest.mark.scenario, pytest.mark.broker]

RABBIT = "http://guest:guest@127.0.0.1:15672"


# ---------------------------------------------------------------- RabbitMQ

def test_rabbitmq_consumers_absent(rabbit, processes, investigate, expect):
    """Producers keep publishing; every consumer of the queue has gone."""
    q = rabbit.queue("absent")
    processes.start("producer.py", "rabbitmq", q, "--rate", "40")
    rabbit.wait_backlog(q, 100)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q)
    expect(inv, "consumers-absent", f"rabbitmq:{q}")
    assert inv.report["verdict"] == "critical"


def test_rabbitmq_consumer_deadlock(rabbit, processes, investigate, expect):
    """Two threads of the consumer take two locks in opposite order."""
    q = rabbit.queue("deadlock")
    processes.start("producer.py", "rabbitmq", q, "--rate", "40")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--deadlock-after", "20")
    rabbit.wait_backlog(q, 150)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    top = expect(inv, "consumer-stuck", f"process:{consumer.pid}")
    assert any("deadlock" in e for e in top["evidence"])


def test_rabbitmq_poison_message_requeue_loop(rabbit, processes, investigate, expect):
    """A few messages the consumer cannot handle are nacked with requeue, for ever."""
    q = rabbit.queue("poison")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30", "--poison-every", "5")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--poison", "--prefetch", "20")
    rabbit.wait_backlog(q, 20)
    wait_until(lambda: ((rabbit.stats(q).get("message_stats") or {}).get("redeliver_details") or {}).get("rate", 0) > 5,
               30, "the broker to report redeliveries")
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    expect(inv, "poison-message", f"rabbitmq:{q}")


def test_rabbitmq_slow_dependency(rabbit, processes, investigate, expect):
    """The consumer calls a downstream HTTP service that answers in 0.8 s."""
    server = processes.start("httpd.py", "--delay", "0.8")
    url = f"http://127.0.0.1:{_port(server)}/price"
    q = rabbit.queue("slowdep")
    processes.start("producer.py", "rabbitmq", q, "--rate", "20")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--http", url)
    rabbit.wait_backlog(q, 60)
    # As on call: the broker, the queue, the consumer; the slow service is found, not named.
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    expect(inv, "slow-dependency", f"dependency:tcp://127.0.0.1:{_port(server)}")


def test_rabbitmq_queue_length_limit(rabbit, processes, remote_host, investigate, expect):
    """A length-limited queue (reject-publish) is full: publishers are refused.  Its consumer runs
    on another host (a network namespace), so only the broker's side can be seen, as when qdiag
    runs next to the broker."""
    q = rabbit.queue("limit", {"x-max-length": 200, "x-overflow": "reject-publish"})
    remote_amqp = f"amqp://{rabbit.user()}@{remote_host.broker_ip}:5672/%2F"
    processes.start("producer.py", "rabbitmq", q, "--rate", "150", env={"SCENARIO_CONFIRM": "1"})
    processes.start("consumer.py", "rabbitmq", q, "--sleep-ms", "20", "--prefetch", "10",
                    env={"SCENARIO_AMQP": remote_amqp}, host=remote_host)
    rabbit.wait_backlog(q, 190)
    rabbit.wait_acking(q)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q)
    expect(inv, "queue-limit-reached", f"rabbitmq:{q}")
    assert inv.report["verdict"] == "critical"


def test_rabbitmq_consumer_cpu_quota(rabbit, processes, cgroups, investigate, expect):
    """The consumer runs in a cgroup with a CPU quota of a fifth of a core."""
    quota = cgroups.cpu(0.2)
    q = rabbit.queue("cpuquota")
    processes.start("producer.py", "rabbitmq", q, "--rate", "30")
    consumer = processes.start("consumer.py", "rabbitmq", q, "--work-ms", "20", cgroups=[quota])
    rabbit.wait_backlog(q, 60)
    inv = investigate("--rabbitmq", RABBIT, "--queue", q, "--pid", str(consumer.pid))
    expect(inv, "cpu-saturation", f"process:{consumer.pid}")


# ---------------------------------------------------------------- Kafka

def test_kafka_consumers_absent(kafka, processes, investigate, expect):
    """The group's only consumer stopped; producers go on."""
    topic, group = kafka.topic("absent", 3), kafka.group("absent")
    processes.start("producer.py", "kafka", topic, "--rate", "40")
    consumer = processes.start("consumer.py", "kafka", topic, "--group", group)
    wait_until(lambda: kafka.lag(topic, group) < 40, 30, "the consumer to commit")
    processes.stop(consumer)
    kafka.wait_lag(topic, group, 120)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group)
    expect(inv, "consumers-absent", f"kafka:{topic}/{group}")
    assert inv.report["verdict"] == "critical"


def test_kafka_slow_consumer_logic(kafka, processes, investigate, expect):
    """Each message costs the consumer 30 ms of CPU in one function: it cannot keep up."""
    topic, group = kafka.topic("slowlogic", 2), kafka.group("slowlogic")
    processes.start("producer.py", "kafka", topic, "--rate", "80")
    consumer = processes.start("consumer.py", "kafka", topic, "--group", group, "--work-ms", "30")
    kafka.wait_lag(topic, group, 150)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, "--pid", str(consumer.pid))
    top = expect(inv, "slow-consumer-logic", f"process:{consumer.pid}")
    assert any("score_document" in e for e in top["evidence"])


def test_kafka_undersized_consumer_pool(kafka, processes, investigate, expect):
    """One consumer for eight partitions, each message a 10 ms wait: the consumer is idle-bound,
    more of them would go faster."""
    topic, group = kafka.topic("undersized", 8), kafka.group("undersized")
    processes.start("producer.py", "kafka", topic, "--rate", "150")
    consumer = processes.start("consumer.py", "kafka", topic, "--group", group, "--sleep-ms", "10")
    kafka.wait_lag(topic, group, 200)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, "--pid", str(consumer.pid))
    expect(inv, "undersized-consumer-pool", f"kafka:{topic}/{group}")


def test_kafka_traffic_spike_against_baseline(kafka, processes, investigate, expect, tmp_path):
    """A baseline is taken in normal times; then producers send fifteen times as much."""
    topic, group = kafka.topic("spike", 4), kafka.group("spike")
    producer = processes.start("producer.py", "kafka", topic, "--rate", "20")
    consumer = processes.start("consumer.py", "kafka", topic, "--group", group, "--sleep-ms", "8")
    time.sleep(6)  # a few seconds of normal traffic, so the rates mean something
    baseline = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, "--pid", str(consumer.pid))
    assert baseline.report["verdict"] == "healthy", "the baseline itself is not healthy"
    processes.stop(producer)
    processes.start("producer.py", "kafka", topic, "--rate", "300")
    kafka.wait_lag(topic, group, 400)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, "--pid", str(consumer.pid),
                      baseline=baseline.snapshot)
    expect(inv, "traffic-spike", f"kafka:{topic}/{group}")


def test_kafka_partition_skew(kafka, processes, investigate, expect):
    """Every message has the same key: one partition takes all the traffic and all the lag."""
    topic, group = kafka.topic("skew", 4), kafka.group("skew")
    processes.start("producer.py", "kafka", topic, "--rate", "150", "--keys", "one")
    first = processes.start("consumer.py", "kafka", topic, "--group", group, "--sleep-ms", "10")
    second = processes.start("consumer.py", "kafka", topic, "--group", group, "--sleep-ms", "10")
    kafka.wait_lag(topic, group, 200)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group,
                      "--pid", str(first.pid), "--pid", str(second.pid))
    expect(inv, "partition-skew", f"kafka:{topic}/{group}")


def test_redis_list_consumer_starved_by_noisy_neighbours(redis_db, processes, investigate, expect):
    """Batch jobs on the consumer's host take the CPUs; the consumer, which would keep up with a
    whole core, gets a fraction of one."""
    key = redis_db.list("starved")
    processes.start("producer.py", "redis-list", key, "--rate", "70")
    consumer = processes.start("consumer.py", "redis-list", key, "--work-ms", "10")
    for _ in range(2 * (os.cpu_count() or 1)):
        processes.start("hog.py")
    redis_db.wait_list_backlog(key, 100)
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(consumer.pid))
    expect(inv, "cpu-saturation", f"process:{consumer.pid}")


# ---------------------------------------------------------------- Redis

def test_redis_stream_consumer_deadlock(redis_db, processes, investigate, expect):
    key = redis_db.stream("deadlock")
    processes.start("producer.py", "redis-stream", key, "--rate", "40")
    consumer = processes.start("consumer.py", "redis-stream", key, "--group", "workers", "--deadlock-after", "20")
    redis_db.wait_stream_backlog(key, "workers", 100)
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(consumer.pid))
    expect(inv, "consumer-stuck", f"process:{consumer.pid}")


def test_redis_stream_poison_entries(redis_db, processes, investigate, expect):
    """Entries the consumer cannot handle stay pending and are claimed again and again."""
    key = redis_db.stream("poison")
    processes.start("producer.py", "redis-stream", key, "--rate", "20", "--poison-every", "10")
    consumer = processes.start("consumer.py", "redis-stream", key, "--group", "workers", "--poison")

    def delivered_often():
        pending = redis_db.r.xpending_range(key, "workers", "-", "+", 50)
        return any(p["times_delivered"] >= 5 for p in pending)

    wait_until(delivered_often, 30, "pending entries delivered 5 times")
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(consumer.pid))
    expect(inv, "poison-message", f"redis:{key}/workers")


def test_redis_list_dependency_failure(redis_db, processes, investigate, expect):
    """The downstream service answers 503 to every call; jobs go back on the list.

    The one scenario that names its dependency: an HTTP status is only seen on a request qdiag
    makes itself, and qdiag sends requests only to URLs the user names.  From the consumer's side
    a fast 503 looks like a fast 200 (short waits, small answers)."""
    server = processes.start("httpd.py", "--status", "503")
    url = f"http://127.0.0.1:{_port(server)}/price"
    key = redis_db.list("depfail")
    processes.start("producer.py", "redis-list", key, "--rate", "30")
    consumer = processes.start("consumer.py", "redis-list", key, "--http", url)
    redis_db.wait_list_backlog(key, 60)
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(consumer.pid), "--dependency", url)
    expect(inv, "dependency-failure", f"dependency:{url}")


def test_redis_list_consumer_on_saturated_disk(redis_db, processes, investigate, expect, tmp_path):
    """The consumer makes every job durable with fsync; writers on the same disk keep it busy,
    and each fsync waits behind them."""
    key = redis_db.list("disk")
    processes.start("producer.py", "redis-list", key, "--rate", "60")
    consumer = processes.start("consumer.py", "redis-list", key, "--fsync", "20")
    for i in range(2):
        processes.start("disk_hog.py", f"/var/tmp/{tmp_path.name}-hog{i}")
    redis_db.wait_list_backlog(key, 100)
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(consumer.pid))
    expect(inv, "io-saturation", "host")


def test_redis_maxmemory_refusing_writes(private_redis, processes, investigate, expect):
    """Redis at maxmemory with noeviction: the producers' writes fail with OOM."""
    import redis

    r = redis.Redis.from_url(private_redis)
    r.xgroup_create("jobs", "workers", id="0", mkstream=True)
    r.config_set("maxmemory", 8 * 1024 * 1024)
    r.config_set("maxmemory-policy", "noeviction")
    # Something else fills the instance (a cache written to the queue's Redis).
    blob = b"x" * (256 * 1024)
    for i in range(64):
        try:
            r.set(f"cache:blob:{i}", blob)
        except redis.ResponseError:
            break
    # ... and then maxmemory is lowered below what is used (a config push, a resized instance).
    r.config_set("maxmemory", int(r.info("memory")["used_memory"] * 0.9))
    key = "jobs"
    env = {"SCENARIO_REDIS": private_redis}
    processes.start("producer.py", "redis-stream", key, "--rate", "50", env=env)
    consumer = processes.start("consumer.py", "redis-stream", key, "--group", "workers", env=env)
    wait_until(lambda: int(r.info("errorstats").get("errorstat_OOM", {}).get("count", 0)) > 20, 30,
               "the producer's writes to be refused with OOM")
    inv = investigate("--redis", private_redis, "--queue", key, "--pid", str(consumer.pid))
    expect(inv, "broker-resource-alarm", "redis")


def test_redis_list_consumer_oom_crash_loop(redis_db, processes, cgroups, investigate, expect):
    """The consumer leaks memory per job; at its cgroup's limit the kernel OOM-kills it and its
    supervisor restarts it, again and again (a container in a crash loop)."""
    limit = cgroups.memory(64 * 1024 * 1024)
    key = redis_db.list("oomloop")
    processes.start("producer.py", "redis-list", key, "--rate", "50")
    service = processes.start("supervise.py", "--", sys.executable, "consumer.py", "redis-list", key, "--leak-mb", "3",
                              cgroups=[limit])
    redis_db.wait_list_backlog(key, 30)
    wait_until(lambda: _oom_kills(limit) >= 3, 30, "the consumer to be OOM-killed 3 times")
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(service.pid))
    expect(inv, "memory-pressure", f"process:{service.pid}")


def test_redis_list_consumer_out_of_file_descriptors(redis_db, processes, investigate, expect):
    """The consumer leaks a file descriptor per job; at its RLIMIT_NOFILE every job fails (EMFILE)
    and goes back on the list."""
    key = redis_db.list("nofile")
    processes.start("producer.py", "redis-list", key, "--rate", "40")
    consumer = processes.start("consumer.py", "redis-list", key, "--nofile", "64", "--leak-fds")
    redis_db.wait_list_backlog(key, 80)
    inv = investigate("--redis", REDIS_URL, "--queue", key, "--pid", str(consumer.pid))
    expect(inv, "os-limit-reached", f"process:{consumer.pid}")


def _oom_kills(cgroup) -> int:
    for line in (cgroup / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _port(server) -> int:
    line = next(line for line in server.output if line.startswith("ready"))
    return int(line.split()[1])


# ---------------------------------------------------------------- healthy

def test_healthy_system_on_all_three_brokers(rabbit, kafka, redis_db, processes, investigate, expect):
    """Producers and consumers on Kafka, RabbitMQ and Redis, every consumer keeping up."""
    topic, group = kafka.topic("healthy", 2), kafka.group("healthy")
    q = rabbit.queue("healthy")
    key = redis_db.stream("healthy")
    for broker, name in (("kafka", topic), ("rabbitmq", q), ("redis-stream", key)):
        processes.start("producer.py", broker, name, "--rate", "20")
    consumers = [processes.start("consumer.py", "kafka", topic, "--group", group),
                 processes.start("consumer.py", "rabbitmq", q),
                 processes.start("consumer.py", "redis-stream", key, "--group", "workers")]
    # Long enough for the RabbitMQ management statistics to cover the traffic.
    wait_until(lambda: ((rabbit.stats(q).get("message_stats") or {}).get("ack_details") or {}).get("rate", 0) > 5,
               30, "RabbitMQ to report the consumer's acks")
    pids = [arg for c in consumers for arg in ("--pid", str(c.pid))]
    inv = investigate("--kafka", KAFKA, "--rabbitmq", RABBIT, "--redis", REDIS_URL,
                      "--queue", topic, "--queue", q, "--queue", key, "--group", group, "--group", "workers", *pids)
    expect.healthy(inv)
