"""probes/_redis_parse.py on replies recorded from Redis 7.0 (tests/fixtures/redis/replies.json,
made by tests/fixtures/redis/record.py) and on each job-queue layout's key names
(tests/fixtures/redis/layouts.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qdiag.probes import _redis_parse as rp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "redis"


def _as_wire(value):
    """Fixture text back into what the wire carries: bytes, ints, None, lists."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list):
        return [_as_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_wire(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def replies():
    return _as_wire(json.loads((FIXTURES / "replies.json").read_text()))


@pytest.fixture(scope="module")
def layouts():
    return json.loads((FIXTURES / "layouts.json").read_text())


def _now_ms(replies, section="orders"):
    sec, usec = replies[section]["time"]
    return int(sec) * 1000 + int(usec) // 1000


# --- stream ids ------------------------------------------------------------------

def test_stream_id_helpers():
    assert rp.parse_id(b"1700000000000-5") == (1700000000000, 5)
    assert rp.parse_id("garbage") is None
    assert rp.compare_ids("5-1", "5-0") == 1 and rp.compare_ids("4-9", "5-0") == -1 and rp.compare_ids("5-0", b"5-0") == 0
    assert rp.next_id("1700000000000-5") == "1700000000000-6"
    assert rp.next_id(f"7-{2**64 - 1}") == "8-0"


def test_id_age_only_for_ids_that_look_like_times():
    now = 1_700_000_010_000
    assert rp.id_age_s("1700000000000-0", now) == 10.0
    assert rp.id_age_s("1-1", now) is None  # an explicit id, not a time
    assert rp.id_age_s("0-0", now) is None
    assert rp.id_age_s(f"{now + 3 * 86_400_000}-0", now) is None  # far in the future: not a time either
    assert rp.id_age_s("1700000000000-0", None) is None


# --- XINFO / XPENDING on recorded replies --------------------------------------

def test_xinfo_stream(replies):
    s = rp.parse_xinfo_stream(replies["orders"]["xinfo_stream"])
    assert s["length"] == 10 and s["entries_added"] == 10 and s["groups"] == 3
    assert s["first_id"] and s["last_id"] and rp.compare_ids(s["first_id"], s["last_id"]) == -1
    assert s["last_id"] == s["last_generated_id"]
    assert s["max_deleted_id"] == "0-0"


def test_xinfo_groups_fields_and_nil_lag(replies):
    groups = {g["name"]: g for g in rp.parse_xinfo_groups(replies["orders"]["xinfo_groups"])}
    assert set(groups) == {"billing", "audit", "moved"}
    billing = groups["billing"]
    assert (billing["consumers"], billing["pending"], billing["entries_read"], billing["lag"]) == (2, 4, 4, 6)
    # Created at "$": nothing read, nothing to read.
    assert groups["audit"]["entries_read"] is None and groups["audit"]["lag"] == 0
    # Moved by SETID into the middle of the stream: Redis cannot count.
    assert groups["moved"]["lag"] is None and groups["moved"]["lag_reported"]


def test_lag_null_reasons(replies):
    orders = rp.parse_xinfo_stream(replies["orders"]["xinfo_stream"])
    moved = {g["name"]: g for g in rp.parse_xinfo_groups(replies["orders"]["xinfo_groups"])}["moved"]
    assert "XGROUP CREATE/SETID" in rp.lag_null_reason(orders, moved)

    tomb = rp.parse_xinfo_stream(replies["tombstone"]["xinfo_stream"])
    g = rp.parse_xinfo_groups(replies["tombstone"]["xinfo_groups"])[0]
    assert g["lag"] is None and g["entries_read"] == 2
    assert "XDEL" in rp.lag_null_reason(tomb, g)

    billing = {x["name"]: x for x in rp.parse_xinfo_groups(replies["orders"]["xinfo_groups"])}["billing"]
    assert rp.lag_null_reason(orders, billing) is None
    old = dict(billing, lag=None, entries_read=None, lag_reported=False)
    assert "older than 7.0" in rp.lag_null_reason(orders, old)


def test_group_depth(replies):
    orders = rp.parse_xinfo_stream(replies["orders"]["xinfo_stream"])
    groups = {g["name"]: g for g in rp.parse_xinfo_groups(replies["orders"]["xinfo_groups"])}
    assert rp.group_depth(orders, groups["billing"]) == (6, "lag")
    assert rp.group_depth(orders, groups["audit"])[0] == 0
    depth, basis = rp.group_depth(orders, groups["moved"])
    assert depth is None and basis == "unknown"

    # The tombstone group: nil lag, position inside the stream -> unknown.
    tomb = rp.parse_xinfo_stream(replies["tombstone"]["xinfo_stream"])
    tg = rp.parse_xinfo_groups(replies["tombstone"]["xinfo_groups"])[0]
    assert rp.group_depth(tomb, tg)[0] is None
    # With the same nil lag but a position before the first entry, every entry is undelivered.
    before = dict(tg, last_delivered_id="0-0")
    assert rp.group_depth(tomb, before) == (tomb["length"], "last-delivered-id is before the first entry: every entry is undelivered")
    # ... and at the last entry, nothing is.
    at_end = dict(tg, last_delivered_id=tomb["last_id"])
    assert rp.group_depth(tomb, at_end)[0] == 0


def test_trimmed_stream_lag_counts_entries_that_are_gone(replies):
    s = rp.parse_xinfo_stream(replies["trimmed"]["xinfo_stream"])
    g = rp.parse_xinfo_groups(replies["trimmed"]["xinfo_groups"])[0]
    assert s["length"] == 3 and g["lag"] == 8
    assert rp.group_depth(s, g)[0] == 3
    assert rp.trimmed_unread(s, g) == 5


def test_empty_stream(replies):
    s = rp.parse_xinfo_stream(replies["empty"]["xinfo_stream"])
    g = rp.parse_xinfo_groups(replies["empty"]["xinfo_groups"])[0]
    assert s["length"] == 0 and s["first_id"] is None and s["last_id"] is None
    assert rp.group_depth(s, g) == (0, "stream is empty")
    assert rp.parse_xpending_summary(replies["empty"]["xpending"]) == {"count": 0, "min_id": None, "max_id": None, "consumers": {}}


def test_consumers_and_pending(replies):
    consumers = rp.parse_xinfo_consumers(replies["orders"]["xinfo_consumers_billing"])
    assert {c["name"]: c["pending"] for c in consumers} == {"w1": 2, "w2": 2}
    assert all(c["idle_ms"] is not None and c["inactive_ms"] is None for c in consumers)  # 7.0: no "inactive"
    summary = rp.parse_xpending_summary(replies["orders"]["xpending_billing"])
    assert summary["count"] == 4 and summary["consumers"] == {"w1": 2, "w2": 2}
    assert rp.id_age_s(summary["min_id"], _now_ms(replies)) is not None
    entries = rp.parse_xpending_range(replies["orders"]["xpending_range_billing"])
    assert [e["deliveries"] for e in entries] == [4, 1, 1, 1]
    poison = rp.poison_candidates(entries, 3)
    assert [(p["id"], p["consumer"], p["deliveries"]) for p in poison] == [(entries[0]["id"], "w2", 4)]
    assert rp.poison_candidates(entries, 5) == []


def test_inactive_field_of_newer_servers():
    raw = [[b"name", b"c1", b"pending", 1, b"idle", 5000, b"inactive", 9000]]
    assert rp.parse_xinfo_consumers(raw)[0]["inactive_ms"] == 9000


# --- INFO and CLIENT LIST -------------------------------------------------------

def test_info(replies):
    info = rp.parse_info(replies["info"])
    assert info["redis_version"].startswith("7.")
    assert isinstance(info["used_memory"], int) and isinstance(info["maxmemory"], int)
    assert info["maxmemory_policy"] in rp.EVICTION_MEANING
    assert isinstance(info["evicted_keys"], int) and isinstance(info["rejected_connections"], int)
    assert isinstance(info["blocked_clients"], int) and info["blocked_clients"] >= 2
    assert isinstance(info["db15"], dict) and "keys" in info["db15"]
    stats = rp.parse_info(replies["info_commandstats"])
    assert stats["cmdstat_brpop"]["calls"] >= 1


def test_client_list_blocked_clients(replies):
    clients = rp.parse_client_list(replies["client_list"])
    own = str(rp.as_int(replies["client_id"]))
    assert any(c["id"] == own for c in clients)
    blocked = rp.blocked_clients(clients, own)
    assert {c["cmd"] for c in blocked} >= {"brpop", "xreadgroup"}
    assert all(c["known_blocking_command"] for c in blocked)
    assert all(c["id"] != int(own) for c in blocked)
    names = {c["name"] for c in blocked}
    assert {"worker-brpop", "worker-xreadgroup"} <= names
    assert rp.count_by(blocked, "cmd")["brpop"] >= 1


def test_split_addr():
    assert rp.split_addr("127.0.0.1:6000") == ("127.0.0.1", 6000)
    assert rp.split_addr("[::1]:6000") == ("::1", 6000)
    assert rp.split_addr("::1:6000") == ("::1", 6000)
    assert rp.split_addr("/tmp/redis.sock:0") == ("/tmp/redis.sock", 0)
    assert rp.split_addr("nonsense") is None


def test_eviction_meaning_and_memory_ratio():
    assert "writes fail" in rp.eviction_meaning("noeviction") or "write fails" in rp.eviction_meaning("noeviction")
    for policy in ("allkeys-lru", "allkeys-lfu", "allkeys-random"):
        assert "queue keys included" in rp.eviction_meaning(policy)
    assert "TTL" in rp.eviction_meaning("volatile-lru")
    assert rp.eviction_meaning(None) is None
    assert rp.memory_ratio(50, 200) == 0.25
    assert rp.memory_ratio(50, 0) is None  # maxmemory 0 = no limit


# --- rates ---------------------------------------------------------------------

def test_rates():
    assert rp.rate([(0.0, 10), (2.0, 30)]) == 10.0
    assert rp.rate([(0.0, 10)]) is None
    assert rp.rate([(0.0, 10), (1.0, None), (4.0, 2)]) == -2.0
    assert rp.rate([(0.0, 10), (4.0, 2)], counter=True) is None  # a counter that fell was reset
    assert rp.rate([(1.0, 5), (1.0, 9)]) is None
    assert rp.delta([(0, 3), (1, 8)]) == 5
    assert rp.trend([(0, 3), (1, 8)]) == "growing" and rp.trend([(0, 3), (1, 3)]) == "flat"
    assert rp.trend([(0, 3)]) is None


# --- layouts from key names ----------------------------------------------------

def _recognise(layout, sidekiq_live=()):
    inputs = rp.registry_inputs(layout["lists"], layout["sets"], sidekiq_live)
    return rp.recognise(layout["lists"], **inputs)


def test_celery_layout_with_priorities_and_broadcast_queues_left_out(layouts):
    queues, unrecognised = _recognise(layouts["celery"])
    by_name = {q["name"]: q for q in queues}
    assert set(by_name) == {"celery", "emails", "reports"}  # pidbox/celeryev are pub/sub, not work queues
    assert all(q["layout"] == "celery" and q["consume_index"] == -1 for q in queues)
    assert by_name["celery"]["keys"] == ["celery", "celery\x06\x163", "celery\x06\x169"]
    assert by_name["reports"]["keys"] == []  # bound but empty: no list yet
    assert unrecognised == []


def test_celery_global_key_prefix(layouts):
    queues, _ = _recognise(layouts["celery_prefixed"])
    assert [(q["name"], q["prefix"], q["key"], q["keys"]) for q in queues] == [
        ("celery", "myapp:", "myapp:celery", ["myapp:celery", "myapp:celery\x06\x166"])]


def test_priority_sibling_alone_names_a_celery_queue():
    queues, _ = rp.recognise(["jobs\x06\x163", "jobs"])
    assert [(q["layout"], q["name"], q["keys"]) for q in queues] == [("celery", "jobs", ["jobs", "jobs\x06\x163"])]


def test_rq_layout(layouts):
    queues, unrecognised = _recognise(layouts["rq"])
    assert [(q["name"], q["keys"], q["consume_index"]) for q in queues] == [
        ("default", ["rq:queue:default"], 0), ("high", ["rq:queue:high"], 0), ("low", [], 0)]
    assert unrecognised == []  # the :intermediate list belongs to its queue


def test_sidekiq_layout_needs_its_process_registry_or_lists(layouts):
    queues, _ = _recognise(layouts["sidekiq"], sidekiq_live=[""])
    assert [(q["name"], q["key"], q["consume_index"]) for q in queues] == [
        ("critical", "queue:critical", -1), ("default", "queue:default", -1), ("mailers", "queue:mailers", -1)]
    # A bare set called "queues" with no Sidekiq list and no process registry is someone else's.
    queues, _ = rp.recognise([], **rp.registry_inputs([], {"queues": ["a", "b"]}, []))
    assert queues == []


def test_sidekiq_namespace(layouts):
    lay = layouts["sidekiq_namespaced"]
    assert rp.sidekiq_namespaces(lay["lists"]) == ["", "shop:"]
    queues, _ = _recognise(lay)
    assert [(q["name"], q["namespace"], q["key"], bool(q["keys"])) for q in queues] == [
        ("default", "shop:", "shop:queue:default", True), ("low", "shop:", "shop:queue:low", False)]


def test_dramatiq_layout(layouts):
    queues, _ = _recognise(layouts["dramatiq"])
    assert [(q["name"], q["consume_index"], q["delay_queue"]) for q in queues] == [
        ("default", 0, False), ("default.DQ", 0, True), ("emails", 0, False)]


def test_plain_lists_stay_unrecognised_unless_named(layouts):
    lay = layouts["mixed_plain"]
    queues, unrecognised = rp.recognise(lay["lists"])
    assert {(q["layout"], q["name"]) for q in queues} == {("rq", "default"), ("sidekiq", "default")}
    assert unrecognised == ["cache:recent", "jobs"]
    queues, unrecognised = rp.recognise(lay["lists"], named=["jobs"])
    assert ("list", "jobs") in {(q["layout"], q["name"]) for q in queues}
    assert unrecognised == ["cache:recent"]


def test_candidate_keys():
    assert rp.candidate_keys("mail") == ["mail", "rq:queue:mail", "queue:mail", "dramatiq:mail"]


# --- job payloads ----------------------------------------------------------------

def test_job_timestamps():
    assert rp.rq_time("2024-05-01T12:00:00.500000Z") == 1714564800.5
    assert rp.rq_time("2024-05-01T12:00:00Z") == 1714564800.0
    assert rp.rq_time("yesterday") is None
    assert rp.sidekiq_job(b'{"class":"HardJob","enqueued_at":1714564800.25}') == {"enqueued_at": 1714564800.25, "job_class": "HardJob"}
    # Sidekiq 8 stores milliseconds; ActiveJob wraps the class.
    assert rp.sidekiq_job('{"class":"W","wrapped":"Mailer","enqueued_at":1714564800250}') == {"enqueued_at": 1714564800.25, "job_class": "Mailer"}
    assert rp.sidekiq_job(b"not json")["enqueued_at"] is None
    assert rp.dramatiq_message('{"actor_name":"send","message_timestamp":1714564800250}') == {"enqueued_at": 1714564800.25, "actor": "send"}
    assert rp.celery_message('{"headers":{"task":"app.add","id":"x1","eta":null},"properties":{}}') == {"task": "app.add", "task_id": "x1", "eta": None}
    assert rp.age_s(100.0, 130.5) == 30.5 and rp.age_s(None, 1.0) is None


# --- status ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, status", [
    (dict(waiting=0, consumers=0, consumed=None, depth_trend="flat"), rp.OK),
    (dict(waiting=5, consumers=0, consumed=True, depth_trend="shrinking"), rp.STOP),
    (dict(waiting=5, consumers=2, consumed=False, depth_trend="flat"), rp.STALL),
    (dict(waiting=5, consumers=2, consumed=True, depth_trend="growing", rate_in=3.0, rate_out=1.0), rp.WARN),
    (dict(waiting=5, consumers=2, consumed=True, depth_trend="shrinking", poison=1), rp.WARN),
    (dict(waiting=5, consumers=2, consumed=True, depth_trend="shrinking"), rp.OK),
    (dict(waiting=5, consumers=None, consumed=None, depth_trend="flat"), rp.UNKNOWN),
    (dict(waiting=None, consumers=2, consumed=True, depth_trend=None), rp.UNKNOWN),
    (dict(waiting=5, consumers=2, consumed=None, depth_trend=None, samples=1), rp.UNKNOWN),
])
def test_judge(kwargs, status):
    assert rp.judge(**kwargs)[0] == status


