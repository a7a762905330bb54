"""Settings declared once: a config dataclass field carries its help text, its ``--help`` group
and any command-line hint in its metadata (:func:`setting`); :func:`add_arguments` makes the
argparse options from the fields (name, default, type, choices, help), :func:`from_args` reads
them back into keyword arguments for the dataclass. A new setting is one field. Config files are
read with :func:`load_yaml_text` (safe loader, ``1e-5`` a float, a key given twice an error).

The option for field ``max_grad_norm`` is ``--max-grad-norm`` (``--select-k`` for field ``k`` with
``prefix="select_"``; ``option="--keep-dtype"`` in the metadata names it outright). From the field's type:
``bool`` → a flag (``--x``; ``--x/--no-x`` when it defaults to true or ``negatable=True``),
``Literal[...]`` → choices, ``int``/``float``/``str`` → that type, ``X | None`` → ``X``,
``list[str]`` / ``tuple[str, ...]`` → one comma-separated value. Anything else needs ``type=`` in the metadata (or
``cli=False``: not a command-line option). Importable without torch, as ``--help`` must be.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Literal

from .errors import AmnesiaError


def setting(default: Any = dataclasses.MISSING, *, help: str | Callable[[], str], group: str | None = None,
            default_factory: Any = dataclasses.MISSING, cli: bool = True, **argparse_kwargs) -> Any:
    """A dataclass field with its help (a string, or a function giving one when ``--help`` is built),
    its ``--help`` group, and extra argparse keyword arguments (``type=``, ``metavar=``, ``negatable=True``)."""
    metadata = {"help": help, "group": group, "cli": cli, "argparse": argparse_kwargs}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def help_text(field: dataclasses.Field) -> str:
    """The field's help text (calling it when it is a function)."""
    text = field.metadata.get("help", "")
    return text() if callable(text) else text


def auto_or_number(text: str) -> str | float:
    """An argparse type: the word ``auto`` or a number."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or a number, got {text!r}") from None


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _unwrap_optional(hint):
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else hint
    return hint


def _is_str_sequence(hint) -> bool:
    """``list[str]`` or ``tuple[str, ...]``: one comma-separated value on the command line."""
    args = typing.get_args(hint)
    return (typing.get_origin(hint) is list and args == (str,)) or (typing.get_origin(hint) is tuple and args == (str, Ellipsis))


def _comma_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def option(field: dataclasses.Field, hint, default, prefix: str = "") -> tuple[list[str], dict]:
    """``(option strings, argparse keyword arguments)`` of one field (its destination ``prefix`` + name)."""
    extra = dict(field.metadata.get("argparse", {}))
    negatable = extra.pop("negatable", False)
    strings = [extra.pop("option")] if "option" in extra else [flag(prefix + field.name)]
    kwargs: dict[str, Any] = {"dest": prefix + field.name, "help": help_text(field).replace("%", "%%")}
    hint = _unwrap_optional(hint)
    if hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if (negatable or default) else "store_true"
        kwargs["default"] = default
    elif typing.get_origin(hint) is Literal:
        kwargs.update(default=default, choices=typing.get_args(hint))
    elif _is_str_sequence(hint):
        kwargs.update(default=",".join(default), type=str, metavar=field.name.upper())
    elif hint in (int, float, str):
        kwargs.update(default=default, type=hint)
    else:
        kwargs["default"] = default
    kwargs.update(extra)
    return strings, kwargs


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, titles: dict[str, str] | None = None,
                  exclude: tuple[str, ...] = (), defaults: Any = None, prefix: str = "",
                  groups: dict[str, argparse._ArgumentGroup] | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add an option per field of dataclass ``cls`` (defaults from ``defaults``, an instance, or the
    class's own; destinations ``prefix`` + the field's name), each in the argument group its
    metadata names (titled by ``titles``; ``groups`` from an earlier call are reused); return the
    groups by name so a command can add its own options to them."""
    hints = typing.get_type_hints(cls)
    defaults = defaults if defaults is not None else cls()
    groups = groups if groups is not None else {}
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.metadata.get("cli", True) or "help" not in field.metadata:
            continue
        name = field.metadata.get("group")
        target = parser
        if name is not None:
            if name not in groups:
                groups[name] = parser.add_argument_group((titles or {}).get(name, name))
            target = groups[name]
        strings, kwargs = option(field, hints[field.name], getattr(defaults, field.name), prefix)
        target.add_argument(*strings, **kwargs)
    return groups


def from_args(args: argparse.Namespace, cls: type, *, exclude: tuple[str, ...] = (), prefix: str = "") -> dict[str, Any]:
    """The keyword arguments of ``cls`` that :func:`add_arguments` put on ``args`` (comma lists split)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):
        if field.name in exclude or not field.metadata.get("cli", True) or not hasattr(args, prefix + field.name):
            continue
        value = getattr(args, prefix + field.name)
        hint = _unwrap_optional(hints[field.name])
        if _is_str_sequence(hint) and isinstance(value, str):
            value = _comma_list(value) if typing.get_origin(hint) is list else tuple(_comma_list(value))
        out[field.name] = value
    return out


def undeclared(cls: type) -> list[str]:
    """Fields of ``cls`` without a help text (a test keeps this empty for every config)."""
    return [f.name for f in dataclasses.fields(cls) if "help" not in f.metadata]


def yaml_loader():
    """A safe YAML loader that also reads ``1e-5`` as a float (YAML 1.1 needs ``1.0e-5``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            """A key given twice in one mapping is an error (PyYAML keeps the last without a word)."""
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one", key_node.start_mark)
                seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+][0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    return Loader


def load_yaml_text(text: str, where: str) -> Any:
    """Parse YAML with the safe loader; a syntax error names ``where`` and the line."""
    import yaml

    try:
        return yaml.load(text, Loader=yaml_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise AmnesiaError(f"{where}:{line} invalid YAML ({getattr(exc, 'problem', None) or exc})") from None


__all__ = ["add_arguments", "auto_or_number", "flag", "from_args", "help_text", "load_yaml_text", "option", "setting", "undeclared", "yaml_loader"]
