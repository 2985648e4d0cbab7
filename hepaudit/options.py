"""Typed validation of TOML tables into dataclasses.

One validator serves the audit config and every explainer's options: unknown keys and
wrong types are :class:`~hepaudit.errors.ConfigError` naming the key (with close
matches), and defaults come from the dataclass. Supported field types: bool, int, float,
str, Literal, ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, nested
dataclasses, and unions of these.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from hepaudit.errors import ConfigError, close_matches

T = TypeVar("T")


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if hint is type(None):
        return "nothing"
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(hint))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(hint) if a is not type(None))
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(hint)[0])}"
    if origin is dict:
        return f"a table of {_type_name(get_args(hint)[1])}"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _same_kind(value: Any, hint: Any) -> bool:
    """Whether ``value`` is a table for a table type, or a list for a list type."""
    if isinstance(value, dict):
        return dataclasses.is_dataclass(hint) or get_origin(hint) is dict
    if isinstance(value, (list, tuple)):
        return get_origin(hint) in (list, tuple)
    return False


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint``; return it converted (lists to tuples etc.)."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append((arg, exc))
        # a table (or list) that fails inside: report what is wrong within it, e.g. an unknown key
        same_kind = [exc for arg, exc in errors if _same_kind(value, arg)]
        if len(same_kind) == 1:
            raise same_kind[0]
        raise ConfigError(f"{key}: expected {_type_name(hint)}, found {_describe(value)}")
    if origin is Literal:
        if value in get_args(hint):
            return value
        raise ConfigError(f"{key}: expected {_type_name(hint)}, found {_describe(value)}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(hint)}, found {_describe(value)}")
        item = get_args(hint)[0]
        items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected {_type_name(hint)}, found {_describe(value)}")
        item = get_args(hint)[1]
        return {str(k): coerce(v, item, f"{key}.{k}") for k, v in value.items()}
    if hint in (dict, list):  # bare containers: checked by kind only (e.g. a reference table)
        if not isinstance(value, hint):
            raise ConfigError(f"{key}: expected {'a table' if hint is dict else 'a list'}, found {_describe(value)}")
        return value
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, found {_describe(value)}")
        return parse_table(hint, value, key)  # type: ignore[arg-type]
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - a programming error in an options class
        raise TypeError(f"unsupported option type {hint!r} for {key}")
    raise ConfigError(f"{key}: expected {_type_name(hint)}, found {_describe(value)}")


def parse_table(cls: type[T], table: dict[str, Any], where: str) -> T:
    """Build dataclass ``cls`` from a TOML table; ``where`` names the table in errors."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table, found {_describe(table)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in fields or key.startswith("_"):
            raise ConfigError(f"unknown key {where}.{key}{close_matches(key, fields)}")
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}")
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
        and f.init
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key {missing[0]!r}")
    try:
        return cls(**kwargs)
    except ValueError as exc:  # __post_init__ range checks
        raise ConfigError(f"{where}: {exc}") from None


def as_table(obj: Any) -> dict[str, Any]:
    """A dataclass as a plain dict for report.json (tuples to lists, paths to str)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        return str(v)
    return plain(obj)


__all__ = ["coerce", "parse_table", "as_table", "typing"]