def test_judge_reason_carries_rates():
    status, reason = rp.judge(waiting=9, consumers=1, consumed=True, depth_trend="growing", rate_in=4.0, rate_out=1.5)
    assert status == rp.WARN and "4/s in" in reason and "1.5/s out" in reason


# --- one-line errors (probes/_redis_link.explain) -----------------------------------

def _target(url):
    from qdiag.targets import parse_redis

    return parse_redis(url)


@pytest.mark.parametrize("exc, tls, expected", [
    ("AuthenticationError:WRONGPASS invalid username-password pair or user is disabled.", False, "authentication failed"),
    ("AuthenticationError:Authentication required.", False, "requires a password"),
    ("AuthenticationError:AUTH <password> called without any password configured for the default user.", False, "has none set"),
    ("ConnectionError:Error 111 connecting to 127.0.0.1:1. Connection refused.", False, "connection refused"),
    ("ConnectionError:Error -2 connecting to nohost:6379. Name or service not known.", False, "cannot resolve host"),
    ("TimeoutError:Timeout reading from socket", False, "no reply within 2s"),
    ("TimeoutError:Timeout connecting to server", False, "no TCP connection within 2s"),
    ("TimeoutError:Timeout connecting to server", True, "use redis:// instead of rediss://"),
    ("ResponseError:DB index is out of range", False, "database 3 does not exist"),
    ("ConnectionError:Connection closed by server.", False, "use rediss://"),
])
def test_error_lines(exc, tls, expected):
    import redis.exceptions as rx

    from qdiag.probes._redis_link import explain

    kind, _, text = exc.partition(":")
    url = ("rediss" if tls else "redis") + "://app:pw-Secret9@127.0.0.1:6390/3"
    line = explain(getattr(rx, kind)(text), _target(url), 2.0, stage="connect")
    assert expected in line
    assert "127.0.0.1:6390" in line and "pw-Secret9" not in line and "\n" not in line


