"""`archlab experiment`: the course's claims, each measured and judged by its numbers."""
from __future__ import annotations

import textwrap

from archlab._text import format_table
from archlab.cli.options import add_command
from archlab.experiments import Context, list_experiments, run_all, run_experiment


def add_commands(sub) -> None:
    p = add_command(sub, "experiment", cmd_experiment)
    p.add_argument("name", help="an experiment (see `archlab experiment list`), 'all', or "
                                "'list'")
    p.add_argument("--scale", choices=("quick", "full"), default="quick",
                   help="quick: this CPU, minutes (the default); full: a GPU, the papers' sizes")
    p.add_argument("--seeds", type=int, metavar="N", help="how many seeds (or random draws)")
    p.add_argument("--jobs", type=int, metavar="N", help="runs trained side by side")
    p.add_argument("--out", default="experiments", help="where the pages go (default "
                                                         "experiments/)")
    p.add_argument("--data-root", help="folder holding the named dataset's files")
    p.add_argument("--device", help="cpu, cuda, ... (default: the recipe's auto)")


def cmd_experiment(args) -> int:
    """the course's claims as experiments, each with a verdict computed from its numbers

    `archlab experiment list` shows every experiment with its claim, its source and the
    paper's number; `archlab experiment NAME` runs one and writes its page (the claim, the
    paper's figure beside ours, the table, the plots, the verdict) under --out;
    `archlab experiment all` runs every one, resuming what is done, and writes one page,
    "The course, reproduced" (<out>/index.html), that gathers them."""
    if args.name == "list":
        rows = [(e.name, e.source, e.paper) for e in list_experiments()]
        print(format_table(rows, ("experiment", "source", "the paper's number"), "lll"))
        for e in list_experiments():
            print(textwrap.fill(f"{e.name}: {e.claim}", 100, subsequent_indent="  "))
        return 0
    ctx = Context(scale=args.scale, seeds=args.seeds, jobs=args.jobs, out_dir=args.out,
                  root=args.data_root, device=args.device)
    if args.name == "all":
        outcomes = run_all(ctx)
        print(format_table([(n, o.verdict, f"{o.seconds:.0f}") for n, o in outcomes.items()],
                           ("experiment", "verdict", "seconds"), "llr"))
        return 0
    run_experiment(args.name, ctx)
    return 0
