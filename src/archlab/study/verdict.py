"""Which differences between the models of a study are real: every pair compared image by
image on the shared test set (stats.py), the p-values Holm-adjusted together, and the
models that no test separates from the first "tied with #1", said in words.

A ranking by one number per model says nothing when the numbers lie within each other's
noise; this is what the table's rank column ("=1") and the sentences under it are made of.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from archlab.study.stats import ALPHA, Difference, difference, pairwise, tied_with_best
from archlab.study.summary import ModelSummary


@dataclass
class Verdict:
    """The paired comparison of a study's models (ranked best first)."""

    order: list[str]                                 # labels of the models with results
    pairs: dict[tuple[str, str], Difference] = field(default_factory=dict)
    tied: list[str] = field(default_factory=list)    # no test separates them from #1
    untested: list[str] = field(default_factory=list)  # no per-image predictions kept
    same_images: bool = True                         # every run judged on one test set
    images: int | None = None
    seeds: int = 0

    @property
    def best(self) -> str | None:
        return self.order[0] if self.order else None

    @property
    def tested(self) -> bool:
        return bool(self.pairs)

    def vs_best(self, label: str) -> Difference | None:
        """The difference of `label` against #1 (negative: below it)."""
        if self.best is None or label == self.best:
            return None
        return difference(self.pairs, label, self.best)

    def ranks(self) -> dict[str, str]:
        """Competition ranks, '=1' for the models tied with the first."""
        out = {}
        for i, label in enumerate(self.order, 1):
            out[label] = "=1" if label in self.tied and self.tested else str(i)
        return out

    def sentences(self) -> list[str]:
        """The verdict in words, with the numbers that decided it."""
        if len(self.order) < 2:
            return []
        if not self.same_images:
            return ["The runs were not all judged on the same test images, so no paired "
                    "test was made: compare the intervals only."]
        if self.best in self.untested and self.tested:
            return [f"{self.best}, ranked first, kept no per-image predictions (a study from "
                    "an older archlab): no model is tested against it."]
        if not self.tested:
            return ["No run kept its per-image predictions (a study from an older archlab), "
                    "so no paired test was made: compare the intervals only."]
        n_pairs = len(self.pairs)
        how = (f"McNemar's exact test on the {self.images:,} test images"
               + (f", pooled over {self.seeds} seeds" if self.seeds > 1 else "")
               + f", Holm-adjusted over {n_pairs} pair{'s' * (n_pairs != 1)}, and the "
               f"paired bootstrap interval of the difference must agree at the "
               f"{100 * ALPHA:g}% level")
        out = []
        worse = [m for m in self.order[1:] if m not in self.tied and m not in self.untested]
        if self.tied:
            out.append(f"Tied with #1, {self.best}: {self._listing(self.tied)}. They are "
                       f"not told apart from it ({how}); their order says nothing.")
        else:
            out.append(f"{self.best} is ahead of every other model ({how}).")
        if worse:
            out.append(f"Significantly below #1: {self._listing(worse)}.")
        if self.untested:
            out.append(f"Not tested (no per-image predictions): {', '.join(self.untested)}.")
        if self.seeds == 1:
            out.append("One seed: the intervals show the sampling noise of the test set, not "
                       "the spread between trainings; more seeds (--seeds 3) show both.")
        return out

    def _listing(self, labels: Sequence[str]) -> str:
        parts = []
        for m in labels:
            d = self.vs_best(m)
            if d is None:
                parts.append(f"{m} (not tested)")
                continue
            parts.append(f"{m} ({100 * d.delta:+.2f} points, 95% interval "
                         f"[{100 * d.ci.low:+.2f}, {100 * d.ci.high:+.2f}], adjusted p "
                         f"{format_p(d.p_adjusted)})")
        return "; ".join(parts)


def format_p(p: float) -> str:
    """A p-value as the report writes it."""
    return f"{p:.2g}" if p >= 1e-4 else "< 0.0001"


def _fingerprint(result: dict | None) -> str | None:
    """Which test images a run was judged on (the test set's fingerprint and size)."""
    fp = (result or {}).get("test_fingerprint")
    return None if fp is None else f"{fp.get('fingerprint')}/{fp.get('images')}"


def judge(summaries: Sequence[ModelSummary], alpha: float = ALPHA) -> Verdict:
    """The verdict on the models of a study, ranked as `summaries` are (best first)."""
    ranked = [s for s in summaries if s.done]
    verdict = Verdict(order=[s.label for s in ranked])
    correct = {s.label: s.correct() for s in ranked}
    verdict.untested = [m for m, c in correct.items() if not c]
    tested = {m: c for m, c in correct.items() if c}
    fingerprints = {_fingerprint(r.result) for s in ranked for r in s.done if s.label in tested}
    sizes = {len(a) for c in tested.values() for a in c.values()}
    verdict.same_images = len(sizes) <= 1 and len(fingerprints - {None}) <= 1
    if len(tested) < 2 or not verdict.same_images:
        return verdict
    verdict.images = sizes.pop()
    verdict.seeds = max(len(c) for c in tested.values())
    verdict.pairs = pairwise(tested, alpha=alpha)
    if verdict.best in tested:   # an untested #1 is tied with nothing and ahead of nothing
        verdict.tied = [m for m in tied_with_best(verdict.order, verdict.pairs)
                        if m not in verdict.untested]
    return verdict


__all__ = ["Verdict", "format_p", "judge"]
