"""Fashion-MNIST time-to-accuracy on this machine.

For each wall-time budget (default 10 and 30 minutes) it trains the recipe with that
`budget_minutes` (train/budget.py: the one-cycle schedule laid over the wall time, so that
the run ends its schedule when the budget ends however the machine's speed drifts), and
evaluates the 10,000 test images after every epoch, off the run's clock. It reports the test
accuracy at the end of each budget, the time at which the test accuracy first reached each
target (90% to 94.5%) along the run, the training throughput, the share of the step time
spent in the data pipeline, and the memory the training images take. `--tta flip` also
reports every evaluation with the mirror image's prediction averaged in (test-time
augmentation: twice the inference, none of the training).

A recipe is chosen with `--holdout`: the runs are then evaluated on the recipe's validation
split (a stratified tenth of the training images, never trained on) and the test images are
not loaded at all; the chosen recipe's test figure is then measured once, without it, and
trained on all 60,000 training images (val_fraction 0, unless `--set` gives one).

The recipe's speed settings left open (precision auto) are chosen as `archlab train` chooses
them, by measurement (analysis/speed.py); so that a figure means something on another
machine, the script first times the chosen settings against fp32 eager (contiguous, no
autocast) interleaved and prints the ratio, and `--compare-fp32` trains the first run again
in fp32 eager and tests whether the test top-1 differs (paired bootstrap interval and
McNemar's test on the 10,000 test images).

The clock counts what a user waits for in `archlab train`: the choice of settings, the
training steps, the data pipeline and the per-epoch validation; the benchmark's own test
evaluations and its speed ratio are excluded. (Before budget_minutes, each run was sized
in epochs by a calibration epoch just before it, and overran or underran its budget by up
to 12% as the machine's speed drifted: benchmarks/results/time_to_accuracy_10min_*.json.)
The load average is recorded before and after: on a machine shared with other jobs the
times are pessimistic, so re-run it on a quiet machine for the README.

    python benchmarks/time_to_accuracy.py                       # the shipped recipe, 10 and 30 min
    python benchmarks/time_to_accuracy.py --budgets 5 --threads 1
    python benchmarks/time_to_accuracy.py --epochs 4,12           # fixed epochs, no budget
    python benchmarks/time_to_accuracy.py --recipe my.yaml --set batch_size=512
    python benchmarks/time_to_accuracy.py --budgets 10 --tta flip          # the README's
    python benchmarks/time_to_accuracy.py --recipe fashion-mnist-long --budgets 30 --tta flip
    python benchmarks/time_to_accuracy.py --epochs 14 --tta flip --compare-fp32   # auto = fp32?
    python benchmarks/time_to_accuracy.py --budgets 10 --holdout --set augment=none  # choosing
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from archlab.analysis.speed import Settings, cpu_name, make_step
from archlab.analysis.timing import interleaved, ratio_interval
from archlab.data import load_dataset
from archlab.study.stats import compare_accuracy
from archlab.train import Recipe, Trainer, evaluate_tta

TARGETS = (0.90, 0.92, 0.93, 0.935, 0.94, 0.945)


def evaluate(trainer: Trainer, data, tta: list[str]) -> tuple[float, float | None, np.ndarray]:
    """(top-1, top-1 with the `tta` views or None, per image: was the TTA prediction (else
    the plain one) right?) of the trainer's current model on `data`."""
    plain, views = evaluate_tta(trainer.eval_model, trainer.preprocess.as_dict(), data, tta,
                                trainer.device, precision=trainer.settings.precision)
    final = views or plain
    correct = (final.predictions == final.targets).numpy()
    return plain.top1, views.top1 if views else None, correct


class Curve:
    """After every epoch: the wall time so far (the run's budget clock, or the time since
    `start`; without these evaluations) and the accuracy on `data` (the test images; None:
    the run's validation split), plain and with `tta`. `top1` is the figure reported: with
    TTA when it is on."""

    def __init__(self, data, start: float, tta: list[str]) -> None:
        self.data, self.start, self.tta, self.excluded, self.rows = data, start, tta, 0.0, []
        self.correct: np.ndarray | None = None   # per image, after the latest epoch

    def wall(self, trainer) -> float:
        if trainer.budget is not None:
            return trainer.budget.elapsed()
        return time.perf_counter() - self.start - self.excluded

    def on_epoch_end(self, trainer, row) -> None:
        wall = self.wall(trainer)
        t0 = time.perf_counter()
        data = self.data if self.data is not None else trainer.val_data
        with trainer.off_the_clock():
            plain, views, self.correct = evaluate(trainer, data, self.tta)
        self.excluded += time.perf_counter() - t0
        self.rows.append({"epoch": row["epoch"], "wall_s": wall,
                          "top1": views if views is not None else plain, "plain_top1": plain,
                          "tta_top1": views, "images_per_s": row["images_per_s"],
                          "data_frac": row["data_frac"]})
        split = "test" if self.data is not None else "validation"
        print(f"  epoch {row['epoch']}: {wall:6.0f} s  {split} top-1 {plain:.2%}"
              + (f", with {'+'.join(self.tta)} {views:.2%}" if views is not None else ""),
              flush=True)


