"""The playbooks' condition language: a small, safe subset of Python
expressions, interpreted here node by node.  Nothing in a playbook can call
arbitrary functions, import, read attributes of Python objects or touch files:
names resolve only to observation facts, attributes only walk into dicts, and
calls only reach the functions in FUNCTIONS.

Unknown facts are None, and a comparison involving None is false, so a rule
whose evidence is missing simply does not fire.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Any, Callable, Mapping


class ExprError(ValueError):
    """A condition that cannot be parsed or uses something not allowed."""


def _clamp(value, low=0.0, high=1.0):
    if value is None:
        return None
    return max(low, min(high, value))


def _ratio(numerator, denominator):
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def _count(items, *_):
    return len(items) if isinstance(items, (list, tuple, dict)) else None


def _nonnull_min(*values):
    values = [v for v in values if v is not None]
    return min(values) if values else None


def _nonnull_max(*values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _contains(container, item):
    if container is None:
        return False
    return item in container


FUNCTIONS: dict[str, Callable] = {
    "min": _nonnull_min,
    "max": _nonnull_max,
    "abs": lambda v: None if v is None else abs(v),
    "clamp": _clamp,
    "ratio": _ratio,
    "count": _count,
    "contains": _contains,
    "log10": lambda v: None if v is None or v <= 0 else math.log10(v),
    "known": lambda v: v is not None,
}

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Mod: operator.mod}
_CMPOPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
           ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.In: lambda a, b: _contains(b, a),
           ast.NotIn: lambda a, b: not _contains(b, a)}
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp,
            ast.Compare, ast.Name, ast.Load, ast.Constant, ast.Attribute, ast.Call, ast.List, ast.Tuple,
            ast.IfExp, *_BINOPS, *_CMPOPS)
MAX_LENGTH = 2000
# The evaluator recurses once per level: a nesting limit far below Python's
# recursion limit keeps `- - - … x` or `a.b.b.b…` from crashing the report.
# Real rules nest about 6 levels; a sum of 40 terms nests 40.
MAX_DEPTH = 50
# Constants beyond this are not thresholds but a way to overflow float()
# (a 400-digit strength).  Facts larger than this become floats before any
# arithmetic, so no expression can build a huge integer either.
MAX_NUMBER = 10 ** 18


def _depth(tree: ast.AST) -> int:
    """Nesting depth of the tree, counted without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse(source: str) -> ast.Expression:
    """Parse and vet a condition; raises ExprError naming what is not allowed."""
    if not isinstance(source, str) or not source.strip():
        raise ExprError("empty expression")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error at column {exc.offset}: {exc.msg}") from None
    except (RecursionError, MemoryError, ValueError):  # the parser's own limits
        raise ExprError(f"expression nested deeper than {MAX_DEPTH} levels") from None
    if _depth(tree) > MAX_DEPTH:
        raise ExprError(f"expression nested deeper than {MAX_DEPTH} levels (split it, or use min()/max())")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and _is_number(node.value) and not _in_range(node.value):
            raise ExprError(f"number {str(node.value)[:24]}{'…' if len(str(node.value)) > 24 else ''} is out of "
                            f"range (at most {MAX_NUMBER:.0e} in size)")
        if not isinstance(node, _ALLOWED):
            raise ExprError(f"'{type(node).__name__}' is not allowed in a playbook expression")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExprError(f"'.{node.attr}': names starting with '_' are not allowed")
        if isinstance(node, ast.Name) and node.id.startswith("_"):
            raise ExprError(f"'{node.id}': names starting with '_' are not allowed")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                raise ExprError("only these functions can be called: " + ", ".join(sorted(FUNCTIONS)))
            if node.keywords:
                raise ExprError("keyword arguments are not allowed")
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, bool, type(None))):
            raise ExprError(f"constant {node.value!r} is not allowed")
    return tree


def evaluate(tree: ast.Expression, facts: Mapping[str, Any]) -> Any:
    # Each rule is evaluated against every subject (2,500 queue records at 2,000 Redis
    # streams): the tree is turned once into nested closures, the same semantics as
    # _eval without walking and dispatching on node types at every evaluation.
    compiled = getattr(tree, "_qdiag_compiled", None)
    if compiled is None:
        compiled = _compile(tree.body)
        tree._qdiag_compiled = compiled
    return compiled(facts)


_LITERALS = {"true": True, "True": True, "false": False, "False": False, "null": None, "None": None}


