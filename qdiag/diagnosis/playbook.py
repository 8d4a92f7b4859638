"""Playbooks: the diagnosis rules as data (TOML files under playbooks/).

    schema = "qdiag.playbook/1"

    [[rules]]
    id = "rabbitmq-queue-at-limit"          # unique; a later file with the same id replaces it
    cause = "queue-limit-reached"           # a taxonomy id (qdiag/diagnosis/taxonomy.py)
    for = "queue"                           # what it is evaluated on, once per item (see SUBJECT_KINDS)
    when = "fill_ratio >= 0.95"             # condition (qdiag/diagnosis/expr.py)
    strength = "clamp((fill_ratio - 0.8) / 0.2)"   # optional, 0..1, default 1
    weight = 0.9                            # 0..1: how strongly the rule supports the cause
    evidence = "{name} is {fill_ratio:.0%} full"   # measured value and threshold
    immediate = ["..."]                     # mitigations now
    long_term = ["..."]                     # and later
    next = ["rabbitmqctl list_queues name messages_ready consumers"]   # commands that confirm it
    enabled = true                          # false switches off a built-in rule of that id
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from qdiag.config import parse_toml
from qdiag.diagnosis import expr, template
from qdiag.diagnosis.taxonomy import CAUSES
from qdiag.errors import ConfigError
from qdiag.tomlpos import key_line

SCHEMA = "qdiag.playbook/1"
SUBJECT_KINDS = ("queue", "host", "process", "dependency", "threads", "log", "broker")
_RULE_KEYS = {"id", "cause", "for", "when", "strength", "weight", "evidence", "immediate", "long_term", "next",
              "enabled", "step", "subject", "description"}
_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass
class Rule:
    id: str
    cause: str
    kind: str
    when: str
    weight: float
    evidence: str
    strength: str | None = None
    immediate: list[str] = field(default_factory=list)
    long_term: list[str] = field(default_factory=list)
    next: list[str] = field(default_factory=list)
    enabled: bool = True
    step: int = 0
    subject: str | None = None
    description: str = ""
    source: str = ""  # file:line
    when_tree: Any = None
    strength_tree: Any = None


class PlaybookError(ConfigError):
    """A playbook that cannot be used; the message starts with file:line."""


def _rule_lines(text: str) -> list[int]:
    return [n for n, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*rules\s*\]\]", line)]


def _key_line(text: str, start: int, key: str) -> int:
    return key_line(text, key, start, within_table=True) or start


def parse_text(text: str, source: str) -> list[Rule]:
    """Parse and validate one playbook file; every error names source:line."""
    data = parse_toml(text, source, PlaybookError)  # bad syntax or nesting: one error naming the file
    schema = data.get("schema")
    if schema != SCHEMA:
        raise PlaybookError(f"{source}:1: schema must be \"{SCHEMA}\" (found {schema!r})", f"add schema = \"{SCHEMA}\" at the top")
    unknown = set(data) - {"schema", "rules", "description"}
    if unknown:
        raise PlaybookError(f"{source}:1: unknown top-level key(s) {sorted(unknown)}", "a playbook has schema, description and [[rules]]")
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise PlaybookError(f"{source}:1: 'rules' must be an array of tables", "write each rule as [[rules]]")
    starts = _rule_lines(text)
    rules = []
    for index, raw in enumerate(raw_rules):
        start = starts[index] if index < len(starts) else 1
        rules.append(_parse_rule(raw, text, source, start))
    return rules


def _parse_rule(raw: dict, text: str, source: str, start: int) -> Rule:
    def fail(key: str | None, problem: str, hint: str) -> PlaybookError:
        line = _key_line(text, start, key) if key else start
        return PlaybookError(f"{source}:{line}: rule {raw.get('id', '#?')!s}: {problem}", hint)

    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown key(s) {sorted(unknown)}", "allowed: " + ", ".join(sorted(_RULE_KEYS)))
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        raise fail("id", "needs an id of lower-case letters, digits, '.', '-' or '_'", 'e.g. id = "consumer-lag-growing"')
    if raw.get("enabled", True) is False and set(raw) <= {"id", "enabled"}:
        return Rule(id=rule_id, cause="", kind="", when="False", weight=0, evidence="", enabled=False,
                    source=f"{source}:{start}")
    cause = raw.get("cause")
    if cause not in CAUSES:
        raise fail("cause", f"unknown cause {cause!r}", "use one of: " + ", ".join(CAUSES))
    kind = raw.get("for")
    if kind not in SUBJECT_KINDS:
        raise fail("for", f"'for' must be one of {', '.join(SUBJECT_KINDS)} (found {kind!r})", 'e.g. for = "queue"')
    weight = raw.get("weight", 0.5)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1:
        raise fail("weight", f"weight must be a number in (0, 1] (found {weight!r})", "e.g. weight = 0.8")
    step = raw.get("step", CAUSES[cause])
    if step not in range(1, 7):
        raise fail("step", f"step must be 1..6 (found {step!r})", "steps: 1 isolate … 6 traffic")
    for key in ("when", "evidence"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise fail(key if key in raw else None, f"needs a non-empty '{key}' string", f'e.g. {key} = "..."')
    trees = {}
    for key in ("when", "strength"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise fail(key, f"'{key}' must be a string expression", f'e.g. {key} = "lag > 1000"')
            try:
                trees[key] = expr.parse(raw[key])
            except expr.ExprError as exc:
                raise fail(key, f"bad '{key}' expression: {exc}", "see 'Writing a rule' in the README") from None
    for key in ("evidence", "subject"):
        if key in raw:
            problem = template.check(raw[key]) if isinstance(raw[key], str) else "must be a string"
            if problem:
                raise fail(key, f"'{key}': {problem}", "fields are {name} or {name:.1f}")
    lists = {}
    for key in ("immediate", "long_term", "next"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise fail(key, f"'{key}' must be a list of strings", f'e.g. {key} = ["..."]')
        for item in value:
            problem = template.check(item)
            if problem:
                raise fail(key, f"'{key}': {problem}", "fields are {name} or {name:.1f}")
        lists[key] = value
    return Rule(id=rule_id, cause=cause, kind=kind, when=raw["when"], weight=float(weight), evidence=raw["evidence"],
                strength=raw.get("strength"), immediate=lists["immediate"], long_term=lists["long_term"],
                next=lists["next"], enabled=bool(raw.get("enabled", True)), step=int(step), subject=raw.get("subject"),
                description=str(raw.get("description", "")), source=f"{source}:{start}",
                when_tree=trees["when"], strength_tree=trees.get("strength"))


def parse_file(path: Path) -> list[Rule]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaybookError(f"{path}: cannot read playbook ({getattr(exc, 'strerror', None) or exc})",
                            "check the path given to --playbook") from None
    return parse_text(text, str(path))


def builtin_files() -> list[tuple[str, str]]:
    """(name, text) of each built-in playbook, in file-name order (01-…, 02-…)."""
    root = resources.files("qdiag.playbooks")
    return sorted((entry.name, entry.read_text(encoding="utf-8")) for entry in root.iterdir()
                  if entry.name.endswith(".toml"))


def load(extra: list[Path] | tuple = ()) -> list[Rule]:
    """Built-in rules, then each --playbook file in order; a later rule with the
    same id replaces the earlier one, `enabled = false` switches it off."""
    by_id: dict[str, Rule] = {}
    for name, text in builtin_files():
        for rule in parse_text(text, f"playbooks/{name}"):
            if rule.id in by_id:
                raise PlaybookError(f"{rule.source}: rule id {rule.id} is defined twice in the built-in playbooks",
                                    "rule ids must be unique")
            by_id[rule.id] = rule
    for path in extra:
        for rule in parse_file(Path(path)):
            if not rule.enabled and rule.id in by_id and not rule.cause:
                by_id[rule.id].enabled = False
            else:
                by_id[rule.id] = rule
    return [r for r in by_id.values() if r.enabled]
