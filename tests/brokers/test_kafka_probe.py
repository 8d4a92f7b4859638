"""The Kafka probe against the rig's real Kafka (KRaft, 127.0.0.1:9092).

Each test builds its own topics and groups (unique names, tests/fixtures/kafka/
scenarios.py) and deletes them at its end; the module's last test checks that
nothing of this module's is left.  Numbers are compared with Kafka's own
kafka-consumer-groups (tests/rig/kafka-consumer-groups).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psutil
import pytest

from qdiag.config import Settings
from qdiag.context import ProbeContext
from qdiag.probe import ProbeError, all_probes
from qdiag.runner import Runner, effective_timeout
from qdiag.targets import KafkaTarget, Targets

pytestmark = pytest.mark.broker

TESTS = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kafka_scenarios", TESTS / "fixtures" / "kafka" / "scenarios.py")
scenarios = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(scenarios)

MODULE_PREFIX = f"qdiag-kt-{uuid.uuid4().hex[:8]}"
# What a read-only probe may send: nothing that joins, commits, produces, creates or deletes.
READ_ONLY_APIS = {"ApiVersions", "Metadata", "ListGroups", "DescribeGroups", "FindCoordinator", "OffsetFetch",
                  "ListOffsets", "Fetch", "DescribeCluster"}


@pytest.fixture
def rig(kafka_bootstrap):
    made = scenarios.Rig(kafka_bootstrap, prefix=f"{MODULE_PREFIX}-{uuid.uuid4().hex[:4]}")
    yield made
    made.close()


def settings(bootstrap: str, *, window: float = 1.0, groups=(), queues=(), options=None) -> Settings:
    return Settings(targets=Targets(kafka=KafkaTarget(tuple(bootstrap.split(","))), groups=tuple(groups),
                                    queues=tuple(queues)),
                    window_s=window, timeout_s=window + 120, probe_options={"kafka": dict(options or {})})


def run(bootstrap: str, **kwargs):
    """One full run of the probe through the runner (discovery included): (result, discovered)."""
    s = settings(bootstrap, **kwargs)
    (result,), discovered = Runner(s, [all_probes()["kafka"]]).run()
    return result, discovered


def ok(bootstrap: str, **kwargs) -> dict:
    result, _ = run(bootstrap, **kwargs)
    assert result.status == "ok", result.error
    return result.observations


def group_of(obs: dict, group: str) -> dict:
    [found] = [g for g in obs["groups"] if g["group"] == group]
    return found


def rows_of(obs: dict, group: str) -> dict[tuple[str, int], dict]:
    return {(r["topic"], r["partition"]): r for r in group_of(obs, group)["partitions"]}


def queue_of(obs: dict, group: str, topic: str) -> dict:
    [found] = [q for q in obs["queues"] if q["group"] == group and q["name"] == topic]
    return found


def kafka_consumer_groups(tool: str, bootstrap: str, group: str) -> dict[tuple[str, int], dict]:
    """kafka-consumer-groups --describe, one dict per partition row ('-' is None)."""
    proc = subprocess.run([tool, "--bootstrap-server", bootstrap, "--describe", "--group", group],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in proc.stdout.splitlines():
        cells = line.split()
        if not cells or cells[0] != group:
            continue
        _, topic, partition, current, end, lag, consumer, host, client = (cells + ["-"] * 9)[:9]

        def num(cell):
            return None if cell == "-" else int(cell)

        rows[(topic, int(partition))] = {"committed": num(current), "log_end": num(end), "lag": num(lag),
                                         "consumer_id": None if consumer == "-" else consumer}
    return rows


# --- exact: the same numbers as Kafka's own tool --------------------------------------------------

def test_parity_with_kafka_consumer_groups(rig, kafka_bootstrap, kafka_tools):
    subscribed, other = rig.topic(3, "sub"), rig.topic(2, "other")
    rig.produce(subscribed, {0: 10, 1: 20, 2: 30})
    rig.produce(other, {0: 5, 1: 7})
    group = rig.group()
    rig.commit(group, {(other, 0): 2})  # committed while the group is empty: nobody will own it
    assert rig.member(group, subscribed, client_id="parity-worker", mode="stall", commit={1: 4}).wait(30)
    rig.wait_state(group, "Stable", members=1)

    obs = ok(kafka_bootstrap, groups=[group])
    reference = kafka_consumer_groups(kafka_tools, kafka_bootstrap, group)
    ours = rows_of(obs, group)

    assert set(ours) == set(reference) == {(subscribed, 0), (subscribed, 1), (subscribed, 2), (other, 0)}
    for key, ref in reference.items():
        row = ours[key]
        assert (row["committed"], row["log_end"], row["lag"]) == (ref["committed"], ref["log_end"], ref["lag"]), key
        assert (row["owner"] or {}).get("member_id") == ref["consumer_id"], key

    # three-way values: never committed is "none", not 0 and not the whole log
    never = ours[(subscribed, 0)]
    assert never["committed"] is None and never["committed_state"] == "none"
    assert never["lag"] is None and never["lag_state"] == "none" and never["status"] == "NO_COMMIT"
    assert never["log_end"] == 10 and never["owner_state"] == "owned"
    # committed but owned by nobody: still there, marked unowned
    unowned = ours[(other, 0)]
    assert unowned["committed"] == 2 and unowned["owner"] is None and unowned["owner_state"] == "unowned"
    q = queue_of(obs, group, subscribed)
    assert q["consumers"] == 1 and q["members"] == 1 and q["depth"] == 16 and q["no_commit_partitions"] == 2
    member = group_of(obs, group)["members"][0]
    assert member["client_id"] == "parity-worker" and member["assignment"] == {subscribed: [0, 1, 2]}


# --- read-only --------------------------------------------------------------------------------------

@pytest.fixture
def wire(monkeypatch):
    """Every request any kafka-python client in this process sends: (client_id, api, request)."""
    from kafka.net.manager import KafkaConnectionManager

    sent = []
    original = KafkaConnectionManager.send

    def spy(self, request, *args, **kwargs):
        sent.append((self.config.get("client_id"), type(request).__name__.removesuffix("Request"), request))
        return original(self, request, *args, **kwargs)

    monkeypatch.setattr(KafkaConnectionManager, "send", spy)
    return sent


def broker_state(rig) -> dict:
    groups = {g["group_id"]: g["group_state"] for g in rig.admin.list_groups()}
    return {
        "topics": sorted(t for t in rig.admin.list_topics() if t.startswith("__") or t.startswith(MODULE_PREFIX)),
        "groups": {g: s for g, s in groups.items() if g.startswith(MODULE_PREFIX) or g in ("", "qdiag")},
        "offsets": {g: rig.committed(g) for g in rig.groups},
    }


def test_a_full_run_changes_nothing_on_the_broker(rig, kafka_bootstrap, wire):
    busy, quiet = rig.topic(2, "busy"), rig.topic(1, "quiet")
    rig.produce(busy, {0: 40, 1: 40})
    rig.produce(quiet, {0: 3})
    empty, live = rig.group("empty"), rig.group("live")
    rig.commit(empty, {(busy, 0): 10, (busy, 1): 39, (quiet, 0): 3})
    assert rig.member(live, busy, client_id="ro-worker", mode="stall", commit={0: 20}).wait(30)
    rig.wait_state(live, "Stable", members=1)
    missing_topic = rig.name("missing")

    before = broker_state(rig)
    wire.clear()
    obs = ok(kafka_bootstrap, groups=[empty, live], options={"read_committed": True})
    result, _ = run(kafka_bootstrap, queues=[missing_topic])
    assert result.status == "error" and missing_topic in result.error
    time.sleep(0.5)
    after = broker_state(rig)

    assert after == before
    assert missing_topic not in rig.admin.list_topics()
    # the run really read what there was to read, including records (not a no-op)
    assert obs["timestamp_reads"]["read"] >= 2
    ours = [(api, req) for client, api, req in wire if client == "qdiag"]
    assert ours and {api for api, _ in ours} <= READ_ONLY_APIS, Counter(api for api, _ in ours)
    for api, req in ours:
        if api == "Metadata" and req.topics:  # naming topics: the broker must never create them
            assert req.allow_auto_topic_creation is False, req
        if api == "Fetch":
            assert req.isolation_level == 1  # read_committed as asked


# --- behaviour over the window -------------------------------------------------------------------------

def test_stopped_stalled_and_draining_groups(rig, kafka_bootstrap):
    live, backlog = rig.topic(3, "live"), rig.topic(1, "backlog")
    rig.produce(live, {0: 30, 1: 30, 2: 30})
    rig.produce(backlog, {0: 3000})
    stopped, stalled, draining = rig.group("stopped"), rig.group("stalled"), rig.group("draining")
    rig.commit(stopped, {(live, p): 10 for p in range(3)})
    assert rig.member(stalled, live, client_id="stuck-worker", mode="stall", commit={p: 20 for p in range(3)}).wait(30)
    assert rig.member(draining, backlog, client_id="drain-worker", mode="drain", batch=20, pause_s=0.05).wait(30)
    rig.wait_state(stalled, "Stable", members=1)
    rig.wait_state(draining, "Stable", members=1)
    rig.keep_producing(live, 3, per_second=60)
    time.sleep(0.5)

    obs = ok(kafka_bootstrap, window=3.0, groups=[stopped, stalled, draining])
    assert obs["window"]["samples"] >= 3

    assert group_of(obs, stopped)["status"] == "STOP"
    q = queue_of(obs, stopped, live)
    assert q["lag_trend"] == "growing" and q["rate_in"] > 0 and q["rate_out"] == 0 and q["consumers"] == 0

    assert group_of(obs, stalled)["status"] == "STALL"
    q = queue_of(obs, stalled, live)
    assert q["lag_trend"] == "growing" and q["consumers"] == 1

    assert group_of(obs, draining)["status"] == "OK"
    q = queue_of(obs, draining, backlog)
    assert q["lag_trend"] == "shrinking" and q["rate_out"] > 0 and q["rate_in"] == 0
    # seconds behind of a lagging partition come from the record itself
    assert queue_of(obs, stopped, live)["lag_seconds_source"] == "record_timestamp"
    # the stopped group's records were read in the window's idle time; the draining group's
    # committed offset moved after that, so its record was read again at the last one
    reads = obs["timestamp_reads"]
    assert reads.get("read_in_window", 0) >= 1 and reads["read"] == reads["requested"], reads
    assert queue_of(obs, draining, backlog)["lag_seconds_source"] == "record_timestamp"


def test_read_committed_uses_the_last_stable_offset(rig, kafka_bootstrap):
    from kafka import KafkaProducer, TopicPartition

    topic = rig.topic(1, "txn")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=rig.name("tx"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        for i in range(5):
            producer.send(topic, b"done%d" % i, partition=0)
        producer.commit_transaction()  # records 0-4, commit marker at 5
        producer.begin_transaction()
        for i in range(3):
            producer.send(topic, b"open%d" % i, partition=0)
        producer.flush()  # 6-8 in a transaction still open
        tp = TopicPartition(topic, 0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            hw = rig.admin.list_partition_offsets({tp: -1})[tp].offset
            lso = rig.admin.list_partition_offsets({tp: -1}, isolation_level="read_committed")[tp].offset
            if (hw, lso) == (9, 6):
                break
            time.sleep(0.1)
        assert (hw, lso) == (9, 6)
        at_marker, behind = rig.group("marker"), rig.group("behind")
        rig.commit(at_marker, {(topic, 0): 5})  # the last record + 1, as many clients commit
        rig.commit(behind, {(topic, 0): 0})

        committed = ok(kafka_bootstrap, groups=[at_marker, behind], options={"read_committed": True})
        assert committed["end_offset"] == "last_stable"
        row = rows_of(committed, at_marker)[(topic, 0)]
        assert row["log_end"] == 6 and row["lag"] == 1
        assert row["effective_lag"] == 0 and row["status"] == "OK"  # the marker is not a stop
        assert queue_of(committed, at_marker, topic)["depth"] == 0
        assert rows_of(committed, behind)[(topic, 0)]["lag"] == 6

        uncommitted = ok(kafka_bootstrap, groups=[at_marker], options={"timestamp_reads": 0})
        assert uncommitted["end_offset"] == "high_watermark"
        row = rows_of(uncommitted, at_marker)[(topic, 0)]
        assert row["log_end"] == 9 and row["lag"] == 4 and row["status"] == "STOP"
    finally:
        producer.abort_transaction()
        producer.close()


def test_consumer_protocol_group_is_not_reported_dead(rig, kafka_bootstrap, kafka_tools):
    topic = rig.topic(2, "kip848")
    rig.produce(topic, {0: 5, 1: 5})
    group = rig.group("kip848")
    common = Path(kafka_tools).parent / "common.sh"
    java = subprocess.Popen(
        ["bash", "-c", f'source "{common}" && kafka_java org.apache.kafka.tools.consumer.ConsoleConsumer '
                       f'--bootstrap-server {kafka_bootstrap} --topic {topic} --group {group} --from-beginning '
                       '--consumer-property group.protocol=consumer --consumer-property client.id=kip848-worker'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        rig.wait_state(group, "Stable", timeout=90)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(rig.committed(group).values()) < 10:
            time.sleep(0.5)  # the console consumer commits every 5 s
        assert rig.committed(group) == {(topic, 0): 5, (topic, 1): 5}
        obs = ok(kafka_bootstrap, groups=[group])
        g = group_of(obs, group)
        assert g["group_type"] == "consumer" and g["state"] == "Stable" and g["status"] == "OK"
        assert g["describable"] is False and "cannot be described by this client" in g["note"]
        assert queue_of(obs, group, topic)["consumers"] is None  # unknown, not 0
    finally:
        os.killpg(java.pid, 15)
        java.wait(60)
        rig.wait_state(group, "Empty", timeout=60)


# --- consumer discovery ------------------------------------------------------------------------------

def test_discovery_finds_the_local_consumer_process(rig, kafka_bootstrap):
    topic = rig.topic(1, "disc")
    group = rig.group("disc")
    # The child consumes until its stdin closes, then leaves the group cleanly.
    code = textwrap.dedent(f"""
        import sys, threading, kafka
        done = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
        c = kafka.KafkaConsumer({topic!r}, bootstrap_servers={kafka_bootstrap!r}, group_id={group!r},
                                client_id="disc-worker", allow_auto_create_topics=False)
        while not done.wait(0.05):
            c.poll(200)
        c.close()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        rig.wait_state(group, "Stable", members=1)
        result, discovered = run(kafka_bootstrap, groups=[group])
        assert result.status == "ok", result.error
        [found] = [d for d in discovered if d["pid"] == child.pid]
        assert "disc-worker" in found["via"] and found["subject"] == f"kafka:{topic}/{group}"
        assert os.getpid() not in {d["pid"] for d in discovered}
        # the broker connects to its own port too, but it is never a member
        brokers = {c.pid for c in psutil.net_connections(kind="tcp")
                   if c.status == psutil.CONN_LISTEN and c.laddr.port == int(kafka_bootstrap.rsplit(":", 1)[1])}
        assert brokers and not brokers & {d["pid"] for d in discovered}
    finally:
        child.stdin.close()
        child.wait(30)


