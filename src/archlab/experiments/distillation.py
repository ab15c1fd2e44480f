"""`distillation`: can a CNN teach a Vision Transformer, and which way of teaching works
best? (Touvron et al., "Training data-efficient image transformers & distillation through
attention", DeiT, 2012.12877, section 5.1 and Table 3.)

A ViT knows nothing of images: no locality, no translation equivariance. On ImageNet alone
it must learn from data what a convolution assumes. DeiT's answer is to let a trained CNN
(a RegNetY) teach it. The student's loss mixes the labels with the teacher's outputs:

- soft distillation (Hinton et al.): the KL divergence between the student's and the
  teacher's softened probabilities (temperature τ = 3, weight λ = 0.1 in DeiT);
- hard distillation (DeiT's): the teacher's top class as a second label,
  ½·CE(student, y) + ½·CE(student, argmax teacher);
- hard distillation through a distillation token: a second learned token beside the class
  token, with its own head; the class head learns from the labels, the distillation head
  from the teacher's decision, the two tokens see each other and the patches through
  attention, and at test time the two heads' outputs are averaged.

Table 3 (DeiT-B, ImageNet top-1): no distillation 81.8, soft 81.8, hard 83.0, hard through
the token 83.4, and the teacher RegNetY-16GF 82.9: hard beats soft, the token adds to hard,
and the student ends above its teacher. DeiT's reading: the CNN passes on its inductive
bias through its decisions, which on augmented crops can be better targets than the label
(a crop that lost the labelled object), and the student, with more capacity and 300
epochs, keeps that and learns more.

Measured: a small ResNet (the teacher) is trained first, in the experiment's own study;
then four small DeiTs with the same architecture (4 blocks, width 64, a 28 px
Fashion-MNIST image cut into a 4x4 grid of 7x7 patches), one recipe: alone, soft, hard,
and hard through the token (the same DeiT with `distilled=True`, one more token and
head). Seeds: every seed repeats the
whole procedure, a teacher trained with that seed and then the four students of that seed,
all of which distil from that one teacher (recipe `teacher:` is its run directory). So
within a seed the students differ only in how they are taught, which is what the paired
test between them compares, and across seeds the spread includes the teacher's own: a
single teacher for every seed would make the verdict a statement about that one network.
The teacher's run directory is named by its run's key, so it is the same each time the
experiment resumes into the same output directory, and so are the students' keys, which
hash it.

The verdict: "distillation through the token is the best way to distil, and it makes the
student better than training alone". Hard through the token is judged against the student
alone (`variants.compare_variants`, McNemar's exact test with the paired bootstrap,
Holm-adjusted over the three kinds), and soft and hard are judged against the token
(another family). It holds when the token is significantly better than alone and neither
other kind is significantly better than the token; it does not hold when the token is
significantly worse than alone or another kind significantly beats it; otherwise it is
inconclusive. Whether the best student approaches or beats its teacher is measured with
the same paired test and reported beside the verdict, not folded into it: DeiT's student
overtakes its teacher after 300 epochs on 1.3 M images, while here students train for as
many epochs as their teacher, on a few thousand images, where the convolution's bias is
worth most; the gap that distillation closes is the thing to read.
"""
from __future__ import annotations

from typing import Any, Sequence

from archlab.experiments.base import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, Experiment,
                                      Figure, Outcome)
from archlab.experiments.training import by_label, run_path, seeds_for, train_study
from archlab.experiments.variants import (AGAINST, as_numbers, compare_variants, correctness,
                                          cost_accuracy_figure, delta_text, top1_text,
                                          variant_table)
from archlab.study.stats import accuracy_interval, compare_accuracy

ALONE, SOFT, HARD, TOKEN, TEACHER = "alone", "soft", "hard", "hard_token", "teacher"
STUDENTS = (ALONE, SOFT, HARD, TOKEN)
NAMES = {ALONE: "DeiT alone (no distillation)", SOFT: "DeiT, soft distillation",
         HARD: "DeiT, hard distillation", TOKEN: "DeiT⚗, hard distillation through the token",
         TEACHER: "teacher (ResNet)"}
# Table 3 of 2012.12877: DeiT-B ImageNet top-1, %, and its teacher.
PAPER = {ALONE: 81.8, SOFT: 81.8, HARD: 83.0, TOKEN: 83.4, TEACHER: 82.9}
# DeiT's distillation settings (section 5.1): soft at τ 3 and λ 0.1, hard at ½ and ½.
DISTILL = {ALONE: {}, SOFT: {"distill": "soft", "distill_tau": 3.0, "distill_alpha": 0.1},
           HARD: {"distill": "hard", "distill_alpha": 0.5},
           TOKEN: {"distill": "hard", "distill_alpha": 0.5}}

SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {   # this CPU, minutes: a tenth of Fashion-MNIST at 28 px
        "data": {"dataset": "fashion-mnist", "image_size": 28, "val_fraction": 0.02,
                 "train_fraction": 0.1, "test_fraction": 0.25},
        "teacher": {"epochs": 4, "batch_size": 64},
        "student": {"epochs": 6, "batch_size": 64},
        # One block a stage: a distilling student runs the teacher on every batch, so the
        # teacher's 9 M MACs an image cost more than the student's own 2.7 M.
        "teacher_model": {"layers": [1, 1, 1], "widths": [16, 32, 64]},
        "student_model": {"img_size": 28, "patch_size": 7, "small_patch_size": 7,
                          "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0},
        "seeds": 2, "jobs": 2,
    },
    "full": {    # a GPU: CIFAR-10 at 32 px, ResNet-20 teaching the 6-block DeiT-Ti
        "data": {"dataset": "cifar10", "val_fraction": 0.02},
        "teacher": {"epochs": 100, "batch_size": 128},
        "student": {"epochs": 200, "batch_size": 128},
        "teacher_model": {}, "student_model": {"img_size": 32},
        "augment": "basic", "seeds": 3, "jobs": 1,
    },
}
# The teacher: the CNN recipe of the other experiments (one-cycle SGD). The students: the
# quick tour's ViT recipe (AdamW, a short warm-up, no momentum cycling).
TEACHER_RECIPE = {"optimizer": "sgd", "lr": 0.1, "schedule": "onecycle",
                  "weight_decay": 5e-4, "small_input": True, "threads": 1,
                  "channels_last": True}
STUDENT_RECIPE = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05, "moms": None,
                  "pct_start": 0.1, "schedule": "onecycle", "small_input": True, "threads": 1}
STUDENT_NET = "deit_tiny_distilled_patch4_32"