def test_error_line_masks_a_password_the_error_repeats():
    import redis.exceptions as rx

    from qdiag.probes._redis_link import explain

    line = explain(rx.ConnectionError("weird failure for app:pw-Secret9"), _target("redis://app:pw-Secret9@h:1/0"),
                   1.0, stage="read")
    assert "pw-Secret9" not in line and "***" in line


# --- inflow and outflow of job lists (probes/_redis_flow.py), replayed from flows.json -------
# Recorded by tests/fixtures/redis/record_flows.py: real pushes and pops between the samples,
# the replies the probe reads at each sample, and the truth.

@pytest.fixture(scope="module")
def flows():
    return json.loads((FIXTURES / "flows.json").read_text())["cases"]


def _replayed(case):
    """The recorded replies as the probe's samples [(t, {command: parsed})], and its queue."""
    from qdiag.probes import _redis_flow as flow
    from qdiag.probes._redis_samples import parse_reply

    key = case["key"]
    samples = []
    for i, replies in enumerate(case["samples"]):
        values = {}
        for cmd, reply in replies:
            reply = _as_wire(reply)
            if cmd[0] == "LPOS":
                values[("LPOS", key, cmd[1], cmd[2])] = flow.parse_lpos(reply)
            elif cmd[0] == "LLEN":
                values[("LLEN", key)] = reply
            else:
                values[("LINDEX", key, cmd[1])] = parse_reply(("LINDEX", key, cmd[1]), reply)
        samples.append((float(i), values))
    queue = {"layout": case["layout"], "name": key, "key": key, "keys": [key], "consume_index": case["consume_index"]}
    return samples, queue


