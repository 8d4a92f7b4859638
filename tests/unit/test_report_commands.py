"""Commands that can be pasted: filled in with the queue, vhost, group and pid
found, shell-quoted, for the runtime actually found, never what qdiag has just
done; the same cause on several queues is one box listing them."""

from __future__ import annotations

import shlex

from qdiag.diagnosis import playbook, template
from qdiag.report.build import build_report, done_by_qdiag, suggestable
from qdiag.report.render import render_markdown, render_text
from tests.unit.test_diagnosis import (host, processes, rabbit_queue, rabbitmq, snapshot, target, thread_probe,
                                       threads)
from tests.unit.test_kernel_rules import kernel, with_kernel

RULES = playbook.load()


# ---------------------------------------------------------------- templates


def test_a_command_template_quotes_every_value_for_the_shell():
    facts = {"vhost": "/", "name": "orders; rm -rf ~", "pid": 42}
    cmd = template.command("rabbitmqctl list_queues -p {vhost} name | grep -F {name}", facts)
    assert cmd == "rabbitmqctl list_queues -p / name | grep -F 'orders; rm -rf ~'"
    assert shlex.split(cmd)[-1] == "orders; rm -rf ~"
    assert template.command("py-spy dump --pid {pid:d}", facts) == "py-spy dump --pid 42"


def test_a_command_with_an_unknown_field_is_not_offered():
    """A rule written for every broker lists one command per broker; each names a field only its broker has."""
    assert template.command("kafka-get-offsets --bootstrap-server {bootstrap} --topic {name}", {"name": "t"}) is None
    assert template.command("redis-cli -u {redis_address} LLEN {key}", {"redis_address": "", "key": "k"}) is None


def test_a_list_gives_one_argument_per_item():
    assert template.command("ps -p {pids}", {"pids": [1, 2]}) == "ps -p 1 2"


# ---------------------------------------------------------------- the runtime found, not what qdiag did


def dumped(pid, runtime, tool, **over):
    doc = threads(pid, **over)
    doc.update(runtime=runtime, name=runtime, tool=tool)
    return doc


def causes_of(snap):
    return build_report(snap, RULES)["root_causes"]


def commands_of(snap, cause_id):
    return [c for cause in causes_of(snap) if cause["id"] == cause_id for c in cause["next_commands"]]


def lock_stuck(pid, runtime, tool):
    return dumped(pid, runtime, tool, cpu=0.0, counts={"lock-wait": 1, "queue-wait": 2},
                  stuck=[{"class": "lock-wait", "thread": "worker", "where": "take (app.py:9)"}])


def stuck_snapshot(proc):
    queue = rabbit_queue("orders", rate_in=20.0, rate_out=0.0, status="growing")
    return snapshot(host(), processes(target(proc["pid"], cpu=0.0)), thread_probe(proc), rabbitmq(queue),
                    queues=["orders"], pids=[proc["pid"]])


def test_a_python_consumer_gets_py_spy_and_never_jcmd():
    commands = commands_of(stuck_snapshot(lock_stuck(7, "python", "py-spy")), "consumer-stuck")
    assert "py-spy dump --pid 7 --locals" in commands
    assert not any(c.startswith("jcmd") for c in commands)


def test_a_jvm_gets_jcmd_and_never_py_spy():
    commands = commands_of(stuck_snapshot(lock_stuck(8, "java", "jcmd")), "consumer-stuck")
    assert "jcmd 8 Thread.print -l" in commands
    assert not any(c.startswith("py-spy") for c in commands)


def test_what_qdiag_has_just_done_is_not_suggested():
    runtimes = {7: "python", 8: "java", 9: None}
    done = {"py-spy dump --pid 7", "jcmd 8 Thread.print", "cat /proc/7/task/*/wchan", "qdiag investigate --pid 7"}
    assert not suggestable("py-spy dump --pid 7", runtimes, done)
    assert not suggestable("py-spy  dump --pid 7", runtimes, done)  # the same, spaced out
    assert suggestable("py-spy dump --pid 7 --locals", runtimes, done)
    assert not suggestable("jcmd 8 Thread.print", runtimes, done)
    assert not suggestable("cat /proc/7/task/*/wchan", runtimes, done)
    assert not suggestable("jcmd 7 Thread.print -l", runtimes, done)  # a Python process
    assert not suggestable("py-spy top --pid 9", runtimes, done)  # neither Python nor Java
    assert suggestable("py-spy top --pid 10", runtimes, done)  # a process qdiag did not look at


