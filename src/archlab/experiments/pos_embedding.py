"""`pos-embedding`: does a Vision Transformer need to be told where its patches are, and does
it matter how? (Dosovitskiy et al., "An Image is Worth 16x16 Words", 2010.11929, appendix
D.4, Table 8 and Figure 7.)

A ViT cuts the image into patches, projects each to a token and runs a Transformer encoder
over the tokens. Self-attention is blind to order: permute the tokens and every output is
permuted the same way, so the class token's output, and the prediction, do not change. Without
something added to the tokens the network sees a bag of patches, and a shirt cut into
squares and shuffled is still a shirt to it. The position embeddings are that something: a
vector per position added to each token before the first layer. The paper tried four
kinds (appendix D.4): none; learned 1-D (one learned vector per token in raster order, its
default); learned 2-D (a learned half-vector per row and another per column, concatenated);
and relative embeddings inside the attention. Table 8 (ViT-B/16, few-shot ImageNet): none
61.4%, 1-D 64.2%, 2-D 64.0%, relative 64.0%. Any kind beats none by about 3 points and the
kinds differ by 0.2 at most: the network learns the 2-D layout from 1-D embeddings itself,
which Figure 7 shows: the cosine similarity of each patch's learned embedding with every
other's is highest for patches in its own row and column, a 2-D map learned from a 1-D
index. At the patch resolution ViT works at (14x14) it matters little how the grid is
told, only that it is.

Measured: a small ViT (class token, 4x4 patches, so a 28 px Fashion-MNIST image is a 7x7
grid) trained under one recipe with each of four embeddings, `pos_embedding` of
`archlab.models.vit`: "none", "learned" (1-D), "learned_2d", and "sincos" (fixed 2-D sines
and cosines of row and column, the transformer's and MoCo v3's choice, in place of the
paper's relative embeddings, which archlab's attention does not have). Every network is
the same but for the embedding; several seeds; the same test images. Figure 7 is drawn from
the trained learned-1-D network of the first seed.

The verdict joins two paired tests, each McNemar's exact test with the paired bootstrap
interval of the difference, Holm-adjusted within its family: each kind against none, and
the three kinds against each other. "Any embedding beats none" needs every kind
significantly better than none. "The kinds differ little" needs every difference between two
kinds to be either a tie or smaller than half the smallest gain over none: Table 8's
differences (0.2) are a fifteenth of its gap (2.8), so "small compared to the gap" is the
test that follows the paper, where "exactly equal" is not one a test can pass. Both parts:
the claim holds. A kind significantly worse than none, or two kinds apart by at least half
the gap: it does not. Anything else (a kind tied with none): inconclusive.
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from archlab._plot import figure, to_svg
from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, run_path, seeds_for, train_study
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants, correctness,
                                          delta_text, top1_text, variant_table)
from archlab.explain.pictures import draw_position_similarity
from archlab.explain.positions import position_embeddings, position_similarity
from archlab.study.stats import compare_accuracy, holm, is_significant

NONE = "none"
KINDS = ("learned", "learned_2d", "sincos")
NAMES = {NONE: "no position embedding", "learned": "learned 1-D (ViT's default)",
         "learned_2d": "learned 2-D (rows and columns)", "sincos": "fixed 2-D sin-cos"}
# Table 8 of 2010.11929: ViT-B/16 few-shot ImageNet accuracy, %.
PAPER = {"none": 61.4, "learned": 64.2, "learned_2d": 64.0, "relative": 64.0}
# A difference between two kinds is "little" below this fraction of the smallest gain of
# a kind over none (the paper's: 0.2 of 2.8, a fifteenth).
LITTLE = 0.5

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a 4-block ViT of width 64 on a tenth of Fashion-MNIST
        "data": {"dataset": "fashion-mnist", "image_size": 28, "val_fraction": 0.02,
                 "train_fraction": 0.1, "test_fraction": 0.25},
        "recipe": {"epochs": 5, "batch_size": 64},
        "model": {"img_size": 28, "embed_dim": 64, "depth": 4, "num_heads": 4,
                  "mlp_ratio": 2.0},
        # Three seeds: five epochs leave a ViT far from converged, and its seeds differ by
        # up to 4 points, which the paired interval must see more than twice.
        "seeds": 3, "jobs": 2,
    },
    "full": {    # a GPU: the 6-block ViT-Ti for 32 px images on CIFAR-10, an 8x8 grid
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "recipe": {"epochs": 100, "batch_size": 128, "augment": "basic"},
        "model": {"img_size": 32}, "seeds": 3, "jobs": 1,
    },
}
# AdamW with a short warm-up and no momentum cycling, the quick tour's ViT recipe; no
# dropout or stochastic depth for short runs.
RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "moms": None,
          "pct_start": 0.1, "schedule": "onecycle", "small_input": True, "threads": 1}


def protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The study: one ViT with each kind of position embedding, one recipe."""
    s = SETTINGS[scale]
    model = {"patch_size": 4, "small_patch_size": 4, **s["model"]}
    recipe = {**RECIPE, **s["recipe"]}
    augment = recipe.pop("augment", "none")
    return {
        "description": "A ViT with no, learned 1-D, learned 2-D and fixed sin-cos position "
                       "embeddings (2010.11929 appendix D.4, Table 8): test top-1.",
        "data": s["data"], "recipe": recipe, "augment": augment, "tta": [],
        "seeds": list(seeds), "jobs": s["jobs"],
        "measure": {"throughput_batch": 32, "throughput_seconds": 0.1},
        "models": [{"name": "vit_tiny_patch4_32", "label": kind,
                    "model_kwargs": {**model, "pos_embedding": kind}}
                   for kind in (NONE, *KINDS)]}


