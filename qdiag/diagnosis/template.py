"""Evidence and command templates: "{name} is {fill_ratio:.0%} full".

Not str.format: that can reach attributes of Python objects.  Here a field is
only a dotted path into the facts, and a format spec is applied to numbers only.
"""

from __future__ import annotations

import re
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


def render(template: str, facts: Mapping[str, Any]) -> str:
    def field(match: re.Match) -> str:
        value = lookup(facts, match.group(1))
        spec = match.group(2)
        if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return format(value, spec)
            except ValueError:
                return _human(value)
        return _human(value)

    return _FIELD.sub(field, template)


def check(template: str) -> str | None:
    """Return a problem with the template, or None."""
    stripped = _FIELD.sub("", template)
    if "{" in stripped or "}" in stripped:
        return "unbalanced or malformed {field} in template"
    for match in _FIELD.finditer(template):
        if match.group(2) and not _SPEC.match(match.group(2)):
            return f"bad format spec ':{match.group(2)}' for {{{match.group(1)}}}"
    return None