# Cases where every interval can be counted exactly; the others are lower bounds.
EXACT_FLOWS = {"rq_draining", "sidekiq_quiet", "celery_restored", "list_pushed_at_tail", "list_pushed_at_head"}


def test_flow_cases_cover_exact_and_bounded(flows):
    assert EXACT_FLOWS < set(flows) and len(set(flows) - EXACT_FLOWS) >= 5


@pytest.mark.parametrize("name", sorted(json.loads((FIXTURES / "flows.json").read_text())["cases"]))
def test_flow_counts_match_what_happened(flows, name):
    """Exact counts equal what was pushed and taken; otherwise the counts are
    lower bounds of it, flagged as such, with no rate pretending to be exact."""
    from qdiag.probes._redis_jobs import list_flow

    case = flows[name]
    samples, queue = _replayed(case)
    got = list_flow(samples, queue, queue["keys"], case["maxlen"])
    pushed = sum(t["pushed"] for t in case["truth"])
    taken = sum(max(0, t["taken"]) for t in case["truth"])  # net of jobs put back, never below zero
    span = len(samples) - 1
    assert got.exact is (name in EXACT_FLOWS), got.basis
    if got.exact:
        assert (got.pushed, got.taken) == (pushed, taken)
        assert (got.rate_in, got.rate_out) == (round(pushed / span, 3), round(taken / span, 3))
    else:
        assert got.rate_in is None and got.rate_out is None
        assert got.pushed <= pushed and got.taken <= taken
        assert got.rate_in_min == round(got.pushed / span, 3)
        assert "lower bounds" in got.basis


