"""Turning command-line strings into the values the commands take, for the few
kinds of parameter qdiag declares (str, int, float with a range, bool, a str
Enum, a list of str).

Why not typer's own: typer (0.2x and later) coerces every parameter through a
pydantic TypeAdapter, and the first one imports pydantic.  That import and the
adapters cost about 0.2 s of every run, on a 2-core machine: more than all of
qdiag's own start-up, and paid before the first sample of an incident.  The
rules here are those typer applies to these kinds (the unit tests compare both
on the same inputs); any other kind of parameter (a path, a parser, a
callback-made type) is left to typer.

`install(params)` is called from the command classes' get_params: it gives each
parameter it can handle a coercer before click processes its value.  It relies
on one detail of typer's parameters (a lazily built `_runtime_param` with a
`coerce(value, param=, ctx=)` method); with a typer that works otherwise it
does nothing and typer coerces as before."""

from __future__ import annotations

import math
import re
from enum import Enum
from typing import Any, List, get_args, get_origin

from typer import BadParameter  # typer's own click, which catches it

_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off", ""}
_INTEGER = re.compile(r"[+-]?[0-9](?:_?[0-9])*(?:\.0+)?")


class PlainValue:
    """Coerces one parameter's value; has the interface of typer's runtime parameter."""

    def __init__(self, kind: type, info: Any):
        self.kind = kind
        self.info = info

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        if multi:
            if isinstance(value, str):
                raise BadParameter("Value must be an iterable.", ctx=ctx, param=param)
            items = value if isinstance(value, (list, tuple)) else [value]
            return [self.one(item, param, ctx) for item in items]
        return self.one(value, param, ctx)

    def one(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.kind
        if kind is bool:
            return _boolean(value, param, ctx)
        if issubclass(kind, Enum):
            return _choice(kind, value, self.info.case_sensitive, param, ctx)
        if kind is str:
            return str(value)
        return _ranged(kind, _number(kind, value, param, ctx), self.info, param, ctx)


def _boolean(value: Any, param: Any, ctx: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise BadParameter(f"{value!r} is not a valid boolean.", ctx=ctx, param=param)


def _choice(kind: type, value: Any, case_sensitive: bool, param: Any, ctx: Any) -> Enum:
    if isinstance(value, kind):
        return value
    text = str(value.value if isinstance(value, Enum) else value)
    for member in kind:
        if member.value == text or (not case_sensitive and str(member.value).lower() == text.lower()):
            return member
    allowed = ", ".join(repr(m.value) for m in kind)
    raise BadParameter(f"{text!r} is not one of {allowed}.", ctx=ctx, param=param)


def _number(kind: type, value: Any, param: Any, ctx: Any) -> Any:
    """ASCII digits only (Python's int() and float() also take other scripts' digits); an
    integer may be written with a zero fraction ("3.0"); NaN is never a valid setting."""
    name = "an integer" if kind is int else "a number"
    if isinstance(value, bool):
        return kind(value)
    if isinstance(value, kind) and not (kind is float and math.isnan(value)):
        return value
    text = str(value).strip()
    try:
        if not text.isascii():
            raise ValueError(text)
        if kind is int:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if not _INTEGER.fullmatch(text):
                raise ValueError(text)
            return int(text.split(".")[0])
        number = float(text)
        if math.isnan(number):
            raise ValueError(text)
        return number
    except (TypeError, ValueError):
        raise BadParameter(f"{value!r} is not {name}.", ctx=ctx, param=param) from None


def _ranged(kind: type, number: Any, info: Any, param: Any, ctx: Any) -> Any:
    low, high = info.min, info.max
    if info.clamp:
        if low is not None and number < low:
            return kind(low)
        if high is not None and number > high:
            return kind(high)
        return number
    if (low is not None and number < low) or (high is not None and number > high):
        bounds = (f"{low}<=x<={high}" if low is not None and high is not None
                  else f"x>={low}" if low is not None else f"x<={high}")
        raise BadParameter(f"{number} is not in the range {bounds}.", ctx=ctx, param=param)
    return number


def _kind(annotation: Any) -> type | None:
    """The one leaf type a parameter takes, when it is one handled here; else None."""
    if get_origin(annotation) in (list, List):
        args = get_args(annotation)
        return str if args == (str,) else None
    if annotation in (bool, int, float, str):
        return annotation
    if isinstance(annotation, type) and issubclass(annotation, Enum) and issubclass(annotation, str):
        return annotation
    return None


def install(params: list) -> list:
    for param in params:
        descriptor = getattr(param, "type_descriptor", None)
        if descriptor is None or getattr(param, "_runtime_param", False) is not None:
            continue  # not a typer parameter of the known shape, or already set
        info = descriptor.parameter_info
        if getattr(info, "parser", None) is not None or getattr(descriptor, "file_annotation", None) is not None:
            continue
        kind = _kind(descriptor.annotation)
        if kind is None or (get_origin(descriptor.annotation) in (list, List)) != bool(param.multiple or param.nargs == -1):
            continue
        if kind in (bool, str) and (info.min is not None or info.max is not None):
            continue
        param._runtime_param = PlainValue(kind, info)
    return params