def test_many_samples_in_a_short_window_stay_apart(rig, kafka_bootstrap):
    topic = rig.topic(1, "gap")
    rig.produce(topic, {0: 5})
    group = rig.group("gap")
    rig.commit(group, {(topic, 0): 2})
    obs = ok(kafka_bootstrap, groups=[group], window=1.0, options={"samples": 20, "keep_raw": True})
    times = [s["t"] for s in obs["raw"]["samples"]]
    assert obs["window"]["samples"] == len(times) == 3 and "20 samples asked" in obs["window"]["note"]
    assert all(b - a >= 0.45 for a, b in zip(times, times[1:])), times
    assert obs["requests"]["by_api"]["OffsetFetch"] == 3


# --- groups that never commit, membership over the window, members gone ------------------------------------

WORKLOADS = TESTS / "scenarios" / "workloads"


def one_member_group(rig, kind: str, mode: str, records: dict[int, int]) -> tuple[str, str]:
    """A two-partition topic with `records`, and a group whose one member (mode as in
    Rig.member) has its assignment: (topic, group)."""
    topic, group = rig.topic(2, kind), rig.group(kind)
    rig.produce(topic, records)
    assert rig.member(group, topic, client_id=f"{kind}-first", mode=mode, batch=5).wait(30)
    rig.wait_state(group, "Stable", members=1)
    return topic, group


