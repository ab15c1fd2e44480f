"""Transfer learning (train/finetune.py): fastai's head against its definition, layer groups
and what trains in each phase for every family, discriminative rates against the geometric
formula, batch-norm switches, and a two-phase run that resumes in phase 2 bit-exactly.
Tiny models on 8x8 digits: seconds on a CPU."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import archlab
from archlab.cli import main
from archlab.models.registry import list_families, list_models, model_card
from archlab.train import Recipe, TrainingInterrupted, fit
from archlab.train import checkpoint as ckpt
from archlab.train import finetune
from archlab.train import load_trained
from archlab.train import Trainer
from conftest import TINY, StopAt


pytestmark = pytest.mark.usefixtures("isolated")


def tiny_body(num_classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return archlab.create_model("resnet20", num_classes=num_classes, in_chans=1,
                                small_input=True, **TINY)


def ft_recipe(**kw) -> Recipe:
    base = dict(fine_tune=True, freeze_epochs=1, epochs=2, batch_size=64, optimizer="adamw",
                lr=1e-2, threads=1, progress=False, model_kwargs=TINY)
    return Recipe(**{**base, **kw})


# --------------------------------------------------------------------------------------
# The head
# --------------------------------------------------------------------------------------


def test_concat_head_is_fastais_create_head():
    head = finetune.transfer_head(8, 3, "concat")
    kinds = [type(m) for m in head]
    assert kinds == [finetune.AdaptiveConcatPool2d, nn.Flatten, nn.BatchNorm1d, nn.Dropout,
                     nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert head[2].num_features == 16 and head[3].p == 0.25 and head[7].p == 0.5
    assert (head[4].in_features, head[4].out_features, head[4].bias) == (16, 512, None)
    assert (head[8].in_features, head[8].out_features, head[8].bias) == (512, 3, None)
    # Kaiming normal (fan-in, gain sqrt 2): std sqrt(2 / fan_in).
    assert abs(head[4].weight.std().item() - math.sqrt(2 / 16)) < 0.02
    # The forward pass by hand, in eval mode (BN with its initial statistics is identity
    # up to eps): max and average pooled features concatenated, then the MLP.
    head.eval()
    x = torch.randn(2, 8, 3, 3)
    pooled = torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)
    bn = lambda v: v / math.sqrt(1 + 1e-5)  # noqa: E731
    hand = bn(torch.relu(bn(pooled) @ head[4].weight.T)) @ head[8].weight.T
    torch.testing.assert_close(head(x), hand, rtol=1e-5, atol=1e-5)
    linear = finetune.transfer_head(8, 3, "linear")
    torch.testing.assert_close(linear.eval()(x), x.mean((2, 3)) @ linear[2].weight.T
                               + linear[2].bias)


def test_spread_is_geometric():
    rates = finetune.spread_lrs(1e-5, 1e-4, 5)
    for i, r in enumerate(rates):
        assert math.isclose(r, 1e-5 * 10 ** (i / 4))
    assert finetune.spread_lrs(1e-5, 1e-4, 1) == [1e-4]


# --------------------------------------------------------------------------------------
# Every family: layer groups and what trains in each phase
# --------------------------------------------------------------------------------------


def _smallest(family: str) -> str:
    return min(list_models(family=family), key=lambda n: model_card(n).params or 1e12)


@pytest.mark.parametrize("family", list_families())
def test_phases_and_rates_for_every_family(family):
    torch.manual_seed(0)
    body = archlab.create_model(_smallest(family), num_classes=7, in_chans=1, small_input=True)
    model = finetune.TransferModel(body, 3, "concat")
    groups = finetune.layer_groups(model)
    names = [n for n, _ in groups]
    assert names[-1] == "head" and len(names) >= 3, names
    # Every parameter the body uses sits in exactly one group; the unused stay frozen.
    used = [p for p in model.parameters() if all(p is not u for u in model.unused)]
    grouped = [p for _, g in groups for p in g]
    assert len(grouped) == len(used) and {id(p) for p in grouped} == {id(p) for p in used}
    # The groups follow the network from input to output.
    stage_names = [f["module"] for f in body.feature_info]
    assert [n for n in names if n not in ("stem", "head")] == [
        s for s in stage_names if s in names]

    recipe = Recipe(fine_tune=True, freeze_epochs=1, epochs=1, lr=1e-2,
                    unfrozen_lr=(1e-5, 1e-4))
    norms = {id(p) for m in body.modules() if isinstance(m, finetune._NORMS)
             for p in m.parameters(recurse=False)}
    phase, rated = finetune.enter_phase(model, recipe, 0)
    assert phase.frozen
    head_ids = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        expected = id(p) in head_ids or (id(p) in norms and all(p is not u
                                                                for u in model.unused))
        assert p.requires_grad == expected
    assert [r for _, _, r in rated] == [1e-3] * (len(rated) - 1) + [1e-2]

    phase, rated = finetune.enter_phase(model, recipe, 1)
    assert not phase.frozen
    for p in model.parameters():
        assert p.requires_grad == all(p is not u for u in model.unused)
    n = len(rated)
    for i, (_, _, rate) in enumerate(rated):
        assert math.isclose(rate, 1e-5 * (1e-4 / 1e-5) ** (i / (n - 1)))
    # The new head works on the body's features (map or tokens).
    model.eval()
    side = max(32, body.min_input_size)
    assert model(torch.randn(2, 1, side, side)).shape == (2, 3)


def test_optimizer_groups_carry_the_spread(digits):
    r = ft_recipe(unfrozen_lr=(1e-5, 1e-4))
    trainer = Trainer(tiny_body(), digits, r, verbose=False)
    frozen = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert frozen == {id(p) for p in trainer.model.parameters() if p.requires_grad}
    plugin = trainer.plugin(finetune.FineTune)
    plugin.enter(trainer, 1)
    spread = finetune.group_lrs(trainer.model, plugin.phase)
    step = 1 * trainer.steps_per_epoch + 3
    top = trainer.schedule.apply(trainer.optimizer, step)
    # The one-cycle of phase 2 restarted at its own step 3, with its top rate 1e-4.
    expected_top = finetune.Schedule("onecycle", 2 * trainer.steps_per_epoch, 1e-4,
                                     trainer.steps_per_epoch)(3)[0]
    assert math.isclose(top, expected_top)
    by_param = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for _, params, rate in spread:
        for p in params:
            assert math.isclose(by_param[id(p)], top * rate / 1e-4)
    # Weight decay still skips norms and biases within each layer group.
    for g in trainer.optimizer.param_groups:
        assert (g["weight_decay"] == 0.0) == all(p.ndim <= 1 for p in g["params"])


@pytest.mark.parametrize("frozen_bn", ["train", "stats", "frozen"])
def test_frozen_batch_norm_switch(digits, frozen_bn):
    trainer = Trainer(tiny_body(), digits, ft_recipe(frozen_bn=frozen_bn, epochs=1),
                      verbose=False, callbacks=[StopAt(2)])
    body = trainer.model.body
    bn = body.bn1
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    conv = body.conv1.weight.clone()
    with pytest.raises(TrainingInterrupted):  # two steps of phase 1, then stop
        trainer.run()
    after = bn.state_dict()
    params_moved = not torch.equal(before["weight"], after["weight"])
    stats_moved = not torch.equal(before["running_mean"], after["running_mean"])
    assert params_moved == (frozen_bn == "train")
    assert stats_moved == (frozen_bn != "frozen")
    assert torch.equal(conv, body.conv1.weight)         # the frozen body's weights


# --------------------------------------------------------------------------------------
# The run: both phases, checkpoints, resume in phase 2
# --------------------------------------------------------------------------------------


def test_two_phases_resume_in_phase_two(digits, tmp_path):
    seen = {}

    class Watch:
        def on_epoch_end(self, trainer, row):
            seen[row["epoch"]] = {k: v.clone() for k, v in
                                  trainer.model.body.state_dict().items()}

    start = {k: v.clone() for k, v in tiny_body().state_dict().items()}
    full = fit(tiny_body(), digits, ft_recipe(frozen_bn="frozen"), run_dir=tmp_path / "a",
               callbacks=[Watch()], verbose=False)
    # Phase 1 left the whole body (weights and BN statistics) as it was.
    for k, v in start.items():
        assert torch.equal(seen[1][k], v), k
    assert any(not torch.equal(seen[3][k], v) for k, v in start.items()
               if k.endswith("weight"))
    spe = full.history[0]["step"]
    with pytest.raises(TrainingInterrupted):
        fit(tiny_body(), digits, ft_recipe(frozen_bn="frozen"), run_dir=tmp_path / "b",
            callbacks=[StopAt(spe + 5)], verbose=False)
    state, _, _ = ckpt.load_checkpoint(tmp_path / "b")
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 5
    resumed = fit(tiny_body(), digits, None, run_dir=tmp_path / "b", resume=True,
                  verbose=False)
    a, b = ckpt.read_model(tmp_path / "a")[0], ckpt.read_model(tmp_path / "b")[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["val_top1"] for r in resumed.history] == [r["val_top1"] for r in full.history]
    # The run's model comes back, head and all.
    model, info = load_trained(tmp_path / "a")
    assert isinstance(model, finetune.TransferModel) and info["recipe"]["fine_tune"]


def test_fine_tune_api_and_cli(digits, tmp_path, capsys):
    result = archlab.fine_tune(tiny_body(), digits, epochs=1, base_lr=1e-2, freeze_epochs=1,
                               recipe=Recipe(batch_size=64, threads=1, progress=False,
                                             optimizer="adamw"), verbose=False)
    assert len(result.history) == 2 and result.history[-1]["val_top1"] > 0.2
    weights = tmp_path / "pre.safetensors"
    archlab.save_state_dict(tiny_body().state_dict(), weights,
                            metadata={"source_layout": "archlab"})
    out = tmp_path / "run"
    code = main(["train", "--model", "resnet20", "--data", "digits", "--out", str(out),
                 "--pretrained", str(weights), "--fine-tune", "--freeze-epochs", "1",
                 "--epochs", "1", "--head", "linear", "--unfrozen-lr", "1e-4", "1e-3",
                 "--threads", "1", "--no-progress", "--set",
                 "model_kwargs={layers: [1,1,1], widths: [8,16,32], stem_width: 8}"])
    assert code == 0
    log = (out / "run.log").read_text()
    assert "phase frozen from epoch 1" in log and "phase unfrozen from epoch 2" in log
    model, _ = load_trained(out)
    assert isinstance(model.head[-1], nn.Linear) and model.head[-1].bias is not None
