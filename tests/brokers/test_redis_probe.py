"""The Redis probe against the rig's real Redis (7.0), database 15.

Every test builds its keys by hand under unique names (streams, and each
job-queue layout exactly as its library writes it), runs the probe, and
deletes what it made; shared registry sets (rq:queues, rq:workers,
dramatiq:__heartbeats__) only get unique members, removed afterwards.
Database 0 is never touched and nothing is flushed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
import redis

from qdiag import probe as P
from qdiag import targets as tg
from qdiag.config import Settings
from qdiag.errors import ConfigError
from qdiag.context import ProbeContext
from qdiag.runner import Runner
from qdiag.probes import redis_queues  # registers the probe

pytestmark = pytest.mark.broker

TEST_DB = 15
SEP = "\x06\x16"


# --- helpers -----------------------------------------------------------------------

@pytest.fixture
def url(redis_url):
    return redis_url.rsplit("/", 1)[0] + f"/{TEST_DB}"


@pytest.fixture
def r(url):
    client = redis.Redis.from_url(url, protocol=2, single_connection_client=True)
    yield client
    client.close()


class Made:
    """Keys and registry members a test created; removed at teardown."""

    def __init__(self, client):
        self.r = client
        self.keys: list[str] = []
        self.members: list[tuple[str, str, str]] = []  # (type, key, member)

    def key(self, name: str) -> str:
        self.keys.append(name)
        return name

    def member(self, kind: str, key: str, member: str) -> None:
        self.members.append((kind, key, member))

    def cleanup(self) -> None:
        if self.keys:
            self.r.delete(*self.keys)
        for kind, key, member in self.members:
            (self.r.srem if kind == "set" else self.r.zrem)(key, member)


@pytest.fixture
def made(r):
    m = Made(r)
    yield m
    m.cleanup()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_ctx(url, *, window=1.0, allowance=15.0, options=None, queues=(), groups=(), **others):
    targets = tg.Targets(redis=tg.parse_redis(url), queues=tuple(queues), groups=tuple(groups), **others)
    settings = Settings(targets=targets, window_s=window, probe_options={"redis": dict(options or {})})
    now = time.monotonic()
    return ProbeContext(settings=settings, name="redis", deadline=now + window + allowance, window_start=now)


def run_probe(url, **kwargs):
    return redis_queues.collect(make_ctx(url, **kwargs))


def record(out, name, group=None, layout=None):
    hits = [q for q in out["queues"] if q["name"] == name and q["group"] == group
            and (layout is None or q["layout"] == layout)]
    assert len(hits) == 1, f"expected one record for {name}/{group}, got {len(hits)}: {[q['name'] for q in out['queues']]}"
    return hits[0]


def server_now(r) -> float:
    sec, usec = r.time()
    return sec + usec / 1e6


def rq_time(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- state builders: each layout as its library writes it ---------------------------

def build_streams(r, made):
    """orders: group 'billing' with lag, pending and one entry delivered 4 times
    (consumers w1, w2), group 'moved' set into the middle (nil lag);
    events: no group; shrunk: XDEL after the group's position (nil lag)."""
    orders, events, shrunk = made.key(uid("qdt-orders")), made.key(uid("qdt-events")), made.key(uid("qdt-shrunk"))
    ids = [r.xadd(orders, {"n": i}) for i in range(12)]
    r.xgroup_create(orders, "billing", id="0")
    r.xreadgroup("billing", "w1", {orders: ">"}, count=3)
    r.xreadgroup("billing", "w2", {orders: ">"}, count=2)
    for _ in range(3):
        r.xclaim(orders, "billing", "w2", 0, [ids[0]])
    r.xack(orders, "billing", ids[4])
    r.xgroup_create(orders, "moved", id="0")
    r.xgroup_setid(orders, "moved", ids[6])
    r.xadd(events, {"e": 1})
    sids = [r.xadd(shrunk, {"n": i}) for i in range(5)]
    r.xgroup_create(shrunk, "g", id="0")
    r.xreadgroup("g", "c", {shrunk: ">"}, count=1)
    r.xdel(shrunk, sids[3])
    return {"orders": orders, "events": events, "shrunk": shrunk}


