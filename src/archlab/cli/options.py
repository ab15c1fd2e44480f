"""The options several commands share, each defined once: its type, its default and the
help a user reads. A command names the ones it takes (`add_options(p, "--json", ...)`) and
may give its own default (predict's --batch-size is 64, eval's 256)."""
from __future__ import annotations

import inspect
from typing import Any

OPTIONS: dict[str, dict[str, Any]] = {
    "checkpoint": dict(help="run directory, model.safetensors or best.safetensors"),
    "--data-root": dict(help="folder holding the named dataset's files"),
    "--split": dict(help="train, test or all (default: test where there is one)"),
    "--batch-size": dict(type=int, default=256),
    "--device": dict(default="auto", help="auto, cpu, cuda, cuda:1 or mps"),
    "--workers": dict(type=int, help="DataLoader workers for image files"),
    "--strict": dict(action="store_true", help="stop at the first undecodable file"),
    "--json": dict(action="store_true", help="machine-readable output"),
    "--top-k": dict(type=int, default=5),
    "--img-size": dict(type=int, help="input side in pixels (default: the card's)"),
    "--in-chans": dict(type=int, default=3),
    "--num-classes": dict(type=int, default=1000),
    "--small-input": dict(action="store_true", help="the 28-64 px variant"),
    "--precision": dict(choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                        help="autocast precision; auto: the fastest measured, bf16 only "
                             "where the device has bf16 matrix units"),
}


def add_options(parser, *names: str, **changes: dict[str, Any]) -> None:
    """Add the shared options `names` to `parser`; `changes` maps an option's dest (e.g.
    batch_size) to what this command sets differently (its default, its help)."""
    for name in names:
        dest = name.lstrip("-").replace("-", "_")
        parser.add_argument(name, **{**OPTIONS[name], **changes.get(dest, {})})


def add_command(sub, name: str, func, **defaults: Any):
    """The subcommand `name` that runs `func`: its one-line help is the first paragraph of
    `func`'s docstring and its description the rest, so each command is described once,
    where it is written."""
    summary, _, rest = inspect.cleandoc(func.__doc__ or "").partition("\n\n")
    parser = sub.add_parser(name, help=" ".join(summary.split()),
                            description=" ".join(rest.split()) or None)
    parser.set_defaults(func=func, **defaults)
    return parser
