"""Playbook expressions are evaluated through closures built once per tree
(expr._compile); the tree-walking expr._eval is the reference they must agree
with, on every rule of the shipped playbooks against every subject of the
recorded snapshots, and on the edge cases of the expression language."""

from pathlib import Path

import pytest

from qdiag import snapshot
from qdiag.diagnosis import engine, expr, playbook

SNAPSHOTS = sorted((Path(__file__).resolve().parents[1] / "fixtures" / "snapshots").glob("*.json.gz"))


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True  # nan
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("path", SNAPSHOTS, ids=lambda p: p.name)
def test_every_shipped_rule_agrees_with_the_reference_on_recorded_subjects(path):
    rules = playbook.load()
    subjects = list(engine.subjects(snapshot.load(path), None))
    assert rules and subjects
    compared = 0
    for rule in rules:
        for subject in subjects:
            if subject.kind != rule.kind:
                continue
            for tree in (rule.when_tree, rule.strength_tree):
                if tree is None:
                    continue
                reference = expr._eval(tree.body, subject.facts)
                assert same(expr.evaluate(tree, subject.facts), reference), (rule.id, subject.kind)
                compared += 1
    assert compared > 10


FACTS = {"a": 3, "b": 0, "n": None, "s": "rabbitmq", "big": 10 ** 30, "huge": 10 ** 400, "t": True,
         "m": {"x": 1, "y": None}, "lst": [1, 2], "f": 2.5}
EXPRESSIONS = [
    "a > 1 and b == 0", "a > 1 and n > 0", "n < 1", "n == None", "n != null", "not n", "not a",
    "a or n", "n or b", "n and a", "b and n", "1 < a < 5", "1 < a < 2", "a < n < 5", "s == 'rabbitmq'",
    "'rabbit' in s", "'x' in m", "'z' not in m", "m.x", "m.y", "m.z", "s.x", "n.x", "-a", "-s", "-n",
    "a / b", "a % b", "a * f", "big * big", "huge + 1", "huge > 1", "s * 3", "a + n",
    "max(a, f)", "min(a, n)", "clamp(a / 10)", "abs(-f)", "known(n)", "known(a)", "[a, b, n]", "(a, s)",
    "a if t else b", "a if n else b", "true", "false", "null", "True and False", "a >= 3 >= b",
    "lst == [1, 2]", "1 in lst",
]


@pytest.mark.parametrize("source", EXPRESSIONS)
def test_edge_cases_agree_with_the_reference(source):
    try:
        tree = expr.parse(source)
    except expr.ExprError:
        pytest.skip(f"not in the language: {source}")
    assert same(expr.evaluate(tree, FACTS), expr._eval(tree.body, FACTS)), source
    # Evaluated again from the compiled closure: the same answer, and other facts are not remembered.
    assert same(expr.evaluate(tree, FACTS), expr._eval(tree.body, FACTS))
    assert same(expr.evaluate(tree, {}), expr._eval(tree.body, {}))
