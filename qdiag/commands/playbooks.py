"""qdiag playbooks list / validate."""

from __future__ import annotations

from pathlib import Path

from qdiag.diagnosis import playbook
from qdiag.diagnosis.taxonomy import STEPS
from qdiag.errors import ConfigError


def list_rules(extra: list[str]) -> None:
    rules = playbook.load([Path(p) for p in extra])
    for number, name in STEPS.items():
        print(f"{number}. {name}")
        for rule in sorted((r for r in rules if r.step == number), key=lambda r: r.id):
            print(f"   {rule.id:<34} {rule.cause:<26} w={rule.weight:.2f}  for {rule.kind}: {rule.when}")


def validate(files: list[str]) -> None:
    """Print one line per file; raise on the first bad one (exit 3)."""
    for name in files:
        rules = playbook.parse_file(Path(name))
        print(f"{name}: ok, {len(rules)} rule(s)")
    if not files:
        raise ConfigError("no playbook file given", "qdiag playbooks validate FILE...")