def _common(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    s = SETTINGS[scale]
    return {"data": s["data"], "augment": s.get("augment", "none"), "tta": [],
            "seeds": list(seeds), "jobs": s["jobs"],
            "measure": {"throughput_batch": 32, "throughput_seconds": 0.1}}


def teacher_protocol(scale: str, seeds: Sequence[int]) -> dict[str, Any]:
    """The first study: the CNN teacher, one run per seed."""
    s = SETTINGS[scale]
    return {"name": "distillation-teacher", **_common(scale, seeds),
            "description": "The CNN teacher of the distillation experiment.",
            "recipe": {**TEACHER_RECIPE, **s["teacher"]},
            "models": [{"name": "resnet20", "label": TEACHER,
                        "model_kwargs": s["teacher_model"]}]}


def student_protocol(scale: str, seed: int, teacher: str) -> dict[str, Any]:
    """The second study, one per seed: the four students of that seed, the three that
    distil taught by `teacher` (the run directory of that seed's teacher)."""
    s = SETTINGS[scale]
    models = []
    for label in STUDENTS:
        recipe = {**DISTILL[label], **({"teacher": teacher} if DISTILL[label] else {})}
        models.append({"name": STUDENT_NET, "label": label, "recipe": recipe,
                       "model_kwargs": {**s["student_model"], "distilled": label == TOKEN,
                                        "drop_path_rate": 0.0}})
    return {"name": f"distillation-students-s{seed}", **_common(scale, [seed]),
            "description": "A DeiT alone and distilled from the CNN teacher three ways "
                           "(2012.12877, Table 3).",
            "recipe": {**STUDENT_RECIPE, **s["student"]}, "models": models}


def train_all(name: str, ctx: Context) -> dict[str, list]:
    """The teachers, then each seed's students from its teacher: runs by label."""
    seeds = seeds_for(ctx, SETTINGS)
    teachers = train_study(name, teacher_protocol(ctx.scale, seeds), ctx)
    runs = {r.key: r for r in teachers}
    for t in sorted(teachers, key=lambda r: r.seed):
        # The seeds' student protocols share one protocol hash (only their models' teacher
        # paths differ), so each study returns the other seeds' runs of that hash too:
        # keep each run once, by its key.
        runs.update((r.key, r) for r in train_study(
            name, student_protocol(ctx.scale, t.seed, str(run_path(ctx, name, t))), ctx))
    return by_label([r for r in runs.values() if r.seed in seeds])


def against_teacher(students: list, teachers: list) -> dict[str, Any]:
    """The student runs against the teachers of the same seeds (one paired test)."""
    seeds = {r.seed for r in students}
    teachers = [r for r in teachers if r.seed in seeds]
    d = compare_accuracy(correctness(students), correctness(teachers))
    top1 = [float(r.top1) for r in teachers]
    interval = accuracy_interval(top1, correctness(teachers[:1]).shape[1])
    return {"top1": top1, "interval": [interval.low, interval.high], "delta": d.delta,
            "delta_ci": [d.ci.low, d.ci.high], "p_adjusted": d.p_value,
            "outcome": ("better" if d.delta > 0 else "worse") if d.significant else "tied"}


def decide(numbers: dict[str, Any]) -> tuple[str, str]:
    """From each kind against the student alone ({"variants"}, baseline "alone"), soft and
    hard against the token ({"vs_token"}, baseline "hard_token"), and the best student
    against its teacher ({"best", "teacher"}): the verdict on "hard distillation through
    the token is the best way to distil, and beats training alone"."""
    v, vs_token, t = numbers["variants"], numbers["vs_token"], numbers["teacher"]
    words = (f"alone {top1_text(v[ALONE])}%; " + "; ".join(
        f"{k} {top1_text(v[k])}% ({delta_text(v[k])} vs alone)" for k in (SOFT, HARD, TOKEN))
        + f" (the paper, DeiT-B: alone {PAPER[ALONE]}, soft {PAPER[SOFT]}, hard "
          f"{PAPER[HARD]}, token {PAPER[TOKEN]})")
    beaten_by = [k for k in (SOFT, HARD) if vs_token[k]["outcome"] == "better"]
    words += (f"; the best student, {numbers['best']}, is {AGAINST[t['outcome']]} its "
              f"teacher {top1_text(t)}% ({delta_text(t)}; the paper's teacher "
              f"{PAPER[TEACHER]})")
    token = v[TOKEN]["outcome"]
    if token == "worse":
        return DOES_NOT_HOLD, words + "; the token is worse than no distillation"
    if beaten_by:
        return DOES_NOT_HOLD, words + (f"; {', '.join(beaten_by)} beats the token: it is "
                                       "not the best way to distil here")
    if token == "better":
        return HOLDS, words + ("; distillation through the token beats training alone and "
                               "no other kind beats it")
    return INCONCLUSIVE, words + "; the token is tied with no distillation at this scale"


class Distillation(Experiment):
    name = "distillation"
    claim = ("Distilling a CNN teacher into a ViT works best with the teacher's hard "
             "decisions through a distillation token (DeiT⚗), which makes the student better "
             "than one trained alone, and the student can end above its teacher.")
    source = ("Training data-efficient image transformers & distillation through attention "
              "(Touvron et al., DeiT, 2012.12877), section 5.1, Table 3")
    paper = ("DeiT-B ImageNet top-1: alone 81.8, soft 81.8, hard 83.0, hard through the "
             "distillation token 83.4; teacher RegNetY-16GF 82.9")
    trains = True

    def run(self, ctx: Context) -> Outcome:
        runs = train_all(self.name, ctx)
        students = {k: runs[k] for k in STUDENTS}
        variants = compare_variants(students, ALONE)
        vs_token = compare_variants({k: runs[k] for k in (TOKEN, SOFT, HARD)}, TOKEN)
        best = max((SOFT, HARD, TOKEN), key=lambda k: variants[k].mean_top1)
        numbers = {"variants": as_numbers(variants), "vs_token": as_numbers(vs_token),
                   "best": best, "teacher": against_teacher(runs[best], runs[TEACHER]),
                   "seeds": [r.seed for r in runs[ALONE]]}
        verdict, because = decide(numbers)
        # The teacher summed up as a baseline of its own: it is no variant of the student.
        everyone = {**variants, TEACHER: compare_variants({TEACHER: runs[TEACHER]},
                                                          TEACHER)[TEACHER]}
        headers, rows = variant_table(everyone, NAMES)
        rows[-1][-1] = "teacher"
        t = numbers["teacher"]
        s = SETTINGS[ctx.scale]
        return Outcome(
            verdict, because, headers, rows,
            [Figure("The students and their teacher: accuracy against cost",
                    cost_accuracy_figure(everyone, "Test top-1 against MACs", "distillation"),
                    "Mean test top-1 over seeds (95% interval) at each network's MACs: the "
                    "four students share one architecture (the token adds one token and a "
                    "head); the teacher is the ResNet they learn from.")],
            numbers=numbers,
            notes=[f"Teacher: resnet20 {s['teacher_model'] or '(as registered)'}, "
                   f"{s['teacher']['epochs']} epochs; students: {STUDENT_NET} "
                   f"{s['student_model']}, {s['student']['epochs']} epochs, no stochastic "
                   "depth; DeiT's settings: soft at τ 3, λ 0.1; hard at ½, ½.",
                   "One teacher per seed: the students of a seed all learn from that seed's "
                   "teacher, so they differ only in how they are taught.",
                   f"The best student ({best}) against its teacher, paired over seeds and "
                   f"images: {100 * t['delta']:+.2f} [{100 * t['delta_ci'][0]:+.2f}, "
                   f"{100 * t['delta_ci'][1]:+.2f}] points, p {t['p_adjusted']:.2g} "
                   f"({t['outcome']}); the teacher's top-1 {top1_text(t)}%.",
                   "Soft and hard against the token: " + "; ".join(
                       f"{k} {delta_text(vs)} ({vs['outcome']})"
                       for k, vs in numbers["vs_token"].items() if k != TOKEN) + "."])


__all__ = ["Distillation", "decide", "student_protocol", "teacher_protocol", "train_all"]
