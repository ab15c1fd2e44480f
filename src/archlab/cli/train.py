"""`archlab train`, `lr-find`, `eval` and `predict`: a run from a recipe, and what it leaves."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from archlab._text import format_table
from archlab.classical import is_classical
from archlab.cli.options import add_command, add_options
from archlab.cli.recipe_flags import add_recipe_flags, flag_name, given_flags, recipe_from_args
from archlab.train import evaluate, fit, has_checkpoint, lr_find, predict, presets, read_model

# lr-find sweeps a few steps of one phase: no fine-tuning phases, resizing, logs or bar.
_NOT_FOR_LR_FIND = ("unfrozen_lr", "progressive", "strict", "tensorboard", "log", "progress")


def add_commands(sub) -> None:
    for add in (_parser_train, _parser_lr_find, _parser_eval, _parser_predict):
        add(sub)


def _recipe_group(p: argparse.ArgumentParser, skip=()) -> None:
    group = p.add_argument_group("recipe", "the fields of the recipe (default: --recipe's)")
    add_recipe_flags(group, skip=skip)
    group.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="any other recipe field, e.g. --set moms=null --set "
                            "warmup_epochs=1 --set \"model_kwargs={act: tanh}\" (YAML values)")


def _parser_train(sub) -> None:
    p = add_command(sub, "train", cmd_train)
    p.add_argument("--model", help="registered name (see `archlab models`); default: the "
                                   "recipe's")
    p.add_argument("--data", help="fashion-mnist, mnist, digits, cifar10, cifar100, a folder "
                                  "of class subfolders, or a CSV of path,label")
    add_options(p, "--data-root", data_root=dict(
        help="folder holding the named dataset's files (default: $ARCHLAB_DATA, the cache, "
             "/usr/share/datasets)"))
    p.add_argument("--recipe", help="a preset name (" + ", ".join(presets())
                                    + ") or a YAML file")
    p.add_argument("--out", help="run directory (default: runs/<model>-<data>)")
    p.add_argument("--resume", nargs="?", const=True, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or --out) from its last checkpoint")
    _recipe_group(p)


def _default_run_dir(model: str, data: str) -> Path:
    stem = f"{model}-{Path(data.rstrip('/')).stem or data}".replace("/", "_")
    path = Path("runs") / stem
    n = 2
    while path.exists():
        path, n = Path("runs") / f"{stem}-{n}", n + 1
    return path


def _rank() -> int:
    """This process's rank when torchrun started several (0 otherwise)."""
    return int(os.environ.get("RANK", "0") or 0)


def _resume(args) -> tuple:
    run_dir = Path(args.resume if isinstance(args.resume, str) else (args.out or ""))
    if not str(run_dir) or str(run_dir) == ".":
        raise ValueError("--resume needs the run directory: --resume RUN_DIR")
    ignored = [flag_name(name) if value is not False else flag_name("no_" + name)
               for name, value in given_flags(args).items()]
    ignored += ["--recipe"] * bool(args.recipe) + ["--set"] * bool(args.set)
    if ignored:
        print(f"archlab train: resuming with the run's own recipe; {', '.join(ignored)} "
              "ignored", file=sys.stderr)
    return run_dir, fit(args.model, args.data, None, run_dir=run_dir, resume=True,
                        root=args.data_root)


def _start(args) -> tuple:
    recipe = recipe_from_args(args)
    model = args.model or recipe.model
    if not model:
        raise ValueError("name a model: --model resnet20 (see `archlab models`)")
    if is_classical(model):
        raise ValueError(f"{model} is the classical baseline, not a network: fit it with "
                         f"`archlab compare` (e.g. `archlab compare quick-tour --models "
                         f"{model}`; `archlab info {model}` says more)")
    if not args.data:
        raise ValueError("name the data: --data fashion-mnist, a folder or a CSV")
    run_dir = Path(args.out) if args.out else _default_run_dir(model, args.data)
    if has_checkpoint(run_dir):
        raise ValueError(f"{run_dir} already holds a run: continue it with --resume "
                         f"{run_dir}, or choose another --out")
    if _rank() == 0:
        print(f"run directory: {run_dir}")
    return run_dir, fit(model, args.data, recipe, run_dir=run_dir, root=args.data_root)


def cmd_train(args) -> int:
    """train a model on a dataset, with checkpoints

    Train a registered model on a dataset. Checkpoints (safetensors + JSON) are written
    after every epoch and on Ctrl-C; --resume continues a stopped or killed run. Metrics
    go to metrics.jsonl and metrics.csv in the run directory, and with --log to
    TensorBoard or MLflow (--log mlflow:http://host:5000)."""
    run_dir, result = _resume(args) if args.resume else _start(args)
    if _rank() > 0:  # under torchrun the first process speaks for all
        return 0
    last = result.history[-1] if result.history else {}
    if "val_top1" in last:
        print(f"final validation top-1 {last['val_top1']:.2%}"
              + (f" (best {result.best['val_top1']:.2%} at epoch {result.best['epoch']})"
                 if result.best else ""))
    print(f"weights: {run_dir / 'model.safetensors'}; metrics: {run_dir / 'metrics.csv'}")
    print(f"next: archlab eval {run_dir} --data {args.data or result.info['dataset']}")
    return 0


def _parser_lr_find(sub) -> None:
    p = add_command(sub, "lr-find", cmd_lr_find, progress=False)
    p.add_argument("model", help="registered name (see `archlab models`)")
    p.add_argument("--data", required=True, help="a dataset spec, as for `archlab train`")
    add_options(p, "--data-root")
    p.add_argument("--recipe", help="a preset name or a YAML file (optimizer, batch size...)")
    p.add_argument("--start-lr", type=float, default=1e-7)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--num-it", type=int, default=100, help="steps of the sweep (default 100)")
    p.add_argument("--suggest", default="valley", choices=("valley", "steep", "minimum"))
    p.add_argument("--plot", default="lr_find.png", help="PNG to write (default lr_find.png)")
    _recipe_group(p, skip=_NOT_FOR_LR_FIND)


