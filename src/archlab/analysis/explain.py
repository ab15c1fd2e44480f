"""Looking inside a network: `explain(model, images, methods=..., out_dir=...)`.

What a trained network has learnt, in the pictures of the course:

- `filters`: the first layer's kernels as an image grid (colour for RGB input);
- `patches`: for chosen layers and channels, the dataset patches that excite each channel
  most, cut to the channel's receptive field (Zeiler & Fergus, 1311.2901);
- attribution maps for an image and a class: `saliency` (1312.6034), `smoothgrad`,
  `integrated_gradients`, `gradcam` and `occlusion`; for ViT and DeiT, `attention` per layer
  and head and attention `rollout` (2005.00928);
- `errors`: the confusion matrix, the most-confused pairs and the top-losses gallery of a
  checkpoint on a dataset.

The functions of the modules below return arrays (`filters`, `top_patches`, `attribute`,
`attention_maps`, `attention_rollout`, `error_analysis`); `explain` runs the chosen methods,
writes one PNG per picture and an index.html that gathers them when given `out_dir`, and
`list_pictures(out_dir)` returns what was written, for a report to embed.
"""
from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from archlab.analysis.explain_errors import ErrorAnalysis, TopLoss, error_analysis
from archlab.analysis.explain_inputs import (
    SKIMAGE_PHOTOS, ExplainError, InputImage, Subject, dataset_examples, load_images,
    load_subject, read_dataset, sample_dataset, subject_from_module,
)
from archlab.analysis.explain_maps import (
    ATTENTION_METHODS, ATTRIBUTION_METHODS, Attribution, applicable_methods, attention_maps,
    attention_rollout, attribute, canonical_method, default_cam_layer, map_layers,
)
from archlab.analysis.explain_units import (
    Filters, TopPatches, default_patch_layers, filters, first_conv, top_patches,
)

__all__ = [
    "ATTENTION_METHODS", "ATTRIBUTION_METHODS", "METHODS", "SKIMAGE_PHOTOS", "Attribution",
    "ErrorAnalysis", "ExplainError", "Explanation", "Filters", "InputImage", "Picture",
    "Subject", "TopLoss", "TopPatches", "applicable_methods", "attention_maps",
    "attention_rollout", "attribute", "default_cam_layer", "default_patch_layers",
    "error_analysis", "explain", "filters", "first_conv", "list_pictures", "load_images",
    "load_subject", "map_layers", "read_dataset", "sample_dataset", "subject_from_module",
    "top_patches",
]

METHODS = ("filters", "patches", *ATTRIBUTION_METHODS, *ATTENTION_METHODS, "errors")
DATA_METHODS = ("patches", "errors")
MANIFEST = "explain.json"


@dataclass
class Picture:
    file: str          # relative to the output folder
    kind: str          # filters, patches, attribution, attention, confusion, top_losses
    title: str
    caption: str


@dataclass
class Explanation:
    subject: Subject
    methods: list[str]
    filters: Filters | None = None
    patches: dict[str, TopPatches] = field(default_factory=dict)
    attributions: list[Attribution] = field(default_factory=list)
    errors: ErrorAnalysis | None = None
    pictures: list[Picture] = field(default_factory=list)
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def html(self) -> Path | None:
        return self.out_dir / "index.html" if self.out_dir else None


# --------------------------------------------------------------------------------------
# Which methods, on what
# --------------------------------------------------------------------------------------


def _method_list(methods: Sequence[str] | str | None) -> list[str]:
    if isinstance(methods, str):
        return [m for m in re.split(r"[,\s]+", methods) if m]
    return list(methods or [])


def _all_methods(methods: Sequence[str] | str | None) -> bool:
    names = [canonical_method(m) for m in _method_list(methods)]
    return not names or "all" in names


