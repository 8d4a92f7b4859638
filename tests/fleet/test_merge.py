"""Merging hosts' snapshots: matching by address and port, subjects named with
their host, what could not be seen, time checks.  Snapshots are small hand-made
documents in the shape the probes write (the lab tests run the real thing)."""

from __future__ import annotations

import copy

import pytest

from tests.cli_helper import run_cli
from qdiag import snapshot as snap
from qdiag.diagnosis.playbook import load
from qdiag.fleet import diagnose
from qdiag.fleet.merge import Taken, hosts, match, merge, split_peer, time_checks
from qdiag.fleet.report import build_any

BROKER = "10.9.0.3"


def _doc(hostname: str, probes: list[dict], *, discovered=(), created="2026-11-30T10:00:10Z", queues=("jobs",)):
    return {"schema": snap.SCHEMA, "created_at": created, "qdiag_version": "0.1.0",
            "host": {"hostname": hostname}, "versions": {}, "command": ["qdiag"], "window_s": 5.0,
            "settings": {"targets": {"redis": f"redis://{BROKER}:6379/0", "queues": list(queues)}},
            "discovered": list(discovered), "probes": probes}


def _broker(peers: list[str], depth=500):
    queue = {"system": "redis", "name": "jobs", "group": None, "depth": depth, "rate_in": 40.0, "rate_out": 0.0,
             "consumers": len(peers), "status": "WARN", "depth_samples": [depth - 100, depth]}
    discovered = [{"pid": None, "peer": p, "subject": "redis", "via": f"redis client {p} on db 0"} for p in peers]
    return _doc("mq-1", [{"name": "redis", "status": "ok", "observations": {"queues": [queue]}}],
                discovered=discovered)


def _consumer_host(name: str, ip: str, processes: list[tuple[int, int]], created="2026-11-30T10:00:11Z"):
    """processes: (pid, local port of its socket to the broker)."""
    targets = [{"pid": pid, "cpu_percent": 2.0, "threads": 3, "selected_by": [f"--connected-to {BROKER}:6379"],
                "sockets": [{"local": f"{ip}:{port}", "remote": f"{BROKER}:6379"}]} for pid, port in processes]
    host = {"cpu": {"busy_pct": 20.0}, "window_s": 5.0}
    return _doc(name, [{"name": "process", "status": "ok", "observations": {"targets": targets}},
                       {"name": "host", "status": "ok", "observations": host}], created=created, queues=())


def _merged(*docs, failed=()):
    taken = [Taken(name=d["host"]["hostname"], target=f"ssh://{d['host']['hostname']}", doc=d,
                   access=f"ssh {d['host']['hostname']}") for d in docs]
    taken += [Taken(name=n, target=f"ssh://{n}", error=e) for n, e in failed]
    return merge(taken)


def test_a_consumer_is_matched_by_address_and_port_not_just_host():
    merged = _merged(_broker([f"10.9.0.11:40001"]), _consumer_host("web-1", "10.9.0.11", [(100, 40001), (101, 40002)]))
    m = match(hosts(merged))
    assert [(c["host"], c["pid"]) for c in m.claims] == [("web-1", "web-1/100")]
    assert "address and port" in m.claims[0]["via"]


def test_a_broker_that_names_only_the_host_is_claimed_by_every_process_there_connected_to_it():
    merged = _merged(_broker(["10.9.0.11"]), _consumer_host("web-1", "10.9.0.11", [(100, 40001), (101, 40002)]))
    assert sorted(c["pid"] for c in match(hosts(merged)).claims) == ["web-1/100", "web-1/101"]


def test_the_primary_is_the_snapshot_with_the_brokers_view_whatever_the_order():
    merged = _merged(_consumer_host("web-1", "10.9.0.11", [(100, 40001)]), _broker(["10.9.0.11:40001"]))
    assert merged["fleet"]["primary"] == "mq-1" and merged["host"]["hostname"] == "mq-1"


def test_subjects_carry_their_host_and_pids_of_two_hosts_do_not_collide():
    merged = _merged(_broker(["10.9.0.11:40001", "10.9.0.12:40001"]),
                     _consumer_host("web-1", "10.9.0.11", [(100, 40001)]),
                     _consumer_host("web-2", "10.9.0.12", [(100, 40001)]))
    ids = {s.id for s in diagnose.join(merged).subjects}
    assert {"process:web-1/100", "process:web-2/100", "host:web-1", "host:web-2"} <= ids
    # Each host's subjects see their own host's facts.
    by_id = {s.id: s for s in diagnose.join(merged).subjects}
    assert by_id["process:web-1/100"].facts["seen_on"] == "web-1"
    assert by_id["process:web-1/100"].facts["consumer_of"] == "redis"


def test_qualify():
    assert diagnose.qualify("host", "web-3") == "host:web-3"
    assert diagnose.qualify("process:web-3/4127", "web-3") == "process:web-3/4127"
    assert diagnose.qualify("dependency:tcp://10.0.0.7:5432", "web-3") == "dependency:web-3/tcp://10.0.0.7:5432"


def test_split_peer():
    assert split_peer("10.0.0.2:4123") == ("10.0.0.2", 4123)
    assert split_peer("[::ffff:10.0.0.2]:5") == ("10.0.0.2", 5)
    assert split_peer("/10.0.0.2") == ("10.0.0.2", None)
    assert split_peer("fe80::1") == ("fe80::1", None)


