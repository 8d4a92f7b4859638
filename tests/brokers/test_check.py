"""qdiag check against the real Redis of the rig: every exit code, --wait,
JUnit and JSON.  Redis lists give exact, immediate depths (RabbitMQ's
management stats refresh every few seconds)."""

import json
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET

import pytest
import redis

pytestmark = pytest.mark.broker


def qdiag_check(*args, timeout=120):
    cmd = [sys.executable, "-m", "qdiag", "check", "--no-auto-detect", "--window", "1", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def backlog(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url)
    name = unique_name("check-list")
    client.rpush(name, *[f"job-{i}" for i in range(50)])
    yield client, name
    client.delete(name)


def test_drained_queue_is_ok(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url)
    name = unique_name("check-empty")
    # An empty Redis list does not exist; a list under the threshold is the drained case.
    client.rpush(name, "only-one")
    try:
        r = qdiag_check("--redis", redis_url, "--queue", name, "--warn-depth", 10, "--max-depth", 100)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines()[-1].startswith("QDIAG OK")
    finally:
        client.delete(name)


def test_warning_and_critical(backlog, redis_url):
    _, name = backlog
    r = qdiag_check("--redis", redis_url, "--queue", name, "--warn-depth", 10, "--max-depth", 100)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"WARNING: redis:{name} depth = 50 (warn > 10, crit > 100)" in r.stdout
    assert f"'redis:{name} depth'=50;10;100;0;" in r.stdout.splitlines()[-1]
    r = qdiag_check("--redis", redis_url, "--queue", name, "--warn-depth", 10, "--max-depth", 20)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("QDIAG CRITICAL")


def test_unreachable_broker_is_unknown():
    r = qdiag_check("--redis", "redis://127.0.0.1:1/0", "--queue", "anything", "--max-depth", 10, "--timeout", 20)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "UNKNOWN: redis could not be measured" in r.stdout


def test_json_and_junit_carry_the_same_status(backlog, redis_url, tmp_path):
    _, name = backlog
    junit = tmp_path / "junit.xml"
    r = qdiag_check("--redis", redis_url, "--queue", name, "--warn-depth", 10, "--max-depth", 20,
                    "--format", "json", "--junit", junit)
    assert r.returncode == 2
    doc = json.loads(r.stdout)
    assert doc["schema"] == "qdiag.check/1" and doc["status"] == "CRITICAL" and doc["exit_code"] == 2
    [check] = [c for c in doc["checks"] if c["name"] == f"redis:{name} depth"]
    assert (check["status"], check["value"], check["warn"], check["crit"]) == ("CRITICAL", 50, 10, 20)
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    [suite] = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == len(doc["checks"])
    assert int(suite.get("failures")) == sum(1 for c in doc["checks"] if c["status"] in ("WARNING", "CRITICAL"))
    [case] = [c for c in cases if c.get("name") == f"redis:{name} depth"]
    failure = case.find("failure")
    assert failure is not None and failure.get("message").startswith("CRITICAL: ")


def test_wait_returns_ok_once_a_consumer_drains(backlog, redis_url, tmp_path):
    _, name = backlog
    consumer = tmp_path / "drain.py"
    consumer.write_text(textwrap.dedent(f"""
        import time, redis
        time.sleep(3)                      # the backlog is there when the check starts
        r = redis.Redis.from_url({redis_url!r})
        while r.lpop({name!r}) is not None:
            time.sleep(0.01)
        r.rpush({name!r}, "last")          # one left, under the threshold, so the list exists
    """))
    proc = subprocess.Popen([sys.executable, str(consumer)])
    try:
        began = time.monotonic()
        r = qdiag_check("--redis", redis_url, "--queue", name, "--max-depth", 5, "--wait", 90, timeout=150)
        assert r.returncode == 0, r.stdout + r.stderr
        assert time.monotonic() - began < 120  # a hang guard, not a timing assertion
    finally:
        proc.kill()
        proc.wait()


def test_wait_gives_the_failing_code_when_it_does_not_drain(backlog, redis_url):
    _, name = backlog
    r = qdiag_check("--redis", redis_url, "--queue", name, "--warn-depth", 5, "--max-depth", 500, "--wait", 3)
    assert r.returncode == 1, r.stdout + r.stderr


def test_policy_file_per_queue(backlog, redis_url, tmp_path):
    _, name = backlog
    policy = tmp_path / "policy.toml"
    policy.write_text(f'[check]\nmax_depth = 1000\n[check.queues."{name[:10]}*"]\nmax_depth = 20\n')
    r = qdiag_check("--redis", redis_url, "--queue", name, "--policy", policy)
    assert r.returncode == 2, r.stdout + r.stderr


@pytest.mark.parametrize("content, expected", [
    ("[check]\nmax_dept = 10\n", "policy.toml:2: unknown threshold 'max_dept'"),
    ("[check]\nmax_depth = 'lots'\n", "policy.toml:2: 'max_depth' must be a number"),
    ("[check]\nwarn_depth = 100\nmax_depth = 10\n", "policy.toml:2: warning level 100 is above the critical level 10"),
    ("[check\nmax_depth = 10\n", "not valid TOML"),
    ("[check.host]\nmax_cpu = 95\nmax_fill = 0.5\n", "policy.toml:3: unknown threshold 'max_fill'"),
])
def test_bad_policy_is_unknown_with_file_and_line(tmp_path, content, expected):
    policy = tmp_path / "policy.toml"
    policy.write_text(content)
    r = qdiag_check("--policy", policy, "--probe", "host")
    assert r.returncode == 3
    assert expected in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, expected", [
    (("--max-depth", "lots"), "Invalid value for '--max-depth'"),
    (("--warn-depth", 100, "--max-depth", 10), "warning level 100"),
    (("--max-fill", 3), "Invalid value for '--max-fill'"),  # the range is checked when parsing
    (("--allow-cause", "gremlins", "--max-score", 0.5), "not a root-cause id"),
    (("--probe", "host"), "no thresholds to check"),
])
def test_bad_flags_are_unknown(args, expected):
    r = qdiag_check(*args, "--probe", "host")
    assert r.returncode == 3, r.stdout + r.stderr
    assert expected in r.stderr