def build_layouts(r, made):
    now = server_now(r)
    names = {}
    # RQ: RPUSH job ids, job hashes with enqueued_at, registries as sorted sets,
    # a live worker (its hash lists its queues) and an empty registered queue.
    q = uid("qdt-rq")
    names["rq"] = q
    jobs = [f"{q}-j{i}" for i in range(3)]
    made.key(f"rq:queue:{q}")
    r.rpush(f"rq:queue:{q}", *jobs)
    r.hset(made.key(f"rq:job:{jobs[0]}"), mapping={"enqueued_at": rq_time(now - 120), "status": "queued"})
    r.zadd(made.key(f"rq:failed:{q}"), {f"{q}-f1": now + 3600})
    r.zadd(made.key(f"rq:wip:{q}"), {f"{q}-w1": now - 30, f"{q}-w2": now + 600})  # one expired: abandoned
    r.sadd("rq:queues", f"rq:queue:{q}")
    made.member("set", "rq:queues", f"rq:queue:{q}")
    empty = uid("qdt-rqempty")
    names["rq_empty"] = empty
    r.sadd("rq:queues", f"rq:queue:{empty}")
    made.member("set", "rq:queues", f"rq:queue:{empty}")
    worker = uid("qdt-worker")
    names["rq_worker"] = worker
    r.hset(made.key(f"rq:worker:{worker}"), mapping={"queues": f"{q},other", "state": "busy"})
    r.sadd("rq:workers", f"rq:worker:{worker}")
    made.member("set", "rq:workers", f"rq:worker:{worker}")

    # Celery/kombu with a global key prefix: LPUSH, priority sibling, binding set,
    # unacked hash and index; a pidbox binding that is not a work queue.
    p = uid("qdt-cel") + ":"
    names["celery_prefix"] = p
    first = json.dumps({"headers": {"task": "app.oldest", "id": "t1"}, "properties": {"delivery_tag": "d1"}})
    r.lpush(made.key(p + "celery"), first, json.dumps({"headers": {"task": "app.newer", "id": "t2"}}))
    r.lpush(made.key(p + "celery" + SEP + "3"), json.dumps({"headers": {"task": "app.urgent", "id": "t3"}}))
    r.sadd(made.key(p + "_kombu.binding.celery"), "celery" + SEP + SEP + "celery")
    r.sadd(made.key(p + "_kombu.binding.celery.pidbox"), SEP + SEP + "w@h.celery.pidbox")
    r.hset(made.key(p + "unacked"), "d9", json.dumps([{"headers": {"task": "app.slow"}}, "celery", "celery"]))
    r.zadd(made.key(p + "unacked_index"), {"d9": now - 50})

    # Sidekiq in a namespace: LPUSH jobs with enqueued_at (seconds), queues set,
    # one live process listening on "default", a retry set.
    ns = uid("qdt-sk") + ":"
    names["sidekiq_ns"] = ns
    made.key(ns + "queue:default")
    r.lpush(ns + "queue:default", json.dumps({"class": "OldJob", "enqueued_at": now - 300}))
    r.lpush(ns + "queue:default", json.dumps({"class": "NewJob", "enqueued_at": now - 5}))
    # A job bigger than what the probe keeps per sample: read once more for its time.
    r.lpush(made.key(ns + "queue:bulky"), json.dumps({"class": "BigJob", "args": ["x" * 40_000], "enqueued_at": now - 90}))
    r.sadd(made.key(ns + "queues"), "default", "mailers", "bulky")
    ident = "host:1:abc"
    r.sadd(made.key(ns + "processes"), ident)
    r.hset(made.key(ns + ident), mapping={"info": json.dumps({"queues": ["default"], "concurrency": 5}),
                                          "beat": now, "quiet": "false"})
    r.zadd(made.key(ns + "retry"), {json.dumps({"class": "Broken"}): now + 60})

    # Dramatiq: RPUSH message ids, messages in the .msgs hash (one in flight),
    # a dead letter, a worker heartbeat.
    dq = uid("qdt_dq")
    names["dramatiq"] = dq
    made.key(f"dramatiq:{dq}")
    r.rpush(f"dramatiq:{dq}", "m1", "m2")
    msgs = {m: json.dumps({"actor_name": "send_mail", "message_timestamp": int((now - age) * 1000)})
            for m, age in (("m1", 60), ("m2", 10), ("m3", 20))}
    r.hset(made.key(f"dramatiq:{dq}.msgs"), mapping=msgs)
    r.zadd(made.key(f"dramatiq:{dq}.XQ"), {"m0": int(now * 1000)})
    r.zadd("dramatiq:__heartbeats__", {f"{dq}-w": int(now * 1000)})
    made.member("zset", "dramatiq:__heartbeats__", f"{dq}-w")
    return names


