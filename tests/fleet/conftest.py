"""Fixtures of the fleet tests: the namespace lab (lab.py) and the single-file build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet import lab as lab_module
from tests.fleet.lab import REPO


@pytest.fixture
def lab():
    why = lab_module.available()
    if why:
        pytest.fail(f"the fleet lab cannot run here: {why}", pytrace=False)
    made = lab_module.Lab()
    try:
        yield made
    finally:
        made.close()
        assert made.leftovers() == [], f"the lab left {made.leftovers()}"


@pytest.fixture(scope="session")
def pyz(tmp_path_factory) -> Path:
    """qdiag as one file, built the documented way (without fetching: the remote side runs no broker client)."""
    out = tmp_path_factory.mktemp("pyz") / "qdiag.pyz"
    done = subprocess.run([sys.executable, "-m", "qdiag.fleet.zipapp", "--no-fetch", "-o", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return out