def test_a_member_that_never_commits_is_counted_from_the_log_start(rig, kafka_bootstrap):
    topic, group = one_member_group(rig, "nocommit", "consume", {0: 30, 1: 20})
    rig.keep_producing(topic, 2, per_second=20)
    obs = ok(kafka_bootstrap, groups=[group], window=2.0)
    q = queue_of(obs, group, topic)
    assert rig.committed(group) == {}
    assert q["status"] == "NO_COMMIT" and q["depth_basis"] == "log-start" and "auto.offset.reset" in q["notes"][0]
    rows = rows_of(obs, group)
    assert q["depth"] == sum(r["log_end"] - r["log_start"] for r in rows.values()) >= 50
    assert q["not_progressing_partitions"] == 2 and q["no_commit_backlog"] == q["depth"]
    assert q["group_samples"] == obs["window"]["samples"] and q["rebalances_seen"] == 0


def test_members_joining_during_the_window_are_seen(rig, kafka_bootstrap):
    topic, group = one_member_group(rig, "churn", "drain", {0: 10, 1: 10})
    # a second member joins half-way through the window: the group rebalances
    late = threading.Timer(1.0, lambda: rig.member(group, topic, client_id="second", mode="drain", batch=5))
    late.start()
    obs = ok(kafka_bootstrap, groups=[group], window=3.0, options={"samples": 4})
    late.join()
    membership = group_of(obs, group)["membership"]
    assert membership["group_samples"] == 4
    assert len(membership["members_joined"]) >= 1 and membership["rebalances_seen"] >= 1
    assert membership["members_left"] == []


