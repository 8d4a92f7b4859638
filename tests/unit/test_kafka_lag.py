"""The Kafka probe's pure logic (probes/_kafka_lag.py), on raw documents the
probe recorded from the real rig broker (tests/fixtures/kafka/, see record.py
there for the situations) and on small hand-written series for the rules."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from qdiag.probes import _kafka_lag as lag
from qdiag.probes import _kafka_admin as admin_mod
from qdiag.probes import kafka as probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kafka"


def load(name: str) -> tuple[dict, dict]:
    doc = json.loads((FIXTURES / name).read_text())
    return doc["about"], doc["raw"]


def by_group(result: dict) -> dict[str, dict]:
    return {g["group"]: g for g in result["groups"]}


def queue(result: dict, group: str, topic: str) -> dict:
    [found] = [q for q in result["queues"] if q["group"] == group and q["name"] == topic]
    return found


def raw_offsets(raw: dict, group: str, topic: str, p: int) -> list[tuple[float, int | None, int | None]]:
    """(t, committed, log end) of one partition at every sample, straight from the raw document."""
    out = []
    for s in raw["samples"]:
        c = ((s["committed"].get(group) or {}).get(topic) or {}).get(str(p))
        e = (s["log_end"].get(topic) or {}).get(str(p))
        out.append((s["t"], c, e))
    return out


# --- three-way values ------------------------------------------------------------------

def test_no_committed_offset_is_none_not_zero():
    assert lag.committed_value(-1) == (None, lag.NONE)
    assert lag.committed_value(None) == (None, lag.NONE)
    assert lag.committed_value(0) == (0, lag.OK)


def test_lag_is_missing_for_a_reason_never_zero_or_the_whole_log():
    assert lag.partition_lag(None, lag.NONE, 500, lag.OK) == (None, lag.NONE)
    assert lag.partition_lag(7, lag.OK, None, lag.NO_LEADER) == (None, lag.NO_LEADER)
    assert lag.partition_lag(7, lag.OK, 10, lag.OK) == (3, lag.OK)


# --- Burrow's rule order -----------------------------------------------------------------

@pytest.mark.parametrize("series, owner, allowed, expected", [
    # a quiet partition with nothing waiting is fine, with or without an owner
    ([(5, 5), (5, 5), (5, 5)], "unowned", 0, "OK"),
    # nobody owns it, the offset does not move, lag waits: STOP
    ([(10, 20), (10, 25), (10, 30)], "unowned", 0, "STOP"),
    # the same with a live owner: STALL; with an owner nobody can see: STALL too
    ([(10, 20), (10, 25), (10, 30)], "owned", 0, "STALL"),
    ([(10, 20), (10, 25), (10, 30)], "unknown", 0, "STALL"),
    # lag under the allowed lag never counts
    ([(10, 12), (10, 12), (10, 12)], "unowned", 5, "OK"),
    ([(10, 20), (10, 25), (10, 30)], "owned", 25, "OK"),
    # the offset went back and stayed back
    ([(50, 100), (20, 100), (20, 100)], "owned", 0, "REWIND"),
    # went back and recovered past where it was: not a rewind, lag fell
    ([(50, 100), (20, 100), (60, 100)], "owned", 0, "OK"),
    # moving, but lag never decreased: WARN
    ([(10, 20), (12, 25), (14, 30)], "owned", 0, "WARN"),
    ([(10, 20), (12, 22), (14, 24)], "owned", 0, "WARN"),
    # moving and lag fell somewhere: OK
    ([(10, 20), (18, 25), (20, 30)], "owned", 0, "OK"),
    # lag was 0 at the first sample: a consumer that has not committed yet is not stalled
    ([(10, 10), (10, 15), (10, 20)], "owned", 0, "OK"),
])
def test_rule_order(series, owner, allowed, expected):
    assert lag.evaluate_partition(series, allowed_lag=allowed, owner_state=owner)[0] == expected


def test_missing_values_give_no_verdict():
    assert lag.evaluate_partition([(None, 10)] * 3)[0] == "NO_COMMIT"
    assert lag.evaluate_partition([(5, None)] * 3)[0] == "UNKNOWN"
    assert lag.evaluate_partition([(5, 10)])[0] == "UNKNOWN"  # one sample says nothing about movement
    assert lag.evaluate_partition([(10, 10)])[0] == "OK"


def test_a_transaction_marker_is_not_a_stop():
    parked = [(5, 6), (5, 6), (5, 6)]
    assert lag.evaluate_partition(parked, owner_state="unowned")[0] == "STOP"
    assert lag.evaluate_partition(parked, owner_state="unowned", invisible=(5, 6))[0] == "OK"
    # the marker only covers offset 5: a real record behind it still counts
    assert lag.evaluate_partition([(5, 8)] * 3, owner_state="unowned", invisible=(5, 6))[0] == "STOP"


def test_group_takes_its_worst_partition():
    assert lag.group_status(["OK", "WARN", "STALL"], "Stable") == "STALL"
    assert lag.group_status(["OK", "NO_COMMIT"], "Stable") == "OK"
    assert lag.group_status(["OK"], "Empty") == "EMPTY"
    assert lag.group_status(["STOP", "OK"], "Empty") == "STOP"
    assert lag.group_status([], "Stable") == "UNKNOWN"
    assert lag.SEVERITY["STALL"] == lag.SEVERITY["STOP"] == lag.SEVERITY["REWIND"] == "err"


# --- seconds behind --------------------------------------------------------------------------

def test_produce_time_is_interpolated_between_samples():
    history = [(100.0, 10), (102.0, 30), (104.0, 50)]
    # offset 19 exists once the log end passed 20: halfway between 10 and 30
    when, how = lag.estimate_produce_time(history, 19)
    assert how == "interpolated" and when == pytest.approx(101.0)


def test_produce_time_before_the_window_is_extrapolated_at_the_window_rate():
    history = [(100.0, 10), (102.0, 30), (104.0, 50)]  # 10 per second
    when, how = lag.estimate_produce_time(history, 4)  # 5 offsets before the first sample's 10
    assert how == "extrapolated" and when == pytest.approx(99.5)


def test_no_rate_gives_no_estimate_instead_of_a_division_by_zero():
    assert lag.estimate_produce_time([(100.0, 10), (102.0, 10), (104.0, 10)], 4) == (None, None)
    assert lag.estimate_produce_time([(100.0, 10)], 20) == (None, None)  # not produced yet


def test_seconds_behind_prefers_the_record_timestamp():
    history = [(100.0, 10), (102.0, 30)]
    exact = lag.seconds_behind(lag=25, committed=5, history=history,
                               record={"read_at": 5, "offset": 5, "timestamp_ms": 90_000},
                               read_wall=103.0, now_wall=102.0)
    assert exact["lag_seconds"] == pytest.approx(13.0) and exact["lag_seconds_source"] == "record_timestamp"
    estimate = lag.seconds_behind(lag=25, committed=5, history=history, record=None, read_wall=None, now_wall=102.0)
    assert estimate["lag_seconds_source"] == "estimate"
    quiet = lag.seconds_behind(lag=5, committed=5, history=[(100.0, 10), (102.0, 10)], record=None,
                               read_wall=None, now_wall=102.0)
    assert quiet["lag_seconds"] is None and quiet["lag_seconds_source"] == "unknown"
    assert quiet["lag_seconds_min"] == pytest.approx(2.0)  # it was there at the first sample
    assert lag.seconds_behind(lag=0, committed=10, history=history, record=None, read_wall=None,
                              now_wall=102.0)["lag_seconds"] == 0.0
    assert lag.seconds_behind(lag=None, committed=None, history=history, record=None, read_wall=None,
                              now_wall=102.0)["lag_seconds"] is None


# --- retention -------------------------------------------------------------------------------

def test_retention_risk():
    lost = lag.retention_risk(30, 60, 100)
    assert lost["data_at_risk"] is True and lost["deleted_unconsumed"] == 30
    near = lag.retention_risk(62, 60, 100)  # 40 retained, margin 4
    assert near["data_at_risk"] is True and near["headroom_messages"] == 2
    assert lag.retention_risk(80, 60, 100)["data_at_risk"] is False
    assert lag.retention_risk(0, 0, 100)["data_at_risk"] is False  # nothing was ever deleted
    assert lag.retention_risk(100, 60, 100)["data_at_risk"] is False  # caught up
    assert lag.retention_risk(None, 60, 100)["data_at_risk"] is None


# --- recorded: lag_states.json ------------------------------------------------------------------

@pytest.fixture(scope="module")
def states():
    about, raw = load("lag_states.json")
    return about, raw, lag.analyse(raw, allowed_lag=about["allowed_lag"])


def test_recorded_rows_are_log_end_minus_committed(states):
    about, raw, result = states
    for group in result["groups"]:
        for row in group["partitions"]:
            _, committed, end = raw_offsets(raw, group["group"], row["topic"], row["partition"])[-1]
            assert row["log_end"] == end
            if committed is None:
                assert row["committed"] is None and row["committed_state"] == "none" and row["lag"] is None
            else:
                assert row["committed"] == committed and row["lag"] == end - committed


def test_recorded_stopped_group(states):
    about, raw, result = states
    g, topic = about["groups"]["stopped"], about["topics"]["live"]
    group = by_group(result)[g]
    assert group["state"] == "Empty" and group["status"] == "STOP" and group["severity"] == "err"
    assert {r["owner_state"] for r in group["partitions"]} == {"unowned"}
    q = queue(result, g, topic)
    assert q["consumers"] == 0 and q["lag_trend"] == "growing" and q["rate_out"] == 0.0
    expected_in = sum((pts[-1][2] - pts[0][2]) / (pts[-1][0] - pts[0][0])
                      for pts in (raw_offsets(raw, g, topic, p) for p in range(3)))
    assert q["rate_in"] == pytest.approx(expected_in, abs=0.01) and q["rate_in"] > 0
    assert q["depth"] == sum(r["lag"] for r in group["partitions"])


def test_recorded_stalled_group_with_a_never_committed_and_an_unowned_partition(states):
    about, raw, result = states
    g = about["groups"]["stalled"]
    group = by_group(result)[g]
    assert group["state"] == "Stable" and group["status"] == "STALL"
    rows = {(r["topic"], r["partition"]): r for r in group["partitions"]}
    never = rows[(about["topics"]["live"], 2)]
    assert never["committed"] is None and never["committed_state"] == "none"
    assert never["lag"] is None and never["lag_state"] == "none" and never["status"] == "NO_COMMIT"
    assert never["owner_state"] == "owned"
    unowned = rows[(about["topics"]["other"], 0)]
    assert unowned["owner"] is None and unowned["owner_state"] == "unowned" and unowned["lag"] == 0
    live = queue(result, g, about["topics"]["live"])
    assert live["consumers"] == 1 and live["no_commit_partitions"] == 1 and live["depth_complete"] is False
    assert queue(result, g, about["topics"]["other"])["consumers"] == 0


def test_recorded_draining_group(states):
    about, raw, result = states
    g, topic = about["groups"]["draining"], about["topics"]["backlog"]
    group = by_group(result)[g]
    assert group["status"] == "OK"
    q = queue(result, g, topic)
    pts = raw_offsets(raw, g, topic, 0)
    assert q["lag_trend"] == "shrinking"
    assert q["rate_out"] == pytest.approx((pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0]), abs=0.01)
    assert q["rate_out"] > 0 and q["rate_in"] == 0.0


def test_recorded_rewind_and_retention(states):
    about, raw, result = states
    groups = by_group(result)
    assert groups[about["groups"]["rewind"]]["status"] == "REWIND"
    lost = groups[about["groups"]["retention_lost"]]["partitions"][0]
    assert lost["data_at_risk"] is True
    assert lost["retention"]["deleted_unconsumed"] == lost["log_start"] - lost["committed"] > 0
    near = groups[about["groups"]["retention_near"]]["partitions"][0]
    assert near["data_at_risk"] is True
    assert near["retention"]["headroom_messages"] == near["committed"] - near["log_start"]
    q = queue(result, about["groups"]["retention_lost"], about["topics"]["retained"])
    assert q["data_at_risk"] is True and q["at_risk_partitions"] == [0]


def test_recorded_seconds_behind_come_from_record_timestamps(states):
    about, raw, result = states
    g, topic = about["groups"]["stopped"], about["topics"]["live"]
    row = by_group(result)[g]["partitions"][0]
    [read] = [r for r in raw["record_timestamps"][topic]["0"] if r["read_at"] == row["committed"]]
    assert row["lag_seconds_source"] == "record_timestamp"
    assert row["lag_seconds"] == pytest.approx(raw["read_wall"] - read["timestamp_ms"] / 1000, abs=0.002)


def test_recorded_without_timestamp_reads_falls_back_to_labelled_estimates(states):
    about, raw, _ = states
    raw = copy.deepcopy(raw)
    raw["record_timestamps"] = {}
    result = lag.analyse(raw)
    q = queue(result, about["groups"]["stopped"], about["topics"]["live"])
    # the producer ran through the window, so an estimate exists, and it says it is one
    assert q["lag_seconds_source"] == "estimate" and q["lag_seconds"] > 0


def test_allowed_lag_floor(states):
    about, raw, _ = states
    result = lag.analyse(raw, allowed_lag=10**9)
    group = by_group(result)[about["groups"]["stopped"]]
    assert group["status"] == "EMPTY" and {r["status"] for r in group["partitions"]} == {"OK"}


def test_no_leader_and_deleted_topic(states):
    about, raw, _ = states
    raw = copy.deepcopy(raw)
    live, other = about["topics"]["live"], about["topics"]["other"]
    raw["topics"][live]["partitions"]["1"]["leader"] = -1  # as Metadata says for an offline partition
    del raw["topics"][other]  # committed offsets for a topic that was deleted
    groups = by_group(lag.analyse(raw))
    rows = {(r["topic"], r["partition"]): r for r in groups[about["groups"]["stopped"]]["partitions"]}
    offline = rows[(live, 1)]
    assert offline["committed"] == 20 and offline["log_end"] is None
    assert offline["log_end_state"] == offline["lag_state"] == "no_leader" and offline["lag"] is None
    assert offline["status"] == "UNKNOWN"
    gone = {(r["topic"], r["partition"]): r for r in groups[about["groups"]["stalled"]]["partitions"]}[(other, 0)]
    assert gone["log_end_state"] == "unknown_topic" and gone["lag"] is None


def test_output_is_plain_json(states):
    _, _, result = states
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result


# --- recorded: kip848_txn.json ------------------------------------------------------------------

@pytest.fixture(scope="module")
def kip848():
    about, raw = load("kip848_txn.json")
    return about, raw, lag.analyse(raw, allowed_lag=about["allowed_lag"])


def test_recorded_consumer_protocol_group_is_not_dead(kip848):
    about, raw, result = kip848
    group = by_group(result)[about["groups"]["kip848"]]
    assert group["state"] == "Stable" and group["group_type"] == "consumer"
    assert group["describable"] is False and "cannot be described by this client" in group["note"]
    assert group["members"] is None and group["status"] == "OK"
    assert {r["owner_state"] for r in group["partitions"]} == {"unknown"}
    assert queue(result, about["groups"]["kip848"], about["topics"]["shared"])["consumers"] is None


def test_recorded_transaction_marker_lag(kip848):
    about, raw, result = kip848
    groups = by_group(result)
    marker = groups[about["groups"]["marker"]]["partitions"][0]
    # what kafka-consumer-groups shows stays as is; what is waiting is nothing
    assert marker["lag"] == 1 and marker["effective_lag"] == 0 and marker["unconsumable_offsets"] == 1
    assert marker["status"] == "OK" and groups[about["groups"]["marker"]]["status"] == "EMPTY"
    assert queue(result, about["groups"]["marker"], about["topics"]["txn"])["depth"] == 0
    behind = groups[about["groups"]["behind"]]
    assert behind["status"] == "STOP" and behind["partitions"][0]["lag"] == marker["log_end"]


# --- hand-written documents -----------------------------------------------------------------------

def _doc(members, committed_series, end_series, partitions=1, state="Stable"):
    samples = []
    for i, (c, e) in enumerate(zip(committed_series, end_series)):
        samples.append({"t": float(i), "wall": 1000.0 + i,
                        "committed": {"g": {"t": {str(p): v for p, v in enumerate(c)}}},
                        "log_end": {"t": {str(p): v for p, v in enumerate(e)}}})
    return {"groups": {"g": {"state": state, "group_type": "classic", "describable": True, "members": members}},
            "topics": {"t": {"error": None, "partitions": {str(p): {"leader": 1} for p in range(partitions)}}},
            "samples": samples}


def _member(name, parts, subscribed=("t",)):
    return {"member_id": f"{name}-1", "client_id": name, "host": "/10.0.0.5",
            "assignment": {"t": list(parts)} if parts else {}, "subscription": list(subscribed)}


def test_falling_behind_is_a_warning():
    doc = _doc([_member("a", [0])], [[10], [20], [30]], [[50], [70], [90]])
    result = lag.analyse(doc)
    assert by_group(result)["g"]["status"] == "WARN" and by_group(result)["g"]["severity"] == "warn"
    q = queue(result, "g", "t")
    assert q["rate_in"] == 20.0 and q["rate_out"] == 10.0 and q["lag_trend"] == "growing"
    assert q["lag_change_per_s"] == 10.0 and q["depth_samples"] == [40, 50, 60]


def test_idle_members_and_under_parallelised():
    idle = lag.analyse(_doc([_member("a", [0]), _member("b", []), _member("c", [])], [[5]] * 3, [[5]] * 3))
    q = queue(idle, "g", "t")
    assert q["members"] == 3 and q["consumers"] == 1 and q["idle_members"] == 2 and "idle" in q["parallelism"]
    crowded = lag.analyse(_doc([_member("a", range(8))], [[5] * 8] * 3, [[5] * 8] * 3, partitions=8))
    q = queue(crowded, "g", "t")
    assert q["partitions_per_consumer"] == 8.0 and q["under_parallelised"] is True


def test_rebalancing_group_has_unknown_owners_not_unowned():
    doc = _doc([_member("a", [])], [[10]] * 3, [[20], [25], [30]], state="PreparingRebalance")
    doc["groups"]["g"] = probe._raw_group(doc["groups"]["g"])
    row = by_group(lag.analyse(doc))["g"]["partitions"][0]
    assert row["owner_state"] == "unknown" and row["status"] == "STALL"


def test_named_topic_without_a_group():
    doc = _doc([], [], [])
    doc["groups"] = {}
    doc["samples"] = [{"t": 0.0, "wall": 1.0, "committed": {}, "log_end": {"t": {"0": 10}}},
                      {"t": 2.0, "wall": 3.0, "committed": {}, "log_end": {"t": {"0": 30}}}]
    doc["named_topics"] = ["t"]
    [q] = lag.analyse(doc)["queues"]
    assert q["group"] is None and q["status"] == "NO_GROUP" and q["rate_in"] == 10.0 and q["depth"] is None


# --- the probe's own pure helpers ------------------------------------------------------------------

def test_worst_partitions_share_reads_and_skip_deleted_offsets():
    samples = [{"committed": {"a": {"t": {"0": 10, "1": 5}}, "b": {"t": {"0": 10, "1": 95}}},
                "log_end": {"t": {"0": 100, "1": 100}}}] * 3
    wanted = probe._worst_partitions(samples, {"t": {"1": 50}}, limit=10, small_first=False)
    # both groups at offset 10 of partition 0 share a read; offset 5 of partition 1 is below the log start
    assert wanted == [("t", 0, 10, 100), ("t", 1, 95, 100)]
    assert probe._worst_partitions(samples, {}, limit=1, small_first=False) == [("t", 1, 5, 100)]
    assert probe._worst_partitions(samples, {}, limit=0, small_first=False) == []


def test_worst_partitions_read_committed_looks_at_stuck_small_lags_first():
    samples = [{"committed": {"a": {"t": {"0": 10, "1": 99}}}, "log_end": {"t": {"0": 100, "1": 100}}}] * 3
    assert probe._worst_partitions(samples, {}, limit=1, small_first=True) == [("t", 1, 99, 100)]
    assert probe._worst_partitions(samples, {}, limit=1, small_first=False) == [("t", 0, 10, 100)]


def test_member_assignment_shapes_of_both_kafka_python_generations():
    assert admin_mod.decode_assignment({"assigned_partitions": [{"topic": "t", "partitions": [2, 0]}], "user_data": ""}) \
        == {"t": [0, 2]}

    class Old:  # kafka-python 2.x ConsumerProtocolMemberAssignment
        assignment = [("t", [1, 0])]

    assert admin_mod.decode_assignment(Old()) == {"t": [0, 1]}
    assert admin_mod.decode_assignment(b"") == {}
    assert admin_mod.decode_assignment(b"\x00\x01garbage") is None  # undecodable: unknown, not "no partitions"


def test_options_are_checked():
    from qdiag.errors import ConfigError
    from qdiag.options import validate
    from qdiag.probe import all_probes

    declared = all_probes()["kafka"].options
    assert validate("kafka", declared, {})["allowed_lag"] == 0
    assert validate("kafka", declared, {"read_committed": True, "timeout": 30})["read_committed"] is True
    assert validate("kafka", declared, {"security_protocol": "sasl_ssl"})["security_protocol"] == "SASL_SSL"
    for bad in ({"allowed_lag": -1}, {"samples": 2}, {"read_committed": "yes"}, {"security_protocol": "TLS"},
                {"no_such": 1}):
        with pytest.raises(ConfigError, match=r"\[probes.kafka\]"):
            validate("kafka", declared, bad)


def test_client_config_keeps_only_keys_the_client_knows():
    config = admin_mod.client_config({"bootstrap_servers": 0, "request_timeout_ms": 0, "connections_max_idle_ms": 0},
                                  dict(probe.DEFAULTS), ["h:1"], 2.0, 9.0)
    assert config == {"bootstrap_servers": ["h:1"], "request_timeout_ms": 2000, "connections_max_idle_ms": 9000}
    assert not any(isinstance(v, float) and math.isnan(v) for v in config.values())
