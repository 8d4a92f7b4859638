"""The README's examples are real: its playbook rule validates, its policy and
config files load, and every command it documents exists."""

import re
from pathlib import Path

import pytest

from qdiag.check import policy
from qdiag.config import resolve
from qdiag.diagnosis import playbook
from tests.cli_helper import run_cli

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
TOML_BLOCKS = re.findall(r"```toml\n(.*?)```", README, re.S)


def block(marker: str) -> str:
    [found] = [b for b in TOML_BLOCKS if marker in b]
    return found


def test_worked_example_rule_validates():
    [rule] = playbook.parse_text(block('schema = "qdiag.playbook/1"'), "README.md")
    assert rule.id == "payments-pending-growing" and rule.cause == "consumer-stuck"


def test_policy_example_loads(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text(block("[check.diagnosis]"))
    loaded = policy.from_file(path)
    assert loaded.queues["depth"].crit == 10000 and loaded.max_verdict == "degraded"


def test_config_example_loads(tmp_path):
    (tmp_path / "qdiag.toml").write_text(block("[targets]"))
    settings = resolve({}, env={}, cwd=tmp_path)
    assert settings.targets.kafka.bootstrap == ("kafka-1:9092", "kafka-2:9092")
    assert settings.options_for("kafka")["read_committed"] is True


@pytest.mark.parametrize("command", ["investigate", "snapshot", "report", "check", "probes", "playbooks list",
                                     "playbooks validate"])
def test_documented_commands_exist(command):
    assert f"qdiag {command}" in README
    assert run_cli(*command.split(), "--help").code == 0


def test_documented_flags_exist():
    documented = set(re.findall(r"`(--[a-z][a-z-]+)", README))
    helps = "".join(run_cli(*c.split(), "--help").out
                    for c in ("investigate", "snapshot", "report", "check", "playbooks list"))
    helps += run_cli("--help").out
    missing = sorted(flag for flag in documented if flag not in helps)
    assert not missing, f"README documents flags the CLI does not have: {missing}"