def cmd_lr_find(args) -> int:
    """learning-rate range test: loss against lr, a suggestion

    Train for up to --num-it steps with the learning rate growing exponentially from
    --start-lr to --end-lr, stop when the smoothed loss exceeds 4x its minimum, put the
    weights back, plot loss against lr and suggest a rate (fastai's 'valley': the middle
    of the longest descent)."""
    recipe = recipe_from_args(args)
    result = lr_find(args.model, args.data, recipe, start_lr=args.start_lr,
                     end_lr=args.end_lr, num_it=args.num_it, suggest=args.suggest,
                     plot=args.plot, root=args.data_root)
    print(f"{len(result.lrs)} steps from {result.lrs[0]:.1e} to {result.lrs[-1]:.1e}"
          + (" (stopped: the loss diverged)" if result.diverged else ""))
    for name, lr in result.suggestions.items():
        print(f"  {name:8s} {lr:.2e}" + ("  <- suggested" if name == result.method else ""))
    print(f"plot: {result.plot_path}")
    print(f"next: archlab train --model {args.model} --data {args.data} --lr "
          f"{result.suggestion:.2g}")
    return 0


def _parser_eval(sub) -> None:
    p = add_command(sub, "eval", cmd_eval)
    add_options(p, "checkpoint")
    p.add_argument("--data", help="dataset spec (default: the one it trained on)")
    add_options(p, "--data-root", "--split", "--batch-size", "--device", "--precision",
                "--workers", "--strict", "--json")
    p.add_argument("--no-confusion", action="store_true", help="skip the confusion matrix")
    p.add_argument("--tta", metavar="VIEWS",
                   help="test-time augmentation: average the softmax over views: flip, shift, "
                        "five_crop, ten_crop (AlexNet), aug:N, or a '+' of them")
    p.add_argument("--tta-beta", type=float, metavar="BETA",
                   help="weight of the plain view against the mean of the others (fastai: "
                        "0.25; default: every view alike)")
    p.add_argument("--tta-crop-from", choices=("resize", "pad"), default="resize",
                   help="crops of images held in memory come from the image upscaled by "
                        "1/0.875 (resize) or reflect-padded to that size (pad)")


def cmd_eval(args) -> int:
    """accuracy, per-class table and confusion of a trained model

    Evaluate a model trained by `archlab train` (its run directory or a .safetensors it
    wrote) on a dataset: loss, top-1 and top-5 accuracy, per-class accuracy and the
    confusion matrix."""
    data = args.data
    if data is None:
        _w, info = read_model(args.checkpoint)
        data = info.get("dataset")
        if not data:
            raise ValueError("name the data: --data SPEC")
    result = evaluate(args.checkpoint, data, split=args.split, batch_size=args.batch_size,
                      device=args.device, workers=args.workers, strict=args.strict,
                      root=args.data_root, progress=not args.json, tta=args.tta,
                      tta_beta=args.tta_beta, tta_crop_from=args.tta_crop_from,
                      precision=args.precision)
    m = result.metrics
    if args.json:
        print(json.dumps({**m.as_dict(), "data": result.data, "tta": result.tta,
                          "views": result.views, "speed": result.speed,
                          "issues": result.issues.as_dict()},
                         indent=1))
        return 0
    tta = (f", TTA {result.tta}: mean of {result.views} views per image"
           + (f" (plain view weighted {args.tta_beta:g})" if args.tta_beta is not None else "")
           if result.tta else "")
    print(f"{args.checkpoint} on {result.data}: {m.n:,} images{tta}")
    print(f"  speed: {result.speed}")
    print(f"  top-1 {m.top1:.2%}" + (f"  top-5 {m.top5:.2%}" if m.top5 is not None else "")
          + f"  loss {m.loss:.4f}")
    print()
    print(format_table(m.per_class_table(), ("class", "images", "correct", "accuracy"), "lrrr"))
    if not args.no_confusion:
        print()
        print(m.confusion_text())
    for line in result.issues.summary():
        print(f"data: {line}", file=sys.stderr)
    return 0


def _parser_predict(sub) -> None:
    p = add_command(sub, "predict", cmd_predict)
    add_options(p, "checkpoint", checkpoint=dict(
        help="run directory, model.safetensors, or a model.onnx `archlab export` wrote"))
    p.add_argument("images", nargs="+", help="image files or folders")
    add_options(p, "--top-k", "--batch-size", "--device", "--precision", "--json",
                batch_size=dict(default=64))


def cmd_predict(args) -> int:
    """top-k classes of image files with a trained model

    Classify image files (or every image in folders) with a model trained by `archlab
    train`; prints the top-k classes with their probabilities."""
    results = predict(args.checkpoint, args.images, top_k=args.top_k,
                      batch_size=args.batch_size, device=args.device,
                      precision=args.precision)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        rows = []
        for r in results:
            if "error" in r:
                rows.append((r["file"], "-", f"error: {r['error']}"))
                continue
            top = r["top"]
            rows.append((r["file"], f"{top[0]['class']} ({top[0]['prob']:.1%})",
                         ", ".join(f"{t['class']} {t['prob']:.1%}" for t in top[1:])))
        print(format_table(rows, ("image", "prediction", "next"), "lll"))
    failed = sum("error" in r for r in results)
    if failed:
        print(f"archlab predict: {failed} of {len(results)} files could not be read",
              file=sys.stderr)
    return 1 if failed == len(results) else 0
