"""The entry point: `explain(model, images, methods=..., out_dir=...)` loads the subject,
chooses the methods, runs them, and draws the pictures and the page when given `out_dir`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from archlab.classical import is_classical
from archlab.explain.datasets import dataset_examples, read_dataset, sample_dataset
from archlab.explain.errors import error_analysis
from archlab.explain.images import load_images
from archlab.explain.maps import attribute
from archlab.explain.methods import DATA_METHODS, MAP_METHODS, all_methods, resolve_methods
from archlab.explain.page import write_html
from archlab.explain.pictures import write_pictures
from archlab.explain.result import Explanation
from archlab.explain.subject import ExplainError, Subject, load_subject
from archlab.explain.units import filters, top_patches


def explain(model: Any, images: Sequence[Any] | str | None = None, *,
            methods: Sequence[str] | str | None = None, out_dir: str | Path | None = None,
            data: Any = None, split: str | None = None, layers: Sequence[str] | None = None,
            channels: Sequence[int] | int | None = None, top_k: int = 9,
            limit: int | None = 2000, num_images: int = 4, target: int | str | None = None,
            cam_layer: str | None = None, options: dict[str, Any] | None = None,
            log: Callable[[str], None] | None = None, **load: Any) -> Explanation:
    """Run `methods` on `model` (a registered name, a checkpoint or run directory, or a
    Subject or module) and write the pictures to `out_dir` when given.

    `images`: files, folders, 'skimage:NAME' photos, arrays; without them, `num_images`
    images of different classes from `data` are used. `data` (default: the dataset a
    checkpoint was trained on) feeds `patches` (`limit` images) and `errors` (its test
    split, every image). `load` goes to load_subject (pretrained, num_classes, in_chans,
    small_input, img_size, device).
    """
    say = log or (lambda _msg: None)
    if isinstance(model, str) and is_classical(model) and not Path(model).exists():
        raise ExplainError(f"{model} is not a network: its SIFT keypoints are drawn by "
                           f"explain_keypoints(images, out_dir=...) (`archlab explain {model} "
                           "IMAGE...`)")
    subject = model if isinstance(model, Subject) else load_subject(model, **load)
    inputs = load_images(subject, images) if images else []
    given = data is not None
    data = data if given else subject.dataset
    name = str(data)
    chosen, notes = resolve_methods(subject, methods, data is not None,
                                    bool(inputs) or data is not None, cam_layer)
    needs_data = any(m in DATA_METHODS for m in chosen) or (
        not inputs and any(m in MAP_METHODS for m in chosen))
    if needs_data:
        try:
            data = read_dataset(subject, data, split)
        except (ValueError, FileNotFoundError) as e:
            if given or not all_methods(methods):
                raise
            # The data a checkpoint names may have moved; what needs no data still runs.
            dropped = [m for m in chosen if m in DATA_METHODS or (m in MAP_METHODS
                                                                  and not inputs)]
            notes.append(f"{', '.join(dropped)}: skipped, the training data {name!r} could "
                         f"not be read ({e})")
            chosen = [m for m in chosen if m not in dropped]
    result = Explanation(subject, chosen, notes=notes)
    if not inputs and any(m in MAP_METHODS for m in chosen):
        sample, _ = sample_dataset(subject, data, split, limit)
        inputs = dataset_examples(subject, sample, num_images)
    if "filters" in chosen:
        result.filters = filters(subject)
    if "patches" in chosen:
        say(f"max-activating patches over {limit or 'all'} images of {name}")
        result.patches = top_patches(subject, data, layers, channels, top_k, split, limit)
    for img in inputs:
        for m in (m for m in chosen if m in MAP_METHODS):
            say(f"{m} of {img.name}")
            result.attributions.append(attribute(
                subject, img, m, target, cam_layer if m == "gradcam" else None,
                **(options or {})))
    if "errors" in chosen:
        say(f"error analysis on {name}")
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
