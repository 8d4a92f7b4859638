"""Probe options, declared once with the probe and validated once for all.

A probe declares its `[probes.NAME]` keys when it registers:

    @register("threads", ..., options=(
        Option("dumps", "int", 3, "thread dumps over the window", low=2, high=5),
        Option("py_spy", "executable", None, "path of py-spy"),
    ))

`validate()` turns a config table into a complete dict of values (defaults
filled in) or raises ConfigError naming the key, its `file:line` and the fix.
Nothing is clamped or ignored silently: a value of the wrong type or out of
range is an error, and an unknown key names the closest valid one.

Every probe also has two options the runner reads: `enabled` and `timeout`.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

from qdiag.errors import ConfigError

# Kinds of value an option can hold.
#   bool, int, float, str, list (of strings), table (a TOML table of string values),
#   path (a file the probe reads), executable (a program qdiag runs: taken only
#   from a config file the user named explicitly, never from one found implicitly).
KINDS = ("bool", "int", "float", "str", "list", "table", "path", "executable")


@dataclass(frozen=True)
class Option:
    name: str
    kind: str
    default: Any
    help: str
    low: float | None = None  # inclusive bounds for int and float
    high: float | None = None
    choices: tuple[str, ...] = ()  # for str: the values allowed (compared case-insensitively)
    secret: bool = False  # masked wherever it could be shown

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")

    def describe(self) -> str:
        """One line for `qdiag probes` and the README: type, range, default."""
        kind = {"list": "list of strings", "table": "table"}.get(self.kind, self.kind)
        if self.choices:
            kind = "one of " + ", ".join(self.choices)
        if self.low is not None or self.high is not None:
            lo = "" if self.low is None else f"{self.low:g}"
            hi = "" if self.high is None else f"{self.high:g}"
            kind += f" [{lo}..{hi}]"
        default = "none" if self.default is None else ("***" if self.secret and self.default else repr(self.default))
        return f"{self.name} ({kind}, default {default}): {self.help}"


# The runner's own options, present on every probe.
COMMON = (
    Option("enabled", "bool", True, "run this probe (false turns it off)"),
    Option("timeout", "float", None, "seconds this probe may take beyond the window", low=0.1, high=3600),
)


def declared(options: Iterable[Option]) -> dict[str, Option]:
    out = {o.name: o for o in COMMON}
    for option in options:
        if option.name in out:
            raise ValueError(f"option {option.name} declared twice")
        out[option.name] = option
    return out


def closest(name: str, known: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return match[0] if match else None


def _bad(where: str, probe: str, option: Option, value: Any, expected: str) -> ConfigError:
    shown = "***" if option.secret else repr(value)
    example = option.default if option.default is not None and not option.secret else None
    fix = f"e.g. {option.name} = {example!r}" if example is not None and not isinstance(example, (list, dict)) \
        else "fix the value"
    fix = fix.replace("True", "true").replace("False", "false")
    return ConfigError(f"{where}: [probes.{probe}] {option.name} = {shown} is not {expected}", fix)


def coerce(probe: str, option: Option, value: Any, where: str) -> Any:
    """One value, checked against its declaration; returns it in its canonical form."""
    kind = option.kind
    if value is None and option.default is None:
        return None  # "not set" (TOML cannot say None; code can)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _bad(where, probe, option, value, "true or false (without quotes)")
        return value
    if kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(where, probe, option, value, "a whole number" if kind == "int" else "a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise _bad(where, probe, option, value, "a finite number")
        if kind == "int" and isinstance(value, float):
            if not value.is_integer():
                raise _bad(where, probe, option, value, "a whole number")
            value = int(value)
        if (option.low is not None and value < option.low) or (option.high is not None and value > option.high):
            lo = "-inf" if option.low is None else f"{option.low:g}"
            hi = "inf" if option.high is None else f"{option.high:g}"
            raise _bad(where, probe, option, value, f"between {lo} and {hi}")
        return float(value) if kind == "float" else int(value)
    if kind in ("str", "path", "executable"):
        if not isinstance(value, str):
            raise _bad(where, probe, option, value, "a string")
        if option.choices:
            allowed = {c.lower(): c for c in option.choices}
            if value.lower() not in allowed:
                raise _bad(where, probe, option, value, "one of " + ", ".join(option.choices))
            return allowed[value.lower()]
        return value
    if kind == "list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(where, probe, option, value, "a list of strings, e.g. [\"a\", \"b\"]")
        return list(value)
    if kind == "table":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _bad(where, probe, option, value, "a table of strings")
        return dict(value)
    raise AssertionError(kind)  # pragma: no cover - guarded by Option.__post_init__


def validate(probe: str, declarations: Mapping[str, Option], given: Mapping[str, Any],
             where: Callable[[str], str] = lambda key: "qdiag.toml") -> dict[str, Any]:
    """The probe's complete options: every declared key, given or default.

    `where(key)` names the place of a key for errors (`path:line`)."""
    out: dict[str, Any] = {}
    for key, value in given.items():
        option = declarations.get(key)
        if option is None:
            near = closest(key, declarations)
            hint = f"did you mean '{near}'?" if near else "known keys: " + ", ".join(sorted(declarations))
            raise ConfigError(f"{where(key)}: unknown key '{key}' in [probes.{probe}]", hint)
        out[key] = coerce(probe, option, value, where(key))
    for key, option in declarations.items():
        out.setdefault(key, option.default)
    return out