def test_flow_bounds_name_their_reason(flows):
    from qdiag.probes._redis_jobs import list_flow

    reasons = {"celery_growing": "took every job", "celery_empty_then_jobs": "list was empty",
               "rq_beyond_maxlen": "more than 5 jobs pushed", "list_repeated_elements": "cannot be told apart",
               "list_pushed_at_both_ends": "both ends", "dramatiq_all_taken": "took every job"}
    for name, reason in reasons.items():
        samples, queue = _replayed(flows[name])
        assert reason in list_flow(samples, queue, queue["keys"], flows[name]["maxlen"]).basis, name


def test_flow_needs_lpos_replies():
    """A job to look for and no LPOS reply (the command failed): no counts at all, not zeros."""
    from qdiag.probes._redis_jobs import list_flow

    key = "q"
    first = {("LLEN", key): 3, ("LINDEX", key, 0): {"value": b"j3"}, ("LINDEX", key, -1): {"value": b"j1"}}
    second = {("LLEN", key): 5, ("LPOS", key, 0, False): None, ("LINDEX", key, 0): {"value": b"j5"}}
    queue = {"layout": "celery", "name": key, "key": key, "keys": [key], "consume_index": -1}
    assert list_flow([(0.0, first), (1.0, second)], queue, [key], 100) is None


