"""Every probe keeps the contract: registered once from its own module, a
description, valid needs, a positive allowance, and no broker client imported
until it runs (so `qdiag --help` stays fast)."""

import subprocess
import sys

import pytest

from qdiag import probe as P
from qdiag.probes import MODULES

PROBES = P.all_probes()


def test_every_module_registers_one_probe():
    modules = {p.collect.__module__.rsplit(".", 1)[-1] for p in PROBES.values()}
    assert modules == set(MODULES)
    assert len(PROBES) == len(MODULES)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_declaration(name):
    probe = PROBES[name]
    assert probe.name == name and probe.name.isidentifier()
    assert probe.description and len(probe.description) < 200
    assert all(kind in P.TARGET_KINDS for kind in probe.needs)
    assert 0 < probe.timeout_s <= 60
    assert callable(probe.collect)
    assert probe.discover is None or callable(probe.discover)
    # Probes that need a broker say so, so the runner marks them not_applicable without one.
    if name in ("kafka", "rabbitmq", "redis"):
        assert probe.needs == (name,)


def test_loading_the_probes_imports_no_broker_client():
    code = ("import sys; from qdiag.probe import all_probes; all_probes(); "
            "print(sorted(m for m in ('kafka', 'pika', 'redis', 'requests') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_help_imports_no_probe_or_client():
    code = ("import sys; from qdiag.cli import main; "
            "import contextlib, io\nwith contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('kafka', 'pika', 'redis', 'psutil', 'qdiag.probes'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