def speed_ratio(trainer: Trainer) -> dict:
    """The trainer's chosen settings against fp32 eager, one training step each in turn
    on a copy of its model: the ratio of their step times with its 95% interval."""
    chosen = trainer.settings
    r, size = trainer.recipe, trainer.image_size
    steps = [make_step(copy.deepcopy(trainer.model), s, "train", r.batch_size, size,
                       trainer.device, trainer.preprocess.in_chans, trainer.data.num_classes)
             for s in (chosen, Settings())]
    fast, plain = interleaved(steps, trainer.device, rounds=7, round_s=1.0)
    ratio, low, high = ratio_interval(fast, plain)
    print(f"speed: {trainer.speed.describe()}\n  {chosen.label()} against fp32 eager: "
          f"{ratio:.2f}x [{low:.2f}, {high:.2f}] per training step", flush=True)
    return {"settings": chosen.label(), "choice": trainer.speed.as_dict(), "ratio": ratio,
            "ratio_low": low, "ratio_high": high}


def run(recipe: Recipe, train, test, epochs: int | None, minutes: float | None,
        tta: list[str], ratio: bool = False) -> dict:
    """One run of `epochs`, or of `minutes` with the recipe's epochs as the schedule's shape,
    evaluated on `test` (None: the validation split) after each epoch."""
    print(f"{epochs} epochs:" if epochs else f"{minutes:g} minutes:", flush=True)
    start = time.perf_counter()
    curve = Curve(test, start, tta)
    run_recipe = recipe.replace(epochs=epochs or recipe.epochs, budget_minutes=minutes)
    trainer = Trainer(recipe.model, train, run_recipe, test_data=None, callbacks=[curve],
                      verbose=False)
    speed = None
    if ratio:                   # measured outside the run's clock
        t0 = time.perf_counter()
        with trainer.off_the_clock():
            speed = speed_ratio(trainer)
        curve.excluded += time.perf_counter() - t0
    result = trainer.run()
    wall = curve.wall(trainer)
    last = curve.rows[-1]
    reached = {f"{t:.3f}": next((r["wall_s"] for r in curve.rows if r["top1"] >= t), None)
               for t in TARGETS}
    steady = curve.rows[1:] or curve.rows
    return {"budget_min": minutes, "epochs": len(result.history), "steps": trainer.step,
            "wall_s": wall,
            "evaluated_on": "test" if test is not None else "validation",
            "top1": last["top1"], "plain_top1": last["plain_top1"], "tta": tta,
            "tta_top1": last["tta_top1"], "reached_s": reached, "curve": curve.rows,
            "images_per_s": sum(r["images_per_s"] for r in steady) / len(steady),
            "data_frac": sum(r["data_frac"] for r in steady) / len(steady),
            "speed": trainer.speed.as_dict(), "speed_ratio": speed, "history": result.history,
            "_correct": curve.correct}


def compare_fp32(auto: dict, plain: dict) -> dict:
    """The same epochs in the chosen settings and in fp32 eager: the difference of test
    top-1 with its paired 95% bootstrap interval and McNemar's exact p-value, and whether
    they are the same within it (the interval holds 0)."""
    d = compare_accuracy(auto["_correct"], plain["_correct"])
    same = d.ci.low <= 0.0 <= d.ci.high
    line = (f"{auto['speed']['precision']} (chosen) against fp32 eager, {auto['epochs']} "
            f"epochs: {auto['top1']:.2%} vs {plain['top1']:.2%}, difference "
            f"{d.delta:+.2%} [{d.ci.low:+.2%}, {d.ci.high:+.2%}], McNemar p = {d.p_value:.3f}: "
            + ("the same within the 95% interval" if same else "different"))
    return {"delta": d.delta, "low": d.ci.low, "high": d.ci.high, "p_value": d.p_value,
            "same": same, "line": line,
            "wall_s": {"chosen": auto["wall_s"], "fp32_eager": plain["wall_s"]}}


