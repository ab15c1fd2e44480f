"""What an experiment is: a claim of the course, the paper's own number, a measurement at a
scale, and a verdict computed from the numbers measured, never written in advance.

An experiment's `run(ctx)` measures and returns an `Outcome`; its verdict comes from a pure
function of the numbers (each experiment's `decide`), so that a test can feed it made-up
numbers both ways and watch the verdict flip. Three verdicts, always "at this scale": a
claim that holds on 5,000 Fashion-MNIST images in a few minutes may not on ImageNet, and the
other way round.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOLDS = "holds at this scale"
DOES_NOT_HOLD = "does not hold at this scale"
INCONCLUSIVE = "inconclusive at this scale"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)
SCALES = ("quick", "full")


@dataclass
class Context:
    """How an experiment is run: its scale ('quick': this CPU, minutes; 'full': a GPU, the
    papers' sizes), its seeds and parallel jobs, where it writes, and where data is."""

    scale: str = "quick"
    seeds: int | None = None         # None: the experiment's own default for the scale
    jobs: int | None = None
    out_dir: Path = Path("experiments")
    root: str | None = None          # where named datasets are looked for
    device: str | None = None
    verbose: bool = True

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {self.scale!r}")
        if self.seeds is not None and self.seeds < 1:
            raise ValueError(f"seeds is a count of 1 or more, got {self.seeds}")
        self.out_dir = Path(self.out_dir)

    def say(self, line: str) -> None:
        if self.verbose:
            print(line, flush=True)


@dataclass
class Figure:
    """A plot of the page: inline SVG (archlab._plot.to_svg) and what it shows."""

    title: str
    svg: str
    caption: str = ""


@dataclass
class Outcome:
    """What an experiment measured and concluded."""

    verdict: str
    because: str                                    # the numbers that decided it, in words
    headers: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)   # what `decide` read, as JSON
    notes: list[str] = field(default_factory=list)
    seconds: float | None = None                   # set by registry.run_experiment

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"a verdict is one of {VERDICTS}, got {self.verdict!r}")


class Experiment(abc.ABC):
    """A claim made runnable. Subclasses set the class attributes and write `run`."""

    name: str = ""
    claim: str = ""                 # what the course says, in one sentence
    source: str = ""                # paper (arXiv id, figure or table) or the course's lecture
    paper: str = ""                 # the paper's own number
    trains: bool = False            # whether it trains networks (a study) or only computes

    @abc.abstractmethod
    def run(self, ctx: Context) -> Outcome:
        """Measure at `ctx.scale` and decide."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "claim": self.claim, "source": self.source,
                "paper": self.paper, "trains": self.trains}


__all__ = ["Context", "DOES_NOT_HOLD", "Experiment", "Figure", "HOLDS", "INCONCLUSIVE",
           "Outcome", "SCALES", "VERDICTS"]
