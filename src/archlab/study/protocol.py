"""A comparison protocol: one YAML file says how every architecture of a study is trained
and measured, so that the numbers in its table differ by the architecture alone.

    name: quick-tour
    data: {dataset: fashion-mnist, val_fraction: 0.02, train_fraction: 0.2}
    recipe: {epochs: 2, batch_size: 32, lr: 0.05}     # fields of archlab.train.Recipe
    augment: none                                     # or {preset: basic, random_erasing: 0.25}
    tta: [flip]                                       # flip, shift, five_crop, ten_crop, aug:N
    seeds: [0, 1, 2]                                  # or a count: 3 is 0, 1, 2
    budget: {run: 10m, study: 2h}                     # optional time limits
    deterministic: true                               # repeatable on a GPU (slower)
    log: [mlflow:http://localhost:5000]               # also log every run (not hashed)
    models:
      - lenet5
      - name: vit_tiny_patch4_32                      # per-model overrides:
        recipe: {optimizer: adamw, lr: 2.0e-3}        #   recipe fields
        model_kwargs: {drop_path_rate: 0.1}           #   create_model keywords
      - name: resnet20                                # a data-efficiency point:
        label: resnet20-10pct                         #   trained on 10% of the training
        recipe: {train_fraction: 0.1}                 #   pool, in place of data's 0.2
      - sift-bovw                                     # a classical baseline
      - name: sift-bovw                               #   with its options:
        label: sift-dog                               #   Lowe's DoG keypoints, not a grid
        model_kwargs: {detector: dog}

The split belongs to `data:`, so every model is judged on the same validation and test
images; a model's own `recipe:` may set only `train_fraction` among the split's keys (its
`val_fraction` or `image_size` is refused). With one seed the training subsets of every
fraction are nested (`archlab.data.split`: the 5% subset lies inside the 10% one, and so on)
and the validation images are the same, so runs of several fractions differ by how much
they trained on and nothing else; the fraction is part of the entry's hash, hence of the
run's key.

Shipped presets live beside this file (`archlab compare --list`). Every problem in a file
is reported with its line and the fix, all at once; a misspelt key or architecture gets
the nearest correct name.

The *protocol hash* covers everything that decides how a run trains (data, recipe,
augmentation, TTA, per-run budget) and nothing cosmetic (name, description, the list of
models and seeds, the study's budget, where runs are logged): adding a model or a seed
to a study keeps the runs already done, changing the learning rate starts new ones.
"""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from archlab.study.entry import ModelEntry, RunSpec, digest
from archlab.study.validate import (DATA_FIELDS, TOP_KEYS, ProtocolChecker, ProtocolError,
                                    parse_duration, set_dotted, yaml_with_lines)

PROTOCOLS_DIR = Path(__file__).parent / "protocols"
DEFAULT_PROTOCOL = "quick-tour"
# Keys that do not change how a run trains: left out of the protocol hash (`jobs` only says
# how many runs train side by side; a run that must not depend on it sets recipe.threads;
# `log` where they are logged: `archlab compare --log mlflow` finds the runs done without it).
_UNHASHED = ("name", "description", "models", "seeds", "jobs", "log")


# --------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------