def test_a_jvm_dumped_with_jstack_is_not_told_to_take_the_same_dump_with_jcmd():
    done = done_by_qdiag([{"pid": 8, "dumped_with": "jstack", "kernel": {"sampled": False}}])
    assert not suggestable("jcmd 8 Thread.print", {8: "java"}, done)
    assert suggestable("jcmd 8 Thread.print -l", {8: "java"}, done)


def test_a_consumer_qdiag_dumped_and_sampled_is_not_told_to_be_dumped_again():
    proc = with_kernel(7, kernel(lock_never_woke=(10, 11), cpu=0.0))
    proc["tool"] = "py-spy"
    commands = commands_of(stuck_snapshot(proc), "consumer-stuck")
    assert commands and "py-spy dump --pid 7" not in commands
    assert "cat /proc/7/task/*/wchan" not in commands


# ---------------------------------------------------------------- filled in for the queue found


def no_consumers(*names, vhost="/"):
    queues = [rabbit_queue(n, vhost=vhost, consumers=0, rate_in=5.0, rate_out=0.0, status="no-consumers")
              for n in names]
    return snapshot(host(), rabbitmq(*queues), queues=list(names))


def test_rabbitmq_commands_name_the_vhost_and_the_queue():
    """Outside the default vhost a report names the queue vhost/name; rabbitmqctl prints the bare name."""
    queue = rabbit_queue("shop/billing orders", queue="billing orders", vhost="shop", consumers=0, rate_in=5.0,
                         rate_out=0.0, status="no-consumers")
    commands = commands_of(snapshot(host(), rabbitmq(queue), queues=["shop/billing orders"]), "consumers-absent")
    assert ("rabbitmqctl list_queues -p shop name messages_ready messages_unacknowledged consumers "
            "| grep -F 'billing orders'") in commands
    assert "rabbitmqctl list_consumers -p shop" in commands


def test_the_same_cause_on_several_queues_is_one_box_listing_them():
    report = build_report(no_consumers("orders", "refunds"), RULES)
    assert [c["subject"] for c in report["root_causes"]] == ["rabbitmq:orders", "rabbitmq:refunds"]
    text = render_text(report, color=False, unicode=False, width=200)
    boxes = [line for line in text.splitlines() if line[:1].isdigit() and ". nothing is consuming" in line]
    assert len(boxes) == 1
    assert "1. nothing is consuming rabbitmq:orders, rabbitmq:refunds" in text
    assert "rabbitmq:orders: 500 messages waiting" in text and "rabbitmq:refunds: 500 messages waiting" in text
    assert "grep -F orders" in text and "grep -F refunds" in text
    assert text.count("$ rabbitmqctl list_consumers -p /") == 1
    md = render_markdown(report)
    assert md.count("### ") == 1 and "### 1. nothing is consuming rabbitmq:orders, rabbitmq:refunds" in md


def test_causes_of_different_certainty_are_not_folded():
    """A queue still receiving messages is more urgent than a static one: two boxes."""
    static = rabbit_queue("archive", consumers=0, rate_in=0.0, rate_out=0.0, status="no-consumers")
    live = rabbit_queue("orders", consumers=0, rate_in=5.0, rate_out=0.0, status="no-consumers")
    report = build_report(snapshot(host(), rabbitmq(live, static), queues=["orders", "archive"]), RULES)
    text = render_text(report, color=False, unicode=False, width=200)
    assert "1. nothing is consuming rabbitmq:orders " in text
    assert "2. nothing is consuming rabbitmq:archive " in text