def between_kinds(runs: dict[str, list], alpha: float = 0.05) -> dict[str, dict[str, Any]]:
    """Every pair of kinds tested against each other on their shared seeds, Holm-adjusted
    as one family: {"a vs b": {delta (a - b), delta_ci, p_adjusted, outcome}}."""
    raw = {}
    for a, b in itertools.combinations(KINDS, 2):
        seeds = sorted({r.seed for r in runs[a]} & {r.seed for r in runs[b]})
        pick = {label: [r for r in runs[label] if r.seed in seeds] for label in (a, b)}
        raw[f"{a} vs {b}"] = compare_accuracy(correctness(pick[a]), correctness(pick[b]),
                                              alpha=alpha)
    adjusted = holm([d.p_value for d in raw.values()], alpha)
    out = {}
    for (pair, d), p in zip(raw.items(), adjusted):
        significant = is_significant(p, d.ci, alpha)
        out[pair] = {"delta": d.delta, "delta_ci": [d.ci.low, d.ci.high], "p_adjusted": p,
                     "outcome": ("better" if d.delta > 0 else "worse") if significant
                     else "tied"}
    return out


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From each kind against none ({"variants": as_numbers(...)}, baseline "none") and the
    kinds against each other ({"between": between_kinds(...)}): the verdict on "any
    position embedding beats none, and the kinds differ little"."""
    v, between = numbers["variants"], numbers["between"]
    words = (f"none {top1_text(v[NONE])}%; " + "; ".join(
        f"{kind} {top1_text(v[kind])}% ({delta_text(v[kind])} vs none)" for kind in KINDS)
        + f" (the paper: none {PAPER['none']}, 1-D {PAPER['learned']}, "
          f"2-D {PAPER['learned_2d']})")
    worse = [k for k in KINDS if v[k]["outcome"] == "worse"]
    if worse:
        return DOES_NOT_HOLD, words + f"; {', '.join(worse)} is worse than none"
    if any(v[k]["outcome"] != "better" for k in KINDS):
        tied = [k for k in KINDS if v[k]["outcome"] != "better"]
        return INCONCLUSIVE, words + f"; {', '.join(tied)} tied with none: not every kind " \
                                     "beats none at this scale"
    gap = min(v[k]["delta"] for k in KINDS)
    apart = {pair: d for pair, d in between.items()
             if d["outcome"] != "tied" and abs(d["delta"]) >= LITTLE * gap}
    words += (f"; every kind beats none (smallest gain {100 * gap:.2f} points); between "
              "kinds: " + ", ".join(f"{pair} {100 * d['delta']:+.2f} ({d['outcome']})"
                                    for pair, d in between.items()))
    if apart:
        return DOES_NOT_HOLD, words + (f"; {', '.join(apart)} differ by at least half the "
                                       "gain over none: the kinds do not differ little")
    return HOLDS, words + "; the kinds differ little next to the gap to none"