def test_what_could_not_be_seen_is_named_and_a_quiet_run_is_not_called_healthy():
    quiet = _broker(["10.9.0.11:40001", "10.9.0.77:5000"], depth=0)
    quiet["probes"][0]["observations"]["queues"][0].update(rate_in=0.0, depth_samples=[0, 0], status="OK")
    web1 = _consumer_host("web-1", "10.9.0.11", [(100, 40001)])
    web1["probes"].append({"name": "threads", "status": "timeout", "error": "no answer within 15s",
                           "observations": {}})
    merged = _merged(quiet, web1, failed=[("web-9", "unreachable over ssh (connection refused)")])
    report = build_any(merged, load([]))
    reasons = " ".join(report["verdict_reasons"])
    assert "web-9" in reasons and "unreachable over ssh" in reasons
    assert "10.9.0.77" in reasons and "--collect ssh://10.9.0.77" in reasons
    assert "the threads probe on web-1 timed out" in reasons
    assert report["verdict"] == "unknown"
    assert any(p["name"] == "ssh://web-9" and p["status"] == "error" for p in report["probes"])
    assert any(p["name"] == "process@web-1" for p in report["probes"])


def test_snapshots_far_apart_are_flagged_and_clocks_are_checked_against_when_they_were_received():
    broker = _broker(["10.9.0.11:40001"])
    late = _consumer_host("web-1", "10.9.0.11", [(100, 40001)], created="2026-11-30T10:02:10Z")
    [message] = time_checks(hosts(_merged(broker, late)))
    assert "web-1" in message and "120 s after" in message
    # Collected remotely: launched and received around 10:00:10, but its clock says 10:02:10.
    taken = [Taken(name="mq-1", doc=broker),
             Taken(name="web-1", doc=late, launched_at=snap_time("2026-11-30T10:00:04Z"),
                   received_at=snap_time("2026-11-30T10:00:12Z"))]
    [message] = time_checks(hosts(merge(taken)))
    assert "clock" in message and "ahead of" in message
    # And in time: nothing to say.
    ontime = _consumer_host("web-1", "10.9.0.11", [(100, 40001)])
    assert time_checks(hosts(_merged(broker, ontime))) == []


def snap_time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_commands_are_given_for_the_host_they_run_on():
    merged = _merged(_broker(["10.9.0.11:40001"]), _consumer_host("web-1", "10.9.0.11", [(4127, 40001)]))
    all_hosts = hosts(merged)
    causes = [{"subject": "process:web-1/4127", "next_commands": ["py-spy dump --pid web-1/4127", "cat /proc/loadavg"],
               "mitigations": {"immediate": ["restart pid web-1/4127",
                                             "qdiag snapshot --pid web-1/4127 -o deadlock-web-1/4127.json.gz"],
                               "long_term": []}}]
    diagnose.localise(causes, all_hosts)
    assert causes[0]["next_commands"] == ["ssh web-1 'py-spy dump --pid 4127'", "ssh web-1 'cat /proc/loadavg'"]
    assert causes[0]["mitigations"]["immediate"] == ["on web-1: restart pid 4127",
                                                     "on web-1: qdiag snapshot --pid 4127 -o deadlock-4127.json.gz"]


def test_report_takes_several_snapshot_files_and_a_merged_one_merges_again(tmp_path):
    broker, web = _broker(["10.9.0.11:40001"]), _consumer_host("web-1", "10.9.0.11", [(100, 40001)])
    a, b = tmp_path / "a.json.gz", tmp_path / "b.json.gz"
    snap.save(broker, a)
    snap.save(web, b)
    r = run_cli("report", a, b, "-f", "json")
    assert r.code == 0, r.err
    doc = r.json()
    assert doc["host"] == "mq-1, web-1" and doc["fleet"]["consumers"][0]["pid"] == "web-1/100"
    assert [c["pid"] for c in doc["consumers"]] == ["web-1/100"]
    merged = tmp_path / "m.json.gz"
    snap.save(_merged(broker, web), merged)
    other = _consumer_host("web-2", "10.9.0.12", [(7, 1)])
    c = tmp_path / "c.json.gz"
    snap.save(other, c)
    r = run_cli("report", merged, c, "-f", "json")
    assert r.code == 0, r.err
    assert [h["name"] for h in r.json()["fleet"]["hosts"]] == ["mq-1", "web-1", "web-2"]


def test_two_snapshots_of_one_host_name_are_told_apart():
    merged = _merged(_broker([]), _consumer_host("web", "10.9.0.11", [(1, 1)]), _consumer_host("web", "10.9.0.12", [(1, 1)]))
    assert [h["name"] for h in merged["fleet"]["hosts"]] == ["mq-1", "web", "web#2"]


def test_a_single_snapshot_still_makes_the_plain_report():
    doc = _broker([])
    report = build_any(copy.deepcopy(doc), load([]))
    assert "fleet" not in report


def test_no_snapshot_at_all_is_an_error_naming_each_failure():
    from qdiag.errors import SnapshotError

    with pytest.raises(SnapshotError, match="web-1: refused"):
        merge([Taken(name="web-1", error="refused")])


def test_a_thread_dump_tool_of_another_runtime_is_not_suggested_for_a_remote_pid():
    from qdiag.fleet.report import _pasteable

    all_hosts = hosts(_merged(_broker([]), _consumer_host("web-1", "10.9.0.11", [(100, 1)])))
    causes = [{"subject": "process:web-1/100",
               "next_commands": ["py-spy dump --pid web-1/100 --locals", "jcmd web-1/100 Thread.print -l"]}]
    consumers = [{"pid": "web-1/100", "runtime": "python", "kernel": {"sampled": False}}]
    _pasteable(causes, consumers, all_hosts)
    assert causes[0]["next_commands"] == ["py-spy dump --pid web-1/100 --locals"]