def snapshot(r, keys):
    """Everything about the given keys that a write could change, plus DBSIZE."""
    state = {"dbsize": r.dbsize(), "keys": {}}
    for key in sorted(keys):
        t = r.type(key).decode()
        entry = {"type": t, "dump": r.dump(key)}
        if t == "stream":
            entry["groups"] = [(g["name"], g["pending"], g["last-delivered-id"], g["entries-read"], g["consumers"])
                               for g in r.xinfo_groups(key)]
            entry["consumers"] = [[(c["name"], c["pending"]) for c in r.xinfo_consumers(key, g[0])]
                                  for g in entry["groups"]]
        state["keys"][key] = entry
    return state


# --- streams -----------------------------------------------------------------------

def test_streams_groups_and_consumers(url, r, made):
    s = build_streams(r, made)
    out = run_probe(url, options={"samples": 2})
    billing = record(out, s["orders"], "billing")
    assert billing["layout"] == "stream" and billing["system"] == "redis"
    assert (billing["depth"], billing["depth_basis"], billing["lag"]) == (7, "lag", 7)
    assert billing["pending"] == 4 and billing["unfinished"] == 11
    assert billing["consumers"] == 2 and {c["name"] for c in billing["consumer_list"]} == {"w1", "w2"}
    assert billing["pending_by_consumer"] == {"w1": 2, "w2": 2}
    assert [(p["consumer"], p["deliveries"]) for p in billing["poison_candidates"]] == [("w2", 4)]
    assert billing["fill_ratio"] is None
    assert 0 <= billing["oldest_pending_age_s"] < 60 and 0 <= billing["oldest_undelivered_age_s"] < 60
    assert billing["oldest_age_s"] == max(billing["oldest_pending_age_s"], billing["oldest_undelivered_age_s"])
    assert billing["depth_samples"] == [7, 7]
    # Work waiting, nothing taken during the window, and w1 and w2 have no connection:
    # this test's own client read for them and has sent other commands since, so no
    # client can be theirs.  (A stuck consumer that keeps its connection: test_redis_consumers.)
    assert billing["status"] == "GONE" and (billing["consumers_alive"], billing["consumers_gone"]) == (0, 2)
    assert billing["consumed_in_window"] is False and billing["rate_out"] == 0

    moved = record(out, s["orders"], "moved")
    assert moved["lag"] is None and moved["depth"] is None
    assert "XGROUP CREATE/SETID" in moved["lag_null_reason"]
    assert moved["status"] == "STOP" and "no consumer" in moved["status_reason"]  # waiting, no consumer

    shrunk = record(out, s["shrunk"], "g")
    assert shrunk["lag"] is None and "XDEL" in shrunk["lag_null_reason"]
    assert shrunk["status"] == "GONE" and "unknown undelivered" in shrunk["status_reason"]

    events = record(out, s["events"], None)
    assert (events["depth"], events["consumers"], events["rate_out"]) == (1, 0, None)
    assert events["status"] == "NO_GROUP" and "no consumer group" in events["status_reason"]
    summary = {x["key"]: x for x in out["streams"]}[s["orders"]]
    assert summary["length"] == 12 and summary["entries_added"] == 12 and summary["groups"] == 2
    assert 0 <= summary["last_entry_age_s"] < 60


def test_discovery_bound_is_reported(url, r, made):
    build_streams(r, made)
    tag = uid("qdt-fill")
    for i in range(30):
        r.rpush(made.key(f"{tag}-{i}"), "x")
    # 33+ keys spread over the hash table; one SCAN call of COUNT 2 cannot cover them.
    out = run_probe(url, options={"samples": 2, "max_scan_keys": 2, "scan_count": 2})
    scan = out["discovery"]["scan"]
    assert scan["dbsize"] >= 33 and scan["streams"]["complete"] is False and scan["streams"]["scan_calls"] == 1
    assert any("max_scan_keys=2" in n for n in out["notes"])
    full = run_probe(url, options={"samples": 2})["discovery"]["scan"]
    assert all(full[p]["complete"] for p in ("streams", "lists", "kombu bindings"))


def test_group_filter(url, r, made):
    s = build_streams(r, made)
    out = run_probe(url, queues=[s["orders"]], groups=["billing"], options={"samples": 2})
    assert [(q["name"], q["group"]) for q in out["queues"]] == [(s["orders"], "billing")]
    assert out["discovery"]["mode"] == "named"