@dataclass
class Protocol:
    name: str
    body: dict[str, Any]                    # the normalised mapping (what is hashed and stored)
    models: list[ModelEntry]
    seeds: list[int]
    source: str = "<protocol>"
    lines: dict[tuple, int] = field(default_factory=dict, repr=False)
    text: str | None = None                 # the file as written, when read from one

    # -- views ----------------------------------------------------------------------------
    @property
    def description(self) -> str:
        return self.body.get("description") or ""

    @property
    def data(self) -> dict[str, Any]:
        return self.body.get("data") or {}

    @property
    def dataset(self) -> str | None:
        return self.data.get("dataset")

    @property
    def tta(self) -> list[str]:
        return list(self.body.get("tta") or [])

    @property
    def run_budget(self) -> float | None:
        return parse_duration((self.body.get("budget") or {}).get("run"))

    @property
    def study_budget(self) -> float | None:
        return parse_duration((self.body.get("budget") or {}).get("study"))

    @property
    def jobs(self) -> int:
        """How many runs train side by side on this machine, each in its own process."""
        return int(self.body.get("jobs") or 1)

    @property
    def measure(self) -> dict[str, Any]:
        return {"throughput_batch": 256, "throughput_seconds": 2.0,
                **(self.body.get("measure") or {})}

    @property
    def hash(self) -> str:
        hashed = {k: v for k, v in self.body.items()
                  if k not in _UNHASHED and k not in ("budget", "measure")}
        if self.run_budget is not None:
            hashed["run_budget_s"] = self.run_budget
        return digest(hashed)

    def runs(self) -> list[RunSpec]:
        """Every (architecture, seed) pair, seed-major: the first seed of every model comes
        first, so a study stopped early still compares all of them."""
        h = self.hash
        out = []
        for s_i, seed in enumerate(self.seeds):
            for m_i, entry in enumerate(self.models):
                key = digest(f"{h}/{entry.hash}/{seed}")
                out.append(RunSpec(key, h, entry, seed, s_i * len(self.models) + m_i))
        return out

    def entry(self, label: str) -> ModelEntry:
        for e in self.models:
            if e.label == label:
                return e
        raise KeyError(f"no model {label!r} in protocol {self.name}")

    # -- what a run trains with -------------------------------------------------------------
    def base_recipe_dict(self) -> dict[str, Any]:
        """Recipe fields shared by every run (before per-model overrides and the seed)."""
        from archlab.train import Recipe

        recipe = self.body.get("recipe") or {}
        if isinstance(recipe, str):
            recipe = {"preset": recipe}
        recipe = dict(recipe)
        preset = recipe.pop("preset", None)
        base = Recipe.load(preset).to_dict() if preset else Recipe().to_dict()
        base.update(recipe)
        base.pop("model", None)  # the protocol names the models
        augment = self.body.get("augment")
        if isinstance(augment, str):
            base["augment"] = augment
        elif isinstance(augment, dict):
            for k, v in augment.items():
                base["augment" if k == "preset" else k] = v
        for k in DATA_FIELDS:
            if self.data.get(k) is not None:
                base[k] = self.data[k]
        if self.body.get("deterministic") is not None:
            base["deterministic"] = self.body["deterministic"]
        if self.body.get("log") is not None:
            base["log"] = self.body["log"]
        return base

    def recipe_for(self, entry: ModelEntry, seed: int, **extra: Any):
        """The Recipe of one run: protocol, then the entry's overrides, then the seed."""
        from archlab.train import Recipe

        values = self.base_recipe_dict()
        values.update(entry.recipe)
        if entry.model_kwargs and not entry.classical:
            values["model_kwargs"] = {**values.get("model_kwargs", {}), **entry.model_kwargs}
        values.update(seed=seed, **extra)
        return Recipe.from_dict(values, f"{self.source}: recipe of {entry.label}")

    def schedule_lines(self) -> list[str]:
        """How every run of the protocol trains, in a few lines (`archlab compare
        --dry-run`): the data it sees, the phases and their learning rates, the optimiser."""
        from archlab.train import Recipe

        r = Recipe.from_dict(self.base_recipe_dict(), f"{self.source}: recipe")
        d = self.data
        shares = (("subsample", "of the images (stratified, fixed)"),
                  ("holdout", "of them as the test set"), ("test_fraction", "of the test set"),
                  ("val_fraction", "of the training pool for validation"),
                  ("train_fraction", "of what is left trained on"))
        data = [f"{d[k]:.0%} {what}" for k, what in shares if d.get(k)]
        data += [f"{r.image_size} px"] * bool(r.image_size) + [f"batch {r.batch_size}"]
        optimiser = r.optimizer
        if r.optimizer == "adamw":
            optimiser += f" (betas {r.betas[0]:g}, {r.betas[1]:g}, eps {r.eps:g})"
        if r.weight_decay:
            optimiser += f", weight decay {r.weight_decay:g} decoupled"
        lr = "the optimiser's default" if r.lr is None else f"{r.lr:g}"
        if r.fine_tune:
            lo, hi = r.unfrozen_lr or (r.lr, r.lr)
            phases = [f"phase 1: {r.freeze_epochs} epochs of {r.schedule}, body frozen, new "
                      f"{r.head} head, lr {lr}",
                      f"phase 2: {r.epochs} epochs of {r.schedule}, all unfrozen, lr {lo:g} "
                      f"(stem) .. {hi:g} (head) spread over the layer groups"]
        else:
            phases = [f"{r.epochs} epochs of {r.schedule} at lr {lr}"]
        deterministic = "cuDNN deterministic, no autotuning" if r.deterministic else "no"
        return [f"data: {d.get('dataset')}; {', '.join(data)}", *phases,
                f"optimiser: {optimiser}; augment {r.augment}; test-time views "
                f"{', '.join(self.tta) or 'none'}",
                f"deterministic: {deterministic}; seeds {', '.join(map(str, self.seeds))}"]

    def to_yaml(self) -> str:
        import yaml

        if self.text is not None:
            return self.text
        body = dict(self.body)
        body["models"] = [e.as_dict() if (e.recipe or e.model_kwargs or e.label != e.name
                                          or e.note) else e.name for e in self.models]
        body["seeds"] = self.seeds
        return yaml.safe_dump({"name": self.name, **body}, sort_keys=False)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.body, "seeds": self.seeds,
                "models": [e.as_dict() for e in self.models]}


