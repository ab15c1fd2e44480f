"""Checking a protocol: every problem of a file found at once, each with its line and
the fix (a misspelt key or architecture gets the nearest correct name), before an hour
of training finds it.

`ProtocolChecker` walks the parsed YAML section by section and collects the problems;
`yaml_with_lines` gives it the line of every key.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from pathlib import Path
from typing import Any

from archlab.study.entry import ModelEntry

TOP_KEYS = ("name", "description", "data", "recipe", "augment", "tta", "seeds", "models",
            "budget", "measure", "jobs", "deterministic", "log")
DATA_KEYS = ("dataset", "root", "image_size", "in_chans", "val_fraction", "train_fraction",
             "test_fraction", "holdout", "subsample")
ENTRY_KEYS = ("name", "label", "recipe", "model_kwargs", "note")
BUDGET_KEYS = ("run", "study")
MEASURE_KEYS = ("throughput_batch", "throughput_seconds")
AUGMENT_KEYS = ("preset", "hflip", "randaugment_n", "randaugment_m", "lighting",
                "random_erasing", "mixup", "cutmix")
# Recipe fields the protocol sets itself (from `data:` and `seeds:`), not through `recipe:`.
DATA_FIELDS = ("val_fraction", "train_fraction", "image_size")
# Of those, what one model's entry may still set in its own recipe: the share of the training
# pool it trains on (a data-efficiency study). Its validation and test images stay those of
# every other run, and the training subsets of one seed are nested (data.split), so the runs
# differ by how much they saw and nothing else. A model's own val_fraction or image_size
# would change what it is judged on, and stays refused.
ENTRY_DATA_FIELDS = ("train_fraction",)

_ENTRY_HINT = {"train_fraction": "; a model's own recipe: may set it, to train that model on "
                                  "a smaller share of the same training pool"}


class ProtocolError(ValueError):
    """A protocol that cannot be run; the message names the file, the line and the fix."""



def yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
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



def set_dotted(body: dict, dotted: str, value: Any, checker: "ProtocolChecker") -> None:
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


def select_models(entries: list[ModelEntry], wanted: list[str], checker: "ProtocolChecker",
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


class ProtocolChecker:
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
        from archlab.train import Recipe, presets

        fields = [f.name for f in dataclasses.fields(Recipe)]
        if isinstance(recipe, str):
            recipe = {"preset": recipe}
        for k, v in recipe.items():
            if k == "preset" and path == ("recipe",):
                if v not in presets() and not Path(str(v)).exists():
                    self.error(path + (k,), f"no recipe preset {v!r}; presets: "
                                            f"{', '.join(presets())}, or a .yaml path")
            elif k in ENTRY_DATA_FIELDS and path[:1] == ("models",):
                self.fraction(recipe, path + (k,), k, upper_open=False, zero_ok=False)
            elif k in DATA_FIELDS:
                self.error(path + (k,), f"{k} belongs under data: (data: {{{k}: {v}}}), so "
                                        "that every model is trained on the same split"
                           + _ENTRY_HINT.get(k, ""))
            elif k == "seed":
                self.error(path + (k,), "the seed comes from seeds: (a list), not the recipe")
            elif k == "log":
                self.error(path + (k,), "where runs are logged is not how they train: put log: "
                                        "at the top of the protocol (log: [mlflow]) or use "
                                        "--log, so that the run keys stay the same")
            elif k not in fields:
                close = difflib.get_close_matches(k, fields, n=1)
                self.error(path + (k,), f"unknown recipe field {k!r}; "
                           + (f"did you mean {close[0]!r}?" if close
                              else "see archlab.train.Recipe for the fields"))

    def tta(self, value: Any) -> list[str]:
        from archlab.train import VIEWS, parse_tta

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

    # -- the sections of a protocol, in the order their problems are reported ----------
    def data(self, body: dict) -> None:
        data_map = body.get("data")
        if data_map is None:
            data_map = body["data"] = {}
        if not isinstance(data_map, dict):
            self.error(("data",), "data is a mapping (dataset:, val_fraction:, ...)")
            return
        self.keys(data_map, ("data",), DATA_KEYS, "data key")
        if not data_map.get("dataset"):
            self.error(("data",), "no dataset: set data: {dataset: fashion-mnist} (a name, "
                                  "a folder of class subfolders or a CSV), or pass --data")
        for k in ("val_fraction", "test_fraction", "holdout"):
            self.fraction(data_map, ("data", k), k, upper_open=k != "test_fraction")
        self.fraction(data_map, ("data", "train_fraction"), "train_fraction", zero_ok=False)
        self.fraction(data_map, ("data", "subsample"), "subsample", upper_open=False,
                      zero_ok=False)
        for k in ("image_size", "in_chans"):
            v = data_map.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                self.error(("data", k), f"{k} is a positive integer, got {v!r}")

    def training(self, body: dict) -> None:
        """recipe:, augment: and tta: (normalised to a list of views)."""
        recipe = body.get("recipe")
        if recipe is not None and not isinstance(recipe, (str, dict)):
            self.error(("recipe",), "recipe is a preset name or a mapping of recipe fields")
        elif isinstance(recipe, (str, dict)):
            self.recipe(recipe, ("recipe",))
        augment = body.get("augment")
        if augment is not None:
            if isinstance(augment, dict):
                self.keys(augment, ("augment",), AUGMENT_KEYS, "augment key")
            elif not isinstance(augment, str):
                self.error(("augment",), "augment is a preset name (none, basic, alexnet, rrc, "
                                         "randaugment) or a mapping {preset: ..., mixup: ...}")
        body["tta"] = self.tta(body.get("tta"))

    def seeds(self, body: dict, count: int | None = None) -> list[int]:
        """The seeds, taken out of the body (they are not hashed): a list, or a count
        (`seeds: 3` is 0, 1, 2). `count` (`--seeds N`) takes N seeds counting up from the
        first of them (seeds: [5] with --seeds 3 gives 5, 6, 7)."""
        raw_seeds = body.pop("seeds", [0])
        if _is_int(raw_seeds):
            if raw_seeds < 1:
                self.error(("seeds",), f"seeds is a count (1 or more) or a list of integers, "
                                       f"e.g. 3 or [0, 1, 2]; got {raw_seeds}")
            raw_seeds = list(range(max(raw_seeds, 1)))
        if (not isinstance(raw_seeds, list) or not raw_seeds
                or not all(_is_int(s) for s in raw_seeds)):
            self.error(("seeds",), f"seeds is a count or a list of integers, e.g. 3 or "
                                   f"[0, 1, 2]; got {raw_seeds!r}")
            raw_seeds = [0]
        elif len(set(raw_seeds)) != len(raw_seeds):
            self.error(("seeds",), f"seeds repeat: {raw_seeds}")
        if count is None:
            return list(raw_seeds)
        if not _is_int(count) or count < 1:
            self.error((), f"one value is a count of seeds, 1 or more; got {count!r}. "
                           "Several values are the seeds themselves (--seeds 0 1 2); "
                           "--set 'seeds=[7]' runs seed 7 alone", where="--seeds")
            return list(raw_seeds)
        return list(range(raw_seeds[0], raw_seeds[0] + count))

    def limits(self, body: dict) -> None:
        """budget:, jobs:, measure:, deterministic: and log:."""
        budget = self._mapping(body, "budget", BUDGET_KEYS, "{run: 10m, study: 2h}")
        if budget is not None:
            for k in BUDGET_KEYS:
                try:
                    parse_duration(budget.get(k), f"budget.{k}")
                except ValueError as e:
                    self.error(("budget", k), str(e))
        jobs = body.get("jobs")
        if jobs is not None and (not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1):
            self.error(("jobs",), f"jobs is the number of runs trained side by side, a positive "
                                  f"integer (e.g. 2 on a 2-core CPU); got {jobs!r}")
        self._mapping(body, "measure", MEASURE_KEYS, "{throughput_batch: 256}")
        deterministic = body.get("deterministic")
        if deterministic is not None and not isinstance(deterministic, bool):
            self.error(("deterministic",), f"deterministic is true or false (true: repeatable "
                                           f"GPU runs, cuDNN's deterministic algorithms and no "
                                           f"autotuning); got {deterministic!r}")
        if body.get("log") is not None:
            from archlab.train import Recipe

            try:
                Recipe(log=body["log"])
            except ValueError as e:
                self.error(("log",), str(e).removeprefix("recipe: "))

    def _mapping(self, body: dict, key: str, allowed: tuple, example: str) -> dict | None:
        """body[key] when it is a mapping of allowed keys (problems noted), else None."""
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.error((key,), f"{key} is a mapping {example}")
            return None
        self.keys(value, (key,), allowed, f"{key} key")
        return value

    def models(self, body: dict, listed: bool, wanted: list[str] | None,
               check_models: bool) -> list[ModelEntry]:
        """The model entries, taken out of the body; `wanted` (--models) picks among them
        or adds registered names. `listed`: the file has a models: key."""
        raw_models = body.pop("models", None)
        entries: list[ModelEntry] = []
        if raw_models is None or raw_models == []:
            if not wanted:
                self.error(("models",) if listed else (),
                           "no models: list them under models: (see `archlab models`), or "
                           "pass --models")
            raw_models = []
        elif not isinstance(raw_models, list):
            self.error(("models",), "models is a list of names or {name: ..., recipe: ...}")
            raw_models = []
        for i, item in enumerate(raw_models):
            entry = self.entry(item, ("models", i), check_models)
            if entry is not None:
                entries.append(entry)
        labels = [e.label for e in entries]
        for i, e in enumerate(entries):
            if labels.index(e.label) != i:
                self.error(("models", i), f"{e.label!r} is listed twice; give the second one "
                                          "its own label: (e.g. label: {e.label}-lr2)")
        if wanted:
            entries = select_models(entries, list(wanted), self, check_models)
        return entries

    def recipes_build(self, protocol) -> None:
        """Every run's recipe must build: a wrong value names the entry's line."""
        for e in protocol.models:
            try:
                protocol.recipe_for(e, protocol.seeds[0])
            except (ValueError, TypeError) as err:
                msg = str(err)
                prefix = f"{self.source}: recipe of {e.label}: "
                msg = msg[len(prefix):] if msg.startswith(prefix) else msg.removeprefix("recipe: ")
                self.error(e.path + ("recipe",) if e.path else ("recipe",), f"{e.label}: {msg}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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


__all__ = ["AUGMENT_KEYS", "BUDGET_KEYS", "DATA_FIELDS", "DATA_KEYS", "ENTRY_DATA_FIELDS",
           "ENTRY_KEYS", "MEASURE_KEYS", "ProtocolChecker", "ProtocolError", "TOP_KEYS",
           "parse_duration", "select_models", "set_dotted", "yaml_with_lines"]
