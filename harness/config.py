"""Typed parsing of plain YAML/JSON data into frozen dataclasses.

Every config in prunebench (suites, and each plugin's ``Config``) is a frozen
dataclass.  :func:`parse` checks a mapping against it before anything runs and
raises :class:`ConfigError` whose message reads ``dotted.key: expected X, got Y``;
the suite loader prefixes the file name.  Unknown keys are rejected.

Field types say what is allowed, so no config validates by hand:

- ``int``, ``float``, ``str``, ``bool``, ``Literal[...]`` (choices), ``X | None``,
  ``tuple[X, ...]`` (a list of any length), ``tuple[X, Y]`` (exactly two, per
  position), ``Mapping[str, X]`` and nested config dataclasses;
- ``Annotated[T, ...]`` with the constraint markers below, e.g.
  ``Annotated[int, Ge(1)]`` ("an integer >= 1"), ``Annotated[float, Ge(0), Lt(1)]``
  ("a number in [0, 1)"), ``Annotated[tuple[str, ...], MinLen(1)]``;
- a plain ``float`` refuses NaN and +-inf (``AllowInf()`` lets infinities through;
  NaN is never a valid setting).

A field with ``metadata={"internal": True}`` is set by code, never read from a
file: :func:`parse` refuses it as an unknown key.

A config dataclass that also derives from :class:`Validated` is held to its field
types when built in Python too (``MagnitudeConfig(allocation="globl")`` raises
``allocation: expected one of 'global', 'uniform', got 'globl'``).  Rules that
relate several fields stay in ``__post_init__`` (after ``super().__post_init__()``):
raise ``ConfigError(field, "expected X, got Y")`` naming the field at fault, or a
plain ``ValueError("expected X, got Y")`` for the whole config; :func:`parse` puts
the config's dotted key in front.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Collection
from typing import Annotated, Any, Literal, Mapping, Union

__all__ = [
    "ConfigError",
    "parse",
    "to_plain",
    "describe_type",
    "describe_value",
    "validate",
    "Validated",
    "Ge",
    "Gt",
    "Le",
    "Lt",
    "Between",
    "MinLen",
    "Finite",
    "AllowInf",
    "OneOf",
    "Satisfies",
    "PositiveInt",
    "NonNegativeInt",
    "PositiveFloat",
    "NonNegativeFloat",
]


class ConfigError(ValueError):
    """A config value does not match its schema; ``key`` is the dotted path."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key or '<root>'}: {message}")


# ------------------------------------------------------------------ constraint markers
# Used as ``Annotated[T, marker, ...]``; each says how it checks a value and how the
# "expected ..." text names it.


@dataclasses.dataclass(frozen=True)
class Ge:
    """value >= bound"""

    bound: Any

    def ok(self, value: Any) -> bool:
        return value >= self.bound


@dataclasses.dataclass(frozen=True)
class Gt:
    """value > bound"""

    bound: Any

    def ok(self, value: Any) -> bool:
        return value > self.bound


@dataclasses.dataclass(frozen=True)
class Le:
    """value <= bound"""

    bound: Any

    def ok(self, value: Any) -> bool:
        return value <= self.bound


@dataclasses.dataclass(frozen=True)
class Lt:
    """value < bound"""

    bound: Any

    def ok(self, value: Any) -> bool:
        return value < self.bound


@dataclasses.dataclass(frozen=True)
class Between:
    """lo <= value <= hi (for half-open ranges combine Ge/Gt with Le/Lt)."""

    lo: Any
    hi: Any

    def ok(self, value: Any) -> bool:
        return self.lo <= value <= self.hi


@dataclasses.dataclass(frozen=True)
class MinLen:
    """A list (or string) with at least ``n`` items; ``MinLen(1)`` reads "non-empty"."""

    n: int

    def ok(self, value: Any) -> bool:
        return len(value) >= self.n


@dataclasses.dataclass(frozen=True)
class Finite:
    """Refuses NaN and +-inf.  Plain ``float`` fields do so already; this marker
    only spells "finite" out in the message."""

    def ok(self, value: Any) -> bool:
        return not isinstance(value, float) or math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class AllowInf:
    """Lets a float field take +-inf (never NaN)."""

    def ok(self, value: Any) -> bool:
        return True


@dataclasses.dataclass(frozen=True, eq=False)  # hashable even over a live dict
class OneOf:
    """Membership in a collection looked up at check time (e.g. a registry dict
    that plugins extend); for a fixed set of choices use ``Literal``."""

    choices: Collection

    def ok(self, value: Any) -> bool:
        try:
            return value in self.choices
        except TypeError:  # unhashable value against a dict / set
            return False

    def describe(self, plural: bool) -> str:
        text = "one of " + ", ".join(repr(c) for c in self.choices)
        return f"items, each {text}" if plural else text