# --------------------------------------------------------------------------------------
# Loading and validating
# --------------------------------------------------------------------------------------


def presets() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    return PROTOCOLS_DIR / f"{name}.yaml"


def list_protocols() -> list[dict[str, Any]]:
    """Every shipped preset as {name, dataset, models, description}, read through the
    parser (models are not built: listing stays quick). `dataset` is None for a preset that
    leaves the dataset to --data."""
    out = []
    for name in presets():
        path = preset_path(name)
        text = path.read_text()
        value, lines = yaml_with_lines(text, str(path))
        needs_data = not ((value or {}).get("data") or {}).get("dataset")
        # Such a preset is read with a stand-in dataset: nothing is loaded here.
        p = parse_protocol(value, source=str(path), lines=lines, text=text, default_name=name,
                           data="(--data)" if needs_data else None, check_models=False)
        out.append({"name": name, "dataset": None if needs_data else p.dataset,
                    "models": len(p.models),
                    "description": " ".join(p.description.split())})
    return out


def load_protocol(name_or_path: str | Path | None = None, *, models: Iterable[str] | None = None,
                  data: str | None = None, seeds: int | Iterable[int] | None = None,
                  overrides: dict[str, Any] | None = None, check_models: bool = True
                  ) -> Protocol:
    """A shipped preset by name (default: quick-tour) or a YAML file, with command-line
    changes applied before validation (so that the hash reflects them):

    models: names or labels to run instead of the protocol's list (a protocol's entry
        keeps its overrides; another registered name runs with the shared recipe);
    data: the dataset spec (a name, a folder, a CSV); seeds: the seeds (an iterable), or
        how many (an int), counting up from the protocol's first seed;
    overrides: {'recipe.epochs': 3, 'data.train_fraction': 0.5, ...} dotted keys.
    """
    name_or_path = name_or_path or DEFAULT_PROTOCOL
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        path = preset_path(str(name_or_path))
        if not path.exists():
            close = difflib.get_close_matches(str(name_or_path), presets(), n=1)
            raise ProtocolError(
                f"no protocol {str(name_or_path)!r}: not a file and not a preset"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; presets: {', '.join(presets())}")
    if not path.exists():
        raise ProtocolError(f"protocol file {path} does not exist")
    text = path.read_text()
    value, lines = yaml_with_lines(text, str(path))
    return parse_protocol(value, source=str(path), lines=lines, text=text, default_name=path.stem,
                          models=models, data=data, seeds=seeds, overrides=overrides,
                          check_models=check_models)


def parse_protocol(value: Any, *, source: str = "<protocol>", lines: dict | None = None,
                   text: str | None = None, default_name: str = "protocol",
                   models: Iterable[str] | None = None, data: str | None = None,
                   seeds: int | Iterable[int] | None = None,
                   overrides: dict[str, Any] | None = None,
                   check_models: bool = True) -> Protocol:
    """Validate a protocol mapping (parsed YAML) and build the Protocol."""
    lines = lines or {}
    checker = ProtocolChecker(source, lines)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{source}: a protocol is a mapping of keys (name, data, recipe, "
                            f"models, ...), not a {type(value).__name__}")
    body = _with_changes(value, checker, data, seeds, overrides)
    checker.raise_if_any()

    checker.keys(body, (), TOP_KEYS, "protocol key")
    name = str(body.pop("name", None) or default_name)
    checker.data(body)
    checker.training(body)
    run_seeds = checker.seeds(body, seeds if isinstance(seeds, int) else None)
    checker.limits(body)
    entries = checker.models(body, "models" in value, models, check_models)
    checker.raise_if_any()

    changed = bool(models or data or seeds is not None or overrides)
    protocol = Protocol(name=name, body=body, models=entries, seeds=run_seeds,
                        source=source, lines=lines, text=None if changed else text)
    checker.recipes_build(protocol)
    checker.raise_if_any()
    return protocol


def _with_changes(value: dict, checker: ProtocolChecker, data: str | None,
                  seeds: int | Iterable[int] | None, overrides: dict[str, Any] | None) -> dict:
    """A copy of the protocol mapping with the command line's changes applied (a count
    of seeds is applied by the checker, which reads the protocol's own first)."""
    body = copy.deepcopy(value)
    if data:
        body.setdefault("data", {})
        if not isinstance(body["data"], dict):
            body["data"] = {}
        body["data"]["dataset"] = data
    if seeds is not None and not isinstance(seeds, int):
        body["seeds"] = [int(s) for s in seeds]
    for dotted, v in (overrides or {}).items():
        set_dotted(body, dotted, v, checker)
    return body
