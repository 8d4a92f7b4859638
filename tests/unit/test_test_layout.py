"""The default run collects every test directory at once: two test modules with one basename
(outside packages) make pytest stop at collection, whatever each passes alone."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_modules_have_unique_basenames():
    names = Counter(p.name for p in TESTS.rglob("test_*.py") if not (p.parent / "__init__.py").exists())
    assert not [n for n, count in names.items() if count > 1]
