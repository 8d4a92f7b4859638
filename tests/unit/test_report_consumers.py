"""The report's consumers section: per consumer process, where its threads
spent the window (the kernel's wait attribution), the latency its own
connections saw, lock waits that never woke, and the hot code from the dumps;
in the JSON and, short, in text and Markdown."""

from __future__ import annotations

from qdiag.diagnosis import playbook
from qdiag.report.build import build_report
from qdiag.report.render import render_markdown, render_text
from tests.unit.test_diagnosis import host, processes, rabbit_queue, rabbitmq, snapshot, target, thread_probe
from tests.unit.test_kernel_rules import PEER, kernel, with_kernel

RULES = playbook.load()


def slow_peer_snapshot(**kernel_args):
    proc = with_kernel(7, kernel(**kernel_args), hot=[{"function": "score", "where": "app.py:12", "samples": 2},
                                                       {"function": "parse", "where": "app.py:30", "samples": 1}])
    return snapshot(host(), processes(target(7, cpu=1.5)), thread_probe(proc),
                    rabbitmq(rabbit_queue("orders", rate_in=20.0, rate_out=3.0, status="growing")),
                    queues=["orders"], pids=[7])


def consumer_of(report, pid):
    return next(c for c in report["consumers"] if c["pid"] == pid)


def test_the_json_carries_each_consumers_wait_attribution_and_the_latency_it_saw():
    c = consumer_of(build_report(slow_peer_snapshot(peer_share=0.92), RULES), 7)
    assert (c["name"], c["runtime"], c["cpu_percent"], c["queue"]) == ("python", "python", 1.5, "rabbitmq:orders")
    assert c["kernel"]["sampled"] is True
    first = c["kernel"]["waits"][0]
    assert first == {"kind": "peer", "target": PEER, "share": 0.92, "max_thread_share": 0.92, "threads": 1,
                     "protocol_guess": None}
    peer = c["kernel"]["peers"][0]
    assert (peer["peer"], peer["answer_median_ms"], peer["requests"], peer["rtt_ms"]) == (PEER, 300.0, 12, 0.2)
    assert c["hot"][0] == {"function": "score", "where": "app.py:12", "samples": 2}
    assert c["dumped_with"] is None  # the hand-made dump names no tool


def test_text_says_where_the_consumer_waited_between_the_queues_and_the_causes():
    text = render_text(build_report(slow_peer_snapshot(peer_share=0.92), RULES), color=False, unicode=False,
                       width=200)
    line = next(line for line in text.splitlines() if line.startswith("  pid 7 python:"))
    assert f"92% of a thread waiting for {PEER} (answers 300 ms median, 360 ms max, 12 requests)" in line
    assert "2% on CPU" in line
    assert text.index("Queues in focus") < text.index("Consumers") < text.index("Causes, most likely first")


def test_lock_waits_that_never_woke_are_counted_on_the_consumers_line():
    report = build_report(slow_peer_snapshot(lock_never_woke=(10, 11), cpu=0.0), RULES)
    assert [t["tid"] for t in consumer_of(report, 7)["kernel"]["lock_waits_never_woke"]] == [10, 11]
    text = render_text(report, color=False, unicode=False)
    assert "2 thread(s) never woke from a lock wait" in text
    assert "in lock or condition waits" in text


def test_a_stopped_or_frozen_consumer_says_so_before_where_its_threads_were_left():
    """Its threads' waits are where it was caught ("idle on the broker"), not what it does."""
    for facts, held, words in (({"state": "T", "state_at_start": "T"}, "stopped", "stopped (state T)"),
                               ({"frozen": True, "frozen_at_start": True}, "frozen", "frozen by its cgroup's freezer")):
        proc = with_kernel(7, kernel(broker=1.0, cpu=0.0))
        snap = snapshot(host(), processes(target(7, cpu=0.0, **facts)), thread_probe(proc),
                        rabbitmq(rabbit_queue("orders", rate_in=20.0, rate_out=0.0, status="growing")),
                        queues=["orders"], pids=[7])
        report = build_report(snap, RULES)
        assert consumer_of(report, 7)["held"] == held
        line = next(line for line in render_text(report, color=False, unicode=False, width=300).splitlines()
                    if line.startswith("  pid 7 python:"))
        assert line.startswith(f"  pid 7 python: {words} for the whole window, none of its code ran (threads left "), line
    # Stopped or frozen at one end only: not held.
    snap = snapshot(host(), processes(target(7, state="T", state_at_start="S", frozen=True, frozen_at_start=False)),
                    rabbitmq(rabbit_queue("orders")), queues=["orders"], pids=[7])
    assert consumer_of(build_report(snap, RULES), 7)["held"] is None


def test_a_consumer_the_kernel_did_not_sample_is_in_the_json_and_markdown_not_on_the_first_screen():
    snap = snapshot(host(), processes(target(8, cpu=40.0)), rabbitmq(rabbit_queue("orders")), queues=["orders"],
                    pids=[8])
    report = build_report(snap, RULES)
    assert consumer_of(report, 8)["kernel"] == {"sampled": False}
    assert "Consumers" not in render_text(report, color=False, unicode=False)
    assert "- **pid 8 python** (rabbitmq:orders): 40% of a core" in render_markdown(report)


def test_markdown_lists_every_consumer_with_its_queue():
    md = render_markdown(build_report(slow_peer_snapshot(peer_share=0.92), RULES))
    assert "## Consumers" in md
    assert f"- **pid 7 python** (rabbitmq:orders): 92% of a thread waiting for {PEER}" in md


def test_a_report_without_processes_has_an_empty_consumers_list_and_no_block():
    report = build_report(snapshot(host(), rabbitmq(rabbit_queue("orders")), queues=["orders"]), RULES)
    assert report["consumers"] == []
    assert "Consumers" not in render_text(report, color=False, unicode=False)
