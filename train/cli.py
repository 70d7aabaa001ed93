"""Command lines derived from config dataclasses: every field is a flag, its default written once.

    @dataclass
    class Config:
        data: str = opt(help="dataset directory")                  # required: no default
        lr: float = opt(6e-4, help="peak learning rate")
        moe_layers: list[int] | None = opt(None, help="...", type=int_list)
        compare: list[str] = opt([], help="...", nargs="+")

    parser = build_parser(Config, prog="...", description="...")
    cfg = from_namespace(Config, parser.parse_args(argv))

The flag is ``--`` + the field name with ``-`` for ``_`` (``positional=True``: the name
itself). ``bool`` fields are ``store_true`` flags; ``X | None`` fields take an X; list fields
take `nargs` or ``action="append"``. Help shows "(default: X)" where the default is a value.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, field, fields
from typing import Any

_ARG_KEYS = ("choices", "nargs", "action", "metavar", "type")


def opt(default: Any = MISSING, *, help: str, positional: bool = False,
        **meta: Any) -> Any:
    """A dataclass field that is also a command-line flag. `meta` keys: choices, nargs, action,
    metavar, type (a converter of the string) and any the caller reads (e.g. resume_safe)."""
    md = {"help": help, "positional": positional, **meta}
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata=md)
    return field(default=default, metadata=md)


def default_of(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only for flags whose default is a value (not None, False or [])."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, []) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action) or ""


def _base_type(hint: Any) -> Any:
    """X for ``X | None``; the hint itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def add_fields(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field of the dataclass `cls` that has help metadata."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if "help" not in f.metadata:
            continue
        md = f.metadata
        kw: dict[str, Any] = {k: md[k] for k in _ARG_KEYS if k in md}
        kw["help"] = md["help"]
        base = _base_type(hints[f.name])
        default = default_of(f)
        if base is bool:
            kw.setdefault("action", "store_true")
        elif typing.get_origin(base) is list:
            if "type" not in kw:  # else the converter returns the whole list (comma_list)
                kw["type"] = typing.get_args(base)[0]
                if "nargs" not in kw and "action" not in kw:
                    kw["nargs"] = "+"
        else:
            kw.setdefault("type", base)
        if md["positional"]:
            parser.add_argument(f.name, **kw)
            continue
        if default is MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kw)


def build_parser(cls: type, *, prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=HelpFormatter)
    add_fields(parser, cls)
    return parser


def from_namespace(cls: type, ns: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)})


def comma_list(convert: Callable[[str], Any], example: str) -> Callable[[str], list[Any]]:
    """A converter of ``"a,b,c"`` into a list (for ``type=``), with an example in its error."""

    def parse(text: str) -> list[Any]:
        try:
            return [convert(x) for x in text.split(",") if x.strip()]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma list, e.g. {example}") from e

    parse.__name__ = "comma list"
    return parse
