"""The RabbitMQ probe against the real broker on loopback (RabbitMQ 3.10,
AMQP 5672, management API 15672).

Every test makes its own uniquely named queues with pika, and deletes them.
Management statistics refresh every 5 s, so a test that compares with
`rabbitmqctl` (which asks the queues themselves) first waits, bounded, until
the API has caught up with the state the test made.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

import pika  # noqa: E402
import requests  # noqa: E402

from qdiag.config import resolve  # noqa: E402
from qdiag.probe import all_probes  # noqa: E402
from qdiag.runner import Runner, effective_timeout  # noqa: E402

pytestmark = pytest.mark.broker

HOST = "127.0.0.1"
# Set from the rig's fixtures (tests/conftest.py), which fail when the broker does not serve.
MGMT_URL = AMQP_URL = API = ""
STATS_INTERVAL_S = 5.0  # the rig's collect_statistics_interval (RabbitMQ's default)
CATCH_UP_S = 40.0  # bound on waiting for the management statistics


@pytest.fixture(autouse=True)
def _rig(rabbitmq_api, rabbitmq_amqp):
    global MGMT_URL, AMQP_URL, API
    MGMT_URL, AMQP_URL = rabbitmq_api, rabbitmq_amqp
    parts = urlsplit(rabbitmq_api)
    API = f"{parts.scheme}://{parts.hostname}:{parts.port}/api"


# ---------------------------------------------------------------- helpers


def run_probe(url=None, queues=(), window=1.0, options=None, tmp_path=None):
    """Run the rabbitmq probe through the real runner; returns (result dict, discovered)."""
    settings = resolve({"rabbitmq": url or MGMT_URL, "queues": list(queues), "window": window, "timeout": window + 60},
                       env={}, cwd=Path(tmp_path or "/"))
    if options:
        settings = replace(settings, probe_options={"rabbitmq": dict(options)})
    probe = all_probes()["rabbitmq"]
    results, discovered = Runner(settings, [probe]).run()
    result = results[0].as_dict()
    result["allowed_s"] = effective_timeout(probe, settings)
    return result, discovered


def rabbitmqctl_queues(vhost="/"):
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    out = subprocess.run([exe, "list_queues", "-q", "--formatter", "json", "-p", vhost,
                          "name", "messages_ready", "messages_unacknowledged", "consumers"],
                         capture_output=True, text=True, timeout=60, check=True)
    return {q["name"]: q for q in json.loads(out.stdout or "[]")}


def api_queue(name, vhost="/"):
    r = requests.get(f"{API}/queues/{quote(vhost, safe='')}/{quote(name, safe='')}", auth=("guest", "guest"), timeout=10,
                     params={"columns": "messages_ready,messages_unacknowledged,consumers"})
    body = r.json() if r.status_code == 200 else None
    return body if isinstance(body, dict) else None  # [] until the queue's first statistics


def wait_for_api(names, expected: dict | None = None, vhost="/"):
    """Poll until the management API shows for each queue what rabbitmqctl shows
    (or `expected`), twice in a row; fail after CATCH_UP_S."""
    deadline = time.monotonic() + CATCH_UP_S
    agreed_once = False
    while time.monotonic() < deadline:
        truth = expected or rabbitmqctl_queues(vhost)
        ok = True
        for n in names:
            got = api_queue(n, vhost)
            want = truth.get(n)
            if got is None or want is None or any(got.get(k) != want.get(k) for k in
                                                  ("messages_ready", "messages_unacknowledged", "consumers")):
                ok = False
                break
        if ok and agreed_once:
            return
        agreed_once = ok
        time.sleep(1.0)
    pytest.fail(f"management API did not catch up with rabbitmqctl within {CATCH_UP_S:g}s for {names}")


def record(result, name):
    found = [q for q in result["observations"].get("queues", []) if q["queue"] == name and q["vhost"] == "/"]
    assert found, f"no record for {name} in {[q['name'] for q in result['observations'].get('queues', [])]}"
    return found[0]


class Rig:
    """Queues and connections one test made; all removed afterwards."""

    def __init__(self, vhost="/"):
        self.tag = uuid.uuid4().hex[:10]
        self.vhost = vhost
        if vhost != "/":  # a vhost of its own: nothing else on the shared broker touches it
            vh = quote(vhost, safe="")
            requests.put(f"{API}/vhosts/{vh}", auth=("guest", "guest"), timeout=30).raise_for_status()
            requests.put(f"{API}/permissions/{vh}/guest", auth=("guest", "guest"), timeout=30,
                         json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
        self.conn = pika.BlockingConnection(self.params())
        self.ch = self.conn.channel()
        self.queues: list[str] = []
        self.exchanges: list[str] = []
        self.others: list = []

    def params(self):
        params = pika.URLParameters(AMQP_URL)
        params.virtual_host = self.vhost
        return params

    def amqp_url(self):
        return AMQP_URL.rsplit("/", 1)[0] + "/" + quote(self.vhost, safe="")

    def name(self, stem):
        return f"qdiag-test.{stem}.{self.tag}"

    def queue(self, stem, arguments=None, durable=False):
        name = self.name(stem)
        self.ch.queue_declare(name, arguments=arguments or {}, durable=durable)
        self.queues.append(name)
        return name

    def exchange(self, stem, kind):
        name = self.name(stem)
        self.ch.exchange_declare(name, kind)
        self.exchanges.append(name)
        return name

    def publish(self, queue, count, body=b"m", confirm=False):
        ch = self.conn.channel()
        nacked = 0
        if confirm:
            ch.confirm_delivery()
        for _ in range(count):
            try:
                ch.basic_publish("", queue, body)
            except pika.exceptions.NackError:
                nacked += 1
        ch.close()
        return nacked

    def consumer(self, queue, prefetch, ack=False):
        """A consumer on its own connection that takes `prefetch` messages and never acks."""
        conn = pika.BlockingConnection(self.params())
        ch = conn.channel()
        ch.basic_qos(prefetch_count=prefetch)
        ch.basic_consume(queue, lambda c, m, p, b: c.basic_ack(m.delivery_tag) if ack else None, auto_ack=False)
        conn.process_data_events(0.5)
        self.others.append(conn)
        return conn

    def close(self):
        for c in self.others:
            try:
                c.close()
            except Exception:
                pass
        if self.vhost != "/":
            try:
                self.conn.close()
            finally:
                requests.delete(f"{API}/vhosts/{quote(self.vhost, safe='')}", auth=("guest", "guest"), timeout=60)
            return
        try:
            ch = self.conn.channel()
            for q in self.queues:
                ch.queue_delete(q)
            for e in self.exchanges:
                ch.exchange_delete(e)
            self.conn.close()
        except Exception:
            # Fall back to the API so nothing is left behind on the shared broker.
            for q in self.queues:
                requests.delete(f"{API}/queues/%2F/{q}", auth=("guest", "guest"), timeout=10)
            for e in self.exchanges:
                requests.delete(f"{API}/exchanges/%2F/{e}", auth=("guest", "guest"), timeout=10)


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def state_of_vhost(vhost):
    """Queues with their message and consumer counts, exchanges and bindings of
    one vhost, from rabbitmqctl (no statistics lag)."""
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"

    def listing(*args):
        out = subprocess.run([exe, *args, "-q", "--formatter", "json", "-p", vhost], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        return sorted(json.dumps(item, sort_keys=True) for item in json.loads(out or "[]"))

    return {"queues": rabbitmqctl_queues(vhost), "exchanges": listing("list_exchanges", "name", "type"),
            "bindings": listing("list_bindings", "source_name", "destination_name", "routing_key")}


# ---------------------------------------------------------------- exact, proven


def test_parity_with_rabbitmqctl(rig, tmp_path):
    backlog = rig.queue("backlog")
    held = rig.queue("held")
    empty = rig.queue("empty")
    rig.publish(backlog, 37)
    rig.publish(held, 20)
    rig.consumer(held, prefetch=4)  # 4 unacked, 16 ready, 1 consumer
    rig.consumer(empty, prefetch=1)
    rig.consumer(empty, prefetch=1)
    names = [backlog, held, empty]
    wait_for_api(names)

    result, _ = run_probe(queues=names, window=1.0, tmp_path=tmp_path)
    truth = rabbitmqctl_queues()
    assert result["status"] == "ok", result["error"]
    for name in names:
        rec = record(result, name)
        want = truth[name]
        got = {k: rec[k] for k in ("messages_ready", "messages_unacknowledged", "consumers")}
        assert got == {k: want[k] for k in got}, name
        assert rec["depth"] == want["messages_ready"] + want["messages_unacknowledged"]
    # The figures are the test's own too, not just equal to each other.
    assert (truth[held]["messages_ready"], truth[held]["messages_unacknowledged"]) == (16, 4)
    assert truth[empty]["consumers"] == 2 and truth[backlog]["messages_ready"] == 37


def test_amqp_fallback_ready_only_matches_rabbitmqctl(rig, tmp_path):
    q = rig.queue("amqp")
    rig.publish(q, 12)
    rig.consumer(q, prefetch=2)  # 10 ready, 2 unacked: passive declare sees ready only
    truth = rabbitmqctl_queues()[q]
    result, _ = run_probe(url=AMQP_URL, queues=[q, "qdiag-test.absent." + rig.tag], window=1.0, tmp_path=tmp_path)
    assert result["status"] == "ok", result["error"]
    rec = record(result, q)
    assert rec["depth_kind"] == "ready only" and rec["messages_unacknowledged"] is None
    assert (rec["messages_ready"], rec["consumers"]) == (truth["messages_ready"], truth["consumers"]) == (10, 1)
    assert result["observations"]["not_found"] == [{"kind": "queue", "name": "qdiag-test.absent." + rig.tag}]


# ---------------------------------------------------------------- read-only, proven


@pytest.fixture
def own_vhost():
    r = Rig(vhost=f"qdiag-test-ro-{uuid.uuid4().hex[:10]}")
    yield r
    r.close()


def test_probe_run_changes_nothing(own_vhost, tmp_path, monkeypatch):
    # The proof runs in a vhost of the test's own, so that other users of the
    # shared broker cannot change the state under it; the probes still read
    # the whole broker (every vhost).
    rig = own_vhost
    dlx = rig.exchange("dlx", "fanout")
    dlq = rig.queue("dlq")
    rig.ch.queue_bind(dlq, dlx)
    q = rig.queue("ro", arguments={"x-dead-letter-exchange": dlx, "x-max-length": 50})
    rig.publish(q, 30)
    rig.consumer(q, prefetch=3)
    never = "qdiag-test.never." + rig.tag
    wait_for_api([q, dlq], vhost=rig.vhost)

    methods = []
    original = requests.Session.request

    def spy(self, method, url, *args, **kwargs):
        methods.append((method.upper(), url))
        return original(self, method, url, *args, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    before = state_of_vhost(rig.vhost)
    result, _ = run_probe(queues=[q, f"{rig.vhost}/*"], window=1.0, tmp_path=tmp_path)
    amqp_result, _ = run_probe(url=rig.amqp_url(), queues=[q, never], window=1.0, tmp_path=tmp_path)
    after = state_of_vhost(rig.vhost)
    assert result["status"] == "ok", result["error"]
    assert amqp_result["status"] == "ok", amqp_result["error"]
    assert {r["queue"] for r in result["observations"]["queues"] if r["vhost"] == rig.vhost} == {q, dlq}
    assert before == after
    assert before["queues"][q]["messages_ready"] == 27 and before["queues"][q]["messages_unacknowledged"] == 3
    assert never not in after["queues"]  # the passive declare created nothing
    assert methods and {m for m, _ in methods} == {"GET"}
    assert not any(url.split("?")[0].endswith("/get") for _, url in methods)
    # Every request is counted: the probe's own, plus one GET /api/consumers for discovery.
    discovery = [u for _, u in methods if u.split("?")[0].endswith("/api/consumers")]
    assert len(discovery) == 1
    assert result["observations"]["api_requests"] == len(methods) - len(discovery)


# ---------------------------------------------------------------- fill, hoarding, rates


def test_full_queue_with_reject_publish(rig, tmp_path):
    q = rig.queue("full", arguments={"x-max-length": 100, "x-overflow": "reject-publish"})
    nacked = rig.publish(q, 120, confirm=True)
    assert nacked == 20
    wait_for_api([q], expected={q: {"messages_ready": 100, "messages_unacknowledged": 0, "consumers": 0}})
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    rec = record(result, q)
    assert rec["fill_ratio"] == 1.0 and rec["limits"]["max_length"] == 100
    assert rec["limits"]["overflow"] == "reject-publish"
    assert "refused" in rec["limits"]["overflow_meaning"]
    assert rec["status"] == "full" and rec["time_to_full_s"] == 0.0
    assert any(q in p and "full" in p for p in result["observations"]["problems"])


def test_dead_letter_queue_found_through_bindings(rig, tmp_path):
    dlx = rig.exchange("dlx", "direct")
    dlq = rig.queue("dead")
    other = rig.queue("notdead")
    rig.ch.queue_bind(dlq, dlx, routing_key="dead")
    rig.ch.queue_bind(other, dlx, routing_key="other")
    q = rig.queue("src", arguments={"x-dead-letter-exchange": dlx, "x-dead-letter-routing-key": "dead",
                                    "x-max-length": 5})
    rig.publish(q, 8)  # drop-head: 3 oldest dead-lettered
    wait_for_api([q, dlq], expected={q: {"messages_ready": 5, "messages_unacknowledged": 0, "consumers": 0},
                                     dlq: {"messages_ready": 3, "messages_unacknowledged": 0, "consumers": 0}})
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    rec = record(result, q)
    dead = rec["dead_letter"]
    assert dead["exchange"] == dlx and [d["name"] for d in dead["queues"]] == [dlq]
    assert dead["queues"][0]["depth"] == 3
    assert "drop-head" == rec["limits"]["overflow"]
    assert any("dead-letter queue of" in w for w in record(result, dlq)["selected_because"])


def test_prefetch_hoarding(rig, tmp_path):
    q = rig.queue("hoard")
    rig.publish(q, 20)
    rig.consumer(q, prefetch=5)
    wait_for_api([q], expected={q: {"messages_ready": 15, "messages_unacknowledged": 5, "consumers": 1}})
    # Hoarding is holding messages for a while: a consumer younger than one
    # stats interval is given the benefit of the doubt (its broker rates are not in yet).
    time.sleep(STATS_INTERVAL_S)
    result, _ = run_probe(queues=[q], window=STATS_INTERVAL_S + 0.5, tmp_path=tmp_path)
    rec = record(result, q)
    assert rec["consumer_prefetch"] == [5]
    assert "prefetch-hoarding" in rec["findings"] and rec["status"] == "stuck"


class Load:
    """Publishes `pub_rate`/s to a queue and acks `ack_rate`/s, paced by the clock."""

    def __init__(self, queue, pub_rate, ack_rate):
        self.queue, self.pub_rate, self.ack_rate = queue, pub_rate, ack_rate
        self.stop = threading.Event()
        self.published = 0
        self.started = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)

    def _run(self):
        pub = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        con = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        pch, cch = pub.channel(), con.channel()
        cch.basic_qos(prefetch_count=1)
        pending = []
        cch.basic_consume(self.queue, lambda c, m, p, b: pending.append(m.delivery_tag))
        acked = 0
        self.started = time.monotonic()
        while not self.stop.is_set():
            elapsed = time.monotonic() - self.started
            while self.published < elapsed * self.pub_rate:
                pch.basic_publish("", self.queue, b"x")
                self.published += 1
            while pending and acked < elapsed * self.ack_rate:
                cch.basic_ack(pending.pop(0))
                acked += 1
            con.process_data_events(0.005)
            pub.process_data_events(0)
        pub.close()
        con.close()


def test_measured_rates_follow_the_load(rig, tmp_path):
    q = rig.queue("rates")
    with Load(q, pub_rate=40, ack_rate=25) as load:
        time.sleep(STATS_INTERVAL_S + 2)  # a full statistics interval of steady load
        result, _ = run_probe(queues=[q], window=2 * STATS_INTERVAL_S + 0.5, tmp_path=tmp_path)
        achieved = load.published / (time.monotonic() - load.started)
    rec = record(result, q)
    assert achieved == pytest.approx(40, rel=0.1), "the load generator could not keep its pace"
    assert rec["rate_source"] == "qdiag", rec["rates_measured_reason"]
    assert rec["rates_measured_window_s"] == pytest.approx(2 * STATS_INTERVAL_S, abs=1.0)
    assert rec["rate_in"] == pytest.approx(40, rel=0.25)
    assert rec["rate_out"] == pytest.approx(25, rel=0.25)
    assert rec["net_growth_per_s"] == pytest.approx(15, abs=6)
    assert rec["status"] == "growing"


def test_short_window_says_why_rates_are_not_measured(rig, tmp_path):
    q = rig.queue("short")
    rig.publish(q, 5)
    result, _ = run_probe(queues=[q], window=1.0, tmp_path=tmp_path)
    rec = record(result, q)
    assert rec["rates_measured"] is None and "statistics interval" in rec["rates_measured_reason"]
    assert rec["rate_source"] in ("broker", None)


def test_discovers_the_local_consumer_process(rig, tmp_path):
    q = rig.queue("disc")
    rig.consumer(q, prefetch=1)
    deadline = time.monotonic() + CATCH_UP_S
    while time.monotonic() < deadline:
        settings = resolve({"rabbitmq": MGMT_URL, "queues": [q], "window": 1.0}, env={}, cwd=tmp_path)
        from qdiag.context import ProbeContext

        ctx = ProbeContext(settings=settings, name="rabbitmq", deadline=time.monotonic() + 5)
        found = all_probes()["rabbitmq"].discover(ctx)
        if found:
            break
        time.sleep(1)
    assert {"pid": os.getpid(), "subject": f"rabbitmq:{q}"}.items() <= found[0].items()


# ---------------------------------------------------------------- bad input


def free_port():
    s = socket.socket()
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def silent_listener():
    """A TCP port that accepts connections (kernel backlog) and never answers."""
    s = socket.socket()
    s.bind((HOST, 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def assert_one_line_error(result, *needles, secret=None):
    assert result["status"] == "error", result
    error = result["error"]
    assert "\n" not in error and "Traceback" not in error
    for needle in needles:
        assert needle in error, error
    if secret:
        assert secret not in json.dumps(result)
    assert result["duration_s"] <= result["allowed_s"]


def test_connection_refused(tmp_path):
    port = free_port()
    result, _ = run_probe(url=f"http://guest:guest@{HOST}:{port}", tmp_path=tmp_path)
    assert_one_line_error(result, "connection refused", f"{HOST}:{port}")
    amqp, _ = run_probe(url=f"amqp://guest:guest@{HOST}:{port}/%2F", queues=["x"], tmp_path=tmp_path)
    assert_one_line_error(amqp, "connection refused", f"{HOST}:{port}")


def test_port_that_never_answers(silent_listener, tmp_path):
    began = time.monotonic()
    result, _ = run_probe(url=f"http://guest:guest@{HOST}:{silent_listener}", tmp_path=tmp_path,
                          options={"request_timeout_s": 3})
    assert_one_line_error(result, "no answer", f"{HOST}:{silent_listener}")
    amqp, _ = run_probe(url=f"amqp://guest:guest@{HOST}:{silent_listener}/%2F", queues=["x"], tmp_path=tmp_path,
                        options={"request_timeout_s": 3})
    assert_one_line_error(amqp, "handshake", f"{HOST}:{silent_listener}")
    assert time.monotonic() - began < 30  # two probes, each bounded by its 3 s timeout plus the window


def test_port_that_never_answers_default_timeout_stays_within_deadline(silent_listener, tmp_path):
    result, _ = run_probe(url=f"http://guest:guest@{HOST}:{silent_listener}", tmp_path=tmp_path)
    assert_one_line_error(result, "no answer")


def test_wrong_password_not_echoed(tmp_path):
    secret = "Wr0ng-pa55word-qdiag"
    result, _ = run_probe(url=f"http://guest:{secret}@{HOST}:15672", tmp_path=tmp_path)
    assert_one_line_error(result, "wrong user or password", f"{HOST}:15672", secret=secret)
    amqp, _ = run_probe(url=f"amqp://guest:{secret}@{HOST}:5672/%2F", queues=["x"], tmp_path=tmp_path)
    assert_one_line_error(amqp, "wrong user or password", secret=secret)


def test_tls_against_plaintext(tmp_path):
    result, _ = run_probe(url=f"https://guest:guest@{HOST}:15672", tmp_path=tmp_path)
    assert_one_line_error(result, "TLS", "http://")
    amqp, _ = run_probe(url=f"amqps://guest:guest@{HOST}:5672/%2F", queues=["x"], tmp_path=tmp_path)
    assert_one_line_error(amqp, "TLS", "amqp://")


def test_management_url_on_the_amqp_port(tmp_path):
    result, _ = run_probe(url=f"http://guest:guest@{HOST}:5672", tmp_path=tmp_path, options={"request_timeout_s": 3})
    assert result["status"] == "error" and "\n" not in result["error"]


def test_named_queue_that_does_not_exist(tmp_path):
    name = "qdiag-test.absent." + uuid.uuid4().hex[:8]
    glob = f"qdiag-test.absent.{uuid.uuid4().hex[:8]}.*"
    result, _ = run_probe(queues=[name, glob], tmp_path=tmp_path)
    assert result["status"] == "ok"
    assert result["observations"]["not_found"] == [{"kind": "queue", "name": name}, {"kind": "queue", "name": glob}]
    assert any(name in n for n in result["observations"]["notes"])
    # Not an error: another broker of the same run may have the queue.
    amqp, _ = run_probe(url=AMQP_URL, queues=[name], tmp_path=tmp_path)
    assert amqp["status"] == "ok", amqp["error"]
    assert amqp["observations"]["not_found"] == [{"kind": "queue", "name": name}]
    assert amqp["observations"]["queues"] == []
    assert any(name in n and "does not exist" in n for n in amqp["observations"]["notes"])
    assert name not in rabbitmqctl_queues()


def test_amqp_without_queue_names_is_not_applicable(tmp_path):
    result, _ = run_probe(url=AMQP_URL, tmp_path=tmp_path)
    assert result["status"] == "not_applicable" and "management API" in result["error"]


def test_unknown_vhost_over_amqp(tmp_path):
    result, _ = run_probe(url=f"amqp://guest:guest@{HOST}:5672/qdiag-no-such-vhost", queues=["x"], tmp_path=tmp_path)
    assert_one_line_error(result, "qdiag-no-such-vhost")