# ---------------------------------------------------------------- RabbitMQ


@pytest.fixture
def rabbit_queue(rabbitmq_amqp, unique_name):
    """A fresh queue, its AMQP channel, and a bounded wait until the
    management statistics show it (empty)."""
    import pika
    import requests

    conn = pika.BlockingConnection(pika.URLParameters(rabbitmq_amqp))
    ch = conn.channel()
    name = unique_name("qdiag-check")
    ch.queue_declare(name)
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        r = requests.get(f"http://127.0.0.1:15672/api/queues/%2F/{name}", auth=("guest", "guest"), timeout=10,
                         params={"columns": "messages_ready"})
        if r.status_code == 200 and isinstance(r.json(), dict) and r.json().get("messages_ready") == 0:
            break
        time.sleep(0.5)
    yield ch, name
    ch.queue_delete(name)
    conn.close()


def test_rabbitmq_burst_is_not_a_stale_zero(rabbit_queue, rabbitmq_api):
    # The statistics read 0 for up to 5 s after a burst; the check must not say OK.
    ch, name = rabbit_queue
    for _ in range(500):
        ch.basic_publish("", name, b"m")
    r = qdiag_check("--rabbitmq", rabbitmq_api, "--queue", name, "--max-depth", 100)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"CRITICAL: rabbitmq:{name} depth = 500 (crit > 100)" in r.stdout


def test_rabbitmq_backlog_that_moves_nothing_fails_must_drain(rabbit_queue, rabbitmq_api):
    ch, name = rabbit_queue
    for _ in range(500):
        ch.basic_publish("", name, b"m")
    r = qdiag_check("--rabbitmq", rabbitmq_api, "--queue", name, "--must-drain")
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"CRITICAL: rabbitmq:{name} draining = 0" in r.stdout
    assert f"'rabbitmq:{name} draining'=0;;1:;0;1" in r.stdout.splitlines()[-1]


def test_rabbitmq_only_check_ignores_other_brokers_on_the_host(rabbit_queue, rabbitmq_api):
    # Kafka and Redis listen on this host too; naming RabbitMQ turns auto-detection off.
    ch, name = rabbit_queue
    ch.basic_publish("", name, b"m")
    cmd = [sys.executable, "-m", "qdiag", "check", "--window", "1", "--rabbitmq", rabbitmq_api, "--queue", name,
           "--max-depth", 100, "--format", "json"]
    r = subprocess.run(list(map(str, cmd)), capture_output=True, text=True, timeout=120)
    doc = json.loads(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert [c["status"] for c in doc["checks"]] == ["OK"]
    ran = {p["name"]: p["status"] for p in doc["probes"]}
    assert ran["rabbitmq"] == "ok"
    assert all(ran.get(b) in (None, "not_applicable", "skipped") for b in ("kafka", "redis")), ran


def test_rabbitmq_typo_names_the_broker_searched(rabbitmq_api, unique_name):
    name = unique_name("orders-typo")
    r = qdiag_check("--rabbitmq", rabbitmq_api, "--queue", name, "--max-depth", 10)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"UNKNOWN: no queue matches '{name}' on rabbitmq" in r.stdout
    assert "give --kafka" not in r.stdout


def test_redis_job_list_named_by_its_key_is_checked(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url)
    name = unique_name("rq-check")
    client.sadd("rq:queues", f"rq:queue:{name}")
    client.rpush(f"rq:queue:{name}", *[f"job-{i}" for i in range(30)])
    try:
        r = qdiag_check("--redis", redis_url, "--queue", f"rq:queue:{name}", "--max-depth", 10)
        assert r.returncode == 2, r.stdout + r.stderr
        assert f"CRITICAL: redis:{name} depth = 30 (crit > 10)" in r.stdout
    finally:
        client.delete(f"rq:queue:{name}")
        client.srem("rq:queues", f"rq:queue:{name}")