def test_rates_over_the_window(url, r, made):
    """A producer and a consumer running during the window give non-zero rates
    on both sides; a list producer shows as net growth."""
    stream = made.key(uid("qdt-live"))
    r.xgroup_create(stream, "g", id="$", mkstream=True)
    job_list = made.key(uid("qdt-livelist"))
    stop = threading.Event()

    def traffic():
        c = redis.Redis.from_url(url, protocol=2)
        while not stop.is_set():
            c.xadd(stream, {"v": 1})
            c.rpush(job_list, "job")
            got = c.xreadgroup("g", "c1", {stream: ">"}, count=1)
            for _, entries in got or []:
                for entry_id, _ in entries:
                    c.xack(stream, "g", entry_id)
            time.sleep(0.02)
        c.close()

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        time.sleep(0.3)
        out = run_probe(url, window=2.0, queues=[stream, job_list], options={"samples": 3})
    finally:
        stop.set()
        worker.join(5)
    g = record(out, stream, "g")
    assert g["rate_in"] > 0 and g["rate_out"] > 0 and g["ack_rate"] is not None
    assert g["consumed_in_window"] is True
    assert g["status"] in ("OK", "WARN")
    lst = record(out, job_list, layout="list")
    assert lst["net_rate"] > 0 and lst["depth_trend"] == "growing"
    # Every element is "job": a list whose jobs cannot be told apart has no exact counts.
    assert lst["rate_in"] is None and lst["flow_exact"] is False and "told apart" in lst["rate_source"]
    assert len(lst["depth_samples"]) == 3 and lst["depth_samples"][-1] > lst["depth_samples"][0]


# --- job-queue layouts -------------------------------------------------------------

def test_job_queue_layouts(url, r, made):
    n = build_layouts(r, made)
    out = run_probe(url, options={"samples": 2})
    json.dumps(out)  # JSON-ready as returned: no bytes, no sets

    rq = record(out, n["rq"], layout="rq")
    assert rq["depth"] == 3 and rq["key"] == f"rq:queue:{n['rq']}"
    assert rq["consumers"] == 1 and rq["workers_busy"] == 1
    assert rq["registries"]["failed"] == 1 and rq["registries"]["wip"] == 2 and rq["abandoned"] == 1
    assert 110 <= rq["oldest_age_s"] < 300
    assert rq["consumed_in_window"] is False and (rq["status"], rq["severity"]) == ("STALL", "err")
    empty = record(out, n["rq_empty"], layout="rq")
    assert (empty["depth"], empty["key_exists"], empty["status"]) == (0, False, "OK")

    cel = [q for q in out["queues"] if q["layout"] == "celery" and q.get("key_prefix") == n["celery_prefix"]]
    assert [q["name"] for q in cel] == ["celery"]  # the pidbox binding is not a work queue
    cel = cel[0]
    assert cel["depth"] == 3 and cel["key_lengths"] == {n["celery_prefix"] + "celery": 2,
                                                         n["celery_prefix"] + "celery" + SEP + "3": 1}
    assert cel["next_task"] == "app.oldest" and cel["oldest_age_s"] is None
    unacked = out["layouts"]["celery"][n["celery_prefix"]]
    assert unacked["unacked"] == 1 and 40 <= unacked["oldest_unacked_age_s"] < 200

    sk = [q for q in out["queues"] if q["layout"] == "sidekiq" and q.get("namespace") == n["sidekiq_ns"]]
    by_name = {q["name"]: q for q in sk}
    assert set(by_name) == {"default", "mailers", "bulky"}
    assert 85 <= by_name["bulky"]["oldest_age_s"] < 300 and by_name["bulky"]["oldest_job_class"] == "BigJob"
    assert by_name["default"]["depth"] == 2 and by_name["default"]["consumers"] == 1
    assert 290 <= by_name["default"]["oldest_age_s"] < 500 and by_name["default"]["oldest_job_class"] == "OldJob"
    assert by_name["mailers"]["depth"] == 0 and by_name["mailers"]["key_exists"] is False
    assert out["layouts"]["sidekiq"][n["sidekiq_ns"]]["retry"] == 1

    dq = record(out, n["dramatiq"], layout="dramatiq")
    assert dq["depth"] == 2 and dq["in_flight"] == 1 and dq["dead_letters"] == 1
    assert 50 <= dq["oldest_age_s"] < 250 and dq["oldest_actor"] == "send_mail"
    assert out["layouts"]["dramatiq"]["dramatiq:"]["workers_alive"] >= 1