@dataclasses.dataclass(frozen=True)
class Satisfies:
    """``check(value)`` returning False or raising ValueError/TypeError refuses the
    value; ``expected`` (and ``plural``) name what is allowed in the message."""

    check: Callable[[Any], Any]
    expected: str
    plural: str | None = None

    def ok(self, value: Any) -> bool:
        try:
            return self.check(value) is not False
        except (ValueError, TypeError):
            return False

    def describe(self, plural: bool) -> str:
        if not plural:
            return self.expected
        return self.plural or f"items, each {self.expected}"


PositiveInt = Annotated[int, Ge(1)]
NonNegativeInt = Annotated[int, Ge(0)]
PositiveFloat = Annotated[float, Gt(0)]
NonNegativeFloat = Annotated[float, Ge(0)]


# ------------------------------------------------------------------ describing


def describe_type(tp: Any) -> str:
    """What ``tp`` accepts, as the "expected ..." text of an error."""
    return _describe(tp)


_NOUNS = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    bool: ("true or false", "true/false values"),
}


def _is_fixed_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and bool(args) and args[-1] is not Ellipsis


def _describe(tp: Any, plural: bool = False, finite: bool = False) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return _describe_annotated(tp, plural, finite)
    if tp is Any:
        return "any values" if plural else "any value"
    if origin is Literal:
        text = "one of " + ", ".join(repr(a) for a in args)
        return f"items, each {text}" if plural else text
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        inner = " or ".join(_describe(a, finite=finite) for a in non_none)
        text = inner + (" or null" if len(non_none) < len(args) else "")
        return f"items, each {text}" if plural else text
    if _is_fixed_tuple(tp):
        if len(args) == 1:
            inner = f"1 item, {_describe(args[0], finite=finite)}"
        elif all(a == args[0] for a in args):
            inner = f"{len(args)} {_describe(args[0], plural=True, finite=finite)}"
        else:
            inner = "(" + ", ".join(_describe(a, finite=finite) for a in args) + ")"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        inner = _describe(args[0], plural=True, finite=finite) if args else "any values"
        return f"lists of {inner}" if plural else f"a list of {inner}"
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        inner = _describe(args[1], plural=True, finite=finite) if len(args) == 2 else "any values"
        return f"mappings of {inner}" if plural else f"a mapping of {inner}"
    if dataclasses.is_dataclass(tp):
        keys = ", ".join(f.name for f in dataclasses.fields(tp) if not f.metadata.get("internal"))
        return f"mappings with keys {keys}" if plural else f"a mapping with keys {keys}"
    if tp is float and finite:
        return "finite numbers" if plural else "a finite number"
    if tp in _NOUNS:
        return _NOUNS[tp][plural]
    name = getattr(tp, "__name__", str(tp))
    return f"{name} values" if plural else name


def _with_adjective(desc: str, adjective: str, plural: bool) -> str:
    if not plural:
        for article in ("a ", "an "):
            if desc.startswith(article):
                new = "an" if adjective[0] in "aeiou" else "a"
                return f"{new} {adjective} {desc[len(article):]}"
    return f"{adjective} {desc}"


def _num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return repr(x)


def _describe_annotated(tp: Any, plural: bool, finite: bool) -> str:
    base, meta = tp.__origin__, tp.__metadata__
    for m in meta:
        if isinstance(m, (OneOf, Satisfies)):
            return m.describe(plural)
    if any(isinstance(m, AllowInf) for m in meta):
        finite = False
    else:
        finite = finite or any(isinstance(m, Finite) for m in meta)
    desc = _describe(base, plural, finite)
    lo = hi = None  # (bound, inclusive)
    for m in meta:
        if isinstance(m, Ge):
            lo = (m.bound, True)
        elif isinstance(m, Gt):
            lo = (m.bound, False)
        elif isinstance(m, Le):
            hi = (m.bound, True)
        elif isinstance(m, Lt):
            hi = (m.bound, False)
        elif isinstance(m, Between):
            lo, hi = (m.lo, True), (m.hi, True)
        elif isinstance(m, MinLen):
            if m.n == 1:
                desc = _with_adjective(desc, "non-empty", plural)
            else:
                desc += f" of at least {m.n} characters" if base is str else f" with at least {m.n} items"
        elif isinstance(m, AllowInf):
            desc += " (or inf)"
    if lo and hi:
        if base is int and lo[1] and hi[1]:
            desc += f" in {_num(lo[0])}..{_num(hi[0])}"
        else:
            desc += f" in {'[' if lo[1] else '('}{_num(lo[0])}, {_num(hi[0])}{']' if hi[1] else ')'}"
    elif lo:
        desc += f" {'>=' if lo[1] else '>'} {_num(lo[0])}"
    elif hi:
        desc += f" {'<=' if hi[1] else '<'} {_num(hi[0])}"
    return desc


