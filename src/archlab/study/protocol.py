"""A comparison protocol: one YAML file says how every architecture of a study is trained
and measured, so that the numbers in its table differ by the architecture alone.

    name: quick-tour
    data: {dataset: fashion-mnist, val_fraction: 0.02, train_fraction: 0.2}
    recipe: {epochs: 2, batch_size: 32, lr: 0.05}     # fields of archlab.train.Recipe
    augment: none                                     # or {preset: basic, random_erasing: 0.25}
    tta: [flip]                                       # flip, shift, five_crop, ten_crop, aug:N
    seeds: [0, 1, 2]
    budget: {run: 10m, study: 2h}                     # optional time limits
    models:
      - lenet5
      - name: vit_tiny_patch4_32                      # per-model overrides:
        recipe: {optimizer: adamw, lr: 2.0e-3}        #   recipe fields
        model_kwargs: {drop_path_rate: 0.1}           #   create_model keywords
      - sift-bovw                                     # a classical baseline

Shipped presets live beside this file (`archlab compare --list`). Every problem in a file
is reported with its line and the fix, all at once; a misspelt key or architecture gets
the nearest correct name.

The *protocol hash* covers everything that decides how a run trains (data, recipe,
augmentation, TTA, per-run budget) and nothing cosmetic (name,
description, the list of models and seeds, the study's budget): adding a model or a seed
to a study keeps the runs already done, changing the learning rate starts new ones.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

PROTOCOLS_DIR = Path(__file__).parent / "protocols"
DEFAULT_PROTOCOL = "quick-tour"

TOP_KEYS = ("name", "description", "data", "recipe", "augment", "tta", "seeds", "models",
            "budget", "measure", "jobs")
DATA_KEYS = ("dataset", "root", "image_size", "in_chans", "val_fraction", "train_fraction",
             "test_fraction", "holdout")
ENTRY_KEYS = ("name", "label", "recipe", "model_kwargs", "note")
BUDGET_KEYS = ("run", "study")
MEASURE_KEYS = ("throughput_batch", "throughput_seconds")
AUGMENT_KEYS = ("preset", "hflip", "randaugment_n", "randaugment_m", "lighting",
                "random_erasing", "mixup", "cutmix")
# Recipe fields the protocol sets itself (from `data:` and `seeds:`), not through `recipe:`.
_DATA_FIELDS = ("val_fraction", "train_fraction", "image_size")
# Keys that do not change how a run trains: left out of the protocol hash (`jobs` only says
# how many runs train side by side; a run that must not depend on it sets recipe.threads).
_UNHASHED = ("name", "description", "models", "seeds", "jobs")


class ProtocolError(ValueError):
    """A protocol that cannot be run; the message names the file, the line and the fix."""


# --------------------------------------------------------------------------------------
# Reading YAML with line numbers
# --------------------------------------------------------------------------------------


def _yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """(value, {path: line}) where a path is a tuple of keys and list indices."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ProtocolError(f"{source}{where}: not valid YAML ({problem})") from None
    lines: dict[tuple, int] = {}

    def walk(n, path: tuple) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    if node is not None:
        walk(node, ())
    return value, lines


