"""qdiag's own coercion of command-line values (qdiag/cli_values.py) against
typer's (pydantic TypeAdapters) on the same parameters and inputs: the same
value, or an error from both."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import typer
from typer._coercion import build_runtime_param
from typer.main import get_command

from qdiag import cli, cli_values

INPUTS = ["5", "0", "-1", "-0", "+5", "0.5", "1", "2", " 3 ", "7 ", "1e3", "3.0", "3.00", "3.", "+3.0", "5.5", "1_000",
          "0x10", "\u0661\u0662", "", "  ", "abc", "inf", "-inf", "Infinity", "true", "TRUE", "False", "no", "Yes",
          "on", "json", "JSON", "text", "healthy", "Markdown", "x" * 300, 7, 2.5, 3.0, True, None, ("a", "b"), ["c"]]
# typer takes "NaN" and "nan" differently; qdiag takes neither (no setting is a NaN): test_nan_is_refused.
NANS = ["nan", "NaN", float("nan")]


ROOT = get_command(cli.app)


def _parameters():
    root = ROOT
    found = []

    def walk(command, path):
        for param in command.params:
            found.append((" ".join(path) or "qdiag", param))
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(root, [])
    return found


PARAMETERS = _parameters()
HANDLED = [(where, p) for where, p in PARAMETERS if cli_values._kind(p.type_descriptor.annotation) is not None]


def _outcome(runtime, value, param):
    ctx = typer.Context(ROOT)
    try:
        return "ok", runtime.coerce(value, param=param, ctx=ctx)
    except typer.BadParameter:
        return "error", None


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return type(a) is type(b) and a == b


@pytest.mark.parametrize("where,param", HANDLED, ids=[f"{w}:{p.name}" for w, p in HANDLED])
def test_each_parameter_is_coerced_as_typer_coerces_it(where, param):
    ours = cli_values.PlainValue(cli_values._kind(param.type_descriptor.annotation),
                                 param.type_descriptor.parameter_info)
    theirs = build_runtime_param(param.type_descriptor)
    differ = []
    for value in INPUTS:
        a, b = _outcome(ours, value, param), _outcome(theirs, value, param)
        if a[0] != b[0] or not _same(a[1], b[1]):
            differ.append((value, a, b))
    assert not differ, differ


@pytest.mark.parametrize("where,param", [(w, p) for w, p in HANDLED if p.type_descriptor.annotation is float],
                         ids=lambda v: getattr(v, "name", v))
def test_nan_is_refused(where, param):
    ours = cli_values.PlainValue(float, param.type_descriptor.parameter_info)
    assert all(_outcome(ours, value, param)[0] == "error" for value in NANS)


def test_every_parameter_qdiag_declares_is_handled():
    """A new kind of parameter would silently bring typer's coercion, and pydantic, back."""
    left = [f"{where}: {p.name} ({p.type_descriptor.annotation})" for where, p in PARAMETERS
            if cli_values._kind(p.type_descriptor.annotation) is None]
    assert not left


@pytest.mark.parametrize("argv", [["investigate", "--window", "abc"], ["check", "--max-depth", "lots"],
                                  ["explain", "consumer-stuck"], ["probes"], ["playbooks", "list"], ["--version"]])
def test_a_run_does_not_import_pydantic(argv):
    code = ("import sys; from qdiag import cli; "
            f"cli.main({argv!r}); print('pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr


@pytest.mark.parametrize("args,message", [
    (("investigate", "--window", "abc"), "Invalid value for '--window'"),
    (("check", "--max-fill", "1.5"), "1.5 is not in the range 0<=x<=1"),
    (("check", "--min-consumers", "-2"), "-2 is not in the range x>=0"),
    (("investigate", "--format", "xml"), "'xml' is not one of 'text', 'json', 'markdown'"),
])
def test_bad_values_are_one_line(args, message, capsys):
    assert cli.main(list(args)) == 3
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("text", ["a [b] c", "x[/y]", "[bold]", "\\[bold]", "a\\\\[b]", "[1]", "list[str]", "[Bold]",
                                  "[a", "[a [b]", "[#fff]", "[@click]", "no tags", "trail\\", "trail\\\\", "", "[]",
                                  "redis://user:pw@h:6379/0 [db]"])
def test_help_text_is_escaped_as_rich_escapes_it(text):
    from rich.markup import escape

    assert cli._escape_markup(text) == escape(text)


def test_every_broker_help_is_escaped_as_rich_escapes_it():
    from rich.markup import escape

    from qdiag.brokers import BROKERS

    for broker in BROKERS.values():
        text = f"{broker.help} E.g. {broker.example}"
        assert cli._escape_markup(text) == escape(text)
