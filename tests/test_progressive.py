"""Progressive learning (EfficientNetV2) and fine-tuning at a higher resolution (FixRes,
DeiT-384): the per-epoch sizes and regularisation against Algorithm 1 of the paper, the
sizes a run really trains at, resume, and a ViT continued at a larger image size with its
position embeddings resized."""
from __future__ import annotations

import pytest
import torch

import archlab
from archlab.cli import main
from archlab.models.vit import resize_pos_embedding
from archlab.train import Recipe, TrainingInterrupted, fit
from archlab.train import checkpoint as ckpt
from archlab.train import fine_tune_at_resolution
from archlab.train.progressive import ProgressivePlan, model_at_resolution, parse_cli
from conftest import TINY, StopAt

VIT = {"img_size": 16, "depth": 1, "embed_dim": 16, "num_heads": 2}


pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture(scope="module")
def digits16():
    return archlab.load_dataset("digits", image_size=16)


def test_plan_follows_algorithm_one():
    r = Recipe(epochs=8, progressive={"start_size": 16, "end_size": 32, "stages": 4,
                                      "randaugment_m": [5, 15], "dropout": [0.1, 0.3]})
    plan = ProgressivePlan.from_recipe(r)
    # N/M = 2 epochs per stage; stage i at 16 + 16 i / 3.
    assert plan.sizes(8, 32) == [round(16 + 16 * (e // 2) / 3) for e in range(8)]
    assert plan.sizes(8, 32) == [16, 16, 21, 21, 27, 27, 32, 32]
    s = plan.settings(2, 8, 32)
    assert s["randaugment_m"] == round(5 + 10 / 3) and s["dropout"] == pytest.approx(0.1 + 0.2 / 3)
    # end_size defaults to the run's size; a list gives sizes from given epochs on.
    assert ProgressivePlan.from_recipe(Recipe(progressive={"start_size": 8, "stages": 2})
                                       ).sizes(4, 24) == [8, 8, 24, 24]
    steps = Recipe(progressive=[[0, 8], [3, 12]])
    assert ProgressivePlan.from_recipe(steps).sizes(5, 99) == [8, 8, 8, 12, 12]
    assert parse_cli("16-32x4") == {"start_size": 16, "end_size": 32, "stages": 4}
    assert parse_cli("0:8,3:12") == [(0, 8), (3, 12)]
    assert Recipe.from_dict(steps.to_dict()).progressive == [[0, 8], [3, 12]]
    assert "- 12" in steps.to_yaml()  # lists, which YAML can write, not tuples


def test_bad_plans_are_refused_by_name():
    with pytest.raises(ValueError, match="start_size"):
        Recipe(progressive={"end_size": 32})
    with pytest.raises(ValueError, match="unknown key"):
        Recipe(progressive={"start_size": 8, "magnitude": 3})
    with pytest.raises(ValueError, match="start at epoch 0"):
        Recipe(progressive=[[1, 8]])


class Sizes:
    def __init__(self, model) -> None:
        self.seen: list[int] = []
        model.register_forward_pre_hook(
            lambda m, a: self.seen.append(a[0].shape[-1]) if m.training else None)


def recipe16(**kw) -> Recipe:
    base = dict(epochs=2, batch_size=64, lr=0.2, threads=1, progress=False, model_kwargs=TINY,
                progressive={"start_size": 8, "stages": 2, "dropout": [0.0, 0.2]})
    return Recipe(**{**base, **kw})


def test_run_trains_at_the_planned_sizes_and_resumes(digits16, tmp_path):
    torch.manual_seed(0)
    model = archlab.create_model("resnet20", num_classes=10, in_chans=1, small_input=True,
                                 **TINY)
    sizes = Sizes(model)
    full = fit(model, digits16, recipe16(), run_dir=tmp_path / "a", verbose=False)
    spe = full.history[0]["step"]
    assert sizes.seen == [8] * spe + [16] * spe
    assert model.head.drop.p == pytest.approx(0.2)
    with pytest.raises(TrainingInterrupted):
        fit("resnet20", digits16, recipe16(), run_dir=tmp_path / "b",
            callbacks=[StopAt(spe + 3)], verbose=False)
    fit(None, None, None, run_dir=tmp_path / "b", resume=True, verbose=False)
    fit("resnet20", digits16, recipe16(), run_dir=tmp_path / "c", verbose=False)
    a, b = ckpt.read_model(tmp_path / "c")[0], ckpt.read_model(tmp_path / "b")[0]
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_plan_that_names_its_last_size_is_the_run_size(digits16):
    # The weights learn the last stage's scale: validation and the saved preprocessing use
    # it (a run on 16 px digits ending at 24 px is evaluated at 24, not at 16).
    r = recipe16(epochs=2, progressive={"start_size": 8, "end_size": 24, "stages": 2})
    result = fit("resnet20", digits16, r, verbose=False)
    assert result.info["preprocess"]["image_size"] == 24
    listed = recipe16(epochs=2, progressive=[[0, 8], [1, 12]])
    assert fit("resnet20", digits16, listed, verbose=False).info["preprocess"]["image_size"] == 12
    # Without a named end the plan ends at the data's size, as before.
    assert fit("resnet20", digits16, recipe16(epochs=1),
               verbose=False).info["preprocess"]["image_size"] == 16


def test_vit_trained_at_16_continues_at_24(digits16, tmp_path):
    run = tmp_path / "vit16"
    fit("vit_tiny_patch4_32", digits16,
        Recipe(epochs=1, batch_size=64, optimizer="adamw", threads=1, progress=False,
               model_kwargs=VIT), run_dir=run, verbose=False)
    weights, info = ckpt.read_model(run)
    assert weights["pos_embedding"].shape == (1, 1 + 4 * 4, 16)
    model, kwargs = model_at_resolution(info["model"], info["model_kwargs"], weights, 24)
    assert kwargs["img_size"] == 24
    torch.testing.assert_close(model.pos_embedding.data,
                               resize_pos_embedding(weights["pos_embedding"], (6, 6), 1))
    assert torch.equal(model.pos_embedding.data[:, :1], weights["pos_embedding"][:, :1])
    digits24 = archlab.load_dataset("digits", image_size=24)
    out = tmp_path / "vit24"
    result = fine_tune_at_resolution(run, digits24, 24, epochs=1, run_dir=out, verbose=False)
    assert result.model.pos_embedding.shape == (1, 1 + 6 * 6, 16)
    assert result.info["preprocess"]["image_size"] == 24
    again, _ = archlab.load_trained(out)           # rebuilt from the run's record alone
    assert again.grid_size == (6, 6)


def test_progressive_cli(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", "digits", "--out", str(out),
                 "--epochs", "2", "--progressive", "0:4,1:8", "--threads", "1",
                 "--no-progress", "--set",
                 "model_kwargs={layers: [1,1,1], widths: [8,16,32], stem_width: 8}"]) == 0
    assert "progressive sizes per epoch: 4 8" in (out / "run.log").read_text()