def similarity_figure(pos: np.ndarray, grid: tuple[int, int]) -> str:
    """ViT's Figure 7: for each patch (a small grid at its place), the cosine similarity of
    its position embedding with every patch's. `pos` is (rows*cols, D), raster order; drawn
    by archlab.explain, whose `pos_embedding` method shows the same figure."""
    fig = figure(5.2, 4.4, layout="constrained")
    draw_position_similarity(fig, position_similarity(pos, grid),
                             "Position embedding similarity (learned 1-D)")
    return to_svg(fig, "pos-embedding-similarity")


def learned_embeddings(ctx: Context, name: str, run) -> tuple[np.ndarray, tuple[int, int]]:
    """The patch tokens' position embeddings (rows*cols, D) of a trained learned-1-D run,
    read back from its study directory, and its patch grid."""
    from archlab.train.evaluate import load_trained

    model, _ = load_trained(run_path(ctx, name, run))
    return position_embeddings(model)


class PosEmbedding(Experiment):
    name = "pos-embedding"
    claim = ("A Vision Transformer needs position embeddings (any kind beats none by about "
             "3 points), but which kind matters little: learned 1-D, learned 2-D and fixed "
             "ones come out alike, as the network learns the 2-D grid from a 1-D index.")
    source = ("An Image is Worth 16x16 Words (Dosovitskiy et al., 2010.11929), appendix D.4, "
              "Table 8 and Figure 7")
    paper = ("ViT-B/16, few-shot ImageNet accuracy: no position embedding 61.4%, learned "
             "1-D 64.2%, learned 2-D 64.0%, relative 64.0%")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        seeds = seeds_for(ctx, SETTINGS)
        runs = by_label(train_study(self.name, protocol(ctx.scale, seeds), ctx))
        variants = compare_variants(runs, NONE)
        numbers = {"variants": as_numbers(variants), "between": between_kinds(runs),
                   "seeds": [r.seed for r in runs[NONE]]}
        verdict, because = decide(numbers)
        headers, rows = variant_table(variants, NAMES)
        pos, grid = learned_embeddings(ctx, self.name, runs["learned"][0])
        pairs = [[pair, f"{100 * d['delta']:+.2f} [{100 * d['delta_ci'][0]:+.2f}, "
                        f"{100 * d['delta_ci'][1]:+.2f}]", f"{d['p_adjusted']:.3g}",
                  AGAINST[d["outcome"]].split()[0]]
                 for pair, d in numbers["between"].items()]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("Position embedding similarity, as ViT's Figure 7", similarity_figure(
                pos, grid),
                f"The learned 1-D embeddings of the first seed's network ({grid[0]}x"
                f"{grid[1]} patches): the small grid at row r, column c shows the cosine "
                "similarity of patch (r, c)'s embedding with every patch's. Learned from a "
                "raster index alone, similarity that follows rows and columns is the 2-D "
                "layout found by training (the paper's ViT-L/32 shows it clearly after "
                "ImageNet-21k; a few epochs on a tenth of Fashion-MNIST show less).")],
            numbers=numbers,
            notes=["Every network is vit_tiny_patch4_32 with " + ", ".join(
                       f"{k} {v}" for k, v in SETTINGS[ctx.scale]["model"].items())
                   + ", 4x4 patches and a class token; only `pos_embedding` differs. The paper's "
                   "fourth kind, relative embeddings in the attention, is replaced by fixed "
                   "2-D sin-cos embeddings.",
                   "Between the kinds (each pair, Holm over the three pairs; Δ is the "
                   "first minus the second, points [95% interval], p, outcome): "
                   + "; ".join(" ".join(p) for p in pairs),
                   "The paired tests: McNemar's exact test over every seed's test images and "
                   "the paired bootstrap interval of the difference in top-1; 'better' or "
                   "'worse' only when both agree."])


__all__ = ["PosEmbedding", "between_kinds", "decide", "protocol", "similarity_figure"]