def print_summary(results: list[dict], comparison: dict | None) -> None:
    """The runs' table, when each reached each target, and the fp32 comparison."""
    def label(r: dict) -> str:
        return (f"{r['budget_min']:g} min" if r["budget_min"] else "-") + f" ({r['epochs']} ep.)"

    print()
    split = results[0]["evaluated_on"]
    tta = " with " + "+".join(results[0]["tta"]) if results[0]["tta"] else ""
    print(f"| budget (epochs) | wall time | {split} top-1 | {split} top-1{tta or ' (plain)'} "
          "| img/s | data share |")
    print("|---|---|---|---|---|---|")
    for r in results:
        views = f"{r['tta_top1']:.2%}" if r["tta_top1"] is not None else "-"
        print(f"| {label(r)} | {r['wall_s']:.0f} s | {r['plain_top1']:.2%} | {views} | "
              f"{r['images_per_s']:.0f} | {r['data_frac']:.1%} |")
    print()
    print(f"time to reach a {split} accuracy{tta} (first epoch at or above it, along each "
          "run):")
    for t in TARGETS:
        cells = []
        for r in results:
            s = r["reached_s"][f"{t:.3f}"]
            cells.append(f"{label(r)}: " + (f"{s:.0f} s" if s else "not reached"))
        print(f"  {t:.1%}: " + "; ".join(cells))
    if comparison:
        print(comparison["line"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="fashion-mnist", help="preset name or YAML file")
    p.add_argument("--model", help="override the recipe's model")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a recipe field (YAML value)")
    p.add_argument("--budgets", default="10,30", help="minutes, comma-separated: each run "
                                                     "trains with that budget_minutes")
    p.add_argument("--epochs", help="epochs per run, comma-separated, instead of budgets "
                                    "(the same runs on every machine)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--compare-fp32", action="store_true",
                   help="train the first run again in fp32 eager and test the difference")
    p.add_argument("--holdout", action="store_true",
                   help="evaluate on the validation split, never load the test images: for "
                        "choosing a recipe")
    p.add_argument("--tta", default="", help="test-time views reported beside the plain "
                                             "figure, e.g. flip")
    p.add_argument("--out", default="benchmarks/results/time_to_accuracy.json")
    args = p.parse_args()

    recipe = Recipe.load(args.recipe)
    changes = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    if args.model:
        changes["model"] = args.model
    if not args.holdout:
        changes.setdefault("val_fraction", 0.0)    # the recipe is chosen: train on them all
    changes.update(progress=False, device="cpu")
    if args.threads:
        changes["threads"] = args.threads
    recipe = recipe.replace(**changes)
    if recipe.threads:
        torch.set_num_threads(recipe.threads)

    if args.holdout and not recipe.val_fraction:
        p.error("--holdout evaluates on the validation split: the recipe's val_fraction is 0")
    tta = [v for v in args.tta.replace("+", ",").split(",") if v]
    train = load_dataset("fashion-mnist", "train")
    test = None if args.holdout else load_dataset("fashion-mnist", "test", classes=train.classes)
    memory_mb = (train.images.numel() + (test.images.numel() if test else 0)) / 2**20
    load_before = os.getloadavg()
    print(f"Fashion-MNIST in memory: {memory_mb:.0f} MiB; {recipe.model} "
          f"{recipe.model_kwargs or ''}; {torch.get_num_threads()} threads on {cpu_name()} "
          f"({os.cpu_count()} cores); load average {load_before[0]:.1f}", flush=True)

    plan = ([(int(e), None) for e in args.epochs.split(",")] if args.epochs
            else [(None, float(b)) for b in args.budgets.split(",")])
    results = [run(recipe, train, test, epochs, minutes, tta, ratio=i == 0)
               for i, (epochs, minutes) in enumerate(plan)]
    comparison = None
    if args.compare_fp32:
        eager = recipe.replace(precision="fp32", channels_last=False, compile=False)
        plain = run(eager, train, test, results[0]["epochs"], None, tta)
        comparison = compare_fp32(results[0], plain)
        results.append(plain)
    load_after = os.getloadavg()

    print_summary(results, comparison)
    print(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
          f"on {os.cpu_count()} cores")
    for r in results:
        del r["_correct"]

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "recipe": recipe.to_dict(), "cpu": cpu_name(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "memory_mb": memory_mb, "load_before": load_before, "load_after": load_after,
        "results": results, "fp32_comparison": comparison}, indent=1))
    print(f"details: {out}")


if __name__ == "__main__":
    main()