def test_a_member_whose_process_was_killed_is_gone_not_stuck(rig, kafka_bootstrap):
    topic = rig.topic(2, "gone")
    rig.produce(topic, {0: 20, 1: 20})
    group = rig.group("gone")
    # a consumer on "its own host" (127.0.0.2), with a session long enough to outlive the check
    child = subprocess.Popen([sys.executable, str(WORKLOADS / "kafka_poll_loop.py"), topic, "--group", group,
                              "--bind", "127.0.0.2", "--session-timeout-ms", "12000", "--max-poll-records", "5"],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "SCENARIO_KAFKA": kafka_bootstrap})
    try:
        assert child.stdout.readline().startswith("ready")
        rig.wait_state(group, "Stable", members=1)
        deadline = time.monotonic() + 30
        while len(rig.committed(group)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # it has consumed and committed on both partitions
        rig.keep_producing(topic, 2, per_second=10)
        child.kill()
        child.wait(10)
        obs = ok(kafka_bootstrap, groups=[group], window=1.5)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        # the dead member stays until its session times out; only an empty group can be deleted
        rig.wait_state(group, "Empty", timeout=30)
    q = queue_of(obs, group, topic)
    [member] = group_of(obs, group)["members"]
    assert member["host"] == "/127.0.0.2" and member["gone"] is True
    assert q["gone_members"] == 1 and q["consumers"] == 0 and q["gone_hosts"] == ["127.0.0.2"]
    # its last connection closed when it was killed: seconds ago, not the whole TIME_WAIT
    assert q["gone_for_s"] is not None and 0 <= q["gone_for_s"] < 30
    assert {r["status"] for r in rows_of(obs, group).values()} == {"STOP"}


# --- bad input -----------------------------------------------------------------------------------------

@pytest.fixture
def silent_port():
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["unresolvable", "refused", "silent", "tls_on_plaintext", "missing_group",
                                  "missing_topic"])