def _compile(node: ast.AST) -> Callable[[Mapping[str, Any]], Any]:
    """A closure computing what _eval(node, facts) does (kept side by side: _eval is the
    reference the tests compare this with)."""
    if isinstance(node, ast.Constant):
        value = node.value
        return lambda facts: value
    if isinstance(node, ast.Name):
        name = node.id
        if name in _LITERALS:
            literal = _LITERALS[name]
            return lambda facts: literal
        return lambda facts: facts.get(name)
    if isinstance(node, ast.Attribute):
        base_of, attr = _compile(node.value), node.attr

        def attribute(facts):
            base = base_of(facts)
            return base.get(attr) if isinstance(base, Mapping) else None
        return attribute
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v) for v in node.values]
        if isinstance(node.op, ast.And):
            def conjunction(facts):
                result: Any = True
                for part in parts:
                    result = part(facts)
                    if not result:
                        return result
                return result
            return conjunction

        def disjunction(facts):
            result: Any = False
            for part in parts:
                result = part(facts)
                if result:
                    return result
            return result
        return disjunction
    if isinstance(node, ast.UnaryOp):
        operand_of = _compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda facts: not operand_of(facts)

        def negation(facts):
            operand = operand_of(facts)
            return -operand if _is_number(operand) else None
        return negation
    if isinstance(node, ast.BinOp):
        left_of, right_of, op = _compile(node.left), _compile(node.right), _BINOPS[type(node.op)]

        def arithmetic(facts):
            left, right = _bounded(left_of(facts)), _bounded(right_of(facts))
            if not (_is_number(left) and _is_number(right)):
                return None
            try:
                return op(left, right)
            except (ArithmeticError, TypeError):
                return None
        return arithmetic
    if isinstance(node, ast.Compare):
        first = _compile(node.left)
        steps = [(_CMPOPS[type(op)], not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)), _compile(c))
                 for op, c in zip(node.ops, node.comparators)]

        def comparison(facts):
            left = first(facts)
            for op, ordering, right_of in steps:
                right = right_of(facts)
                if ordering and (left is None or right is None):
                    return False
                try:
                    if not op(left, right):
                        return False
                except TypeError:
                    return False
                left = right
            return True
        return comparison
    if isinstance(node, ast.Call):
        function, args_of = FUNCTIONS[node.func.id], [_compile(a) for a in node.args]

        def call(facts):
            args = [_bounded(a(facts)) for a in args_of]
            try:
                return function(*args)
            except (TypeError, ValueError, ArithmeticError):
                return None
        return call
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_compile(e) for e in node.elts]
        return lambda facts: [item(facts) for item in items]
    if isinstance(node, ast.IfExp):
        test, body, orelse = _compile(node.test), _compile(node.body), _compile(node.orelse)
        return lambda facts: body(facts) if test(facts) else orelse(facts)
    raise ExprError(f"'{type(node).__name__}' is not allowed")  # unreachable after parse()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _in_range(value: float) -> bool:
    return abs(value) <= MAX_NUMBER  # False for inf and nan too


def _bounded(value: Any) -> Any:
    """A number fit for arithmetic: a huge integer (JSON allows 4,300 digits)
    becomes a float, or None when no float can hold it."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
        try:
            return float(value)
        except OverflowError:
            return None
    return value


def _eval(node: ast.AST, facts: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("true", "True"):
            return True
        if node.id in ("false", "False"):
            return False
        if node.id in ("null", "None"):
            return None
        return facts.get(node.id)
    if isinstance(node, ast.Attribute):
        base = _eval(node.value, facts)
        return base.get(node.attr) if isinstance(base, Mapping) else None
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, facts)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, facts)
            if result:
                return result
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _eval(node.operand, facts)
        if isinstance(node.op, ast.Not):
            return not operand
        return -operand if _is_number(operand) else None
    if isinstance(node, ast.BinOp):
        left, right = _bounded(_eval(node.left, facts)), _bounded(_eval(node.right, facts))
        # Numbers only: "x" * 10**9 must not be a way to exhaust memory.
        if not (_is_number(left) and _is_number(right)):
            return None
        try:
            return _BINOPS[type(node.op)](left, right)
        except (ArithmeticError, TypeError):  # division by zero, int/int past a float
            return None
    if isinstance(node, ast.Compare):
        left = _eval(node.left, facts)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, facts)
            if not isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn)) and (left is None or right is None):
                return False
            try:
                if not _CMPOPS[type(op)](left, right):
                    return False
            except TypeError:
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        args = [_bounded(_eval(a, facts)) for a in node.args]
        try:
            return FUNCTIONS[node.func.id](*args)
        except (TypeError, ValueError, ArithmeticError):
            return None
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, facts) for e in node.elts]
    if isinstance(node, ast.IfExp):
        return _eval(node.body, facts) if _eval(node.test, facts) else _eval(node.orelse, facts)
    raise ExprError(f"'{type(node).__name__}' is not allowed")  # unreachable after parse()

