"""Consumers that are not Python: what qdiag says must come from what the kernel
and the broker report, not from a Python-only stack reader."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.scenarios.conftest import KAFKA, WORKLOADS
from tests.scenarios.test_discovery import _slow_service

pytestmark = [pytest.mark.scenario, pytest.mark.broker]


@pytest.fixture(scope="session")
def java_consumer(tmp_path_factory, kafka_libs) -> list[str]:
    """The command of a Java Kafka consumer (kafka-clients), compiled for this run."""
    javac, java = shutil.which("javac"), shutil.which("java")
    if not javac or not java:
        pytest.fail("javac/java not found: bash tests/rig.sh installs openjdk-17-jdk-headless", pytrace=False)
    out = tmp_path_factory.mktemp("java-consumer")
    classpath = f"{kafka_libs}/*"
    subprocess.run([javac, "-cp", classpath, "-d", str(out), str(WORKLOADS / "java" / "PricingConsumer.java")],
                   check=True, timeout=180, capture_output=True)
    return [java, "-Xmx128m", "-cp", f"{classpath}:{out}", "PricingConsumer"]


def test_java_kafka_consumer_waiting_on_a_slow_service(kafka, processes, investigate, expect, java_consumer):
    """A JVM consumer calls a service that answers after 0.3 s, once per record.  No --dependency:
    the JVM's threads are read by the kernel (and jcmd), the peer found from the waiting socket."""
    _, url, subject = _slow_service(processes)
    topic, group = kafka.topic("java-slowdep", 2), kafka.group("java-slowdep")
    processes.start("producer.py", "kafka", topic, "--rate", "20")
    consumer = processes.start(java_consumer, KAFKA, topic, group, url)
    kafka.wait_lag(topic, group, 40)
    inv = investigate("--kafka", KAFKA, "--queue", topic, "--group", group, "--pid", str(consumer.pid))
    expect(inv, "slow-dependency", subject)
