"""Faults between qdiag and a broker (issue 13, "faults still untested"): a
broker stopped in the middle of a run (and restarted between samples), wrong
credentials, TLS spoken to a plaintext port, a name that does not resolve.

Each run is a real `qdiag investigate` process; each must end with the report
produced, the failure named on the probe that hit it, no password in anything
printed, and within the run's --timeout plus a wide margin.  Redis faults use a
private redis-server on a free port that the test starts and stops (never the
rig's shared brokers); the RabbitMQ ones only read the rig's API.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time

import pytest

from tests.cli_helper import run_qdiag_process

pytestmark = pytest.mark.broker
TIMEOUT_S = 8
HANG_GUARD_S = 60
PASSWORD = "s3cret-pw-faults"


def investigate(*args, timeout: float = TIMEOUT_S, window: float = 1.0) -> tuple[dict, subprocess.CompletedProcess, float]:
    began = time.monotonic()
    run = run_qdiag_process("investigate", "--format", "json", "--timeout", timeout, "--window", window,
                            "--no-probe", "threads", "--no-probe", "logs", "--no-auto-detect", *args,
                            timeout=timeout + HANG_GUARD_S)
    elapsed = time.monotonic() - began
    assert run.returncode == 0, run.stderr[-2000:]  # the host probe answers, so a report is always produced
    report = json.loads(run.stdout)
    assert report["schema"] == "qdiag.report/1"
    assert elapsed < timeout + HANG_GUARD_S
    for text in (run.stdout, run.stderr):
        assert PASSWORD not in text and "badpw-faults" not in text
    return report, run, elapsed


def probe(report: dict, name: str) -> dict:
    return next(p for p in report["probes"] if p["name"] == name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own on a free loopback port."""

    def __init__(self, directory, password: str | None = None):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server not found; start the rig with: bash tests/rig.sh", pytrace=False)
        self.argv = [binary, "--port", str(free_port()), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(directory)] + (["--requirepass", password] if password else [])
        self.port = int(self.argv[2])
        self.password = password
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + HANG_GUARD_S
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "the private redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(HANG_GUARD_S)

    def command(self, *args: str) -> None:
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        subprocess.run(["redis-cli", "-p", str(self.port), *auth, *args], check=True, capture_output=True,
                       timeout=HANG_GUARD_S)