def test_bad_input_is_one_clear_line_within_the_deadline(case, kafka_bootstrap, silent_port):
    kwargs = {}
    bootstrap = kafka_bootstrap
    expect = {"unresolvable": "resol",  # "does not resolve", or "name resolution ... hangs" without DNS
              "refused": "connection refused", "silent": "nothing answers a Kafka request",
              "tls_on_plaintext": "TLS handshake failed", "missing_group": "does not exist",
              "missing_topic": "does not exist"}[case]
    if case == "unresolvable":
        bootstrap = "no-such-broker.invalid:9092"  # RFC 6761: never resolves
    elif case == "refused":
        bootstrap = f"127.0.0.1:{free_port()}"
    elif case == "silent":
        bootstrap = f"127.0.0.1:{silent_port}"
    elif case == "tls_on_plaintext":
        kwargs["options"] = {"security_protocol": "SSL"}
    elif case == "missing_group":
        kwargs["groups"] = [f"{MODULE_PREFIX}-no-such-group"]
    elif case == "missing_topic":
        kwargs["queues"] = [f"{MODULE_PREFIX}-no-such-topic"]
    s = settings(bootstrap, **kwargs)
    started = time.monotonic()
    result, _ = run(bootstrap, **kwargs)
    waited = time.monotonic() - started
    assert result.status == "error"
    assert "\n" not in result.error and result.error.startswith("kafka ")
    assert expect in result.error
    # discovery (at most 3 s) plus the probe's own deadline, plus slack for a busy machine
    assert waited < 3 + effective_timeout(all_probes()["kafka"], s) + 5