def parse_duration(value: Any, what: str = "duration") -> float | None:
    """Seconds from 90, '90s', '10m', '1.5h' or '1h30m'; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{what}: a duration, not {value!r}")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"{what} must be positive, got {value}")
        return float(value)
    text = str(value).strip().lower().replace(" ", "")
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?",
                         text)
    if not text or parts is None or not any(parts.groups()):
        raise ValueError(f"{what}: {value!r} is not a duration; write seconds (600) or "
                         "'10m', '1h30m', '90s'")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    return h * 3600 + m * 60 + s


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(value: Any, n: int = 16) -> str:
    return hashlib.sha256(_canonical(value).encode()).hexdigest()[:n]


# --------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------


@dataclass
class ModelEntry:
    """One architecture of a protocol, with its overrides."""

    name: str
    label: str
    recipe: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    note: str | None = None
    path: tuple = field(default=(), repr=False, compare=False)   # where it is in the file

    @property
    def classical(self) -> bool:
        from archlab.classical import is_classical

        return is_classical(self.name)

    @property
    def hash(self) -> str:
        """What makes two entries train differently (the label is only a name)."""
        return _digest({"name": self.name, "recipe": self.recipe,
                        "model_kwargs": self.model_kwargs}, 12)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "label": self.label}
        if self.recipe:
            out["recipe"] = self.recipe
        if self.model_kwargs:
            out["model_kwargs"] = self.model_kwargs
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class RunSpec:
    """One (architecture, seed) pair of a protocol: a row of the study."""

    key: str
    protocol_hash: str
    entry: ModelEntry
    seed: int
    position: int

    @property
    def label(self) -> str:
        return self.entry.label

    @property
    def dir_name(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", self.entry.label)
        return f"{safe}-s{self.seed}-{self.key[:8]}"


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
        return _digest(hashed)

    def runs(self) -> list[RunSpec]:
        """Every (architecture, seed) pair, seed-major: the first seed of every model comes
        first, so a study stopped early still compares all of them."""
        h = self.hash
        out = []
        for s_i, seed in enumerate(self.seeds):
            for m_i, entry in enumerate(self.models):
                key = _digest(f"{h}/{entry.hash}/{seed}")
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
        from archlab.train.recipe import Recipe

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
        for k in _DATA_FIELDS:
            if self.data.get(k) is not None:
                base[k] = self.data[k]
        return base

    def recipe_for(self, entry: ModelEntry, seed: int, **extra: Any):
        """The Recipe of one run: protocol, then the entry's overrides, then the seed."""
        from archlab.train.recipe import Recipe

        values = self.base_recipe_dict()
        values.update(entry.recipe)
        if entry.model_kwargs and not entry.classical:
            values["model_kwargs"] = {**values.get("model_kwargs", {}), **entry.model_kwargs}
        values.update(seed=seed, **extra)
        return Recipe.from_dict(values, f"{self.source}: recipe of {entry.label}")

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


