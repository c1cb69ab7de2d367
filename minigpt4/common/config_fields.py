"""Typed config keys: a dataclass field's type and its declared rule decide which values it takes.

A config section (``run``) is a frozen dataclass whose fields are its keys. Each field is declared
with :func:`setting`: its default (what the code did when the key is left out) and a
:class:`Rule` (bounds, choices, an extra test, whether training needs the key).
:func:`parse_value` turns one YAML value into the field's type or raises :class:`BadValue`
saying what is allowed. Nothing here knows a particular key, so a mistake nobody listed (a bool
given as 'maybe', an int given as 1.5, an unknown registry name) is caught like the listed ones.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import Field, dataclass, field
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from minigpt4.common.config_error import nearest

RULE = "rule"
# YAML and ``--options`` give bools as bools; environment variables (``${oc.env:...}``) as text.
BOOL_WORDS = {"true": True, "false": False}
KIND_NAMES = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    tuple: "a list of names",
}


class BadValue(ValueError):
    """A value its field does not take; the message is what the field takes ("must be ...")."""


@dataclass(frozen=True)
class Rule:
    """What a field's values may be, beyond its type."""

    minimum: float | None = None  # inclusive lower bound
    above: float | None = None  # exclusive lower bound
    below: float | None = None  # exclusive upper bound
    # Allowed values, or a function giving them when they are only known later (a registry).
    choices: tuple[Any, ...] | Callable[[], Iterable[Any]] | None = None
    test: Callable[[Any], bool] | None = None  # an extra check of the converted value
    allowed: str = ""  # what is allowed, in words, where type and bounds do not say it
    required: bool = False  # training cannot start without it (no default exists)
    non_empty: bool = False  # for lists


def setting(default: Any = None, **rule: Any) -> Any:
    """A dataclass field: ``default`` when the key is absent (or null), ``rule`` for its values."""
    return field(default=default, metadata={RULE: Rule(**rule)})


def rule_of(spec: Field) -> Rule:
    return spec.metadata.get(RULE, Rule())


def base_kind(annotation: Any) -> type:
    """The type a value is converted to: ``int | None`` -> int, ``tuple[str, ...]`` -> tuple."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation


def plain(value: Any) -> Any:
    """OmegaConf lists and mappings as Python ones (for conversion and for messages)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def describe(kind: type, rule: Rule) -> str:
    """What a field takes, in words: ``a positive number``, ``one of: a, b`` ..."""
    if rule.allowed:
        return rule.allowed
    if rule.choices is not None:
        return "one of: " + ", ".join(str(c) for c in _choices(rule))
    noun = KIND_NAMES.get(kind, kind.__name__)
    if rule.above == 0 and rule.minimum is None and rule.below is None:
        return f"a positive {noun.split()[-1]}"
    if rule.minimum is not None and rule.below is not None:
        return f"{noun} in [{rule.minimum}, {rule.below})"
    bounds = [f">= {rule.minimum}"] if rule.minimum is not None else []
    bounds += [f"> {rule.above}"] if rule.above is not None else []
    bounds += [f"< {rule.below}"] if rule.below is not None else []
    if rule.non_empty:
        noun = "a non-empty " + noun.removeprefix("a ")
    return " ".join([noun, *bounds])


def _choices(rule: Rule) -> tuple[Any, ...]:
    choices = rule.choices() if callable(rule.choices) else rule.choices
    return tuple(choices or ())


def _to_bool(value: Any) -> bool | None:
    if isinstance(value, str) and value.lower() in BOOL_WORDS:
        return BOOL_WORDS[value.lower()]
    return value if isinstance(value, bool) else None


def _to_int(value: Any) -> int | None:
    if isinstance(value, str):
        return int(value)  # "1.5" and "abc" raise
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _to_float(value: Any) -> float | None:
    number = float(value) if isinstance(value, (str, int, float)) else None
    if not isinstance(value, bool) and number is not None and math.isfinite(number):
        return number
    return None


def _to_str(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. a job name or folder written as a number
    return None


def _to_tuple(value: Any) -> tuple | None:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


# Each returns the value as its kind, or None when it is not one.
_CONVERTERS = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, tuple: _to_tuple}


def _convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind``; raises ValueError/TypeError when it is not one."""
    converter = _CONVERTERS.get(kind)
    converted = converter(value) if converter else None
    if converted is None:
        raise TypeError(f"not {KIND_NAMES.get(kind, kind.__name__)}")
    return converted


def _within(value: Any, rule: Rule) -> bool:
    if rule.choices is not None and value not in _choices(rule):
        return False
    if rule.minimum is not None and value < rule.minimum:
        return False
    if rule.above is not None and value <= rule.above:
        return False
    if rule.below is not None and value >= rule.below:
        return False
    if rule.non_empty and not value:
        return False
    return rule.test is None or rule.test(value)


def parse_value(value: Any, annotation: Any, rule: Rule) -> Any:
    """``value`` converted to the field's type and checked against ``rule``, else BadValue."""
    kind = base_kind(annotation)
    try:
        converted = _convert(plain(value), kind)
        ok = _within(converted, rule)
    except (TypeError, ValueError):
        ok = False
    if ok:
        return converted
    message = f"must be {describe(kind, rule)}"
    if isinstance(value, str) and rule.choices is not None:
        message += "." + nearest(value, map(str, _choices(rule)))
    raise BadValue(message.rstrip("."))
