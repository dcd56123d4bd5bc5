"""Typed parsing of plain YAML/JSON data into frozen dataclasses.

Every config in prunebench (suites, and each plugin's ``Config``) is a frozen
dataclass.  :func:`parse` checks a mapping against it before anything runs and
raises :class:`ConfigError` whose message reads ``dotted.key: expected X, got Y``;
the suite loader prefixes the file name.  Unknown keys are rejected.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Mapping, Union

__all__ = ["ConfigError", "parse", "to_plain", "describe_type"]


class ConfigError(ValueError):
    """A config value does not match its schema; ``key`` is the dotted path."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key or '<root>'}: {message}")


def describe_type(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return "any value"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        inner = " or ".join(describe_type(a) for a in non_none)
        return inner + (" or null" if len(non_none) < len(args) else "")
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        inner = describe_type(args[0]) if args else "any value"
        return f"a list of {inner}"
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        inner = describe_type(args[1]) if len(args) == 2 else "any value"
        return f"a mapping of {inner}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    if tp is float:
        return "a number"
    if tp is int:
        return "an integer"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    return getattr(tp, "__name__", str(tp))


def _got(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def parse(tp: Any, value: Any, key: str = "") -> Any:
    """Convert ``value`` (plain data) to ``tp``; raise ConfigError naming ``key``."""
    fail = ConfigError(key, f"expected {describe_type(tp)}, got {_got(value)}")
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise fail
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
        if len([a for a in args if a is not type(None)]) == 1 and errors:
            raise errors[0]
        raise fail
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise fail
        return _parse_dataclass(tp, value, key)
    if origin in (list, tuple, collections.abc.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise fail
        inner = args[0] if args else Any
        return tuple(parse(inner, item, _join(key, i)) for i, item in enumerate(value))
    if origin in (dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise fail
        kt, vt = args if len(args) == 2 else (Any, Any)
        out = {}
        for k, v in value.items():
            out[parse(kt, k, key)] = parse(vt, v, _join(key, k))
        return types.MappingProxyType(out)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail
    if tp is str:
        if isinstance(value, str):
            return value
        raise fail
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise fail


def _parse_dataclass(cls: type, data: Mapping, key: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
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
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:  # __post_init__ checks
        raise ConfigError(key, str(err)) from None


def to_plain(value: Any) -> Any:
    """Dataclasses, mapping proxies and tuples back to JSON-friendly data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