def resolve_methods(subject: Subject, methods: Sequence[str] | str | None,
                    have_data: bool, have_images: bool, cam_layer: str | None = None
                    ) -> tuple[list[str], list[str]]:
    """(methods to run, notes on those left out). None or 'all' means every method that
    applies to the model and the inputs given; a method named explicitly must apply
    (Grad-CAM on a model without a convolutional stage applies when `cam_layer` is named)."""
    methods = _method_list(methods)
    usable = ["filters", "patches", *applicable_methods(subject), "errors"]
    try:
        first_conv(subject)
    except ExplainError:
        usable.remove("filters")
    if _all_methods(methods):
        notes = []
        chosen = [m for m in METHODS if m in usable]
        if not have_data:
            notes += [f"{m}: skipped, it needs a dataset (data=...)" for m in DATA_METHODS]
            chosen = [m for m in chosen if m not in DATA_METHODS]
        if not have_images:
            skipped = [m for m in chosen if m in ATTRIBUTION_METHODS + ATTENTION_METHODS]
            if skipped:
                notes.append(f"{', '.join(skipped)}: skipped, no images (give images or "
                             "a dataset)")
            chosen = [m for m in chosen if m not in skipped]
        for m in METHODS:
            if m not in usable:
                notes.append(f"{m}: does not apply to {subject.name}")
        return chosen, notes
    chosen = []
    for m in methods:
        c = canonical_method(m)
        if c not in METHODS:
            raise ExplainError(f"unknown method {m!r}; choose among {', '.join(METHODS)} "
                               f"or 'all' (for {subject.name}: {', '.join(usable)})")
        if c == "gradcam" and c not in usable:
            if cam_layer is not None:
                usable.append(c)                # attribute() checks the layer itself
            else:
                default_cam_layer(subject)      # raises, saying why and what works
        if c not in usable:
            raise ExplainError(
                f"{c} does not apply to {subject.name}"
                + (" (it has no attention layers: attention maps and rollout are for "
                   "transformers, ViT and DeiT)" if c in ATTENTION_METHODS else "")
                + f"; methods that do: {', '.join(usable)}")
        if c in DATA_METHODS and not have_data:
            raise ExplainError(f"{c} needs a dataset: pass data= (`--data fashion-mnist`, "
                               "a folder of class subfolders, or a CSV)")
        if c in ATTRIBUTION_METHODS + ATTENTION_METHODS and not have_images:
            raise ExplainError(f"{c} needs images: give image files, 'skimage:coffee', or "
                               "a dataset to take examples from")
        chosen.append(c)
    return list(dict.fromkeys(chosen)), []


# --------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------


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
    subject = model if isinstance(model, Subject) else load_subject(model, **load)
    inputs = load_images(subject, images) if images else []
    given = data is not None
    data = data if given else subject.dataset
    name = str(data)
    chosen, notes = resolve_methods(subject, methods, data is not None,
                                    bool(inputs) or data is not None, cam_layer)
    maps = [m for m in chosen if m in ATTRIBUTION_METHODS + ATTENTION_METHODS]
    if any(m in DATA_METHODS for m in chosen) or (maps and not inputs):
        try:
            data = read_dataset(subject, data, split)
        except (ValueError, FileNotFoundError) as e:
            if given or not _all_methods(methods):
                raise
            # The data a checkpoint names may have moved; what needs no data still runs.
            dropped = [m for m in chosen if m in DATA_METHODS or (m in maps and not inputs)]
            notes.append(f"{', '.join(dropped)}: skipped, the training data {name!r} could "
                         f"not be read ({e})")
            chosen = [m for m in chosen if m not in dropped]
    result = Explanation(subject, chosen, notes=notes)
    if not inputs and any(m in chosen for m in maps):
        sample, _ = sample_dataset(subject, data, split, limit)
        inputs = dataset_examples(subject, sample, num_images)
    if "filters" in chosen:
        result.filters = filters(subject)
    if "patches" in chosen:
        say(f"max-activating patches over {limit or 'all'} images of {name}")
        result.patches = top_patches(subject, data, layers, channels, top_k, split, limit)
    for img in inputs:
        for m in chosen:
            if m in ATTRIBUTION_METHODS + ATTENTION_METHODS:
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


# --------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "image"


SEPARATOR = (0.25, 0.45, 0.85)     # blue lines between tiles: neither black, white nor grey


