"""Turn plain mappings (YAML, ``key=value`` overrides) into typed config dataclasses.

One generic function, :func:`from_mapping`, checks a mapping against a dataclass: unknown keys
are an error naming the key and listing the valid ones (with a "did you mean" hint), values are
checked and coerced against the field's annotation (``int``, ``float``, ``bool``, ``str``,
``Literal[...]``, ``list[int]``, ``X | None``, nested dataclasses), and the dataclass's own
``check()`` runs last when it has one. Every message starts with the dotted path of the field,
so a user knows exactly which line of which file to fix.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Mapping, get_args, get_origin, get_type_hints

from tracing.errors import AmnesiaError, did_you_mean
from tracing.settings import load_yaml_text


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        args = get_args(tp)
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int → float etc.)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except AmnesiaError as exc:
                errors.append(exc)
        raise AmnesiaError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise AmnesiaError(f"{where}: expected one of {', '.join(repr(a) for a in get_args(tp))}, got {value!r}")
    if origin in (list, tuple):
        (item,) = get_args(tp)[:1] or (Any,)
        if not isinstance(value, (list, tuple)):
            raise AmnesiaError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise AmnesiaError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return from_mapping(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise AmnesiaError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise AmnesiaError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise AmnesiaError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise AmnesiaError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise AmnesiaError(f"{where}: expected {_type_name(tp)}, got {value!r}")


def unknown_key_error(key: str, valid: list[str], where: str) -> AmnesiaError:
    hint = did_you_mean(key, valid, quote=True)
    prefix = f"{where}: " if where else ""
    return AmnesiaError(f"{prefix}unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")


def from_mapping(cls: type, data: Any, where: str = ""):
    """Build dataclass ``cls`` from ``data`` (a mapping), validating keys, types and ranges."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise AmnesiaError(f"{where or cls.__name__}: expected a mapping of keys, got {data!r}")
    hints = get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise unknown_key_error(str(key), fields, where)
        kwargs[key] = coerce(value, hints[key], f"{where}.{key}" if where else key)
    try:
        obj = cls(**kwargs)
    except AmnesiaError as exc:
        raise AmnesiaError(f"{where}: {exc}" if where else str(exc)) from None
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            check()
        except AmnesiaError as exc:
            raise AmnesiaError(f"{where}: {exc}" if where else str(exc)) from None
    return obj


def to_mapping(obj: Any) -> Any:
    """A dataclass (recursively) as plain dicts/lists, for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_mapping(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.name.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_mapping(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``unlearn.lr=1e-5`` → (["unlearn", "lr"], 1e-05); the value is read as YAML (safe loader)."""
    if "=" not in text:
        raise AmnesiaError(f"override {text!r}: expected dotted key=value, e.g. unlearn.lr=1e-5")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise AmnesiaError(f"override {text!r}: expected dotted key=value, e.g. unlearn.lr=1e-5")
    try:
        value = load_yaml_text(raw, f"override {key}") if raw.strip() else ""
    except AmnesiaError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each dotted ``key=value`` in a nested mapping (a copy); intermediate mappings are created."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise AmnesiaError(f"override {text!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return out
