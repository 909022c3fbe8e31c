"""The command line's ViT-Split adapter flags, generated from ``AdapterConfig``'s dataclass fields.

Every ``AdapterConfig`` field ``name`` becomes ``--name`` (default ``None``: unset, so the stage-1
connector's, the preset's or the built-in value applies), with its type (a ``Literal`` becomes argparse
choices, ``list[int]`` a comma-separated string) and the help of its entry in ``AdapterConfig``'s
docstring. A field added to ``AdapterConfig`` is on the command line with no other change.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import field, fields, make_dataclass

from llava_vitsplit.adapter import AdapterConfig


def field_help(config_cls: type = AdapterConfig) -> dict[str, str]:
    """``{field: help}`` from the ``Attributes:`` section of ``config_cls``'s docstring."""
    helps: dict[str, str] = {}
    name = None
    section = (config_cls.__doc__ or "").split("Attributes:", 1)[-1]
    for line in section.splitlines():
        match = re.match(r"\s+(\w+): (.*)", line)
        if match and match.group(1) in {f.name for f in fields(config_cls)}:
            name = match.group(1)
            helps[name] = match.group(2).strip()
        elif name and line.strip():
            helps[name] += " " + line.strip()
    return helps


def _cli_type(annotation) -> object:
    """The argument type of one field: ``list[...]`` as a comma-separated string, ``X | None`` as ``X``."""
    if typing.get_origin(annotation) is list:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def adapter_arguments(config_cls: type = AdapterConfig) -> type:
    """A dataclass with one optional flag per field of ``config_cls`` (for ``HfArgumentParser``)."""
    hints, helps = typing.get_type_hints(config_cls), field_help(config_cls)
    spec = []
    for f in fields(config_cls):
        annotation = hints[f.name]
        text = helps.get(f.name, "")
        if typing.get_origin(annotation) is list:
            text += " (comma-separated)"
        spec.append((f.name, _cli_type(annotation) | None, field(default=None, metadata={"help": text})))
    return make_dataclass(f"{config_cls.__name__}Arguments", spec)


def adapter_overrides(args, config_cls: type = AdapterConfig) -> dict:
    """The adapter fields ``args`` sets (a list field parsed from its comma-separated string)."""
    hints = typing.get_type_hints(config_cls)
    out = {}
    for f in fields(config_cls):
        value = getattr(args, f.name, None)
        if value is None:
            continue
        if typing.get_origin(hints[f.name]) is list:
            value = [int(v) for v in str(value).split(",") if v.strip()]
        out[f.name] = value
    return out


AdapterArguments = adapter_arguments()