def test_named_plain_list_and_missing_names(url, r, made):
    plain = made.key(uid("qdt-plain"))
    r.rpush(plain, "a", "b", "c")
    missing = uid("qdt-missing")
    # With Kafka named too, a missing name may be Kafka's: a note, not an error.
    out = run_probe(url, queues=[plain, missing], options={"samples": 2},
                    kafka=tg.parse_kafka("127.0.0.1:9092"))
    rec = record(out, plain, layout="list")
    assert rec["depth"] == 3 and rec["consumed_in_window"] is False
    assert out["discovery"]["missing"] == [missing]
    assert out["not_found"] == [{"kind": "queue", "name": missing}]
    assert any(missing in note and "not found" in note for note in out["notes"])
    assert out["discovery"]["scan"] is None  # named queues are looked up directly, no SCAN
    assert "SCAN" not in out["requests"]["command_names"]


def test_glob_patterns_and_bad_options(url, r, made):
    tag = uid("qdt-glob")
    a, b = made.key(f"{tag}-a"), made.key(f"{tag}-b")
    r.rpush(a, "x")
    r.xadd(b, {"v": 1})
    out = run_probe(url, queues=[f"{tag}-*", uid("qdt-nomatch") + "*"], kafka=tg.parse_kafka("127.0.0.1:9092"),
                    options={"samples": 2})
    assert {(q["name"], q["layout"]) for q in out["queues"]} == {(a, "list"), (b, "stream")}
    assert out["discovery"]["mode"] == "named+patterns"
    assert any("matches" in n for n in out["notes"])
    assert out["not_found"] == [{"kind": "queue", "name": next(q for q in out["discovery"]["missing"])}]
    # Options are declared with the probe and validated before it touches the server.
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        run_probe(url, options={"samples": 2, "bogus": 1})
    with pytest.raises(ConfigError, match="poison_deliveries = 'many' is not a whole number"):
        run_probe(url, options={"poison_deliveries": "many"})


def test_blocked_clients_and_hint(url, r, made):
    """A client blocked in BRPOP on another key while a list queue holds jobs.
    The client is an RQ worker (named after itself, its hash lists its queue),
    so the probe can say which queue it serves."""
    jobs = made.key(uid("qdt-jobs"))
    r.rpush(jobs, "j1", "j2")
    rq_q = uid("qdt-rqb")
    r.rpush(made.key(f"rq:queue:{rq_q}"), "x1")
    name = uid("qdt-waiter")
    r.hset(made.key(f"rq:worker:{name}"), mapping={"queues": rq_q, "state": "idle"})
    r.sadd("rq:workers", f"rq:worker:{name}")
    made.member("set", "rq:workers", f"rq:worker:{name}")
    waiter = redis.Redis.from_url(url, protocol=2, single_connection_client=True, socket_timeout=None)
    waiter.client_setname(name)
    waiter_id = waiter.client_id()
    t = threading.Thread(target=lambda: waiter.brpop([uid("qdt-elsewhere")], timeout=30), daemon=True)
    t.start()
    try:
        _wait_blocked(r, name)
        out = run_probe(url, queues=[jobs, rq_q], options={"samples": 2})
    finally:
        r.client_unblock(waiter_id)
        t.join(10)
        waiter.close()
    blocked = [c for c in out["clients"]["blocked"] if c["name"] == name]
    assert len(blocked) == 1 and blocked[0]["cmd"] == "brpop" and blocked[0]["db"] == TEST_DB
    assert blocked[0]["consumer_of"] == [f"redis:{rq_q}"]
    assert record(out, rq_q, layout="rq")["consumers"] == 1
    assert out["clients"]["blocked_by_command"].get("brpop", 0) >= 1
    assert any("blocking list pop" in h for h in out["hints"])
    assert "keys a blocked client waits on" in out["clients"]["note"]