def test_flow_interval_arithmetic():
    from qdiag.probes import _redis_flow as flow

    # LPUSH layout: the remembered job is 4 from the head: 4 pushed; length 10 -> 12: 2 taken.
    assert flow.interval(10, True, 4, 12, flow.HEAD, 100) == flow.Interval(4, 2, True)
    # RPUSH layout: found at index 7 of 12: 4 from the tail end.
    assert flow.interval(10, True, 7, 12, flow.TAIL, 100) == flow.Interval(4, 2, True)
    # Gone: at least the 12 now there were pushed, and the 10 there before were taken.
    assert flow.interval(10, True, None, 12, flow.HEAD, 100) == flow.Interval(12, 10, False, "workers took every job that was waiting")
    # Gone, but the list is longer than MAXLEN: only MAXLEN new ones are certain.
    assert flow.interval(10, True, None, 300, flow.HEAD, 100).pushed == 100
    assert flow.interval(None, True, 3, 5, flow.HEAD, 100) is None
    assert flow.push_end("celery", -1) == flow.HEAD and flow.push_end("rq", 0) == flow.TAIL
    assert flow.push_end("list", None) is None
    assert flow.lpos_command("k", b"e", flow.TAIL, 50, check_repeats=True) == ("LPOS", "k", b"e", "RANK", -1, "COUNT", 2, "MAXLEN", 50)
    assert flow.parse_lpos([3, 9]) == {"pos": 3, "repeats": True} and flow.parse_lpos(None) == {"pos": None, "repeats": False}


# --- dead versus stuck stream consumers (probes/_redis_liveness.py), from consumers.json ----
# Recorded by tests/fixtures/redis/record_consumers.py with real processes: busy, hung
# (stopped in its handler), named (stuck, but PINGing on a connection named after it),
# dead (SIGKILL while holding entries), plus a producer, a monitor and a client blocked on
# another stream's group.

@pytest.fixture(scope="module")
def consumers_rec():
    return _as_wire(json.loads((FIXTURES / "consumers.json").read_text()))


def _liveness_inputs(rec, undelivered=10):
    consumers = [{"stream": "s", "group": "g", "undelivered": undelivered, **c}
                 for c in rp.parse_xinfo_consumers(rec["xinfo_consumers"])]
    own = str(rp.as_int(rec["client_id"]))
    clients = [c for c in rp.parse_client_list(rec["client_list"]) if c.get("id") != own]
    return consumers, clients


