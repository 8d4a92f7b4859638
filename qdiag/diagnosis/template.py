"""Evidence and command templates: "{name} is {fill_ratio:.0%} full".

Not str.format: that can reach attributes of Python objects.  Here a field is
only a dotted path into the facts, and a format spec is applied to numbers only.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

_FIELD = re.compile(r"\{([A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*)(?::([^{}]*))?\}")
_SPEC = re.compile(r"^[<>^=]?[+\- ]?[#0]?(?P<width>\d*)[,_]?(\.(?P<precision>\d+))?[bcdeEfFgGnoxX%s]?$")
UNKNOWN = "unknown"
# A format spec pads or rounds a number for reading; past these it is a way to
# print megabytes ("{depth:20000000}" made a 360 MB report).
MAX_WIDTH = 40
MAX_PRECISION = 12


def lookup(facts: Mapping[str, Any], path: str) -> Any:
    value: Any = facts
    for part in path.split("."):
        if not isinstance(value, Mapping):
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


def render(template: str, facts: Mapping[str, Any]) -> str:
    def field(match: re.Match) -> str:
        value = lookup(facts, match.group(1))
        spec = match.group(2)
        if spec and isinstance(value, (int, float)) and not isinstance(value, bool) and _spec_problem(spec) is None:
            try:
                return format(value, spec)
            except (ValueError, OverflowError):  # e.g. 'c' of a huge number, 'f' of an int past a float
                return _human(value)
        return _human(value)

    return _FIELD.sub(field, template)


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
