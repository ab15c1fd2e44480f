"""The Recipe's fields as command-line flags, and the flags back into a Recipe.

A Recipe field with a "help" in its metadata is a flag: --batch-size for batch_size, a
--x/--no-x switch for a bool, with the field's choices, nargs, metavar and action (--log
is repeated: action append). `archlab train`,
`lr-find` and `compare` build their recipe flags here, so that the help is written once,
beside the field it describes.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Iterable

from archlab.train import Recipe, parse_assignments, parse_cli

_FIELD_TYPES = typing.get_type_hints(Recipe)


def flag_fields() -> list[dataclasses.Field]:
    """The Recipe's fields that are flags, in the dataclass's order."""
    return [f for f in dataclasses.fields(Recipe) if "help" in f.metadata]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _value_type(hint: Any) -> type:
    """int for `int | None`, float for `tuple[float, float]`; str for what the command
    line writes as text and the recipe parses (the progressive schedule)."""
    parts = [a for a in typing.get_args(hint) or (hint,) if a is not type(None)]
    for simple in (bool, int, float, str):
        if simple in parts:
            return simple
    if parts and typing.get_origin(parts[0]) is tuple:
        return typing.get_args(parts[0])[0]
    return str


def add_recipe_flags(parser, only: Iterable[str] | None = None, skip: Iterable[str] = ()
                     ) -> None:
    """One flag per Recipe field (or per field in `only`), none for the fields in `skip`,
    on a parser or an argument group. Every flag defaults to None: the recipe's value
    stands unless the flag is given."""
    only, skip = (None if only is None else set(only)), set(skip)
    for f in flag_fields():
        if (only is not None and f.name not in only) or f.name in skip:
            continue
        kind = _value_type(_FIELD_TYPES[f.name])
        extra = {k: f.metadata[k] for k in ("choices", "nargs", "metavar", "action")
                 if k in f.metadata}
        if kind is bool:
            parser.add_argument(flag_name(f.name), dest=f.name, default=None,
                               action=argparse.BooleanOptionalAction, help=f.metadata["help"])
        else:
            parser.add_argument(flag_name(f.name), dest=f.name, type=kind, default=None,
                               help=f.metadata["help"], **extra)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """{field: value} of the recipe flags given on the command line (None: not given)."""
    return {f.name: getattr(args, f.name) for f in flag_fields()
            if getattr(args, f.name, None) is not None}


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    """--recipe (or the default Recipe), changed by the flags given, then by --set."""
    recipe = Recipe.load(args.recipe) if args.recipe else Recipe()
    changes = given_flags(args)
    if "progressive" in changes:
        changes["progressive"] = parse_cli(changes["progressive"])
    changes.update(parse_assignments(args.set))
    return recipe.replace(**changes) if changes else recipe
