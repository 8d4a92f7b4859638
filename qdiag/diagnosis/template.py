"""Evidence and command templates: "{name} is {fill_ratio:.0%} full".

Not str.format: that can reach attributes of Python objects.  Here a field is
only a dotted path into the facts, and a format spec is applied to numbers only.
"""

from __future__ import annotations

import re
import shlex
from collections import abc
from typing import Any, Mapping

_FIELD = re.compile(r"\{([A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*)(?::([^{}]*))?\}")
_SPEC = re.compile(r"^[<>^=]?[+\- ]?[#0]?(?P<width>\d*)[,_]?(\.(?P<precision>\d+))?[bcdeEfFgGnoxX%s]?$")
UNKNOWN = "unknown"
# A format spec pads or rounds a number for reading; past these it is a way to
# print megabytes ("{depth:20000000}" made a 360 MB report).
MAX_WIDTH = 40
MAX_PRECISION = 12


_PLAIN = (str, int, float, list, tuple, type(None))


def _is_mapping(value: Any) -> bool:
    # Facts are plain JSON values: told apart by type first, since the abstract
    # Mapping check is slow enough to show when thousands of queues are ranked.
    if type(value) is dict:
        return True
    return not isinstance(value, _PLAIN) and isinstance(value, abc.Mapping)


def lookup(facts: Mapping[str, Any], path: str) -> Any:
    value: Any = facts
    for part in path.split("."):
        if not _is_mapping(value):
            return None
        value = value.get(part)
    return value


def _human(value: Any) -> str:
    if value is None:
        return UNKNOWN
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_human(v) for v in value[:5]) + (" …" if len(value) > 5 else "")
    return str(value)


def _formatted(value: Any, spec: str | None) -> str:
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool) and _spec_problem(spec) is None:
        try:
            return format(value, spec)
        except (ValueError, OverflowError):  # e.g. 'c' of a huge number, 'f' of an int past a float
            pass
    return _human(value)


def render(template: str, facts: Mapping[str, Any]) -> str:
    if "{" not in template:  # most mitigations name no field
        return template
    return _FIELD.sub(lambda m: _formatted(lookup(facts, m.group(1)), m.group(2)), template)


def command(template: str, facts: Mapping[str, Any]) -> str | None:
    """A shell command from a template, ready to paste: every field's value is
    shell-quoted (a queue named `a b` or `x;rm -rf ~` stays one argument), a list
    gives one argument per item.  None when a field is unknown: a command with a
    hole in it cannot be pasted, and a rule written for every broker lists one
    command per broker, each naming a field only that broker's records have
    (`{vhost}`, `{bootstrap}`, `{redis_address}`)."""
    if "{" not in template:
        return template
    holes = []

    def field(match: re.Match) -> str:
        value = lookup(facts, match.group(1))
        if isinstance(value, (list, tuple)) and value and all(v is not None and v != "" for v in value):
            return " ".join(shlex.quote(_formatted(v, match.group(2))) for v in value)
        if value is None or value == "" or isinstance(value, (list, tuple)) or _is_mapping(value):
            holes.append(match.group(1))
            return ""
        return shlex.quote(_formatted(value, match.group(2)))

    text = _FIELD.sub(field, template)
    return None if holes else text


def check(template: str) -> str | None:
    """Return a problem with the template, or None."""
    stripped = _FIELD.sub("", template)
    if "{" in stripped or "}" in stripped:
        return "unbalanced or malformed {field} in template"
    for match in _FIELD.finditer(template):
        problem = _spec_problem(match.group(2)) if match.group(2) else None
        if problem:
            return f"{problem} in ':{match.group(2)}' for {{{match.group(1)}}}"
    return None


def _spec_problem(spec: str) -> str | None:
    parsed = _SPEC.match(spec)
    if not parsed:
        return "bad format spec"
    width, precision = parsed.group("width"), parsed.group("precision")
    # Compared as text first: int() of a 5,000-digit width is itself an error.
    if width and (len(width) > 3 or int(width) > MAX_WIDTH):
        return f"width over {MAX_WIDTH}"
    if precision and (len(precision) > 3 or int(precision) > MAX_PRECISION):
        return f"precision over {MAX_PRECISION}"
    return None