def describe_value(value: Any) -> str:
    """A value as the "got ..." text of an error (lists shown, long text cut)."""
    if isinstance(value, Mapping):
        return "a mapping"
    text = repr(list(value)) if isinstance(value, (list, tuple)) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_got = describe_value


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _nonfinite(value: Any) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _fail(tp: Any, value: Any, key: str) -> ConfigError:
    return ConfigError(key, f"expected {_describe(tp, finite=_nonfinite(value))}, got {_got(value)}")


# ------------------------------------------------------------------ parsing


def parse(tp: Any, value: Any, key: str = "") -> Any:
    """Convert ``value`` (plain data) to ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return _parse_annotated(tp, value, key)
    if tp is Any:
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise _fail(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return parse(option, value, key)
            except ConfigError as err:
                errors.append(err)
        # A single non-None option gives the more precise nested message.
        if len([a for a in args if a is not type(None)]) == 1 and errors and errors[0].key != key:
            raise errors[0]
        raise _fail(tp, value, key)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _fail(tp, value, key)
        return _parse_dataclass(tp, value, key)
    if _is_fixed_tuple(tp):
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise _fail(tp, value, key)
        out = []
        for i, (item_tp, item) in enumerate(zip(args, value)):
            try:
                out.append(parse(item_tp, item, _join(key, i)))
            except ConfigError as err:
                if err.key == _join(key, i):  # a plain item: the whole list reads better
                    raise _fail(tp, value, key) from None
                raise
        return tuple(out)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(tp, value, key)
        inner = args[0] if args else Any
        return tuple(parse(inner, item, _join(key, i)) for i, item in enumerate(value))
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _fail(tp, value, key)
        kt, vt = args if len(args) == 2 else (Any, Any)
        out = {}
        for k, v in value.items():
            try:
                k2 = parse(kt, k, _join(key, k))
            except ConfigError:
                raise ConfigError(_join(key, k), f"expected a key that is {_describe(kt)}, got {_got(k)}") from None
            out[k2] = parse(vt, v, _join(key, k))
        return types.MappingProxyType(out)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(tp, value, key)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _fail(tp, value, key)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _fail(tp, value, key)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(tp, value, key)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise _fail(tp, value, key)


def _parse_annotated(tp: Any, value: Any, key: str) -> Any:
    base, meta = tp.__origin__, tp.__metadata__
    if (
        any(isinstance(m, AllowInf) for m in meta)
        and isinstance(value, float) and math.isinf(value)
        and typing.get_origin(base) is not Annotated
    ):
        out = value
    else:
        try:
            out = parse(base, value, key)
        except ConfigError as err:
            if err.key == key:  # this value, not something nested: name the whole constraint
                raise _fail(tp, value, key) from None
            raise
    for m in meta:
        check = getattr(m, "ok", None)
        if check is not None and not check(out):
            raise _fail(tp, value, key)
    return out


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls, include_extras=True)
    return hints


def _parse_dataclass(cls: type, data: Mapping, key: str) -> Any:
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(str(name), list(fields), n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise ConfigError(
                _join(key, name),
                f"unknown key (expected one of {', '.join(sorted(fields))}).{hint}",
            )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = parse(hints[name], data[name], _join(key, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(_join(key, name), f"missing required key (expected {describe_type(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError as err:  # a __post_init__ rule naming the field at fault
        raise ConfigError(_join(key, err.key) if err.key else key, err.message) from None
    except (ValueError, TypeError) as err:  # __post_init__ checks
        raise ConfigError(key, str(err)) from None


def validate(obj: Any) -> None:
    """Check every init field of the dataclass instance ``obj`` against its type,
    as :func:`parse` would; raises ConfigError keyed by the field name.  A list
    is replaced by the tuple parse makes of it (configs stay hashable)."""
    hints = _hints(type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        parsed = parse(hints[f.name], value, f.name)
        if isinstance(value, list):
            object.__setattr__(obj, f.name, parsed)


class Validated:
    """Mixin for config dataclasses: built in Python, a config is checked against
    its field types like one parsed from a suite.  Subclasses with cross-field
    rules call ``super().__post_init__()`` first."""

    def __post_init__(self) -> None:
        validate(self)


def to_plain(value: Any) -> Any:
    """Dataclasses, mapping proxies and tuples back to JSON-friendly data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
