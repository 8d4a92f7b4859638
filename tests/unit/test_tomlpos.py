"""The one TOML line finder behind every `file:line` in config, policy and playbook errors."""

from qdiag.tomlpos import key_line

TEXT = """\
[targets]
kafka = "k:9092"

[probes.threads]
dumps = 9

[[rules]]
id = "a"
weight = 2

[[rules]]
id = "b"
"weight" = 3
"""


def test_assignments_and_table_headers():
    assert key_line(TEXT, "kafka") == 2
    assert key_line(TEXT, "targets") == 1
    assert key_line(TEXT, "threads") == 4 and key_line(TEXT, "probes.threads") == 4
    assert key_line(TEXT, "dumps") == 5
    assert key_line(TEXT, "absent") is None


def test_from_a_line_on_and_within_one_table():
    assert key_line(TEXT, "weight", 7, within_table=True) == 9
    assert key_line(TEXT, "weight", 11, within_table=True) == 13  # quoted keys too
    assert key_line(TEXT, "kafka", 7, within_table=True) is None  # not in that [[rules]] entry
