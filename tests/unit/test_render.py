"""The text and Markdown renderers on report documents: layout, certainty in
words, data that is hostile to terminals and Markdown, colour and ASCII
conventions, and reports with keys missing or added."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qdiag.environment import Environment
from qdiag.report import render
from qdiag.report.summary import clean, decisive
from tests.cli_helper import run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MULTI = FIXTURES / "snapshots" / "v1-multi-queue-backlog.json.gz"
BACKLOG = FIXTURES / "snapshots" / "v1-rabbitmq-redis-backlog.json.gz"
ANSI = re.compile("\x1b\\[")


def report(**changes) -> dict:
    doc = {
        "schema": "qdiag.report/1", "generated_at": "2026-11-29T04:40:25Z", "host": "vm", "window_s": 5.0,
        "verdict": "critical", "qdiag_version": "0.1.0",
        "command": ["qdiag", "investigate", "--queue", "orders"],
        "targets": [{"kind": "rabbitmq", "target": "http://***:***@mq:15672", "found": "given"},
                    {"kind": "kafka", "target": "127.0.0.1:9092", "found": "auto-detected"}],
        "named": {"queues": ["orders"]},
        "queues": [
            {"system": "rabbitmq", "name": "orders", "group": None, "depth": 500, "rate_in": 2.0, "rate_out": 0.0,
             "consumers": 0, "fill_ratio": None, "status": "no-consumers", "subject": "rabbitmq:orders",
             "backing_up": True, "focus": True},
            {"system": "rabbitmq", "name": "audit", "group": None, "depth": 90, "rate_in": 0.0, "rate_out": 0.0,
             "consumers": 0, "fill_ratio": None, "status": "no-consumers", "subject": "rabbitmq:audit",
             "backing_up": True, "focus": False},
        ],
        "root_causes": [
            {"id": "consumers-absent", "score": 0.57, "step": 1, "subject": "rabbitmq:orders",
             "title": "Possible root cause: nothing is consuming rabbitmq:orders",
             "evidence": ["rabbitmq:orders: 500 messages waiting (500 ready) and 0 consumers attached "
                          "(threshold: any backlog with no consumer); 2.0 msg/s still arriving"],
             "mitigations": {"immediate": ["start the consumers of orders"], "long_term": ["alert on 0 consumers"]},
             "next_commands": ["rabbitmqctl list_queues name messages_ready consumers"], "rules": ["r1"]},
            {"id": "consumers-absent", "score": 0.3, "step": 1, "subject": "rabbitmq:audit", "out_of_focus": True,
             "title": "Possible root cause: nothing is consuming rabbitmq:audit",
             "evidence": ["rabbitmq:audit: 90 messages waiting (90 ready) and 0 consumers attached"],
             "mitigations": {"immediate": ["start the consumers of audit"], "long_term": []},
             "next_commands": ["rabbitmqctl list_consumers"], "rules": ["r1"]},
        ],
        "steps": [{"number": 1, "name": "Isolate the full queue",
                   "findings": [{"rule": "r1", "cause": "consumers-absent", "subject": "rabbitmq:orders",
                                 "text": "rabbitmq:orders: 500 messages waiting", "strength": 1.0}]},
                  {"number": 2, "name": "Consumer resources", "findings": [],
                   "note": "nothing found (looked at: host)"}],
        "probes": [{"name": "rabbitmq", "status": "ok", "duration_s": 5.1, "error": None},
                   {"name": "kafka", "status": "error", "duration_s": 0.2, "error": "kafka 127.0.0.1:9092: refused"}],
        "baseline": None,
    }
    doc.update(changes)
    return doc


def text(doc: dict, **kw) -> str:
    return render.render_text(doc, color=kw.pop("color", False), unicode=kw.pop("unicode", False),
                              width=kw.pop("width", 100))


# --- layout ---------------------------------------------------------------------------

def test_line_one_is_the_verdict_and_the_answer():
    first = text(report(), width=200).splitlines()[0]
    assert first == ("CRITICAL: nothing is consuming rabbitmq:orders: 500 messages waiting (500 ready) and 0 "
                     "consumers attached (possible)")


def test_the_decisive_phrase_drops_thresholds_and_the_repeated_subject():
    cause = {"subject": "kafka:t/g", "evidence": ["kafka:t/g: partition 0 holds 3,000 of the lag (95%, threshold "
                                                   "80%) while the others lag 150; more detail"]}
    assert decisive(cause) == "partition 0 holds 3,000 of the lag while the others lag 150"


def test_header_says_what_was_probed_how_it_was_found_and_the_baseline():
    out = text(report(baseline="2026-11-28T22:40:25Z"))
    assert "rabbitmq http://***:***@mq:15672 (given)" in out and "kafka 127.0.0.1:9092 (auto-detected)" in out
    assert "baseline taken 2026-11-28T22:40:25Z (6h00m before)" in text(report(baseline="2026-11-28T22:40:25Z"),
                                                                          width=200)
    assert "no baseline" in text(report())


def test_queue_table_comes_before_the_causes_and_holds_only_the_focus():
    lines = text(report()).splitlines()
    table = lines.index("Queues in focus")
    causes = lines.index("Causes, most likely first")
    assert table < causes
    rows = lines[table + 3:causes - 1]
    assert rows[0].split()[:2] == ["rabbitmq:orders", "500"]
    assert rows[1].startswith("  not in focus: 1 more queue(s), 1 backing up: rabbitmq:audit")


def test_a_measured_fact_is_not_shown_as_a_low_score():
    out = text(report())
    assert "0.57" not in out and "0.3" not in out
    assert "possible, consumers-absent, step 1" in out
    assert "measured 500 messages waiting (500 ready) and 0 consumers attached" in out
    assert json.loads(render.render_json(report()))["root_causes"][0]["score"] == 0.57  # the number stays in JSON


def test_causes_out_of_focus_are_folded_into_one_line_each():
    lines = text(report()).splitlines()
    at = lines.index("Not in focus (about queues not named with --queue/--group)")
    assert lines[at + 1] == ("  - consumers-absent rabbitmq:audit (weak): 90 messages waiting (90 ready) and 0 "
                             "consumers attached")
    assert "start the consumers of audit" not in "\n".join(lines)


def test_findings_shown_as_causes_are_not_repeated_in_the_steps():
    out = text(report())
    assert "1. Isolate the full queue  1 finding: consumers-absent" in out
    assert out.count("500 messages waiting") == 2  # line 1 and the cause's evidence


def test_the_answer_is_within_the_first_80x24_screen():
    from qdiag import snapshot
    from qdiag.diagnosis import playbook
    from qdiag.report.build import build_report

    doc = build_report(snapshot.load(MULTI), playbook.load())
    screen = text(doc, width=80).splitlines()[:23]  # the pager's prompt takes the 24th line
    top = next(c for c in doc["root_causes"] if not c.get("out_of_focus"))
    assert screen[0].startswith("CRITICAL: ")
    assert any(line.startswith("1. nothing is consuming") for line in screen)
    assert any(line.startswith("   measured ") and top["evidence"][0].split(": ", 1)[1][:30] in line for line in screen)


def test_lag_in_time_worst_partitions_and_split_per_member():
    kafka = {"system": "kafka", "name": "clicks", "group": "billing", "depth": 3150, "rate_in": 46.0, "rate_out": 0.0,
             "consumers": 2, "fill_ratio": None, "status": "STALL", "subject": "kafka:clicks/billing",
             "backing_up": True, "focus": True, "lag_seconds": 83.0, "max_lag": 3000, "worst_partition": 0,
             "partition_lags": [
                 {"partition": 0, "lag": 3000, "lag_seconds": 83.0, "owner": {"client_id": "billing-1", "host": "/10.0.0.5"}},
                 {"partition": 1, "lag": 150, "lag_seconds": 4.0, "owner": {"client_id": "billing-2", "host": "/10.0.0.6"}},
                 {"partition": 2, "lag": 0, "lag_seconds": 0.0, "owner": {"client_id": "billing-2", "host": "/10.0.0.6"}}]}
    out = text(report(queues=[kafka], root_causes=[]))
    assert re.search(r"kafka:clicks/billing\s+3,150\s+46.0\s+0.0\s+2\s+1m23s\s+STALL", out), out
    assert "kafka:clicks/billing: 3,150 behind, oldest waiting 1m23s" in out
    assert "worst partitions: p0 3,000 (1m23s), p1 150 (4.0s)" in out
    assert "by member: billing-1@10.0.0.5 p0 lag 3,000; billing-2@10.0.0.6 p1,2 lag 150" in out


def test_lag_detail_without_partition_rows_names_the_worst_partition():
    kafka = {**report()["queues"][0], "system": "kafka", "subject": "kafka:clicks/billing", "lag_seconds": 19.3,
             "max_lag": 3000, "worst_partition": 0}
    assert "worst partition 0: 3,000" in text(report(queues=[kafka]))


def test_reports_with_keys_missing_or_added_still_render():
    minimal = {"verdict": "degraded", "queues": [{"name": "q", "system": "redis", "backing_up": True, "new": 1}],
               "root_causes": [{"id": "x", "evidence": [{"text": "measured thing", "value": 3}], "new": {}}],
               "steps": [{"number": 1}], "probes": [{"name": "p"}], "something_new": [1, 2]}
    out = text(minimal)
    assert out.startswith("DEGRADED: x: measured thing (weak)\n")
    assert "1. x  weak, x\n   measured measured thing" in out
    assert render.render_markdown(minimal).startswith("# qdiag report")


# --- hostile data --------------------------------------------------------------------------

EVIL = "evil\x1b[31m[/]red\x07\u202eliam\x00.q|x`y"


def test_control_characters_never_reach_the_output():
    doc = report()
    doc["queues"][0]["name"] = doc["queues"][0]["subject"] = EVIL
    doc["root_causes"][0]["subject"] = EVIL
    doc["root_causes"][0]["evidence"] = [f"{EVIL}: 500 waiting\r\nsecond line"]
    for out in (text(doc), text(doc, color=True, unicode=True), render.render_markdown(doc)):
        assert "\x1b[31m[/]" not in out and "\x07" not in out and "\u202e" not in out and "\x00" not in out
        assert "\r" not in out
    assert "evil[31m[/]redliam.q|x`y" in text(doc)


def test_clean_strips_every_string_in_the_document():
    assert clean({"a\x1b": ["b\x9bc", {"d": "e\u2066f\tg"}], "n": 3}) == {"a": ["bc", {"d": "ef g"}], "n": 3}


def test_markdown_escapes_tags_tables_and_code():
    doc = report()
    doc["root_causes"][0]["evidence"] = ["thread worker.<locals>.run holds *lock* [a](b) | c_d & e ~f~"]
    doc["queues"][0]["subject"] = "rabbitmq:a|b"
    doc["root_causes"][0]["next_commands"] = ["echo ```x``` `y`"]
    out = render.render_markdown(doc)
    assert r"worker.\<locals\>.run holds \*lock\* \[a\](b) \| c\_d \& e \~f\~" in out
    assert r"| rabbitmq:a\|b | 500 |" in out
    assert "````sh\necho ```x``` `y`\n````" in out
    assert "<locals>" not in out


def test_markdown_is_headed_with_command_targets_version_and_time():
    out = render.render_markdown(report())
    head = out.split("## ")[0]
    assert head.startswith("# qdiag report: vm\n\n**CRITICAL**: nothing is consuming rabbitmq:orders")
    assert "- **Command:** `qdiag investigate --queue orders`" in head
    assert "- **Taken:** 2026-11-29T04:40:25Z on vm by qdiag 0.1.0, window 5 s" in head
    assert r"- **Targets:** rabbitmq http://\*\*\*:\*\*\*@mq:15672 (given), kafka 127.0.0.1:9092 (auto-detected)" in head


# --- colour, glyphs, width -------------------------------------------------------------------

def test_colour_and_glyphs_only_when_asked():
    assert not ANSI.search(text(report()))
    assert ANSI.search(text(report(), color=True))
    assert all(ord(c) < 128 for c in text(report()))
    assert "─" in text(report(), unicode=True)


@pytest.mark.parametrize("vars, tty, color", [
    ({}, True, True),
    ({}, False, False),
    ({"NO_COLOR": "1"}, True, False),
    ({"NO_COLOR": ""}, True, True),  # set but empty does not count (no-color.org)
    ({"FORCE_COLOR": "1"}, False, True),
    ({"FORCE_COLOR": "0"}, True, True),
    ({"FORCE_COLOR": "0"}, False, False),
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, False),
    ({"TERM": "dumb"}, True, False),
])
def test_colour_follows_no_color_force_color_and_the_terminal(vars, tty, color):
    env = Environment(stdout=None, stderr=None, stdin=None, stdin_isatty=False, stdout_isatty=tty,
                      stderr_isatty=False, vars={"TERM": "xterm", **vars})
    assert env.color() is color


def test_the_cli_honours_no_color_force_color_and_ascii():
    on_tty = run_cli("report", BACKLOG, "--no-pager", tty=True)
    assert ANSI.search(on_tty.out) and "─" in on_tty.out
    assert not ANSI.search(run_cli("report", BACKLOG, tty=True, vars={"NO_COLOR": "1"}).out)
    forced = run_cli("report", BACKLOG, vars={"FORCE_COLOR": "1"})
    assert ANSI.search(forced.out) and all(ord(c) < 128 for c in ANSI.sub("", forced.out))
    ascii_tty = run_cli("report", BACKLOG, "--ascii", tty=True, vars={"NO_COLOR": "1"})
    assert all(ord(c) < 128 for c in ascii_tty.out)
    piped = run_cli("report", BACKLOG)
    assert not ANSI.search(piped.out) and all(ord(c) < 128 for c in piped.out)


def test_width_follows_the_terminal():
    narrow = run_cli("report", BACKLOG, tty=True, columns=60, vars={"NO_COLOR": "1"}).out
    assert max(len(line) for line in narrow.splitlines() if "$ " not in line) <= 60  # commands are never cut
