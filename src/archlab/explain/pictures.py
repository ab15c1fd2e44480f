"""The pictures of an explanation: one PNG per picture, with the title and caption the page
shows beside it. Figures come from archlab._plot (one matplotlib setup for the whole
project, never pyplot's global state), the confusion matrix too.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from archlab._plot import confusion_figure, figure, to_png
from archlab.explain.class_model import ClassModel
from archlab.explain.deconv import Projections
from archlab.explain.errors import ErrorAnalysis, TopLoss
from archlab.explain.maps import Attribution
from archlab.explain.positions import AttentionDistance, similarity_mosaic
from archlab.explain.result import Explanation, Picture
from archlab.explain.subject import Subject
from archlab.explain.units import Filters, TopPatches


def slug(text: str) -> str:
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
    ax.grid(False)                     # the house style grids charts; not pictures


def plot_filters(f: Filters, subject: Subject, out_dir: Path) -> Picture:
    n = len(f.images)
    ncols = int(np.ceil(np.sqrt(n)))
    grid = mosaic(f.images, ncols, pad=1)
    fig = figure(7, 7 * grid.shape[0] / grid.shape[1] + 0.6, layout="constrained")
    _show(fig.add_subplot(), grid)
    k = f.weights.shape[-1]
    fig.suptitle(f"{subject.name}: the {n} {k}x{k} kernels of {f.layer}")
    return Picture(to_png(fig, out_dir / "filters.png").name, "filters", f"Filters of {f.layer}",
                   f"{n} kernels of {f.layer}, {f.weights.shape[1]} input channel(s); mid-grey "
                   "is zero, each kernel scaled by its largest weight")


def plot_patches(tp: TopPatches, subject: Subject, out_dir: Path) -> Picture:
    nc, k, ph, pw, _ = tp.patches.shape
    grid = mosaic(tp.patches.reshape(nc * k, ph, pw, -1), k, pad=max(1, ph // 16))
    fig = figure(1.0 + 0.9 * k, 0.5 + 0.9 * nc, layout="constrained")
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
    return Picture(to_png(fig, out_dir / f"patches-{slug(tp.layer)}.png").name, "patches",
                   f"Max-activating patches of {tp.layer}",
                   f"each row a channel (its highest activation beside it), the {k} images "
                   f"that excite it most, cut to its {size} px receptive field; grey lies "
                   "outside the image")


def plot_deconv(tp: TopPatches, proj: Projections, subject: Subject, out_dir: Path
                ) -> Picture:
    """Zeiler & Fergus's figure 2: each channel's projections (left) beside its patches."""
    nc, k, ph, pw, _ = tp.patches.shape
    pad = max(1, ph // 16)
    fig = figure(1.6 + 1.8 * k, 0.7 + 0.9 * nc, layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, tiles, what in ((axes[0], proj.images, "deconvnet projections"),
                            (axes[1], tp.patches, "top patches")):
        _show(ax, mosaic(tiles.reshape(nc * k, ph, pw, -1), k, pad=pad))
        ax.set_title(what, fontsize=9)
    axes[0].set_yticks([r * (ph + pad) + ph / 2 for r in range(nc)],
                       [f"ch {c}" for c in tp.channels], fontsize=8)
    size = "x".join(f"{s:g}" for s in tp.field.size)
    fig.suptitle(f"{subject.name} {tp.layer}: the top {k} activations of each channel "
                 f"projected to pixels (receptive field {size} px)", fontsize=10)
    return Picture(to_png(fig, out_dir / f"deconv-{slug(tp.layer)}.png").name, "deconv",
                   f"Deconvnet projections of {tp.layer}",
                   f"each row a channel: left, its {k} strongest activations projected back "
                   "to the pixels by the deconvnet (1311.2901: transposed convolutions, "
                   "pooling switches, ReLU on the way down), mid-grey at zero, each scaled to "
                   "its largest value; right, the image patches they came from")


def plot_class_models(models: list[ClassModel], subject: Subject, out_dir: Path) -> Picture:
    n = len(models)
    ncols = min(n, 5)
    nrows = -(-n // ncols)
    fig = figure(0.4 + 2.3 * ncols, 0.6 + 2.6 * nrows, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, m in zip(axes, models):
        lo, hi = np.percentile(m.image, (0.5, 99.5))
        _show(ax, (m.image - lo) / max(hi - lo, 1e-6))
        ax.set_title(f"{m.target_name[:18]}: {m.score:.1f}\n(start {m.start_score:.1f}; next "
                     f"{subject.class_name(m.runner_up)[:10]} {m.logits[m.runner_up]:.1f})",
                     fontsize=8)
    for ax in axes[n:]:
        ax.axis("off")
    p = models[0].params
    fig.suptitle(f"{subject.name}: images that maximise a class score", fontsize=10)
    return Picture(to_png(fig, out_dir / "class-models.png").name, "class_model",
                   "Class-model images",
                   "gradient ascent on the pixels for each class's score before the softmax, "
                   f"minus {p['l2']:g}·‖I‖² (1312.6034), {p['steps']} steps of {p['lr']:g}, "
                   f"shifted by up to {p['jitter']} px each step and blurred (σ "
                   f"{p['blur_sigma']:g} px) every {p['blur_every']}, seed {p['seed']}; "
                   "above each, the class's score at the end and at the start, and the next "
                   "class's; contrast stretched for display")


def draw_position_similarity(fig, sim: np.ndarray, title: str) -> None:
    """ViT's Figure 7 (centre) on `fig`: each patch's similarity map at its place."""
    rows, cols = sim.shape[:2]
    ax = fig.subplots()
    image = ax.imshow(similarity_mosaic(sim), cmap="viridis", vmin=-1, vmax=1,
                      interpolation="nearest")
    ax.set_xticks([c * (cols + 1) + (cols - 1) / 2 for c in range(cols)], range(1, cols + 1))
    ax.set_yticks([r * (rows + 1) + (rows - 1) / 2 for r in range(rows)], range(1, rows + 1))
    ax.set_xlabel("input patch column")
    ax.set_ylabel("input patch row")
    ax.grid(False)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="cosine similarity", shrink=0.8)


def plot_position_similarity(sim: np.ndarray, subject: Subject, out_dir: Path) -> Picture:
    rows, cols = sim.shape[:2]
    fig = figure(5.6, 4.8, layout="constrained")
    kind = getattr(subject.model, "pos_embedding_kind", "learned")
    draw_position_similarity(fig, sim, f"{subject.name}: position embedding similarity "
                                       f"({kind})")
    return Picture(to_png(fig, out_dir / "pos-embedding.png").name, "pos_embedding",
                   "Position embedding similarity",
                   f"the small grid at row r, column c of the {rows}x{cols} patches: the cosine "
                   "similarity of patch (r, c)'s position embedding with every patch's "
                   "(2010.11929, figure 7 centre); a trained ViT's are most alike nearby and "
                   "along rows and columns")


def plot_attention_distance(ad: AttentionDistance, subject: Subject, out_dir: Path
                            ) -> Picture:
    layers, heads = ad.distance.shape
    fig = figure(5.6, 4.2, layout="constrained")
    ax = fig.subplots()
    depth = np.arange(1, layers + 1)
    for h in range(heads):
        ax.scatter(depth, ad.distance[:, h], s=18, label=f"head {h + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    ax.set_ylim(0, 1.1 * max(float(ad.distance.max()), 1e-6))
    ax.set_xticks(depth)
    if heads <= 16:
        ax.legend(fontsize=7, ncols=4, loc="lower right")
    gh, gw = ad.grid
    ax.set_title(f"{subject.name}: {gh}x{gw} patches of {ad.patch_size} px, "
                 f"{len(ad.images)} image{'s' if len(ad.images) > 1 else ''}", fontsize=10)
    return Picture(to_png(fig, out_dir / "attention-distance.png").name,
                   "attention_distance", "Mean attention distance",
                   "for each head of each layer, the distance between a query patch and the "
                   "patches it attends to, weighted by the attention and averaged over the "
                   "queries and the images (2010.11929, figure 7 right): an attention "
                   "layer's receptive field")


def _map_style(a: Attribution) -> dict[str, Any]:
    m = a.map
    if a.method == "occlusion":
        lim = float(np.abs(m).max()) or 1.0
        return dict(cmap="RdBu_r", vmin=-lim, vmax=lim)
    # Gradients have a few huge pixels: scale to the 99th percentile.
    top = float(np.percentile(m, 99.5 if a.method != "gradcam" else 100)) or 1.0
    return dict(cmap="jet", vmin=0.0, vmax=top)


TITLES = {"saliency": "saliency", "guided_backprop": "guided backprop",
          "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
          "occlusion": "occlusion", "attention": "attention (last layer)",
          "rollout": "attention rollout"}


def plot_attributions(attrs: list[Attribution], subject: Subject, out_dir: Path,
                      name: str) -> Picture:
    first = attrs[0]
    fig = figure(2.4 * (len(attrs) + 1), 2.9, layout="constrained")
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
    return Picture(to_png(fig, out_dir / f"attribution-{name}.png").name, "attribution",
                   f"Attribution maps of {first.image}",
                   f"{methods} for class {first.target_name!r}; red is where the score "
                   "depends most (occlusion: red where hiding the pixels lowers the score, "
                   "blue where it raises it)")


def plot_attention(a: Attribution, subject: Subject, out_dir: Path, name: str) -> Picture:
    maps = a.raw                                         # (layers, heads, gh, gw)
    layers, heads, gh, gw = maps.shape
    scaled = maps / maps.reshape(layers, heads, -1).max(-1)[..., None, None].clip(1e-12)
    grid = mosaic(scaled.reshape(layers * heads, gh, gw, 1), heads, pad=1, fill=np.nan)
    fig = figure(1.2 + 1.4 * heads + 2.6, 0.6 + 1.4 * layers, layout="constrained")
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
    return Picture(to_png(fig, out_dir / f"attention-{name}.png").name, "attention",
                   f"Attention maps of {a.image}",
                   f"{layers} layers x {heads} heads: where the class token looks")


def plot_confusion(err: ErrorAnalysis, out_dir: Path, subject: Subject) -> Picture:
    fig = confusion_figure(err.confusion, err.classes,
                           f"{subject.name} on {err.data}: accuracy {err.accuracy:.2%} "
                           f"({err.count:,} images)", annotate_up_to=30)
    return Picture(to_png(fig, out_dir / "confusion.png").name, "confusion", "Confusion matrix",
                   "rows: the actual class, columns: the predicted one; colour is the share "
                   "of the row")


def plot_top_losses(err: ErrorAnalysis, out_dir: Path, subject: Subject) -> Picture:
    items: list[TopLoss] = err.top_losses
    ncols = min(4, len(items))
    nrows = -(-len(items) // ncols)
    fig = figure(2.6 * ncols, 0.5 + 2.9 * nrows, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, t in zip(axes, items):
        _show(ax, t.image)
        ax.set_title(f"{t.predicted[:14]} / {t.actual[:14]}\nloss {t.loss:.2f}, "
                     f"p(actual) {t.prob_actual:.2f}", fontsize=8)
    for ax in axes[len(items):]:
        ax.axis("off")
    fig.suptitle(f"{subject.name}: the {len(items)} largest losses "
                 "(predicted / actual)", fontsize=10)
    return Picture(to_png(fig, out_dir / "top-losses.png").name, "top_losses", "Top losses",
                   "the images the model is most wrong about: predicted / actual class, "
                   "loss, probability given to the actual class")


def write_pictures(result: Explanation) -> list[Picture]:
    out, subject = result.out_dir, result.subject
    pictures = []
    if result.filters is not None:
        pictures.append(plot_filters(result.filters, subject, out))
    for tp in result.patches.values():
        pictures.append(plot_patches(tp, subject, out))
    for layer, proj in result.deconv.items():
        pictures.append(plot_deconv(result.deconv_patches[layer], proj, subject, out))
    if result.class_models:
        pictures.append(plot_class_models(result.class_models, subject, out))
    if result.position_similarity is not None:
        pictures.append(plot_position_similarity(result.position_similarity, subject, out))
    if result.attention_distance is not None:
        pictures.append(plot_attention_distance(result.attention_distance, subject, out))
    by_image: dict[str, list[Attribution]] = {}
    for a in result.attributions:
        by_image.setdefault(a.image, []).append(a)
    used: set[str] = set()
    for image, attrs in by_image.items():
        name = slug(image)
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

