"""qdiag playbooks list / validate."""

from __future__ import annotations

from pathlib import Path

from qdiag.diagnosis import playbook
from qdiag.diagnosis.taxonomy import STEPS
from qdiag.environment import Environment
from qdiag.errors import ConfigError
from qdiag.inputs import load_rules


def list_rules(env: Environment, extra: list[str]) -> None:
    rules = load_rules(extra)
    lines = []
    for number, name in STEPS.items():
        lines.append(f"{number}. {name}")
        for rule in sorted((r for r in rules if r.step == number), key=lambda r: r.id):
            lines.append(f"   {rule.id:<34} {rule.cause:<26} w={rule.weight:.2f}  for {rule.kind}: {rule.when}")
    env.stdout.write("\n".join(lines) + "\n")


def validate(env: Environment, files: list[str]) -> None:
    """Print one line per file; raise on the first bad one (exit 3)."""
    if not files:
        raise ConfigError("no playbook file given", "qdiag playbooks validate FILE...")
    for name in files:
        rules = playbook.parse_file(Path(name))
        env.stdout.write(f"{name}: ok, {len(rules)} rule(s)\n")
