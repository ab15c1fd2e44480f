"""distillation: a verdict that follows the paired tests both ways, students that differ
only in how they are taught, one teacher per seed at a path that does not move, the full
protocols valid, and the whole experiment (teacher, then students) as a tiny study."""
from __future__ import annotations

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from archlab.experiments import distillation as ds
from archlab.study import parse_protocol
from study_fixtures import run_experiment_twice


def _entry(delta, outcome, top1=0.80):
    return {"top1": [top1 + (delta or 0)] * 2, "interval": [0.79, 0.81], "outcome": outcome,
            "delta": delta, "delta_ci": None if delta is None else [delta - 0.004, delta + 0.004],
            "p_adjusted": None if delta is None else 0.01}


def numbers(token=("better", 0.02), soft=("tied", 0.0), hard=("better", 0.015),
            soft_vs_token=("worse", -0.02), hard_vs_token=("tied", -0.005),
            teacher=("worse", -0.03)):
    return {"variants": {"alone": _entry(None, "baseline"), "soft": _entry(soft[1], soft[0]),
                         "hard": _entry(hard[1], hard[0]),
                         "hard_token": _entry(token[1], token[0])},
            "vs_token": {"hard_token": _entry(None, "baseline"),
                         "soft": _entry(soft_vs_token[1], soft_vs_token[0]),
                         "hard": _entry(hard_vs_token[1], hard_vs_token[0])},
            "best": "hard_token",
            "teacher": _entry(teacher[1], teacher[0], top1=0.85)}


def test_the_verdict_follows_the_paired_tests():
    verdict, because = ds.decide(numbers())
    assert verdict == HOLDS and "no other kind beats it" in because
    assert "worse than its teacher" in because
    verdict, because = ds.decide(numbers(teacher=("better", 0.01)))
    assert verdict == HOLDS and "better than its teacher" in because
    # The token beats training alone, but hard distillation beats the token.
    verdict, because = ds.decide(numbers(hard_vs_token=("better", 0.01)))
    assert verdict == DOES_NOT_HOLD and "hard beats the token" in because
    verdict, because = ds.decide(numbers(token=("worse", -0.02)))
    assert verdict == DOES_NOT_HOLD and "worse than no distillation" in because
    verdict, because = ds.decide(numbers(token=("tied", 0.002)))
    assert verdict == INCONCLUSIVE and "tied" in because


def test_the_students_differ_only_in_how_they_are_taught():
    p = ds.student_protocol("quick", 3, "/runs/teacher-s3")
    assert p["seeds"] == [3]
    by = {m["label"]: m for m in p["models"]}
    assert list(by) == list(ds.STUDENTS)
    assert by["alone"]["recipe"] == {}                    # no teacher at all
    assert {by[k]["recipe"]["teacher"] for k in ("soft", "hard", "hard_token")} == {
        "/runs/teacher-s3"}                               # one teacher for the seed
    assert by["hard"]["recipe"] == by["hard_token"]["recipe"]
    assert by["soft"]["recipe"]["distill"] == "soft"
    kwargs = {k: m["model_kwargs"] for k, m in by.items()}
    assert all(kw == {**kwargs["alone"], "distilled": k == "hard_token"}
               for k, kw in kwargs.items())


def test_the_students_keys_depend_on_their_teacher_only_through_its_path():
    # The same teacher path gives the same run keys (a resumed study finds its runs); a
    # different teacher gives new ones.
    def keys(path):
        proto = parse_protocol(ds.student_protocol("quick", 0, path), source="d")
        return {run.label: run.key for run in proto.runs()}

    a, b = keys("/out/t-s0"), keys("/out/t-s1")
    assert keys("/out/t-s0") == a
    assert a["alone"] == b["alone"] and a["hard"] != b["hard"]


def test_each_run_counts_once_though_the_seeds_student_studies_share_a_hash(monkeypatch,
                                                                           tmp_path):
    # A study returns every run of its protocol hash, which the seeds' student protocols
    # share: the second seed's study hands back the first seed's runs again.
    from types import SimpleNamespace

    from archlab.experiments import Context

    done = []

    def fake_train_study(name, protocol, ctx):
        seeds = protocol["seeds"]
        new = [SimpleNamespace(key=f"{m['label']}-{s}", label=m["label"], seed=s,
                               run_dir=f"runs/{m['label']}-s{s}") for m in protocol["models"]
               for s in seeds]
        if protocol["name"].startswith("distillation-students"):
            done.extend(new)
            return list(done)
        return new

    monkeypatch.setattr(ds, "train_study", fake_train_study)
    runs = ds.train_all("distillation", Context(out_dir=tmp_path, seeds=3, verbose=False))
    assert {label: [r.seed for r in group] for label, group in runs.items()} == {
        label: [0, 1, 2] for label in ("teacher", *ds.STUDENTS)}


def test_the_full_protocols_parse():
    t = parse_protocol(ds.teacher_protocol("full", [0, 1, 2]), source="t")
    s = parse_protocol(ds.student_protocol("full", 0, "/runs/t"), source="s")
    assert t.dataset == s.dataset == "cifar10" and [m.label for m in t.models] == ["teacher"]


def test_distillation_runs_as_a_study_and_writes_its_page(tmp_path, monkeypatch):
    # The digits at 8 px: a one-block ResNet teacher, students of one block of width 16
    # over a 2x2 grid of 4 px patches, one epoch, one seed.
    monkeypatch.setitem(ds.SETTINGS, "quick", {
        "data": {"dataset": "digits", "image_size": 8, "val_fraction": 0.1,
                 "train_fraction": 0.3},
        "teacher": {"epochs": 1, "batch_size": 128}, "student": {"epochs": 1, "batch_size": 128},
        "teacher_model": {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8},
        "student_model": {"img_size": 8, "patch_size": 4, "small_patch_size": 4,
                          "embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0},
        "seeds": 1, "jobs": 1})
    outcome, record = run_experiment_twice("distillation", ds.decide, tmp_path,
                                           page_shows=("teacher (ResNet)", "through the token"))
    assert record["numbers"]["best"] in ("soft", "hard", "hard_token")
    assert len(outcome.rows) == 5 and outcome.rows[-1][-1] == "teacher"
    teacher_dirs = list((tmp_path / "distillation" / "study" / "runs").glob("teacher-s0-*"))
    assert len(teacher_dirs) == 1
