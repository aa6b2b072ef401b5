"""The vocabulary ``params.SCHEMA`` is written in: a rule per key, each checking one value and,
when it fails, completing the sentence "<field> must be <expected>, got <value>" (``ParamsError``,
one line). Rules: ``integer``, ``number``, ``choice``, ``text``, ``boolean``, ``list_of``, and
``rule.or_null()``. Knows nothing of any key; ``params`` owns the schema. Imports no torch.

Hand-written rather than pydantic or jsonschema: every message names the YAML field and the value
as written and points at YAML's own traps (``1e-4`` read as text, ``true`` where a number is due),
where those libraries report Python types.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence


class ParamsError(ValueError):
    """A params file that does not follow the schema (one line per problem)."""


# ---------------------------------------------------------------------------------------------
# Rules: each completes the sentence "<field> must be <expected>, got <value>".
# ---------------------------------------------------------------------------------------------


class Rule:
    """One key's rule: ``expected`` (singular) and ``plural`` texts, a test, and a conversion."""

    def __init__(self, expected: str, ok: Callable[[Any], bool], plural: str | None = None,
                 convert: Callable[[Any], Any] | None = None, hint: Callable[[Any], str] | None = None):
        self.expected, self.ok, self.plural = expected, ok, plural or expected
        self.convert, self.hint = convert, hint

    def __call__(self, field: str, value: Any) -> Any:
        """``value`` (converted) if it follows the rule, else ParamsError naming field and value."""
        if not self.ok(value):
            raise ParamsError(self.message(field, value))
        return self.convert(value) if self.convert else value

    def message(self, field: str, value: Any) -> str:
        return f"{field} must be {self.expected}, got {value!r}{self.hint(value) if self.hint else ''}"

    def or_null(self) -> Rule:
        """The same rule, and null (YAML ``null`` / ``~``) allowed too."""
        return _OrNull(self)


class _OrNull(Rule):
    def __init__(self, inner: Rule):
        super().__init__(f"{inner.expected} or null", inner.ok, f"{inner.plural} or null", hint=inner.hint)
        self.inner = inner

    def __call__(self, field: str, value: Any) -> Any:
        if value is None:
            return None
        if not self.inner.ok(value):
            raise ParamsError(self.message(field, value))
        return self.inner(field, value)  # items of a list are checked (and named) here


class _Choice(Rule):
    def __init__(self, options: Sequence[Any], noun: str | None):
        shown = ", ".join(map(str, options))
        super().__init__(f"one of {shown}", lambda v: _in(v, options),
                         f"{noun} names ({shown})" if noun else f"values from {shown}")
        self.noun, self.shown = noun, shown

    def message(self, field: str, value: Any) -> str:
        if self.noun:  # the wording users know: "unknown distortion 'blurr'; choose from ..."
            return f"{field}: unknown {self.noun} {value!r}; choose from {self.shown}"
        return super().message(field, value)


class _ListOf(Rule):
    def __init__(self, item: Rule, min_len: int):
        what = "a non-empty list" if min_len == 1 else (f"a list of at least {min_len}" if min_len else "a list")
        super().__init__(f"{what} of {item.plural}", lambda v: isinstance(v, (list, tuple)) and len(v) >= min_len)
        self.item = item

    def __call__(self, field: str, value: Any) -> Any:
        super().__call__(field, value)
        items = [self.item(f"{field}[{i}]", v) for i, v in enumerate(value)]
        # a value listed twice would be run twice and counted twice (rows, splits, curves)
        repeated = next((v for i, v in enumerate(items) if v in items[:i]), None)
        if repeated is not None:
            raise ParamsError(f"{field} must list each value once, got {value!r} ({repeated!r} more than once)")
        return items


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)  # YAML true is a bool, and bool is an int


def _is_number(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _in(v: Any, options: Sequence[Any]) -> bool:
    return not isinstance(v, bool) and v in options  # True == 1 would pass as level 1


def _numeric_text_hint(v: Any) -> str:
    if not isinstance(v, str):
        return ""
    if re.fullmatch(r"\s*[+-]?\d+[eE][+-]?\d+\s*", v):  # YAML 1.1 reads 1e-4 as text
        return f" (YAML reads {v.strip()} as text: write it with a dot, e.g. 1.0e-4)"
    try:
        float(v)
    except ValueError:
        return ""
    return " (text, not a number: drop the quotes)"


def _bounds(lo: float | None, lo_open: bool, hi: float | None, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" {'>' if lo_open else '>='} {lo}"
    if hi is not None:
        return f" {'<' if hi_open else '<='} {hi}"
    return ""


def integer(min: int | None = None, max: int | None = None, why: str = "") -> Rule:
    """An int (not a bool) in ``[min, max]``."""
    bounds = _bounds(min, False, max, False) + (f" ({why})" if why else "")
    return Rule(f"an integer{bounds}",
                lambda v: _is_int(v) and (min is None or v >= min) and (max is None or v <= max),
                f"integers{bounds}", hint=_numeric_text_hint)


def number(gt: float | None = None, ge: float | None = None, lt: float | None = None, le: float | None = None,
           why: str = "") -> Rule:
    """An int or float (not a bool, finite) within the bounds given; stored as float."""
    lo, hi = (gt if gt is not None else ge), (lt if lt is not None else le)
    bounds = _bounds(lo, gt is not None, hi, lt is not None) + (f" ({why})" if why else "")

    def ok(v: Any) -> bool:
        return _is_number(v) and (gt is None or v > gt) and (ge is None or v >= ge) and \
            (lt is None or v < lt) and (le is None or v <= le)

    return Rule(f"a number{bounds}", ok, f"numbers{bounds}", convert=float, hint=_numeric_text_hint)


def choice(options: Sequence[Any], noun: str | None = None) -> Rule:
    """One of ``options``; with ``noun`` the message reads "unknown <noun> 'x'; choose from ..."."""
    return _Choice(tuple(options), noun)


def text(pattern: str | None = None, expected: str = "a non-empty string", plural: str = "non-empty strings") -> Rule:
    """A non-empty string (matching ``pattern`` in full, when given)."""
    def ok(v: Any) -> bool:
        return isinstance(v, str) and v != "" and (pattern is None or re.fullmatch(pattern, v) is not None)

    return Rule(expected, ok, plural)


def boolean() -> Rule:
    """true or false (not 0/1, not "yes" in quotes)."""
    return Rule("true or false", lambda v: isinstance(v, bool), "booleans")


def list_of(item: Rule, min_len: int = 1) -> Rule:
    """A list (at least ``min_len`` long, default non-empty) whose every item follows ``item``,
    each value once."""
    return _ListOf(item, min_len)
