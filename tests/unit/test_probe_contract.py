"""The probe -> diagnosis contract: a probe's facts reach the rules through its
own registration, with no core module knowing it.  Shown with a throwaway probe."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from qdiag import probe as P
from qdiag.brokers import BROKERS
from qdiag.diagnosis import engine, playbook
from qdiag.diagnosis.facts import Subject, subjects
from qdiag.options import Option

ROOT = Path(__file__).resolve().parents[2]

SPOOL_RULE = '''
schema = "qdiag.playbook/1"
[[rules]]
id = "spool-over-its-limit"
cause = "queue-limit-reached"
for = "broker"
when = "system == 'spool' and files >= limit"
strength = "clamp(files / limit - 0.5)"
weight = 0.9
evidence = "the spool holds {files} files, its limit is {limit} (threshold: at the limit)"
immediate = ["stop the producers writing to {path}"]
long_term = ["raise the spool's limit or drain it faster"]
next = ["ls {path}"]
'''


@pytest.fixture
def spool_probe():
    """A probe that only exists in this test: its own observations, facts and subject kind."""
    def contribution_subjects(obs, joined):
        yield Subject("broker", "spool", {"system": "spool", "files": obs["files"], "limit": obs["limit"],
                                          "path": obs["path"]})

    def collect(ctx):
        return {"files": 900, "limit": 1000, "path": "/var/spool/x"}

    P.register("spool", description="a throwaway probe", options=(Option("path", "path", "/var/spool/x", "where"),),
               diagnosis=P.Contribution(steps=(1,), subjects=contribution_subjects))(collect)
    try:
        yield collect
    finally:
        P.REGISTRY.pop("spool", None)


def _snapshot(observations: dict) -> dict:
    return {"probes": [{"name": "spool", "status": "ok", "observations": observations}],
            "settings": {"targets": {}}, "created_at": "2026-01-01T00:00:00Z", "host": {}, "window_s": 1}


def test_a_new_probe_reaches_the_rules_through_its_registration_alone(spool_probe):
    rules = playbook.parse_text(SPOOL_RULE, "spool.toml")
    snap = _snapshot({"files": 1000, "limit": 1000, "path": "/var/spool/x"})
    ranked = engine.rank(engine.evaluate(rules, snap))
    assert [(c["id"], c["subject"]) for c in ranked] == [("queue-limit-reached", "spool")]
    assert ranked[0]["evidence"] == ["the spool holds 1,000 files, its limit is 1,000 (threshold: at the limit)"]
    # Below its limit the same probe's facts give nothing.
    assert engine.evaluate(rules, _snapshot({"files": 10, "limit": 1000, "path": "/x"})) == []
    # The step notes know it without being told.
    steps = engine.steps([], snap)
    assert "spool" in steps[0]["note"]


def test_every_registered_probe_declares_what_it_contributes():
    for name, probe in P.all_probes().items():
        assert probe.diagnosis is not None, f"{name} contributes nothing to the diagnosis"
        assert probe.diagnosis.steps and set(probe.diagnosis.steps) <= {1, 2, 3, 4, 5, 6}, name
        assert probe.diagnosis.share or probe.diagnosis.subjects or probe.diagnosis.queue_facts, name
        for key in (probe.diagnosis.share({}) if probe.diagnosis.share else {}):
            assert key in P.SHARED_KEYS, f"{name} shares an undocumented key {key}"
        for word in probe.diagnosis.status_words.values():
            assert word in P.QUEUE_STATUSES, f"{name} maps onto {word!r}, which is not in QUEUE_STATUSES"


def test_subjects_of_an_empty_snapshot_are_none():
    assert list(subjects({"probes": []})) == []


def _code_strings_and_names(path: Path) -> list[tuple[int, str]]:
    """Identifiers and string literals of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            out.append((node.lineno, node.value))
        elif isinstance(node, ast.Name):
            out.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            out.append((node.lineno, node.attr))
        elif isinstance(node, ast.keyword) and node.arg:
            out.append((node.value.lineno, node.arg))
    return out


# The broker registry itself, and the parsers of its targets.
REGISTRY_MODULES = {"qdiag/brokers.py", "qdiag/targets.py"}
# Names of probes that are not brokers, which core modules must not name either.
CORE_WORDS = re.compile(r"\b(" + "|".join(BROKERS) + r")\b", re.IGNORECASE)


def test_no_core_module_names_a_broker_outside_the_registry():
    offenders = []
    for path in sorted((ROOT / "qdiag").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in REGISTRY_MODULES or rel.startswith("qdiag/probes/") or rel.startswith("qdiag/playbooks/"):
            continue
        for line, text in _code_strings_and_names(path):
            if CORE_WORDS.search(text):
                offenders.append(f"{rel}:{line}: {text[:60]!r}")
    assert not offenders, "core modules name brokers:\n" + "\n".join(offenders)