def test_a_reply_kafka_python_cannot_parse_names_the_group(rig, kafka_bootstrap, monkeypatch):
    from kafka.admin._groups import GroupAdminMixin

    topic = rig.topic(1, "parse")
    group = rig.group("parse")
    rig.commit(group, {(topic, 0): 0})

    def broken(self, response):  # as seen with a Kafka-compatible broker's authorized-operations value
        raise ValueError("2147483647 is not a valid ACLOperation")

    monkeypatch.setattr(GroupAdminMixin, "_describe_groups_process_response", broken)
    s = settings(kafka_bootstrap, groups=[group])
    now = time.monotonic()
    ctx = ProbeContext(settings=s, name="kafka", deadline=now + 20, window_start=now)
    with pytest.raises(ProbeError) as caught:
        all_probes()["kafka"].collect(ctx)
    message = str(caught.value)
    assert group in message and "kafka-python" in message and "ValueError" in message


# --- size: requests and time for a bigger set ----------------------------------------------------------

def test_requests_and_time_for_twenty_topics_and_ten_groups(rig, kafka_bootstrap):
    topics = rig.many_topics(20, 10, "scale")
    for t in topics:
        rig.produce(t, {p: 2 for p in range(10)})
    groups = [rig.group("scale") for _ in range(10)]
    for i, g in enumerate(groups):
        # each group has committed on 4 of the topics, all partitions, 1 behind the end
        rig.commit(g, {(topics[(i + k) % 20], p): 1 for k in range(4) for p in range(10)})

    started = time.monotonic()
    result, _ = run(kafka_bootstrap, window=1.0, groups=groups)
    elapsed = time.monotonic() - started
    assert result.status == "ok", result.error
    obs = result.observations
    assert len(obs["queues"]) == 40 and sum(len(g["partitions"]) for g in obs["groups"]) == 400
    by_api = obs["requests"]["by_api"]
    samples = obs["window"]["samples"]
    print(f"\nkafka probe, 20 topics x 10 partitions, 10 groups x 40 partitions, window 1 s: "
          f"{obs['requests']['total']} requests {by_api}, {samples} samples, "
          f"probe {result.duration_s:.2f} s, with discovery {elapsed:.2f} s")
    # batched: one OffsetFetch per sample for all ten groups, one ListOffsets per sample
    # (plus one for the log start), whatever the number of groups and partitions
    assert by_api["OffsetFetch"] == samples
    assert by_api["ListOffsets"] == samples + 1
    # one DescribeGroups before the window, then one per sample (membership over the window)
    assert by_api["ListGroups"] == 1 and by_api["DescribeGroups"] == 1 + samples
    assert obs["requests"]["total"] <= 7 * samples + 10
    assert result.duration_s < effective_timeout(all_probes()["kafka"], settings(kafka_bootstrap))


def test_nothing_of_this_module_is_left(kafka_bootstrap):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=15000)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = [t for t in admin.list_topics() if t.startswith(MODULE_PREFIX)]
            left += [g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(MODULE_PREFIX)]
            if not left:
                break
            time.sleep(0.5)  # topic deletion finishes asynchronously
        assert left == []
    finally:
        admin.close()


def test_queue_globs_match_topics_as_on_the_other_brokers(rig, kafka_bootstrap):
    """--queue 'prefix-*' names topics by glob, as it names RabbitMQ queues and Redis keys; a glob
    that matches no topic is reported, never silently dropped."""
    a, b = rig.topic(1, "glob-a"), rig.topic(1, "glob-b")
    rig.produce(a, {0: 5})
    rig.produce(b, {0: 5})
    group = rig.group("glob")
    rig.commit(group, {(a, 0): 1, (b, 0): 2})
    prefix = a.rsplit("glob-a", 1)[0]
    obs = ok(kafka_bootstrap, queues=[prefix + "glob-*"], groups=[group])
    assert {q["name"] for q in obs["queues"]} == {a, b}
    result, _ = run(kafka_bootstrap, queues=[prefix + "glob-none-*"], groups=[group])
    assert result.status == "error" and "glob-none-*" in result.error
