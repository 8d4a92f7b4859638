"""The test rig itself: each broker of tests/rig.sh serves, and the Kafka tool
wrappers run from the cached jars. When these fail, fix the rig before reading
any other broker test's failure."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.broker

KAFKA_TOPICS = Path(__file__).resolve().parent / "rig" / "kafka-topics"
TOOL_TIMEOUT_S = 120  # a JVM start on a busy 2-core machine; normally ~1 s


def run_tool(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)


def test_kafka_answers_metadata_with_one_broker_on_the_rig_address(kafka_bootstrap):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="qdiag-test-rig",
                             request_timeout_ms=10_000)
    try:
        cluster = admin.describe_cluster()
        topics = admin.list_topics()
    finally:
        admin.close()
    host, port = kafka_bootstrap.rsplit(":", 1)
    assert [(b["host"], b["port"]) for b in cluster["brokers"]] == [(host, int(port))]
    assert isinstance(topics, list)


def test_rabbitmq_management_api_reports_version_and_amqp_listener(rabbitmq_api, rabbitmq_amqp):
    import requests

    response = requests.get(f"{rabbitmq_api}/api/overview", timeout=10)
    response.raise_for_status()
    overview = response.json()
    assert overview["management_version"]
    amqp_ports = {item["port"] for item in overview["listeners"] if item["protocol"] == "amqp"}
    assert 5672 in amqp_ports
    assert ":5672/" in rabbitmq_amqp


def test_rabbitmq_accepts_an_amqp_login(rabbitmq_amqp):
    import pika

    params = pika.URLParameters(f"{rabbitmq_amqp}?connection_attempts=1&socket_timeout=10")
    connection = pika.BlockingConnection(params)
    try:
        assert connection.is_open
    finally:
        connection.close()


def test_redis_answers_ping(redis_url):
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=10)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_kafka_consumer_groups_wrapper_prints_its_usage(kafka_tools):
    result = run_tool([kafka_tools, "--help"])
    # Kafka's tool exits 1 after printing its usage; the text is what matters.
    usage = result.stdout + result.stderr
    assert "--bootstrap-server" in usage
    assert "--describe" in usage


@pytest.fixture
def committed_group(kafka_bootstrap, unique_name):
    """A topic and a consumer group with an offset committed on it; both deleted afterwards."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata, TopicPartition

    topic, group = unique_name("qdiag-test-rig"), unique_name("qdiag-test-rig")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="qdiag-test-rig",
                             request_timeout_ms=30_000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], wait_for_metadata=True)
        try:
            errors = admin.alter_group_offsets(group, {TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
            assert all(error.errno == 0 for error in errors.values()), errors
            yield topic, group
        finally:
            admin.delete_groups([group])
    finally:
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()


def test_kafka_consumer_groups_wrapper_lists_and_describes_a_group(kafka_bootstrap, kafka_tools, committed_group):
    topic, group = committed_group
    listed = run_tool([kafka_tools, "--bootstrap-server", kafka_bootstrap, "--list"])
    assert listed.returncode == 0, listed.stderr
    assert group in listed.stdout.split()

    described = run_tool([kafka_tools, "--bootstrap-server", kafka_bootstrap, "--describe", "--group", group])
    assert described.returncode == 0, described.stderr
    rows = [line.split() for line in described.stdout.splitlines()]
    # GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG ...
    assert [group, topic, "0", "0", "0", "0"] in [row[:6] for row in rows]


def test_kafka_topics_wrapper_lists_a_topic(kafka_bootstrap, kafka_tools, committed_group):
    topic, _ = committed_group
    listed = run_tool([str(KAFKA_TOPICS), "--bootstrap-server", kafka_bootstrap, "--list"])
    assert listed.returncode == 0, listed.stderr
    assert topic in listed.stdout.split()
