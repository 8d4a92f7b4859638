"""qdiag explain CAUSE-ID: the cause's meaning, every rule that decides it in the
loaded playbooks (built-in and --playbook), and what to do, as text and JSON."""

from __future__ import annotations

from qdiag.diagnosis import playbook
from qdiag.diagnosis.taxonomy import CAUSES, MEANINGS
from qdiag.exit_codes import ExitCode
from tests.cli_helper import run_cli

OURS = '''
schema = "qdiag.playbook/1"
[[rules]]
id = "ours-orders-too-deep"
cause = "consumer-stuck"
for = "queue"
when = "name == 'orders' and depth > 12345"
weight = 0.4
evidence = "{name} holds {depth} messages (threshold: 12345)"
immediate = ["page the orders team"]
long_term = ["give orders its own consumer pool"]
next = ["rabbitmqctl list_queues -p {vhost} name messages | grep -F {name}"]

[[rules]]
id = "consumer-deadlock"
cause = "consumer-stuck"
for = "threads"
when = "deadlocked and cpu_percent < 1"
weight = 0.9
evidence = "pid {pid:d} deadlocked (threshold: a deadlock under 1% CPU)"
immediate = ["restart it"]
long_term = ["fix the lock order"]
next = ["py-spy dump --pid {pid:d} --locals"]
'''


def test_every_cause_has_a_meaning():
    assert set(MEANINGS) == set(CAUSES)


def test_text_names_every_rule_for_the_cause_with_its_condition_as_written_and_what_to_do():
    r = run_cli("explain", "consumer-stuck")
    assert r.code == ExitCode.OK, r.err
    assert r.out.startswith("consumer-stuck: consumer alive but not progressing")
    assert MEANINGS["consumer-stuck"][:40] in r.out.replace("\n  ", " ")
    flat = " ".join(r.out.split())
    for rule in playbook.load():
        if rule.cause == "consumer-stuck":
            assert rule.id in r.out and rule.source in r.out
            assert " ".join(rule.when.split()) in flat, rule.id
            for item in rule.next:
                assert f"$ {item}" in r.out
    assert "ranks below slow-dependency, dependency-failure" in flat


def test_a_playbook_given_with_dash_dash_playbook_is_explained_as_it_will_be_applied(tmp_path):
    ours = tmp_path / "ours.toml"
    ours.write_text(OURS)
    doc = run_cli("explain", "consumer-stuck", "--playbook", ours, "-f", "json").json()
    rules = {rule["id"]: rule for rule in doc["rules"]}
    assert rules["ours-orders-too-deep"]["when"] == "name == 'orders' and depth > 12345"
    assert rules["ours-orders-too-deep"]["source"].startswith(str(ours))
    # The built-in rule of the same id is replaced, not listed twice.
    assert rules["consumer-deadlock"]["when"] == "deadlocked and cpu_percent < 1"
    assert [r["id"] for r in doc["rules"]].count("consumer-deadlock") == 1
    text = run_cli("explain", "consumer-stuck", "--playbook", ours).out
    assert "page the orders team" in text and "depth > 12345" in text


def test_json_carries_the_cause_its_rules_and_how_it_ranks():
    doc = run_cli("explain", "queue-limit-reached", "--format", "json").json()
    assert doc["schema"] == "qdiag.explain/1"
    assert (doc["id"], doc["step"], doc["step_name"]) == ("queue-limit-reached", 5, "Configuration")
    assert "consumers-absent" in doc["explained_by"]
    assert doc["rules"] and all(set(r) >= {"id", "source", "for", "when", "weight", "evidence", "immediate",
                                           "long_term", "next"} for r in doc["rules"])
    weights = [r["weight"] for r in doc["rules"]]
    assert weights == sorted(weights, reverse=True)


def test_an_unknown_cause_is_one_line_naming_the_closest():
    r = run_cli("explain", "slow-dependancy")
    assert r.code == ExitCode.UNKNOWN
    assert r.out == ""
    assert r.err.count("\n") == 1 and "did you mean slow-dependency?" in r.err


def test_explain_help_has_examples_and_real_types():
    out = run_cli("explain", "-h").out
    assert "$ qdiag explain consumer-stuck" in out and "CAUSE-ID" in out and "<text|json>" in out
