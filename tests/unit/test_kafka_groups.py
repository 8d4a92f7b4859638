"""The Kafka probe's pure logic beyond lag (probes/_kafka_groups.py, _kafka_members.py,
_kafka_compact.py): groups that never commit, membership over the window, members
gone from this host, big snapshots, on hand-written raw documents and recorded
/proc tables (tests/fixtures/kafka/proc_net_tcp*); and what the rules make of them."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from qdiag.probes import _kafka_admin as admin_mod
from qdiag.probes import _kafka_compact as compact_mod
from qdiag.probes import _kafka_facts as facts_mod
from qdiag.probes import _kafka_groups as groups_mod
from qdiag.probes import _kafka_lag as lag
from qdiag.probes import _kafka_members as members_mod
from qdiag.probes import kafka as probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kafka"


def by_group(result: dict) -> dict[str, dict]:
    return {g["group"]: g for g in result["groups"]}


def queue(result: dict, group: str, topic: str) -> dict:
    [found] = [q for q in result["queues"] if q["group"] == group and q["name"] == topic]
    return found


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())["raw"]


# --- groups that never commit; membership over the window -------------------------------------



def _svc_member(mid: str, parts=(0, 1), client="svc", host="/10.0.0.5", generation=None) -> dict:
    return {"member_id": mid, "client_id": client, "host": host, "assignment": {"t": list(parts)},
            "generation": generation}


def _window_doc(commits: list[dict], ends: list[dict], described: list[dict | None], *, start=None, members=None) -> dict:
    """A raw document for group "g" on topic "t" (two partitions), one entry per sample."""
    members = members if members is not None else [_svc_member("m-1")]
    samples = []
    for i, (committed, end, desc) in enumerate(zip(commits, ends, described)):
        sample = {"t": 2.0 * i, "wall": 1000.0 + 2.0 * i, "committed": {"g": {"t": committed}} if committed else {},
                  "committed_errors": {}, "log_end": {"t": end}, "log_end_errors": {}}
        if desc is not None:
            sample["groups"] = {"g": desc}
        samples.append(sample)
    return {"groups": {"g": {"state": "Stable", "describable": True, "members": members}},
            "topics": {"t": {"error": None, "partitions": {"0": {"leader": 1}, "1": {"leader": 1}}}},
            "samples": samples, "log_start": {"t": start or {"0": 0, "1": 0}}}


def test_a_group_that_never_commits_is_counted_from_the_log_start_and_says_so():
    stable = {"state": "Stable", "members": [_svc_member("m-1")]}
    doc = _window_doc([{}, {}, {}], [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}], [stable] * 3,
               start={"0": 40, "1": 0})
    q = queue(lag.analyse(doc), "g", "t")
    assert q["status"] == "NO_COMMIT" and q["lag_seconds"] is None
    assert q["depth"] == (160 - 40) + 90 and q["depth_basis"] == "log-start"
    assert "auto.offset.reset" in q["notes"][0]
    assert q["depth_samples"] == [60 + 50, 90 + 70, 120 + 90] and q["lag_trend"] == "growing"
    assert q["not_progressing_partitions"] == 2 and q["no_commit_backlog"] == q["depth"]
    assert q["rebalances_seen"] == 0 and q["members_left"] == 0


def test_no_commit_on_a_quiet_or_unowned_partition_is_not_called_not_progressing():
    quiet = _window_doc([{}, {}, {}], [{"0": 100, "1": 50}] * 3, [None] * 3)
    assert queue(lag.analyse(quiet), "g", "t")["not_progressing_partitions"] == 0
    nobody = _window_doc([{}, {}, {}], [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}], [None] * 3,
                  members=[])
    assert lag.analyse(nobody)["queues"] == []  # no owner, no commit: nothing of the group's to count


def test_committed_lag_stays_the_depth_when_some_partitions_have_commits():
    doc = _window_doc([{"0": 90}, {"0": 95}, {"0": 100}], [{"0": 100, "1": 50}, {"0": 110, "1": 60}, {"0": 120, "1": 70}],
               [None] * 3)
    q = queue(lag.analyse(doc), "g", "t")
    assert q["depth"] == 20 and q["depth_basis"] == "committed"
    assert q["no_commit_backlog"] == 70 and q["not_progressing_partitions"] == 1  # partition 1


def test_old_documents_without_group_samples_still_replay():
    raw = load("lag_states.json")
    result = lag.analyse(raw)
    for q in result["queues"]:
        if q["group"] is not None:
            assert q["group_samples"] == 0 and q["rebalances_seen"] is None


def test_members_leaving_and_rejoining_are_counted_as_rebalances():
    a, b = _svc_member("a-1", (0,)), _svc_member("b-1", (1,), host="/10.0.0.6")
    a2 = _svc_member("a-2", (0,))  # the same client, back under a new member id
    states = [{"state": "Stable", "members": [a, b]},
              {"state": "PreparingRebalance", "members": [b]},
              {"state": "PreparingRebalance", "members": [a2, b]},
              {"state": "Stable", "members": [a2, b]}]
    churn = groups_mod.membership("g", [{"groups": {"g": s}} for s in states])
    assert churn["states_seen"] == ["Stable", "PreparingRebalance", "Stable"]
    assert churn["members_left"] == ["a-1"] and churn["members_joined"] == ["a-2"]
    assert churn["rejoined_clients"] == ["svc@10.0.0.5"]
    assert churn["rebalancing_samples"] == 2 and churn["rebalances_seen"] == 2
    assert churn["group_samples"] == 4 and churn["generation"] is None


def test_a_steady_group_shows_no_rebalance_and_instances_sharing_a_client_id_are_not_rejoins():
    two = {"state": "Stable", "members": [_svc_member("x-1", (0,)), _svc_member("x-2", (1,))]}  # same client@host
    churn = groups_mod.membership("g", [{"groups": {"g": two}}] * 3)
    assert churn["rebalances_seen"] == 0 and churn["rejoined_clients"] == []
    assert churn["members_left"] == churn["members_joined"] == []


def test_membership_lower_bounds_and_unknowns():
    one = _svc_member("m-1", generation=41)
    moved = {**one, "assignment": {"t": [1]}, "generation": 42}
    churn = groups_mod.membership("g", [{"groups": {"g": {"state": "Stable", "members": [one]}}},
                                        {"groups": {"g": {"state": "Stable", "members": [moved]}}}])
    assert churn["rebalances_seen"] == 1 and churn["generation"] == 42  # reassigned under the same id
    # a single member evicted and back: Stable -> Empty -> Stable
    cycle = [{"state": "Stable", "members": [_svc_member("m-1")]}, {"state": "Empty", "members": []},
             {"state": "Stable", "members": [_svc_member("m-2")]}]
    churn = groups_mod.membership("g", [{"groups": {"g": s}} for s in cycle])
    assert churn["rebalances_seen"] == 2 and churn["rejoined_clients"] == ["svc@10.0.0.5"]
    # nothing described: unknown, not "no rebalance"
    churn = groups_mod.membership("g", [{"groups": {"g": {"error": "boom"}}}, {}])
    assert churn["group_samples"] == 0 and churn["rebalances_seen"] is None and churn["members_left"] is None


def test_member_generation_comes_from_the_subscription_only_when_sent():
    assert admin_mod.member_generation({"topics": ["t"], "generation_id": 7}) == 7
    assert admin_mod.member_generation({"topics": ["t"], "generation_id": -1}) is None
    assert admin_mod.member_generation({"topics": ["t"]}) is None
    assert admin_mod.member_generation(b"") is None


# --- what the rules make of it ------------------------------------------------------------------

def _report(doc: dict) -> dict:
    from qdiag.diagnosis import playbook
    from qdiag.report.build import build_report

    obs = {"bootstrap": "b:9092", **lag.analyse(doc)}
    snap = {"schema": "qdiag.snapshot/1", "created_at": "2026-01-01T00:00:00Z", "host": {"hostname": "h"},
            "window_s": 4.0, "discovered": [], "settings": {"targets": {"queues": ["t"], "groups": ["g"]}},
            "probes": [{"name": "kafka", "status": "ok", "observations": obs}]}
    return build_report(snap, playbook.load())


def test_a_group_consuming_without_commits_is_not_healthy():
    stable = {"state": "Stable", "members": [_svc_member("m-1")]}
    report = _report(_window_doc([{}, {}, {}], [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}],
                                 [stable] * 3))
    assert report["verdict"] != "healthy"
    top = report["root_causes"][0]
    assert (top["id"], top["subject"], top["rules"]) == ("consumer-stuck", "kafka:t/g", ["kafka-group-never-commits"])
    assert "log start" in top["evidence"][0] and "threshold" in top["evidence"][0]
    step5 = next(s for s in report["steps"] if s["number"] == 5)
    assert [f["rule"] for f in step5["findings"]] == ["kafka-group-never-commits"]
    [row] = report["queues"]  # the report's own queue row says what the depth is
    assert row["depth"] == 250 and "auto.offset.reset" in row["notes"][0]


def test_a_rebalance_storm_ranks_first_with_its_mechanism():
    a, b = _svc_member("a-1", (0,)), _svc_member("b-1", (1,), host="/10.0.0.6")
    a2, b2 = _svc_member("a-2", (0,)), _svc_member("b-2", (1,), host="/10.0.0.6")
    described = [{"state": "Stable", "members": [a, b]}, {"state": "PreparingRebalance", "members": [b, a2]},
                 {"state": "PreparingRebalance", "members": [a2, b2]}]
    commits = [{"0": 10, "1": 20}] * 3
    report = _report(_window_doc(commits, [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}],
                                 described, members=[a, b]))
    top = report["root_causes"][0]
    assert (top["id"], top["subject"]) == ("slow-consumer-logic", "kafka:t/g")
    assert top["rules"] == ["kafka-rebalance-storm"]
    assert "max.poll.interval.ms" in top["evidence"][0]
    assert any("max.poll.records" in m for m in top["mitigations"]["immediate"])


def test_a_storm_whose_commits_move_between_rebalances_while_the_lag_grows():
    """Between two evictions a batch sometimes commits: offsets move a little, the lag still
    grows, and two rebalances in the window (a member gone, the group rebalancing again)
    say storm, not an undersized pool."""
    a, b = _svc_member("a-1", (0,)), _svc_member("b-1", (1,), host="/10.0.0.6")
    b_all = _svc_member("b-1", (0, 1), host="/10.0.0.6")
    described = [{"state": "Stable", "members": [a, b]}, {"state": "Stable", "members": [b_all]},
                 {"state": "PreparingRebalance", "members": [b_all]}]
    commits = [{"0": 10, "1": 20}, {"0": 12, "1": 22}, {"0": 14, "1": 24}]
    report = _report(_window_doc(commits, [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}],
                                 described, members=[a, b]))
    top = report["root_causes"][0]
    assert (top["id"], top["subject"], top["rules"][0]) == ("slow-consumer-logic", "kafka:t/g", "kafka-rebalance-storm")
    assert "fell behind" in top["evidence"][0] and "growing" in top["evidence"][0]


def test_membership_churn_with_commits_moving_is_not_a_storm():
    a, a2 = _svc_member("a-1", (0, 1)), _svc_member("a-2", (0, 1))
    described = [{"state": "Stable", "members": [a]}, {"state": "Stable", "members": [a2]},
                 {"state": "Stable", "members": [a2]}]
    report = _report(_window_doc([{"0": 10, "1": 20}, {"0": 40, "1": 40}, {"0": 70, "1": 60}],
                                 [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}], described,
                                 members=[a]))
    assert "kafka-rebalance-storm" not in {r for c in report["root_causes"] for r in c["rules"]}


# --- members whose client has gone from this host ---------------------------------------------


BROKER = {("127.0.0.1", 9092)}


def _proc(tmp_path) -> str:
    (tmp_path / "net").mkdir()
    for name in ("tcp", "tcp6"):
        (tmp_path / "net" / name).write_text((FIXTURES / f"proc_net_{name}").read_text())
    return str(tmp_path)


def test_proc_net_tcp_rows_are_decoded_including_ipv6_and_time_wait_timers(tmp_path):
    socks = members_mod.read_sockets(_proc(tmp_path))
    assert len(socks) == 6 + 2  # the damaged line is skipped
    listen = [s for s in socks if s.state == members_mod.LISTEN]
    assert {s.local for s in listen} == {("127.0.0.1", 9092), ("::", 9092)}
    mapped = next(s for s in socks if s.inode == 137573)
    assert mapped.local == ("127.0.0.5", 43170) and mapped.remote == ("127.0.0.1", 9092)
    waits = sorted(s.timer_left_s for s in socks if s.state == members_mod.TIME_WAIT)
    assert waits == [25.6, 58.49]


def test_presence_counts_connections_to_the_brokers_from_each_member_host(tmp_path):
    socks = members_mod.read_sockets(_proc(tmp_path))
    seen = members_mod.presence(["127.0.0.2", "/127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.9"], BROKER, socks,
                                own={137999})
    assert seen["127.0.0.2"] == {"established": 1, "closed_s_ago": None}
    # gone: no connection, and its newest closed connection is 1.5 s old (TIME_WAIT lasts 60 s)
    assert seen["127.0.0.3"] == {"established": 0, "closed_s_ago": 1.5}
    assert seen["127.0.0.4"]["established"] == 0  # only qdiag's own socket
    assert seen["127.0.0.5"]["established"] == 1  # an IPv4 client on an IPv6 socket
    assert seen["127.0.0.9"] == {"established": 0, "closed_s_ago": None}
    # connections to something that is not a broker do not count
    assert members_mod.presence(["127.0.0.2"], {("127.0.0.1", 1)}, socks, set())["127.0.0.2"]["established"] == 0


def test_a_loopback_member_host_is_ours_only_when_the_broker_is_here_too():
    local = {"127.0.0.1", "10.1.2.3"}
    assert members_mod.member_host_is_here("/127.0.0.1", local, ["127.0.0.1"])
    assert members_mod.member_host_is_here("127.0.0.7", local, ["10.1.2.3"])
    assert not members_mod.member_host_is_here("/127.0.0.1", local, ["10.9.9.9"])  # the broker host's loopback
    assert members_mod.member_host_is_here("/10.1.2.3", local, ["10.9.9.9"])
    assert not members_mod.member_host_is_here("/10.1.2.4", local, ["10.1.2.3"])


def _gone_doc(looks: list[dict]) -> dict:
    here, there = _svc_member("m-here", (0,), host="/127.0.0.3"), _svc_member("m-there", (1,), host="/10.0.0.6")
    stable = {"state": "Stable", "members": [here, there]}
    doc = _window_doc([{"0": 10, "1": 20}] * 3, [{"0": 100, "1": 50}, {"0": 130, "1": 70}, {"0": 160, "1": 90}],
                      [stable] * 3, members=[here, there])
    for sample, look in zip(doc["samples"], looks):
        if look is not None:
            sample["local_hosts"] = look
    return doc


def test_a_listed_member_with_no_connection_from_this_host_is_gone_and_its_partitions_stop():
    away = {"127.0.0.3": {"established": 0, "closed_s_ago": 12.0}}
    result = lag.analyse(_gone_doc([away, away, away]))
    q = queue(result, "g", "t")
    assert q["gone_members"] == 1 and q["gone_partitions"] == 1 and q["gone_hosts"] == ["127.0.0.3"]
    assert q["gone_for_s"] == 12.0 and q["gone_at_least_s"] == 4.0
    assert q["consumers"] == 1 and q["members"] == 2  # listed: 2; attached: the other one
    rows = rows_by_partition(result)
    assert rows[0]["owner_state"] == "gone" and rows[0]["status"] == "STOP"
    assert rows[1]["owner_state"] == "owned" and rows[1]["status"] == "STALL"
    [member] = [m for m in by_group(result)["g"]["members"] if m["gone"]]
    assert member["member_id"] == "m-here" and member["gone_for_s"] == 12.0


def test_one_connection_at_one_sample_or_a_single_look_is_not_gone():
    away, back = {"127.0.0.3": {"established": 0}}, {"127.0.0.3": {"established": 2}}
    assert queue(lag.analyse(_gone_doc([away, back, away])), "g", "t")["gone_members"] == 0
    q = queue(lag.analyse(_gone_doc([None, None, away])), "g", "t")
    assert q["gone_members"] == 0 and q["consumers"] == 2
    # hosts that are not this host's were never looked at: unknown, not "none gone"
    assert queue(lag.analyse(_gone_doc([None, None, None])), "g", "t")["gone_members"] is None


def test_a_gone_member_is_reported_as_consumers_absent_first():
    away = {"127.0.0.3": {"established": 0, "closed_s_ago": 12.0}}
    top = _report(_gone_doc([away, away, away]))["root_causes"][0]
    assert (top["id"], top["subject"]) == ("consumers-absent", "kafka:t/g")
    assert top["rules"][0] == "kafka-members-gone" and "12 s" in top["evidence"][0]


def rows_by_partition(result: dict) -> dict[int, dict]:
    return {r["partition"]: r for r in by_group(result)["g"]["partitions"]}


# --- big groups: the snapshot keeps the rows that matter -----------------------------------------


def _big_doc(partitions: int) -> dict:
    """Two groups on one topic of `partitions` partitions: every partition caught up and
    moving, except partition 7 of group "a" (stalled, lag 500) and 11 of group "b" (no commit)."""
    parts = {str(p): {"leader": 1} for p in range(partitions)}
    samples = []
    for i in range(3):
        ends = {str(p): 1000 + 10 * i for p in range(partitions)}
        committed_a = {str(p): 995 + 12 * i for p in range(partitions)}  # lag 5, 3, 1: catching up
        committed_a["7"] = 500
        committed_b = {str(p): 998 + 11 * i for p in range(partitions) if p != 11}  # lag 2, 1, 0
        samples.append({"t": 2.0 * i, "wall": 1000.0 + 2.0 * i, "committed": {"a": {"t": committed_a},
                                                                           "b": {"t": committed_b}},
                        "committed_errors": {}, "log_end": {"t": ends}, "log_end_errors": {}})
    member = {"member_id": "m", "client_id": "c", "host": "/10.0.0.5", "assignment": {"t": list(range(partitions))}}
    return {"groups": {g: {"state": "Stable", "describable": True, "members": [dict(member)]} for g in ("a", "b")},
            "topics": {"t": {"error": None, "partitions": parts}}, "samples": samples,
            "log_start": {"t": {str(p): 0 for p in range(partitions)}}}


def test_a_big_snapshot_keeps_the_rows_that_show_a_problem_and_counts_the_rest():
    full = lag.analyse(_big_doc(5000))
    small = copy.deepcopy(full)
    done = compact_mod.compact(small, 1000, 0, facts_mod.partition_facts)
    assert done["total"] == 10000 and done["kept"] == 2 and done["summarised"] == 9998
    kept = {(g["group"], r["partition"]): r["status"] for g in small["groups"] for r in g["partitions"]}
    assert kept == {("a", 7): "STALL", ("b", 11): "NO_COMMIT"}
    for g in small["groups"]:
        summary = g["partitions_summarised"]["t"]
        assert summary["rows"] == 4999 and summary["status_counts"] == {"OK": 4999}
    assert small["groups"][0]["partitions_summarised"]["t"]["lag_total"] == 4999 * 1
    # what the rules see is the same as with every row
    for before, after in zip(full["queues"], small["queues"]):
        assert facts_mod.CONTRIBUTION.queue_facts({"groups": full["groups"]})(before) == \
            facts_mod.CONTRIBUTION.queue_facts({"groups": small["groups"]})(after)
    assert len(json.dumps(small)) < len(json.dumps(full)) / 20


def test_small_snapshots_keep_every_row_and_the_budget_caps_problem_rows_worst_first():
    result = lag.analyse(_big_doc(40))
    assert compact_mod.compact(result, 1000, 0, facts_mod.partition_facts) is None
    assert sum(len(g["partitions"]) for g in result["groups"]) == 80
    done = compact_mod.compact(result, 1, 0, facts_mod.partition_facts)
    assert done["kept"] == 1
    [(group, row)] = [(g["group"], r) for g in result["groups"] for r in g["partitions"]]
    assert (group, row["status"]) == ("a", "STALL")  # STALL outranks NO_COMMIT


def test_samples_stay_half_a_second_apart_and_never_fewer_than_two():
    assert probe.sample_count(20, 1.0) == 3
    assert probe.sample_count(20, 5.0) == 11
    assert probe.sample_count(3, 5.0) == 3
    assert probe.sample_count(20, 0.1) == 2
    assert probe.sample_count(20, 9.5) == 20


def test_qdiag_own_connections_are_left_out_by_their_local_address(tmp_path):
    socks = members_mod.read_sockets(_proc(tmp_path))
    seen = members_mod.presence(["127.0.0.2"], BROKER, socks, own={("127.0.0.2", 0xE3F7)})
    assert seen["127.0.0.2"]["established"] == 0
    seen = members_mod.presence(["127.0.0.2"], BROKER, socks, own={("127.0.0.2", 1)})
    assert seen["127.0.0.2"]["established"] == 1