def test_liveness_tells_dead_from_stuck(consumers_rec):
    from qdiag.probes import _redis_liveness as liveness

    consumers, clients = _liveness_inputs(consumers_rec)
    got = liveness.match(consumers, clients, consumers_rec["db"])
    verdict = {name: got[("s", "g", name)]["alive"] for name in consumers_rec["expected"]}
    assert verdict == {k.decode() if isinstance(k, bytes) else k: v for k, v in consumers_rec["expected"].items()}
    assert "named like it" in got[("s", "g", "named")]["why"]
    assert got[("s", "g", "dead")]["addr"] is None


def test_liveness_never_takes_a_producer_or_a_monitor(consumers_rec):
    """With the consumers' own connections gone, the producer (XADD) and the
    monitor (XINFO) are left: neither can be a consumer's connection."""
    from qdiag.probes import _redis_liveness as liveness

    consumers, clients = _liveness_inputs(consumers_rec)
    others = [c for c in clients if c.get("cmd", "").split("|")[0] not in liveness.CONSUMER_COMMANDS
              and c.get("name") != "named"]
    assert {c["cmd"].split("|")[0] for c in others} >= {"xadd", "xinfo"}
    got = liveness.match(consumers, others, consumers_rec["db"])
    assert not any(v["alive"] for v in got.values())


def test_liveness_blocked_reader_serves_another_group_only_when_entries_wait(consumers_rec):
    """The client blocked in XREADGROUP waits on another stream: it cannot be
    the dead consumer of a group with undelivered entries, but could be one of
    a group with nothing to deliver."""
    from qdiag.probes import _redis_liveness as liveness

    consumers, clients = _liveness_inputs(consumers_rec)
    dead = [c for c in consumers if c["name"] == "dead"]
    blocked = [c for c in clients if "b" in c.get("flags", "")]
    assert len(blocked) == 1
    assert liveness.match(dead, blocked, consumers_rec["db"])[("s", "g", "dead")]["alive"] is False
    dead_quiet = [{**dead[0], "undelivered": 0}]
    assert liveness.match(dead_quiet, blocked, consumers_rec["db"])[("s", "g", "dead")]["alive"] is True


def test_liveness_other_database_does_not_count(consumers_rec):
    from qdiag.probes import _redis_liveness as liveness

    consumers, clients = _liveness_inputs(consumers_rec)
    got = liveness.match(consumers, clients, consumers_rec["db"] + 1)
    assert not any(v["alive"] for v in got.values())


def test_client_list_is_bounded(consumers_rec):
    raw = consumers_rec["client_list"]
    total = rp.client_list_lines(raw)
    assert total == len(rp.parse_client_list(raw)) >= 8
    assert len(rp.parse_client_list(raw, limit=3)) == 3


def test_lean_stream_from_groups(replies):
    stream = rp.parse_xinfo_stream(replies["orders"]["xinfo_stream"])
    groups = rp.parse_xinfo_groups(replies["orders"]["xinfo_groups"])
    assert stream["entry_bytes"] > 0  # the first/last entries' fields, as XINFO STREAM sent them
    lean = rp.lean_stream(stream["length"], groups, stream)
    assert lean["lean"] and lean["length"] == stream["length"]
    assert lean["entries_added"] == stream["entries_added"]  # entries-read + lag of a group with a lag
    assert lean["first_id"] is None and lean["last_id"] is None
    assert rp.lean_stream(5, [{"entries_read": None, "lag": None}], stream)["entries_added"] is None


def test_a_group_that_reads_and_never_acknowledges_is_told_from_one_with_entries_in_flight():
    from probes._redis_streams import never_acked

    growing = [(0.0, 460), (2.5, 535), (5.0, 607)]
    assert "not acknowledged" in never_acked(growing, rate_out=30.0, ack_rate=0.6)
    # Entries in flight, acknowledged as fast as read: the pending list holds steady.
    assert never_acked([(0.0, 20), (2.5, 21), (5.0, 19)], rate_out=30.0, ack_rate=30.0) is None
    # Acks at a fifth of the deliveries: slow to finish, not "never".
    assert never_acked(growing, rate_out=30.0, ack_rate=6.0) is None
    # Nothing read during the window: a stall, told by other rules.
    assert never_acked(growing, rate_out=0.0, ack_rate=0.0) is None
    assert never_acked([(0.0, 460)], rate_out=30.0, ack_rate=0.0) is None
