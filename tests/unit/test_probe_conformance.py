"""Every probe keeps the contract: registered once from its own module, a
description, valid needs, a positive allowance, a collect(ctx) that takes a
context, options whose defaults pass their own checks, and no broker client
imported until it runs (so `qdiag --help` stays fast).

The checks live in one function, `problems()`, which is also run on probes
broken on purpose: a check that a broken probe passes would prove nothing."""

import inspect
import subprocess
import sys
from dataclasses import replace

import pytest

from qdiag import probe as P
from qdiag.errors import ConfigError
from qdiag.options import COMMON, Option, declared, validate
from qdiag.probes import MODULES

PROBES = P.all_probes()


def _takes_one_argument(func) -> bool:
    try:
        inspect.signature(func).bind(object())
        return True
    except (TypeError, ValueError):
        return False


def problems(probe: P.Probe) -> list[str]:
    found = []
    if not probe.name.isidentifier():
        found.append("name is not an identifier")
    if not probe.description or len(probe.description) >= 200:
        found.append("description missing or longer than one line")
    if any(kind not in P.TARGET_KINDS for kind in probe.needs):
        found.append(f"unknown target kinds in needs {probe.needs}")
    if not 0 < probe.timeout_s <= 60:
        found.append(f"allowance {probe.timeout_s} s out of (0, 60]")
    if not callable(probe.collect) or not _takes_one_argument(probe.collect):
        found.append("collect is not a function of one context")
    elif not probe.collect.__module__.startswith("qdiag.probes."):
        found.append(f"collect lives in {probe.collect.__module__}, not in a module under probes/")
    if probe.discover is not None and (not callable(probe.discover) or not _takes_one_argument(probe.discover)):
        found.append("discover is not a function of one context")
    missing = [o.name for o in COMMON if o.name not in probe.options]
    if missing:
        found.append(f"options lack the runner's own {missing}")
    for option in probe.options.values():
        if not option.help:
            found.append(f"option {option.name} has no help")
    try:
        defaults = validate(probe.name, probe.options, {})
        # Every default, given back explicitly, must pass the option's own checks.
        validate(probe.name, probe.options, {k: v for k, v in defaults.items() if v is not None})
    except ConfigError as exc:
        found.append(f"a default fails its own declaration: {exc.message}")
    return found


def test_every_module_registers_one_probe():
    modules = {p.collect.__module__.rsplit(".", 1)[-1] for p in PROBES.values()}
    assert modules == set(MODULES)
    assert len(PROBES) == len(MODULES)


@pytest.mark.parametrize("name", sorted(PROBES))
def test_declaration(name):
    probe = PROBES[name]
    assert probe.name == name
    assert problems(probe) == []
    # Probes that need a broker say so, so the runner marks them not_applicable without one.
    if name in ("kafka", "rabbitmq", "redis"):
        assert probe.needs == (name,)


def _collect(ctx):
    return {}


# A well-formed declaration (borrowing a real probe's collect) to break one field at a time.
GOOD = P.Probe("fake", PROBES["host"].collect, "a probe for this test", (), 5.0, None, options=declared(()))


@pytest.mark.parametrize("broken, expected", [
    (replace(GOOD, name="two words"), "name is not an identifier"),
    (replace(GOOD, description=""), "description missing"),
    (replace(GOOD, needs=("postgres",)), "unknown target kinds"),
    (replace(GOOD, timeout_s=0.0), "allowance 0.0 s"),
    (replace(GOOD, collect=lambda: {}), "collect is not a function of one context"),
    (replace(GOOD, collect=_collect), "not in a module under probes/"),
    (replace(GOOD, discover=lambda a, b: []), "discover is not a function of one context"),
    (replace(GOOD, options={}), "lack the runner's own ['enabled', 'timeout']"),
    (replace(GOOD, options=declared((Option("dumps", "int", 9, "dumps per window", low=2, high=5),))),
     "a default fails its own declaration"),
    (replace(GOOD, options=declared((Option("mode", "str", "fast", "how", choices=("slow", "safe")),))),
     "a default fails its own declaration"),
    (replace(GOOD, options=declared((Option("dumps", "int", 3, ""),))), "option dumps has no help"),
])
def test_the_checks_catch_a_broken_probe(broken, expected):
    assert problems(GOOD) == []
    assert any(expected in p for p in problems(broken)), problems(broken)


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