def mosaic(tiles: np.ndarray, ncols: int, pad: int = 1,
           fill: float | tuple[float, float, float] = SEPARATOR) -> np.ndarray:
    """(n, h, w, C) tiles -> one image of `ncols` columns with `pad` lines of `fill` between
    them; grey tiles become RGB when the fill is a colour."""
    n, h, w, c = tiles.shape
    if isinstance(fill, tuple) and c == 1:
        tiles, c = np.repeat(tiles, 3, axis=-1), 3
    nrows = -(-n // ncols)
    out = np.empty((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), np.float32)
    out[:] = fill
    for i, tile in enumerate(tiles):
        r, q = divmod(i, ncols)
        out[r * (h + pad):r * (h + pad) + h, q * (w + pad):q * (w + pad) + w] = tile
    return out


def _show(ax, image: np.ndarray, **kw) -> None:
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
        kw.setdefault("cmap", "gray")
    ax.imshow(np.clip(image, 0, 1) if image.ndim == 3 else image, interpolation="nearest",
              vmin=kw.pop("vmin", 0), vmax=kw.pop("vmax", 1), **kw)
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, 30), min(height, 40)), dpi=100, layout="constrained")


def _save(fig, out_dir: Path, name: str) -> str:
    fig.savefig(out_dir / name, dpi=fig.dpi, facecolor="white")
    return name


def plot_filters(f: Filters, subject: Subject, out_dir: Path) -> Picture:
    n = len(f.images)
    ncols = int(np.ceil(np.sqrt(n)))
    grid = mosaic(f.images, ncols, pad=1)
    fig = _figure(7, 7 * grid.shape[0] / grid.shape[1] + 0.6)
    _show(fig.add_subplot(), grid)
    k = f.weights.shape[-1]
    fig.suptitle(f"{subject.name}: the {n} {k}x{k} kernels of {f.layer}")
    return Picture(_save(fig, out_dir, "filters.png"), "filters", f"Filters of {f.layer}",
                   f"{n} kernels of {f.layer}, {f.weights.shape[1]} input channel(s); mid-grey "
                   "is zero, each kernel scaled by its largest weight")


