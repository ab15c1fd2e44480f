"""The `archlab` command. Each subcommand parses its arguments, calls the API and prints.

One module per group of commands: models (models, info, convert), calc, bench, train
(train, lr-find, eval, predict), export, explain, study (compare, report), experiment;
recipe_flags turns the Recipe's fields into flags. Adding a subcommand: write
`cmd_NAME(args) -> int` and `_parser_NAME(sub)` in its group's module and call the parser
builder from that module's `add_commands`.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from archlab._version import __version__
from archlab.cli import bench, calc, experiment, explain, export, models, study, train

# The order `archlab --help` lists them in.
GROUPS = (models, calc, bench, train, export, explain, study, experiment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archlab",
        description="A laboratory for image-classification architectures: list, measure, "
                    "train, compare and look inside them.")
    parser.add_argument("--version", action="version", version=f"archlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (KeyError, ValueError, FileNotFoundError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"archlab {args.command}: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"archlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `archlab models | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
