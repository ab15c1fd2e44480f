"""The entry point: `explain(model, images, methods=..., out_dir=...)` loads the subject,
chooses the methods, runs them, and draws the pictures and the page when given `out_dir`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from archlab.classical import is_classical
from archlab.explain.class_model import AscentParams, class_model_images
from archlab.explain.datasets import dataset_examples, read_dataset, sample_dataset
from archlab.explain.deconv import deconv_projections
from archlab.explain.errors import error_analysis
from archlab.explain.images import InputImage, load_images
from archlab.explain.maps import attribute
from archlab.explain.methods import (
    DATA_METHODS, IMAGE_METHODS, MAP_METHODS, all_methods, resolve_methods,
)
from archlab.explain.page import write_html
from archlab.explain.pictures import write_pictures
from archlab.explain.positions import (
    mean_attention_distance, position_embeddings, position_similarity,
)
from archlab.explain.result import Explanation
from archlab.explain.subject import ExplainError, Subject, load_subject
from archlab.explain.units import filters, top_patches

# Class-model images drawn when no class is named: the first few classes.
DEFAULT_CLASSES = 4


def explain(model: Any, images: Sequence[Any] | str | None = None, *,
            methods: Sequence[str] | str | None = None, out_dir: str | Path | None = None,
            data: Any = None, split: str | None = None, layers: Sequence[str] | None = None,
            channels: Sequence[int] | int | dict[str, Sequence[int]] | None = None,
            top_k: int = 9, limit: int | None = 2000, num_images: int = 4,
            target: int | str | None = None, cam_layer: str | None = None,
            classes: Sequence[int | str] | None = None,
            ascent: AscentParams | dict[str, Any] | str | None = None,
            options: dict[str, Any] | None = None,
            log: Callable[[str], None] | None = None, **load: Any) -> Explanation:
    """Run `methods` on `model` (a registered name, a checkpoint or run directory, or a
    Subject or module) and write the pictures to `out_dir` when given.

    `images`: files, folders, 'skimage:NAME' photos, arrays; without them, `num_images`
    images of different classes from `data` are used. `data` (default: the dataset a
    checkpoint was trained on) feeds `patches` and `deconv` (`limit` images; `layers` and
    `channels`, a dict {layer: channels} naming both) and `errors` (its test split, every
    image). `class_model` draws `classes` (default: `target`, else the first four) with the
    gradient ascent `ascent` (AscentParams, a dict or 'steps=400,l2=0.02'). `load` goes to
    load_subject (pretrained, num_classes, in_chans, small_input, img_size, device).
    """
    say = log or (lambda _msg: None)
    if isinstance(model, str) and is_classical(model) and not Path(model).exists():
        raise ExplainError(f"{model} is not a network: its SIFT keypoints are drawn by "
                           f"explain_keypoints(images, out_dir=...) (`archlab explain {model} "
                           "IMAGE...`)")
    subject = model if isinstance(model, Subject) else load_subject(model, **load)
    ascent = AscentParams.parse(ascent)          # a bad parameter is refused before any work
    inputs = load_images(subject, images) if images else []
    chosen, notes, data = _choose(subject, methods, data, split, inputs, cam_layer)
    result = Explanation(subject, chosen, notes=notes)
    if not inputs and any(m in IMAGE_METHODS for m in chosen):
        sample, _ = sample_dataset(subject, data, split, limit)
        inputs = dataset_examples(subject, sample, num_images)
    if "filters" in chosen:
        result.filters = filters(subject)
    if "patches" in chosen or "deconv" in chosen:
        say(f"max-activating patches over {limit or 'all'} images of "
            f"{getattr(data, 'name', data)}")
        tops = top_patches(subject, data, layers, channels, top_k, split, limit)
        result.patches = tops if "patches" in chosen else {}
        if "deconv" in chosen:
            say("deconvnet projections of the top activations")
            result.deconv = deconv_projections(subject, data, tops, split)
            result.deconv_patches = tops
    _images(result, inputs, target, cam_layer, options or {}, say)
    if "pos_embedding" in chosen:
        result.position_similarity = position_similarity(*position_embeddings(subject))
    if "class_model" in chosen:
        wanted = list(classes) if classes else [target] if target is not None else list(
            range(min(DEFAULT_CLASSES, subject.num_classes)))
        say(f"class-model images of {len(wanted)} classes, {ascent.steps} steps")
        result.class_models = class_model_images(subject, wanted, ascent)
    if "errors" in chosen:
        say(f"error analysis on {getattr(data, 'name', data)}")
        result.errors = error_analysis(subject, data, split)
        if result.errors.skipped:
            result.notes.append(f"errors: {len(result.errors.skipped)} files could not be "
                                f"decoded, e.g. {result.errors.skipped[0]}")
    if out_dir is not None:
        result.out_dir = Path(out_dir)
        result.out_dir.mkdir(parents=True, exist_ok=True)
        result.pictures = write_pictures(result)
        write_html(result)
    return result


def _choose(subject: Subject, methods: Sequence[str] | str | None, data: Any,
            split: str | None, inputs: list[InputImage], cam_layer: str | None
            ) -> tuple[list[str], list[str], Any]:
    """(methods to run, notes, the dataset read when one is needed, else the spec)."""
    given = data is not None
    data = data if given else subject.dataset
    name = str(data)
    chosen, notes = resolve_methods(subject, methods, data is not None,
                                    bool(inputs) or data is not None, cam_layer)
    needs_data = any(m in DATA_METHODS for m in chosen) or (
        not inputs and any(m in IMAGE_METHODS for m in chosen))
    if needs_data:
        try:
            data = read_dataset(subject, data, split)
        except (ValueError, FileNotFoundError) as e:
            if given or not all_methods(methods):
                raise
            # The data a checkpoint names may have moved; what needs no data still runs.
            dropped = [m for m in chosen if m in DATA_METHODS or (m in IMAGE_METHODS
                                                                  and not inputs)]
            notes.append(f"{', '.join(dropped)}: skipped, the training data {name!r} could "
                         f"not be read ({e})")
            chosen = [m for m in chosen if m not in dropped]
    return chosen, notes, data


def _images(result: Explanation, inputs: list[InputImage], target: int | str | None,
            cam_layer: str | None, options: dict[str, Any], say: Callable[[str], None]
            ) -> None:
    """The methods that read the images: a map per image and method, and the attention
    distance averaged over them."""
    subject, chosen = result.subject, result.methods
    for img in inputs:
        for m in (m for m in chosen if m in MAP_METHODS):
            say(f"{m} of {img.name}")
            result.attributions.append(attribute(
                subject, img, m, target, cam_layer if m == "gradcam" else None, **options))
    if "attention_distance" in chosen:
        say(f"mean attention distance over {len(inputs)} images")
        result.attention_distance = mean_attention_distance(subject, inputs)
