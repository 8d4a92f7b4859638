"""Evidence and command templates: "{name} is {fill_ratio:.0%} full".

Not str.format: that can reach attributes of Python objects.  Here a field is
only a dotted path into the facts, and a format spec is applied to numbers only.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Mapping

_FIELD = re.compile(r"\{([A-Za-z][\w]*(?:\.[A-Za-z][\w]*)*)(?::([^{}]*))?\}")
_SPEC = re.compile(r"^[<>^=]?[+\- ]?[#0]?\d*[,_]?(\.\d+)?[bcdeEfFgGnoxX%s]?$")
UNKNOWN = "unknown"


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


def _formatted(value: Any, spec: str | None) -> str:
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except ValueError:
            pass
    return _human(value)


def render(template: str, facts: Mapping[str, Any]) -> str:
    return _FIELD.sub(lambda m: _formatted(lookup(facts, m.group(1)), m.group(2)), template)


def command(template: str, facts: Mapping[str, Any]) -> str | None:
    """A shell command from a template, ready to paste: every field's value is
    shell-quoted (a queue named `a b` or `x;rm -rf ~` stays one argument), a list
    gives one argument per item.  None when a field is unknown: a command with a
    hole in it cannot be pasted, and a rule written for every broker lists one
    command per broker, each naming a field only that broker's records have
    (`{vhost}`, `{bootstrap}`, `{redis_address}`)."""
    holes = []

    def field(match: re.Match) -> str:
        value = lookup(facts, match.group(1))
        if isinstance(value, (list, tuple)) and value and all(v is not None and v != "" for v in value):
            return " ".join(shlex.quote(_formatted(v, match.group(2))) for v in value)
        if value is None or value == "" or isinstance(value, (Mapping, list, tuple)):
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
        if match.group(2) and not _SPEC.match(match.group(2)):
            return f"bad format spec ':{match.group(2)}' for {{{match.group(1)}}}"
    return None