def plot_patches(tp: TopPatches, subject: Subject, out_dir: Path) -> Picture:
    nc, k, ph, pw, _ = tp.patches.shape
    grid = mosaic(tp.patches.reshape(nc * k, ph, pw, -1), k, pad=max(1, ph // 16))
    fig = _figure(1.0 + 0.9 * k, 0.5 + 0.9 * nc)
    ax = fig.add_subplot()
    _show(ax, grid)
    step = ph + max(1, ph // 16)
    ax.set_yticks([r * step + ph / 2 for r in range(nc)],
                  [f"ch {c}  {tp.values[i, 0]:.2f}" for i, c in enumerate(tp.channels)],
                  fontsize=8)
    ax.set_xlabel("rank 1 (left) to rank {} (right)".format(k), fontsize=8)
    size = "x".join(f"{s:g}" for s in tp.field.size)
    fig.suptitle(f"{subject.name} {tp.layer}: top {k} patches per channel "
                 f"(receptive field {size} px)", fontsize=10)
    return Picture(_save(fig, out_dir, f"patches-{_slug(tp.layer)}.png"), "patches",
                   f"Max-activating patches of {tp.layer}",
                   f"each row a channel (its highest activation beside it), the {k} images "
                   f"that excite it most, cut to its {size} px receptive field; grey lies "
                   "outside the image")


def _map_style(a: Attribution) -> dict[str, Any]:
    m = a.map
    if a.method == "occlusion":
        lim = float(np.abs(m).max()) or 1.0
        return dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
    # Gradients have a few huge pixels: scale to the 99th percentile.
    top = float(np.percentile(m, 99.5 if a.method != "gradcam" else 100)) or 1.0
    return dict(cmap="jet", vmin=0.0, vmax=top)


TITLES = {"saliency": "saliency", "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
          "occlusion": "occlusion", "attention": "attention (last layer)",
          "rollout": "attention rollout"}


def plot_attributions(attrs: list[Attribution], subject: Subject, out_dir: Path,
                      name: str) -> Picture:
    first = attrs[0]
    fig = _figure(2.4 * (len(attrs) + 1), 2.9)
    axes = fig.subplots(1, len(attrs) + 1, squeeze=False)[0]
    _show(axes[0], first.display)
    axes[0].set_title(first.image[:28], fontsize=9)
    grey = first.display.mean(-1)
    for ax, a in zip(axes[1:], attrs):
        _show(ax, grey, cmap="gray", alpha=1.0)
        style = _map_style(a)
        ax.imshow(a.map, alpha=0.55, interpolation="bilinear", **style)
        ax.set_title(TITLES[a.method] + (f"\n{a.layer}" if a.layer else ""), fontsize=9)
    fig.suptitle(f"{subject.name}: class {first.target_name!r} (p = {first.prob:.2f}); "
                 f"predicted {first.predicted_name!r}", fontsize=10)
    methods = ", ".join(TITLES[a.method] for a in attrs)
    return Picture(_save(fig, out_dir, f"attribution-{name}.png"), "attribution",
                   f"Attribution maps of {first.image}",
                   f"{methods} for class {first.target_name!r}; red is where the score "
                   "depends most (occlusion: red where hiding the pixels lowers the score, "
                   "blue where it raises it)")


def plot_attention(a: Attribution, subject: Subject, out_dir: Path, name: str) -> Picture:
    maps = a.raw                                         # (layers, heads, gh, gw)
    layers, heads, gh, gw = maps.shape
    scaled = maps / maps.reshape(layers, heads, -1).max(-1)[..., None, None].clip(1e-12)
    grid = mosaic(scaled.reshape(layers * heads, gh, gw, 1), heads, pad=1, fill=np.nan)
    fig = _figure(1.2 + 1.4 * heads + 2.6, 0.6 + 1.4 * layers)
    axes = fig.subplots(1, 2, width_ratios=[heads * 1.4, 2.6])
    _show(axes[0], grid[..., 0], cmap="viridis")
    axes[0].set_yticks([r * (gh + 1) + gh / 2 for r in range(layers)],
                       [f"layer {r}" for r in range(layers)], fontsize=8)
    axes[0].set_xticks([h * (gw + 1) + gw / 2 for h in range(heads)],
                       [f"head {h}" for h in range(heads)], fontsize=8)
    _show(axes[1], a.display)
    axes[1].set_title(a.image[:28], fontsize=9)
    fig.suptitle(f"{subject.name}: class-token attention to the {gh}x{gw} patches\n"
                 "per layer and head, each map scaled to its maximum", fontsize=10)
    return Picture(_save(fig, out_dir, f"attention-{name}.png"), "attention",
                   f"Attention maps of {a.image}",
                   f"{layers} layers x {heads} heads: where the class token looks")


def plot_confusion(err: ErrorAnalysis, out_dir: Path, subject: Subject) -> Picture:
    k = len(err.classes)
    cm = err.confusion
    fig = _figure(2 + 0.55 * min(k, 40), 1.6 + 0.5 * min(k, 40))
    ax = fig.add_subplot()
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rows[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), err.classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), err.classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    fig.suptitle(f"{subject.name} on {err.data}: accuracy {err.accuracy:.2%} "
                 f"({err.count:,} images)", fontsize=10)
    return Picture(_save(fig, out_dir, "confusion.png"), "confusion", "Confusion matrix",
                   "rows: the actual class, columns: the predicted one; colour is the share "
                   "of the row")


def plot_top_losses(err: ErrorAnalysis, out_dir: Path, subject: Subject) -> Picture:
    items: list[TopLoss] = err.top_losses
    ncols = min(4, len(items))
    nrows = -(-len(items) // ncols)
    fig = _figure(2.6 * ncols, 0.5 + 2.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, t in zip(axes, items):
        _show(ax, t.image)
        ax.set_title(f"{t.predicted[:14]} / {t.actual[:14]}\nloss {t.loss:.2f}, "
                     f"p(actual) {t.prob_actual:.2f}", fontsize=8)
    for ax in axes[len(items):]:
        ax.axis("off")
    fig.suptitle(f"{subject.name}: the {len(items)} largest losses "
                 "(predicted / actual)", fontsize=10)
    return Picture(_save(fig, out_dir, "top-losses.png"), "top_losses", "Top losses",
                   "the images the model is most wrong about: predicted / actual class, "
                   "loss, probability given to the actual class")


def write_pictures(result: Explanation) -> list[Picture]:
    out, subject = result.out_dir, result.subject
    pictures = []
    if result.filters is not None:
        pictures.append(plot_filters(result.filters, subject, out))
    for tp in result.patches.values():
        pictures.append(plot_patches(tp, subject, out))
    by_image: dict[str, list[Attribution]] = {}
    for a in result.attributions:
        by_image.setdefault(a.image, []).append(a)
    used: set[str] = set()
    for image, attrs in by_image.items():
        name = _slug(image)
        while name in used:
            name += "-"
        used.add(name)
        if any(a.method != "attention" for a in attrs):
            pictures.append(plot_attributions(attrs, subject, out, name))
        for a in attrs:
            if a.method == "attention":
                pictures.append(plot_attention(a, subject, out, name))
    if result.errors is not None:
        pictures.append(plot_confusion(result.errors, out, subject))
        if result.errors.top_losses:
            pictures.append(plot_top_losses(result.errors, out, subject))
    return pictures


# --------------------------------------------------------------------------------------
# The page, and the list a report reads
# --------------------------------------------------------------------------------------


def write_html(result: Explanation) -> Path:
    """index.html gathering the pictures, and explain.json listing them."""
    s, e = result.subject, result.errors
    esc = html.escape
    parts = [f"<!doctype html><meta charset='utf-8'><title>archlab explain: {esc(s.name)}"
             "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;"
             "color:#222}figure{margin:1.5em 0}img{max-width:100%}figcaption{color:#555;"
             "font-size:90%}td,th{padding:2px 10px;text-align:left}</style>",
             f"<h1>{esc(s.name)}</h1><p>weights: {esc(s.source)}; input {s.in_chans}x"
             f"{s.image_size}x{s.image_size}; {s.num_classes} classes"
             + (f"; trained on {esc(str(s.dataset))}" if s.dataset else "") + "</p>"]
    if e is not None:
        pairs = "".join(f"<tr><td>{esc(a)}</td><td>{esc(p)}</td><td>{n}</td></tr>"
                        for a, p, n in e.most_confused(10))
        parts.append(f"<h2>Errors on {esc(e.data)}</h2><p>accuracy {e.accuracy:.2%} on "
                     f"{e.count:,} images, mean loss {e.loss:.3f}</p><h3>Most confused "
                     f"pairs</h3><table><tr><th>actual</th><th>predicted</th><th>images</th>"
                     f"</tr>{pairs}</table>")
    for p in result.pictures:
        parts.append(f"<figure><img src='{esc(p.file)}' alt='{esc(p.title)}'><figcaption>"
                     f"<b>{esc(p.title)}</b>: {esc(p.caption)}</figcaption></figure>")
    if result.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes)
                     + "</ul>")
    out = result.out_dir / "index.html"
    out.write_text("\n".join(parts))
    manifest = {"model": s.name, "source": s.source, "methods": result.methods,
                "notes": result.notes,
                "pictures": [vars(p) for p in result.pictures]}
    if e is not None:
        manifest["errors"] = {"data": e.data, "accuracy": e.accuracy, "loss": e.loss,
                              "count": e.count, "most_confused": e.most_confused(10)}
    (result.out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out


def list_pictures(out_dir: str | Path) -> list[Picture]:
    """The pictures `explain` wrote to `out_dir`, in the order of its page."""
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} holds no {MANIFEST}: run `archlab explain ... "
                                f"--out {out_dir}` first")
    return [Picture(**p) for p in json.loads(path.read_text())["pictures"]]