def _wait_blocked(r, name, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in r.client_list():
            if c.get("name") == name and "b" in c.get("flags", ""):
                return
        time.sleep(0.05)
    raise AssertionError(f"client {name} never blocked")


# --- server --------------------------------------------------------------------------

def test_server_section(url, r):
    out = run_probe(url, queues=[uid("qdt-none")], options={"samples": 2},
                    kafka=tg.parse_kafka("127.0.0.1:9092"))
    srv = out["server"]
    info = r.info()
    assert srv["version"] == info["redis_version"]
    assert srv["maxmemory_policy"] == r.config_get("maxmemory-policy")["maxmemory-policy"]
    assert srv["eviction_meaning"]
    if int(r.config_get("maxmemory")["maxmemory"]) == 0:
        assert srv["no_memory_limit"] is True and srv["memory_ratio"] is None
    for key in ("evicted_keys_delta", "rejected_connections_delta", "oom_errors_delta"):
        assert isinstance(srv[key], int) and srv[key] >= 0
    assert isinstance(srv["blocked_clients"], int)
    assert srv["memory_doctor"] and len(srv["memory_doctor"]) <= 2000
    assert "evicted_keys" not in srv and "rejected_connections" not in srv  # totals never, deltas only


# --- exact: parity with redis-cli ------------------------------------------------------

def _redis_cli(url, *args) -> list[str]:
    parts = tg.parse_redis(url)
    done = subprocess.run(["redis-cli", "-h", parts.host, "-p", str(parts.port), "-n", str(parts.db), *args],
                          capture_output=True, text=True, timeout=20, check=True)
    return done.stdout.split("\n")[:-1]


def _cli_groups(url, key) -> dict[str, dict]:
    """redis-cli prints XINFO GROUPS flattened, one value per line, nil as an empty line."""
    lines = _redis_cli(url, "XINFO", "GROUPS", key)
    groups = {}
    for i in range(0, len(lines), 12):
        fields = dict(zip(lines[i:i + 12:2], lines[i + 1:i + 12:2]))
        groups[fields["name"]] = fields
    return groups


def _int_or_none(text):
    return int(text) if text != "" else None


def test_parity_with_redis_cli(url, r, made):
    s = build_streams(r, made)
    n = build_layouts(r, made)
    out = run_probe(url, options={"samples": 2})
    compared = 0
    for key in (s["orders"], s["shrunk"]):
        for name, cli in _cli_groups(url, key).items():
            q = record(out, key, name)
            assert q["pending"] == int(cli["pending"])
            assert q["consumers"] == int(cli["consumers"])
            assert q["last_delivered_id"] == cli["last-delivered-id"]
            assert q["entries_read"] == _int_or_none(cli["entries-read"])
            assert q["lag"] == _int_or_none(cli["lag"])
            compared += 1
    assert compared == 3
    for q, key in ((record(out, n["rq"], layout="rq"), f"rq:queue:{n['rq']}"),
                   (record(out, n["dramatiq"], layout="dramatiq"), f"dramatiq:{n['dramatiq']}")):
        assert q["depth"] == int(_redis_cli(url, "LLEN", key)[0])
    sk = [q for q in out["queues"] if q.get("namespace") == n["sidekiq_ns"] and q["name"] == "default"][0]
    assert sk["depth"] == int(_redis_cli(url, "LLEN", n["sidekiq_ns"] + "queue:default")[0])
    cel = [q for q in out["queues"] if q.get("key_prefix") == n["celery_prefix"]][0]
    for key, length in cel["key_lengths"].items():
        assert length == int(_redis_cli(url, "LLEN", key)[0])


# --- read-only, proven --------------------------------------------------------------

class Monitor:
    """MONITOR on a raw socket: every command the server executes, as logged."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=5)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines: list[str] = []
        self.buf = b""
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk
            *done, self.buf = self.buf.split(b"\r\n")
            self.lines += [d.decode("utf-8", "replace") for d in done]

    def stop(self):
        time.sleep(0.3)
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


_MONITOR_LINE = re.compile(r'^\+?[\d.]+ \[(\d+) ([^\]]+)\] "([^"]+)"(?: "([^"]*)")?')


def _command_flags(r, name: str) -> list[str]:
    info = r.execute_command("COMMAND", "INFO", name).get(name)
    assert info, f"unknown command {name}"
    return [f.decode() if isinstance(f, bytes) else f for f in info["flags"]]


def test_read_only_state_unchanged_and_no_write_command(url, r, made):
    s = build_streams(r, made)
    build_layouts(r, made)
    keys = list(made.keys)
    before = snapshot(r, keys)
    own_addr = r.client_info()["addr"]
    parts = tg.parse_redis(url)
    mon = Monitor(parts.host, parts.port)
    try:
        time.sleep(0.2)
        out = run_probe(url, options={"samples": 2})
    finally:
        mon.stop()
    after = snapshot(r, keys)
    assert after == before
    assert record(out, s["orders"], "billing")["pending"] == 4  # the probe did look

    # Which connections were the probe's: every address that used db 15, minus the test's own.
    probe_addrs = {m.group(2) for m in map(_MONITOR_LINE.match, mon.lines)
                   if m and m.group(1) == str(TEST_DB) and m.group(2) != own_addr}
    seen = set()
    for m in map(_MONITOR_LINE.match, mon.lines):
        if m and m.group(2) in probe_addrs:
            name = m.group(3).lower()
            if name in ("xinfo", "client", "memory") and m.group(4):
                name = f"{name}|{m.group(4).lower()}"
            seen.add(name)
    assert {"scan", "xinfo|groups", "xpending", "llen"} <= seen
    # The probe's own account of what it sent covers commands MONITOR does not show (CLIENT LIST).
    sent = {c.lower() for c in out["requests"]["command_names"]}
    assert seen - {"select"} <= sent
    writers = {name: flags for name in seen | sent if "write" in (flags := _command_flags(r, name))}
    assert writers == {}


def test_runs_under_a_read_only_acl_user(url, r, made):
    """A user that may run nothing but read commands (plus INFO, TIME, CLIENT
    ID/LIST and MEMORY DOCTOR) gets a complete result: the server itself
    refuses any write the probe might try."""
    s = build_streams(r, made)
    user, password = uid("qdt-ro"), uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "~*", "-@all", "+@read",
                      "+info", "+time", "+client|id", "+client|list", "+memory|doctor", "+select", "+ping")
    try:
        parts = tg.parse_redis(url)
        ro_url = f"redis://{user}:{password}@{parts.host}:{parts.port}/{TEST_DB}"
        out = run_probe(ro_url, options={"samples": 2})
    finally:
        r.execute_command("ACL", "DELUSER", user)
    assert record(out, s["orders"], "billing")["pending"] == 4
    assert out["clients"] is not None and out["server"]["memory_doctor"]
    assert not [n for n in out["notes"] if "NOPERM" in n or "refused" in n]


# --- consumer discovery ----------------------------------------------------------------

_CHILD = """
import sys, redis
c = redis.Redis.from_url(sys.argv[1], protocol=2, single_connection_client=True, socket_timeout=None)
c.client_setname(sys.argv[2])
c.brpop([sys.argv[3]], timeout=20)
"""


def test_discover_finds_local_consumer_processes(url, r, made):
    q = uid("qdt-rqd")
    rq_name, plain_name = uid("qdt-rqw"), uid("qdt-plainw")
    r.hset(made.key(f"rq:worker:{rq_name}"), mapping={"queues": q, "state": "idle"})
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, url, name, uid("qdt-nothing")])
                for name in (rq_name, plain_name)]
    try:
        for name in (rq_name, plain_name):
            _wait_blocked(r, name)
        ctx = make_ctx(url)
        found = {f["pid"]: f for f in redis_queues.discover(ctx)}
    finally:
        for child in children:
            child.terminate()
            child.wait(10)
    rq_child, plain_child = children
    assert found[rq_child.pid]["subject"] == f"redis:{q}"  # the RQ queue record's subject
    assert found[plain_child.pid]["subject"] == "redis"
    assert "blocked in brpop" in found[plain_child.pid]["via"]
    assert os.getpid() not in found  # qdiag's own connection is left out


# --- bad input ------------------------------------------------------------------------

def _run_via_runner(url, *, window=0.5, allowance=8.0, options=None, **targets):
    settings = Settings(targets=tg.Targets(redis=tg.parse_redis(url), **targets), window_s=window,
                        timeout_s=window + allowance + 10, probe_timeout_s=allowance,
                        probe_options={"redis": dict(options or {})})
    probe = P.all_probes()["redis"]
    started = time.monotonic()
    results, _ = Runner(settings, [probe]).run()
    return results[0], time.monotonic() - started


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_connection_refused():
    result, took = _run_via_runner(f"redis://127.0.0.1:{_free_port()}/0")
    assert result.status == P.ERROR and "connection refused" in result.error
    assert "\n" not in result.error and took < 8.5


def test_port_that_never_answers():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel accepts; nobody ever replies
    try:
        port = listener.getsockname()[1]
        result, took = _run_via_runner(f"redis://127.0.0.1:{port}/0", allowance=6.0,
                                       options={"call_timeout_s": 2, "connect_timeout_s": 2})
    finally:
        listener.close()
    assert result.status == P.ERROR, result
    assert "no reply within" in result.error and f"127.0.0.1:{port}" in result.error
    assert took < 6.5 + 5  # the probe's own deadline (window + allowance), with a wide margin


def test_wrong_password_is_not_echoed(url, r):
    user, password = uid("qdt-pw"), uuid.uuid4().hex
    r.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@read")
    wrong = "Wr0ng-" + uuid.uuid4().hex
    try:
        parts = tg.parse_redis(url)
        result, took = _run_via_runner(f"redis://{user}:{wrong}@{parts.host}:{parts.port}/{TEST_DB}")
    finally:
        r.execute_command("ACL", "DELUSER", user)
    assert result.status == P.ERROR and "authentication failed" in result.error
    assert wrong not in result.error and wrong not in json.dumps(result.observations)
    assert took < 8.5


def test_password_for_a_server_without_one(url):
    parts = tg.parse_redis(url)
    secret = "S3cret-" + uuid.uuid4().hex
    result, _ = _run_via_runner(f"redis://:{secret}@{parts.host}:{parts.port}/{TEST_DB}")
    assert result.status == P.ERROR and "has none set" in result.error and secret not in result.error


def test_tls_against_a_plaintext_port(url):
    parts = tg.parse_redis(url)
    result, took = _run_via_runner(f"rediss://{parts.host}:{parts.port}/{TEST_DB}", allowance=6.0,
                                   options={"connect_timeout_s": 2})
    assert result.status == P.ERROR and "rediss://" in result.error and "TLS" in result.error
    assert took < 6.5 + 5


def test_named_queue_that_does_not_exist_is_not_found(url):
    """No key and no registry knows the name: not found (the verdict says so),
    never a healthy empty list -- though a drained plain list looks the same,
    which the note says.  The probe itself succeeds: the server was measured."""
    missing = uid("qdt-nosuch")
    result, took = _run_via_runner(url.rsplit("/", 1)[0] + f"/{TEST_DB}", queues=(missing,))
    assert result.status == P.OK, result.error
    obs = result.observations
    assert obs["not_found"] == [{"kind": "queue", "name": missing}]
    assert not [q for q in obs["queues"] if q["name"] == missing]
    assert any(f"queue '{missing}' not found" in n and "drained plain list" in n and "database number" in n
               for n in obs["notes"])
    assert obs["server"]["version"]
    assert took < 8.5


def test_missing_name_on_an_auto_detected_redis_is_not_found(url):
    from dataclasses import replace

    missing = uid("qdt-nosuch")
    ctx = make_ctx(url, queues=[missing], options={"samples": 2})
    settings = replace(ctx.settings, targets=replace(ctx.targets, redis=replace(ctx.targets.redis, auto_detected=True)))
    ctx = ProbeContext(settings=settings, name="redis", deadline=ctx.deadline, window_start=time.monotonic())
    out = redis_queues.collect(ctx)
    assert out["discovery"]["missing"] == [missing] and out["queues"] == []
    assert out["not_found"] == [{"kind": "queue", "name": missing}]


def test_empty_registered_queue_is_found(url, r, made):
    """An RQ queue with no jobs has no list, but rq:queues lists it: found, depth 0."""
    q = uid("qdt-rqempty")
    r.sadd("rq:queues", f"rq:queue:{q}")
    made.member("set", "rq:queues", f"rq:queue:{q}")
    out = run_probe(url, queues=[q], options={"samples": 2})
    assert "not_found" not in out
    assert record(out, q, layout="rq")["depth"] == 0


def test_named_group_that_does_not_exist(url, r, made):
    s = build_streams(r, made)
    result, _ = _run_via_runner(url, queues=(s["orders"],), groups=("nosuchgroup",))
    assert result.status == P.OK, result.error
    assert result.observations["not_found"] == [{"kind": "group", "name": "nosuchgroup"}]
    assert not [q for q in result.observations["queues"] if q["name"] == s["orders"]]


def test_database_out_of_range(redis_url):
    result, _ = _run_via_runner(redis_url.rsplit("/", 1)[0] + "/999")
    assert result.status == P.ERROR and "database 999 does not exist" in result.error
