"""A run's setup, before its first step: the data (loaded, split, recorded), the network
(built for the data's classes and channels, with the stem the recipe and weights call for),
the preprocessing (image size and normalisation) and the loaders. Each function fills in
the trainer's attributes of its part; the trainer calls them in this order."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archlab.data import (BatchPipeline, ImageData, Issues, channel_stats,
                          file_transform, indices_digest, load_dataset, load_splits,
                          make_loader, train_val_split)
from archlab.models import create_model
from archlab.train import distributed
from archlab.train.progressive import ProgressivePlan
from archlab.train.recipe import Recipe

SMALL_IMAGE = 64      # images of this side or less get the small-input stem by default


@dataclass
class Preprocess:
    """How images reach the model at evaluation: resize, centre crop, normalise."""

    image_size: int
    mean: list[float]
    std: list[float]
    crop_pct: float = 0.875
    in_chans: int = 3
    interpolation: str = "bilinear"   # of the resize, for files (data.eval_transform's)

    def as_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std),
                "crop_pct": self.crop_pct, "in_chans": self.in_chans,
                "interpolation": self.interpolation}


def load_data(spec: str, *, root, strict: bool, with_test: bool, image_size: int | None = None,
              in_chans: int | None = None) -> tuple[ImageData, ImageData | None]:
    """(train, test or None) of a dataset spec: the test split where the source has one and
    `with_test`; no hold-out is cut (the run's validation split comes from the train set)."""
    if not with_test:
        return load_dataset(spec, "train", root=root, strict=strict, image_size=image_size,
                            in_chans=in_chans), None
    return load_splits(spec, root=root, strict=strict, image_size=image_size,
                       in_chans=in_chans, holdout=None)


def resume_inputs(t, model, data, test_data, root):
    """The model, data and recipe of the run being resumed (its recipe wins)."""
    state = t.resume_state
    recipe = Recipe.from_dict(state["recipe"])
    stored_model, stored = state["model"]["name"], state["data"]
    if isinstance(model, str) and stored_model and model != stored_model:
        raise ValueError(f"{t.run_dir} is a run of {stored_model}, not {model}")
    if model is None or isinstance(model, str):
        model = stored_model
    if isinstance(data, str) and data != stored["spec"]:
        raise ValueError(f"{t.run_dir} trained on {stored['spec']!r}, not {data!r}")
    if data is None:
        load = stored.get("load") or {}
        root = root or load.get("root")
        data, test = load_data(stored["spec"], root=root, strict=recipe.strict,
                               with_test=test_data is None, image_size=load.get("image_size"),
                               in_chans=load.get("in_chans"))
        test_data = test_data if test_data is not None else test
    return model, data, test_data, recipe, root


def setup_data(t, data, val_data, test_data, root) -> None:
    """Load what is named, hold out the stratified validation split, record the split."""
    r = t.recipe
    spec = data if isinstance(data, str) else None
    if isinstance(data, str):
        data, test = load_data(spec, root=root, strict=r.strict, with_test=test_data is None)
        test_data = test_data if test_data is not None else test
    elif not isinstance(data, ImageData):
        raise TypeError(f"data is an ImageData or a dataset spec, not {type(data).__name__}")
    if isinstance(test_data, str):
        test_data = load_dataset(test_data, "test", classes=data.classes, strict=r.strict,
                                 in_chans=data.in_chans, root=root,
                                 image_size=data.spec.get("image_size"))
    t.data, t.test_data = data, test_data
    t.data_spec = spec or data.spec.get("spec") or data.name
    t.issues = Issues()
    t.issues.extend(data.issues)
    if val_data is None:
        train_idx, val_idx = train_val_split(data.targets, r.val_fraction, r.seed,
                                             r.train_fraction)
        t.val_data = data.subset(val_idx) if len(val_idx) else None
    else:
        train_idx, _ = train_val_split(data.targets, 0.0, r.seed, r.train_fraction)
        val_idx = torch.empty(0, dtype=torch.long)
        t.val_data = val_data
    t.train_data = data.subset(train_idx)
    if len(t.train_data) == 0:
        raise ValueError("no training images left after the validation split")
    t.split_info = {"spec": t.data_spec, "seed": r.seed,
                    "val_fraction": r.val_fraction, "train_fraction": r.train_fraction,
                    "train": len(train_idx), "val": len(val_idx),
                    "train_digest": indices_digest(train_idx),
                    "val_digest": indices_digest(val_idx),
                    "fingerprint": data.fingerprint(),
                    "load": {"image_size": data.spec.get("image_size"),
                             "in_chans": data.spec.get("in_chans"),
                             "root": str(root) if root else None}}
    if t.resume_state is not None:
        old = t.resume_state["data"]
        for key in ("train_digest", "val_digest", "fingerprint"):
            if old.get(key) != t.split_info[key]:
                raise ValueError(
                    f"the data differ from the run being resumed ({key} changed: the "
                    "dataset, its files or the split are not the ones it trained on); "
                    "resume on the same data, or start a new run")


def choose_stem(recipe: Recipe, image_size: int | None) -> tuple[bool, str]:
    """(small_input, why): as the recipe sets it; else as pretrained weights were trained
    (their stem, whatever the image size: another stem would see them at the wrong scale
    and cost many times the compute); else the small-input stem for small images."""
    if recipe.small_input is not None:
        small = bool(recipe.small_input)
        return small, f"{'small-input' if small else 'standard'} stem (small_input set)"
    if recipe.pretrained:
        return False, ("standard stem, as the pretrained weights were trained (set "
                       "small_input: true to change it)")
    if image_size is not None and image_size <= SMALL_IMAGE:
        return True, f"small-input stem (images of {image_size} px, {SMALL_IMAGE} or less)"
    return False, "standard stem"


def setup_model(t, model: nn.Module | str) -> nn.Module:
    """Build a registered model for the data's classes and channels (or check a module),
    then let the plugins change it (staged deepening, a fine-tuning head)."""
    r, data = t.recipe, t.data
    num_classes, in_chans = data.num_classes, data.in_chans
    small, t.stem = choose_stem(r, r.image_size or (data.image_size if data.in_memory
                                                    else None))
    if isinstance(model, str):
        t.model_name = model
        torch.manual_seed(r.seed)
        # Resuming, the checkpoint replaces the weights: no need to read `pretrained`.
        pretrained = None if t.resume_state is not None else r.pretrained
        net = create_model(model, num_classes=num_classes, in_chans=in_chans,
                           small_input=small, pretrained=pretrained, **r.model_kwargs)
    else:
        # A module built by the caller: its registered name (if any) is recorded so that
        # `archlab eval` can rebuild it, assuming it was built with these kwargs.
        net, t.model_name = model, getattr(model, "model_name", None)
    for plugin in t.plugins:
        if hasattr(plugin, "on_model"):
            net = plugin.on_model(t, net)
    if getattr(net, "num_classes", num_classes) != num_classes:
        raise ValueError(f"the model has {net.num_classes} outputs but the data "
                         f"{num_classes} classes; call model.reset_classifier("
                         f"{num_classes}) first")
    t.card = getattr(net, "card", None)
    t.model_kwargs = {"num_classes": num_classes, "in_chans": in_chans,
                      "small_input": bool(small), **r.model_kwargs}
    return net


def setup_preprocess(t, net: nn.Module) -> dict[str, Any] | None:
    """Image size (the recipe's; else where a progressive plan ends, since the last stage
    is what the weights learn; else the data's own in memory, else the card's) and
    normalisation (the data's statistics from scratch, the card's for pretrained
    weights)."""
    r, data, card = t.recipe, t.data, t.card
    last_stage = ProgressivePlan.from_recipe(r).last_size() if r.progressive else None
    if r.image_size:
        size = r.image_size
    elif last_stage:
        size = last_stage
    elif data.in_memory:
        size = data.image_size
    else:
        size = card.input_size[1] if card is not None else 224
    min_size = getattr(net, "min_input_size", 1)
    if size < min_size:
        t.log(f"note: {size} px images are upsampled to {min_size} px, the smallest "
              f"{t.model_name or 'the model'} takes")
        size = min_size
    t.image_size = size
    norm = r.normalize
    if norm == "auto":
        norm = "model" if r.pretrained else "dataset"
    need_stats = norm == "dataset" or (r.augment == "alexnet" and r.lighting > 0)
    stats = channel_stats(t.train_data) if need_stats else None
    in_chans = data.in_chans
    if norm == "model":
        if card is None:
            raise ValueError("normalize='model' needs a registered model (its card's "
                             "mean/std)")
        mean, std = list(card.mean), list(card.std)
        if in_chans != len(mean):
            mean, std = [sum(mean) / len(mean)] * in_chans, [sum(std) / len(std)] * in_chans
    else:
        mean, std = stats["mean"], stats["std"]
    # Images held in memory are seen whole; files are cut to the centre crop.
    crop_pct = 1.0 if data.in_memory or r.in_memory else r.crop_pct
    t.preprocess = Preprocess(size, mean, std, crop_pct, in_chans)
    return stats


def _decode_once(t) -> None:
    """recipe.in_memory: decode the files once, after the split (a skipped file leaves the
    indices alone), and keep what the decoding reported."""
    size, strict = t.image_size, t.recipe.strict
    t.train_data = t.train_data.to_memory(size, strict)
    if t.val_data is not None and not t.val_data.in_memory:
        t.val_data = t.val_data.to_memory(size, strict)
    if t.test_data is not None and not t.test_data.in_memory:
        t.test_data = t.test_data.to_memory(size, strict)
    for part in (t.train_data, t.val_data, t.test_data):
        for kind in ("skipped (cannot be decoded)", "converted"):
            for message in (part.issues.items.get(kind, []) if part else []):
                t.issues.add(kind, message)


def setup_loaders(t, stats: dict[str, Any] | None) -> None:
    r, data, size = t.recipe, t.data, t.image_size
    if r.in_memory and not data.in_memory:
        _decode_once(t)
    in_memory = t.train_data.in_memory
    augment = r.augmentation(data.hflip)
    eig = (stats["eigval"], stats["eigvec"]) if stats else (None, None)
    t.train_pipeline = BatchPipeline(size, t.preprocess.mean, t.preprocess.std,
                                     augment, in_memory, *eig, num_classes=data.num_classes,
                                     channels_last=t.settings.channels_last)
    t.train_loader = make_loader(
        t.train_data, r.batch_size, t.train_pipeline,
        transform=None if in_memory else file_transform(augment, size, r.crop_pct),
        device=t.device, shuffle=True, drop_last=True, seed=r.seed, workers=r.workers,
        strict=r.strict)
    if t.dist is not None:  # each process takes its slice of every global batch
        distributed.check_batch_size(r.batch_size, t.dist.world_size)
        t.train_loader.shard(t.dist.rank, t.dist.world_size)
        if not t.dist.is_main:
            t.val_data = t.test_data = None
    t.steps_per_epoch = len(t.train_loader)
    if t.steps_per_epoch == 0:
        raise ValueError("no training batches")
    t.val_loader = t.eval_loader(t.val_data) if t.val_data else None