def load_protocol(name_or_path: str | Path | None = None, *, models: Iterable[str] | None = None,
                  data: str | None = None, seeds: Iterable[int] | None = None,
                  overrides: dict[str, Any] | None = None, check_models: bool = True
                  ) -> Protocol:
    """A shipped preset by name (default: quick-tour) or a YAML file, with command-line
    changes applied before validation (so that the hash reflects them):

    models: names or labels to run instead of the protocol's list (a protocol's entry
        keeps its overrides; another registered name runs with the shared recipe);
    data: the dataset spec (a name, a folder, a CSV); seeds: the seeds;
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
    value, lines = _yaml_with_lines(text, str(path))
    return parse_protocol(value, source=str(path), lines=lines, text=text, default_name=path.stem,
                          models=models, data=data, seeds=seeds, overrides=overrides,
                          check_models=check_models)


def parse_protocol(value: Any, *, source: str = "<protocol>", lines: dict | None = None,
                   text: str | None = None, default_name: str = "protocol",
                   models: Iterable[str] | None = None, data: str | None = None,
                   seeds: Iterable[int] | None = None, overrides: dict[str, Any] | None = None,
                   check_models: bool = True) -> Protocol:
    """Validate a protocol mapping (parsed YAML) and build the Protocol."""
    lines = lines or {}
    checker = _Checker(source, lines)
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{source}: a protocol is a mapping of keys (name, data, recipe, "
                            f"models, ...), not a {type(value).__name__}")
    body = copy.deepcopy(value)
    changed = bool(models or data or seeds or overrides)
    if data:
        body.setdefault("data", {})
        if not isinstance(body["data"], dict):
            body["data"] = {}
        body["data"]["dataset"] = data
    if seeds is not None:
        body["seeds"] = [int(s) for s in seeds]
    for dotted, v in (overrides or {}).items():
        _set_dotted(body, dotted, v, checker)
    checker.raise_if_any()

    checker.keys(body, (), TOP_KEYS, "protocol key")
    name = str(body.pop("name", None) or default_name)
    data_map = body.get("data")
    if data_map is None:
        data_map = body["data"] = {}
    if not isinstance(data_map, dict):
        checker.error(("data",), "data is a mapping (dataset:, val_fraction:, ...)")
        data_map = {}
    else:
        checker.keys(data_map, ("data",), DATA_KEYS, "data key")
        if not data_map.get("dataset"):
            checker.error(("data",), "no dataset: set data: {dataset: fashion-mnist} (a name, "
                                     "a folder of class subfolders or a CSV), or pass --data")
        for k in ("val_fraction", "test_fraction", "holdout"):
            checker.fraction(data_map, ("data", k), k, upper_open=k != "test_fraction")
        checker.fraction(data_map, ("data", "train_fraction"), "train_fraction", zero_ok=False)
        for k in ("image_size", "in_chans"):
            v = data_map.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                checker.error(("data", k), f"{k} is a positive integer, got {v!r}")

    # -- recipe and augmentation --------------------------------------------------------
    recipe = body.get("recipe")
    if recipe is not None and not isinstance(recipe, (str, dict)):
        checker.error(("recipe",), "recipe is a preset name or a mapping of recipe fields")
    elif isinstance(recipe, (str, dict)):
        checker.recipe(recipe, ("recipe",))
    augment = body.get("augment")
    if augment is not None:
        if isinstance(augment, dict):
            checker.keys(augment, ("augment",), AUGMENT_KEYS, "augment key")
        elif not isinstance(augment, str):
            checker.error(("augment",), "augment is a preset name (none, basic, alexnet, rrc, "
                                        "randaugment) or a mapping {preset: ..., mixup: ...}")
    body["tta"] = checker.tta(body.get("tta"))

    # -- seeds, budget, measure -------------------------------------------------------
    raw_seeds = body.pop("seeds", [0])
    if isinstance(raw_seeds, int) and not isinstance(raw_seeds, bool):
        raw_seeds = [raw_seeds]
    if (not isinstance(raw_seeds, list) or not raw_seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in raw_seeds)):
        checker.error(("seeds",), f"seeds is a list of integers, e.g. [0, 1, 2]; got {raw_seeds!r}")
        raw_seeds = [0]
    elif len(set(raw_seeds)) != len(raw_seeds):
        checker.error(("seeds",), f"seeds repeat: {raw_seeds}")
    budget = body.get("budget")
    if budget is not None:
        if not isinstance(budget, dict):
            checker.error(("budget",), "budget is a mapping {run: 10m, study: 2h}")
        else:
            checker.keys(budget, ("budget",), BUDGET_KEYS, "budget key")
            for k in BUDGET_KEYS:
                try:
                    parse_duration(budget.get(k), f"budget.{k}")
                except ValueError as e:
                    checker.error(("budget", k), str(e))
    jobs = body.get("jobs")
    if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
        checker.error(("jobs",), f"jobs is the number of runs trained side by side, a positive "
                                 f"integer (e.g. 2 on a 2-core CPU); got {jobs!r}")
    measure = body.get("measure")
    if measure is not None:
        if not isinstance(measure, dict):
            checker.error(("measure",), "measure is a mapping {throughput_batch: 256}")
        else:
            checker.keys(measure, ("measure",), MEASURE_KEYS, "measure key")

    # -- models ---------------------------------------------------------------------------
    raw_models = body.pop("models", None)
    entries: list[ModelEntry] = []
    if raw_models is None or raw_models == []:
        if not models:
            checker.error(("models",) if "models" in value else (),
                          "no models: list them under models: (see `archlab models`), or "
                          "pass --models")
        raw_models = []
    elif not isinstance(raw_models, list):
        checker.error(("models",), "models is a list of names or {name: ..., recipe: ...}")
        raw_models = []
    for i, item in enumerate(raw_models):
        entry = checker.entry(item, ("models", i), check_models)
        if entry is not None:
            entries.append(entry)
    labels = [e.label for e in entries]
    for i, e in enumerate(entries):
        if labels.index(e.label) != i:
            checker.error(("models", i), f"{e.label!r} is listed twice; give the second one "
                                         "its own label: (e.g. label: {e.label}-lr2)")
    if models:
        entries = _select_models(entries, list(models), checker, check_models)
    checker.raise_if_any()

    protocol = Protocol(name=name, body=body, models=entries, seeds=list(raw_seeds),
                        source=source, lines=lines, text=None if changed else text)
    # Every run's recipe must build: a wrong value names the entry's line.
    for e in protocol.models:
        try:
            protocol.recipe_for(e, protocol.seeds[0])
        except (ValueError, TypeError) as err:
            msg = str(err)
            prefix = f"{source}: recipe of {e.label}: "
            msg = msg[len(prefix):] if msg.startswith(prefix) else msg.removeprefix("recipe: ")
            checker.error(e.path + ("recipe",) if e.path else ("recipe",),
                          f"{e.label}: {msg}")
    checker.raise_if_any()
    return protocol


def _set_dotted(body: dict, dotted: str, value: Any, checker: "_Checker") -> None:
    keys = dotted.split(".")
    if keys[0] not in TOP_KEYS or keys[0] in ("models",):
        close = difflib.get_close_matches(keys[0], TOP_KEYS, n=1)
        checker.error((), f"--set {dotted}: {keys[0]!r} is not a protocol key"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + "; --set takes recipe.FIELD, data.KEY, budget.run, tta, ...")
        return
    target = body
    for k in keys[:-1]:
        nxt = target.get(k)
        if isinstance(nxt, str) and k == "recipe":
            nxt = {"preset": nxt}
        if not isinstance(nxt, dict):
            nxt = {}
        target[k] = nxt
        target = nxt
    target[keys[-1]] = value


def _select_models(entries: list[ModelEntry], wanted: list[str], checker: "_Checker",
                   check_models: bool) -> list[ModelEntry]:
    by_label = {e.label: e for e in entries}
    by_name: dict[str, list[ModelEntry]] = {}
    for e in entries:
        by_name.setdefault(e.name, []).append(e)
    out: list[ModelEntry] = []
    for w in wanted:
        if w in by_label:
            out.append(by_label[w])
        elif w in by_name:
            out.extend(by_name[w])
        else:
            entry = checker.entry(w, (), check_models, where=f"--models {w}")
            if entry is not None:
                out.append(entry)
    seen: set[str] = set()
    return [e for e in out if not (e.label in seen or seen.add(e.label))]


class _Checker:
    """Collects every problem of a protocol with its line, to report them all at once."""

    def __init__(self, source: str, lines: dict[tuple, int]) -> None:
        self.source, self.lines = source, lines
        self.problems: list[tuple[int | None, str]] = []

    def line(self, path: tuple) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: tuple, message: str, where: str | None = None) -> None:
        self.problems.append((None if where else self.line(path), where and f"{where}: {message}"
                              or message))

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        def fmt(line, msg):
            return f"{self.source}, line {line}: {msg}" if line else f"{self.source}: {msg}"
        if len(self.problems) == 1:
            raise ProtocolError(fmt(*self.problems[0]))
        raise ProtocolError(f"{len(self.problems)} problems in {self.source}:\n"
                            + "\n".join("  " + (f"line {ln}: {m}" if ln else m)
                                        for ln, m in self.problems))

    def keys(self, mapping: dict, path: tuple, allowed: tuple, what: str) -> None:
        for k in mapping:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = (f"did you mean {close[0]!r}?" if close
                        else f"allowed: {', '.join(allowed)}")
                self.error(path + (k,), f"unknown {what} {k!r}; {hint}")

    def fraction(self, mapping: dict, path: tuple, name: str, upper_open: bool = True,
                 zero_ok: bool = True) -> None:
        v = mapping.get(name)
        if v is None:
            return
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and (
            (0 <= v if zero_ok else 0 < v) and (v < 1 if upper_open else v <= 1))
        if not ok:
            lo, hi = ("[0" if zero_ok else "(0"), ("1)" if upper_open else "1]")
            self.error(path, f"{name} is a fraction in {lo}, {hi}, got {v!r}")

    def recipe(self, recipe: Any, path: tuple) -> None:
        from archlab.train.recipe import Recipe, presets

        fields = [f.name for f in dataclasses.fields(Recipe)]
        if isinstance(recipe, str):
            recipe = {"preset": recipe}
        for k, v in recipe.items():
            if k == "preset" and path == ("recipe",):
                if v not in presets() and not Path(str(v)).exists():
                    self.error(path + (k,), f"no recipe preset {v!r}; presets: "
                                            f"{', '.join(presets())}, or a .yaml path")
            elif k in _DATA_FIELDS:
                self.error(path + (k,), f"{k} belongs under data: (data: {{{k}: {v}}}), so "
                                        "that every model is trained on the same split")
            elif k == "seed":
                self.error(path + (k,), "the seed comes from seeds: (a list), not the recipe")
            elif k not in fields:
                close = difflib.get_close_matches(k, fields, n=1)
                self.error(path + (k,), f"unknown recipe field {k!r}; "
                           + (f"did you mean {close[0]!r}?" if close
                              else "see archlab.train.Recipe for the fields"))

    def tta(self, value: Any) -> list[str]:
        from archlab.train.tta import VIEWS, parse_tta

        if value in (None, "none", False, []):
            return []
        views = value.replace(",", "+").split("+") if isinstance(value, str) else value
        if not isinstance(views, list):
            self.error(("tta",), f"tta is a list of views ({', '.join(VIEWS)}) or none")
            return []
        out = []
        for i, v in enumerate(views):
            try:
                parse_tta(str(v))
            except ValueError as e:
                close = difflib.get_close_matches(str(v), VIEWS, n=1)
                self.error(("tta", i), str(e) + (f" (did you mean {close[0]!r}?)" if close
                                                 else ""))
                continue
            if v not in out:
                out.append(str(v))
        return out

    def entry(self, item: Any, path: tuple, check_models: bool,
              where: str | None = None) -> ModelEntry | None:
        if isinstance(item, str):
            item = {"name": item}
        elif isinstance(item, dict) and "name" not in item and len(item) == 1:
            # `- resnet20: {recipe: ...}`, the other way people write a named mapping
            (name, rest), = item.items()
            item = {"name": name, **(rest or {})} if isinstance(rest, dict) else item
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            self.error(path, "a model is a registered name, or a mapping with name: and "
                             "optional label:, recipe:, model_kwargs:", where)
            return None
        self.keys(item, path, ENTRY_KEYS, "model key")
        name = item["name"]
        if check_models and not _known_model(name):
            self.error(path + ("name",) if path + ("name",) in self.lines else path,
                       _unknown_model_message(name), where)
            return None
        recipe = item.get("recipe") or {}
        kwargs = item.get("model_kwargs") or {}
        if not isinstance(recipe, dict):
            self.error(path + ("recipe",), "a model's recipe: is a mapping of recipe fields")
            recipe = {}
        else:
            self.recipe(recipe, path + ("recipe",))
        if not isinstance(kwargs, dict):
            self.error(path + ("model_kwargs",), "model_kwargs is a mapping of create_model "
                                                 "keywords")
            kwargs = {}
        elif check_models and kwargs:
            problem = _check_kwargs(name, kwargs)
            if problem:
                self.error(path + ("model_kwargs",), problem, where)
        label = str(item.get("label") or name)
        return ModelEntry(name=name, label=label, recipe=dict(recipe), model_kwargs=dict(kwargs),
                          note=item.get("note"), path=path)


def _known_model(name: str) -> bool:
    from archlab.classical import is_classical
    from archlab.models import list_models

    return is_classical(name) or name in list_models()


def _unknown_model_message(name: str) -> str:
    from archlab.classical import list_classical
    from archlab.models import list_models

    known = list_models() + list_classical()
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
            else "`archlab models` lists the architectures")
    return (f"unknown architecture {name!r}; {hint} (classical baselines: "
            f"{', '.join(list_classical())})")


def _check_kwargs(name: str, kwargs: dict[str, Any]) -> str | None:
    """Build the model on the meta device with its overrides: a wrong keyword is caught
    here, with the fix, rather than an hour into a study."""
    from archlab.classical import classical_options, is_classical

    if is_classical(name):
        allowed = classical_options(name)
        bad = [k for k in kwargs if k not in allowed]
        if bad:
            close = difflib.get_close_matches(bad[0], allowed, n=1)
            return (f"{name} has no option {bad[0]!r}"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + f" (options: {', '.join(allowed)})")
        try:
            from archlab.classical import create_classical

            create_classical(name, **kwargs)
        except (ValueError, TypeError) as e:
            return str(e)
        return None
    import torch

    from archlab.models import create_model

    try:
        with torch.device("meta"):
            create_model(name, num_classes=10, in_chans=3, small_input=True, **kwargs)
    except TypeError as e:
        return f"{name} does not take these model_kwargs ({e})"
    except (ValueError, KeyError) as e:
        return f"{name} with model_kwargs {kwargs}: {e}"
    return None