@pytest.fixture
def private_redis(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_redis_with_password(tmp_path):
    server = PrivateRedis(tmp_path, PASSWORD)
    server.start()
    yield server
    server.stop()


# --------------------------------------------------------------------------- stopped mid-run


def investigate_during(chaos, server: PrivateRedis, *, window: float, timeout: float) -> dict:
    """investigate the private Redis's "jobs" while `chaos` runs beside it."""
    beside = threading.Thread(target=chaos)
    beside.start()
    try:
        report, _, _ = investigate("--redis", f"redis://127.0.0.1:{server.port}/0", "--queue", "jobs",
                                   window=window, timeout=timeout)
    finally:
        beside.join(HANG_GUARD_S)
    return report


def test_a_broker_stopped_mid_run_and_restarted_between_samples(private_redis):
    private_redis.command("RPUSH", "jobs", *map(str, range(50)))

    def bounce():
        time.sleep(1.5)  # the window (4 s) is under way
        private_redis.stop()
        time.sleep(1.0)
        private_redis.start()
        private_redis.command("RPUSH", "jobs", *map(str, range(50)))

    report = investigate_during(bounce, private_redis, window=4.0, timeout=15)
    redis = probe(report, "redis")
    if redis["status"] == "ok":  # every sample fell outside the outage: the queue is reported
        assert any(q["name"] == "jobs" for q in report["queues"])
    else:
        assert redis["status"] == "error", redis
        assert any(word in redis["error"] for word in ("refused", "closed", "reset")), redis["error"]
        assert f"127.0.0.1:{private_redis.port}" in redis["error"]
        assert any("the redis probe failed" in reason for reason in report["verdict_reasons"])
    assert report["verdict"] != "healthy"


def test_a_broker_stopped_mid_run_and_left_down(private_redis):
    private_redis.command("RPUSH", "jobs", "1")

    def stop_for_good():
        time.sleep(1.0)
        private_redis.stop()

    report = investigate_during(stop_for_good, private_redis, window=3.0, timeout=12)
    redis = probe(report, "redis")
    assert redis["status"] == "error", redis
    assert any(word in redis["error"] for word in ("refused", "closed", "reset")), redis["error"]
    assert report["verdict"] == "unknown"


# --------------------------------------------------------------------------- credentials


def test_redis_stopped_after_the_window_keeps_the_sampled_records(private_redis, monkeypatch):
    """The server goes away between the last sample and the detail pass: the
    queue's record (depth, rates, status from the samples) is still reported,
    with a note that the details are missing, not a probe error.  Run in-process
    so the server can be stopped at exactly that point."""
    from qdiag import targets as tg
    from qdiag.config import Settings
    from qdiag.context import ProbeContext
    from qdiag.probes import redis_queues

    private_redis.command("XADD", "orders", "*", "n", "1")
    private_redis.command("XGROUP", "CREATE", "orders", "workers", "0")
    private_redis.command("XADD", "orders", "*", "n", "2")
    real_details = redis_queues.group_details

    def server_gone_then_details(run, samples, keys):
        private_redis.stop()
        return real_details(run, samples, keys)

    monkeypatch.setattr(redis_queues, "group_details", server_gone_then_details)
    settings = Settings(targets=tg.Targets(redis=tg.parse_redis(f"redis://127.0.0.1:{private_redis.port}/0")),
                        window_s=1.0)
    now = time.monotonic()
    ctx = ProbeContext(settings=settings, name="redis", deadline=now + 1.0 + 15, window_start=now)
    out = redis_queues.collect(ctx)
    [record] = [q for q in out["queues"] if q["name"] == "orders"]
    assert record["group"] == "workers" and record["depth"] == 2 and record["samples"] >= 2
    assert record["consumer_list"] is None  # the details were never read
    assert any(n.startswith("details not read (") and f"127.0.0.1:{private_redis.port}" in n
               for n in out["notes"]), out["notes"]


def test_redis_with_the_wrong_password(private_redis_with_password):
    report, _, _ = investigate("--redis", f"redis://:badpw-faults@127.0.0.1:{private_redis_with_password.port}/0",
                               "--queue", "jobs")
    redis = probe(report, "redis")
    assert redis["status"] == "error" and "authentication failed" in redis["error"], redis


def test_redis_without_the_password_it_requires(private_redis_with_password):
    report, _, _ = investigate("--redis", f"redis://127.0.0.1:{private_redis_with_password.port}/0", "--queue", "jobs")
    redis = probe(report, "redis")
    assert redis["status"] == "error" and "requires a password" in redis["error"], redis


def test_rabbitmq_api_with_the_wrong_password(rabbitmq_api):
    report, _, _ = investigate("--rabbitmq", "http://guest:badpw-faults@127.0.0.1:15672", "--queue", "q")
    rabbitmq = probe(report, "rabbitmq")
    assert rabbitmq["status"] == "error", rabbitmq
    assert "wrong user or password" in rabbitmq["error"] and "guest" in rabbitmq["error"]


# --------------------------------------------------------------------------- TLS to a plaintext port


def test_rediss_to_a_plain_redis_port(private_redis_with_password):
    report, _, _ = investigate("--redis", f"rediss://:{PASSWORD}@127.0.0.1:{private_redis_with_password.port}/0",
                               "--queue", "jobs")
    redis = probe(report, "redis")
    assert redis["status"] == "error" and "TLS" in redis["error"] and "redis://" in redis["error"], redis


def test_https_to_the_plain_management_port(rabbitmq_api):
    report, _, _ = investigate("--rabbitmq", "https://guest:guest@127.0.0.1:15672", "--queue", "q")
    rabbitmq = probe(report, "rabbitmq")
    assert rabbitmq["status"] == "error" and "TLS" in rabbitmq["error"] and "http://" in rabbitmq["error"], rabbitmq


# --------------------------------------------------------------------------- names that do not resolve

# .invalid never resolves (RFC 6761).
@pytest.mark.parametrize("flag, target, name, words", [
    ("--kafka", "no-such-host.invalid:9092", "kafka", ("does not resolve",)),
    ("--redis", "redis://no-such-host.invalid:6379/0", "redis", ("cannot resolve",)),
    ("--rabbitmq", "http://guest:guest@no-such-host.invalid:15672", "rabbitmq", ("cannot resolve",)),
])
def test_a_broker_name_that_does_not_resolve(flag, target, name, words):
    report, _, _ = investigate(flag, target, "--queue", "q")
    found = probe(report, name)
    assert found["status"] == "error", found
    assert all(word in found["error"] for word in words) and "no-such-host.invalid" in found["error"], found


def test_a_dependency_name_that_does_not_resolve():
    report, _, _ = investigate("--dependency", "http://no-such-host.invalid:8080/health")
    assert probe(report, "dependencies")["status"] == "ok"  # it measured: every request failed
    cause = report["root_causes"][0]
    assert cause["id"] == "dependency-failure" and "no-such-host.invalid" in cause["subject"]
    assert any("DNS lookup of no-such-host.invalid failed" in line for line in cause["evidence"]), cause["evidence"]
