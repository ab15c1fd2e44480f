"""Training losses beyond plain cross-entropy: auxiliary classifiers (GoogLeNet, Inception
v3) and knowledge distillation (DeiT), each against a hand computation; the teacher frozen,
in eval mode, fed the student's very batch; a distilled DeiT's two heads with their own
targets; a teacher run that archlab trained, through the CLI."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import archlab
from archlab.cli import main
from archlab.models.inception import GoogLeNet, InceptionV3
from archlab.train import Recipe, fit
from archlab.train.distill import (Distiller, distillation_loss, hard_distillation_loss,
                                   soft_distillation_loss)
from archlab.train.losses import classification_loss
from archlab.train import Trainer
from archlab.train.eval_loop import run_eval
from conftest import TINY


pytestmark = pytest.mark.usefixtures("isolated")


def tiny_recipe(**kw) -> Recipe:
    base = dict(epochs=1, batch_size=64, lr=0.2, model_kwargs=TINY, threads=1, progress=False)
    return Recipe(**{**base, **kw})


def ce_by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logp = logits - logits.exp().sum(1, keepdim=True).log()
    return -logp[torch.arange(len(target)), target].mean()


# --------------------------------------------------------------------------------------
# Auxiliary classifiers
# --------------------------------------------------------------------------------------


def test_aux_weights_are_the_papers():
    assert GoogLeNet.aux_weight == 0.3        # 1409.4842: "weighted by 0.3" (REFERENCE.md)
    assert InceptionV3.aux_weight == 0.4      # TF-slim's training code (the paper gives none)


def test_aux_loss_is_main_plus_weight_times_aux():
    torch.manual_seed(0)
    model = archlab.create_model("googlenet", num_classes=4, small_input=True, aux_logits=True)
    model.train()
    x, y = torch.randn(3, 3, 32, 32), torch.tensor([0, 3, 1])
    out = model(x)
    assert len(out) == 3
    loss, logits = classification_loss(out, y, model)
    hand = ce_by_hand(out[0], y) + 0.3 * (ce_by_hand(out[1], y) + ce_by_hand(out[2], y))
    torch.testing.assert_close(loss, hand)
    assert logits is out[0]
    # In eval mode the network returns its main logits alone.
    model.eval()
    with torch.no_grad():
        assert torch.is_tensor(model(x)) and torch.allclose(model(x), model.forward_head(
            model.forward_features(x)))


def test_evaluation_ignores_auxiliary_outputs():
    class AlwaysAux(nn.Module):  # returns an aux output even in eval mode
        aux_weight = 0.3

        def forward(self, x):
            return x, -100 * x

    x = torch.randn(10, 4)
    y = torch.randint(0, 4, (10,))
    m = run_eval(AlwaysAux(), [(x, y, y)], 4, None, torch.device("cpu"))
    assert abs(m.loss - F.cross_entropy(x, y).item()) < 1e-6
    assert m.top1 == pytest.approx((x.argmax(1) == y).float().mean().item())


# --------------------------------------------------------------------------------------
# Distillation losses
# --------------------------------------------------------------------------------------


def test_soft_loss_against_hand_computation():
    torch.manual_seed(0)
    s, t, tau = torch.randn(5, 6), torch.randn(5, 6), 3.0
    p_t = torch.softmax(t / tau, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / tau, 1))).sum(1).mean()
    torch.testing.assert_close(soft_distillation_loss(s, t, tau), kl * tau ** 2)
    y = torch.randint(0, 6, (5,))
    loss, _ = distillation_loss(s, y, t, "soft", alpha=0.3, tau=tau)
    torch.testing.assert_close(loss, 0.7 * ce_by_hand(s, y) + 0.3 * kl * tau ** 2)
    assert soft_distillation_loss(t, t, tau).abs() < 1e-6


def test_hard_loss_with_a_teacher_that_knows_the_labels_is_the_label_loss():
    torch.manual_seed(0)
    s, y = torch.randn(8, 5), torch.randint(0, 5, (8,))
    oracle = 50.0 * F.one_hot(y, 5).float()
    for alpha in (0.0, 0.5, 1.0):
        loss, _ = distillation_loss(s, y, oracle, "hard", alpha=alpha)
        torch.testing.assert_close(loss, F.cross_entropy(s, y))
    wrong = 50.0 * F.one_hot((y + 1) % 5, 5).float()
    torch.testing.assert_close(hard_distillation_loss(s, wrong), ce_by_hand(s, (y + 1) % 5))


def test_distilled_deit_heads_get_their_own_targets():
    torch.manual_seed(0)
    model = archlab.create_model("deit_tiny_distilled_patch4_32", num_classes=4, in_chans=1,
                                 small_input=True, img_size=8, depth=1, embed_dim=16,
                                 num_heads=2)
    model.train()
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    t1, t2 = torch.randn(3, 4) * 5, torch.randn(3, 4) * 5
    cls, dist = model(x)
    loss, logits = distillation_loss((cls, dist), y, t1, "hard", 0.5, model=model)
    torch.testing.assert_close(loss, 0.5 * ce_by_hand(cls, y)
                               + 0.5 * ce_by_hand(dist, t1.argmax(1)))
    assert logits is cls

    def grads(teacher):
        model.zero_grad()
        out = model(x)
        distillation_loss(out, y, teacher, "hard", 0.5, model=model)[0].backward()
        return model.head.weight.grad.clone(), model.head_dist.weight.grad.clone()

    (h1, d1), (h2, d2) = grads(t1), grads(t2)
    assert torch.equal(h1, h2)                  # the class head hears only the labels
    assert not torch.allclose(d1, d2)           # the distillation head, the teacher


# --------------------------------------------------------------------------------------
# The teacher in a run
# --------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """A teacher that remembers what it was shown and answers with fixed logits."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(num_classes))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.w.expand(len(x), -1) + x.flatten(1)[:, :1]


def test_teacher_is_frozen_and_sees_the_students_batch(digits):
    teacher = Recorder().train()
    student_inputs = []
    trainer = Trainer("resnet20", digits, tiny_recipe(distill="soft", distill_tau=2.0,
                                                      augment="basic", mixup=0.2),
                      teacher=teacher, verbose=False)
    trainer.model.register_forward_pre_hook(lambda m, a: student_inputs.append(a[0].clone()))
    trainer.run()
    assert not teacher.training and not teacher.w.requires_grad and teacher.w.grad is None
    assert torch.equal(teacher.w, torch.zeros(10))
    train_batches = [s for s in student_inputs if len(s) == 64]
    assert len(teacher.seen) == len(train_batches) == trainer.steps_per_epoch
    for a, b in zip(teacher.seen, train_batches):
        assert torch.equal(a, b)                # augmented and mixed: the same images


class LabelOracle(nn.Module):
    """Looks each (un-augmented, normalised) image up in a table of the true labels and
    answers with large logits for it."""

    def __init__(self, table: dict[bytes, int], num_classes: int) -> None:
        super().__init__()
        self.table, self.num_classes = table, num_classes

    @staticmethod
    def key(img: torch.Tensor) -> bytes:
        return img.mul(1000).round().to(torch.int32).numpy().tobytes()

    def forward(self, x):
        labels = torch.tensor([self.table[self.key(img)] for img in x])
        return 100.0 * F.one_hot(labels, self.num_classes).float()


def test_hard_distillation_from_the_labels_trains_like_no_distillation(digits):
    plain = Trainer("resnet20", digits, tiny_recipe(augment="none"), verbose=False)
    table = {}
    for x, _, labels in plain.eval_loader(plain.train_data):
        for img, label in zip(x, labels):
            table[LabelOracle.key(img)] = int(label)
    baseline = plain.run()
    distilled = fit("resnet20", digits, tiny_recipe(augment="none", distill="hard"),
                    teacher=LabelOracle(table, 10), verbose=False)
    assert abs(baseline.history[0]["train_loss"] - distilled.history[0]["train_loss"]) < 1e-5
    for a, b in zip(baseline.model.state_dict().values(),
                    distilled.model.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def test_teacher_preprocessing_is_matched():
    teacher = nn.Identity()
    student = {"mean": [0.5], "std": [0.25], "image_size": 8}
    own = {"mean": [0.1], "std": [0.2], "image_size": 16}
    d = Distiller(teacher, "hard", 0.5, 1.0, student, own)
    x = torch.randn(2, 1, 8, 8)
    raw = x * 0.25 + 0.5
    hand = F.interpolate((raw - 0.1) / 0.2, size=(16, 16), mode="bilinear", antialias=True,
                         align_corners=False)
    torch.testing.assert_close(d.teacher_input(x), hand)
    assert Distiller(teacher, "hard", 0.5, 1.0, student, dict(student)).teacher_input(x) is x


def test_teacher_run_through_the_cli(tmp_path, capsys):
    flags = ["--data", "digits", "--epochs", "1", "--threads", "1", "--no-progress", "--set",
             "model_kwargs={layers: [1,1,1], widths: [8,16,32], stem_width: 8}"]
    assert main(["train", "--model", "resnet20", "--out", str(tmp_path / "t"), *flags]) == 0
    assert main(["train", "--model", "resnet20", "--out", str(tmp_path / "s"), "--teacher",
                 str(tmp_path / "t"), "--distill", "hard", *flags]) == 0
    recipe = (tmp_path / "s" / "recipe.yaml").read_text()
    assert "distill: hard" in recipe and str(tmp_path / "t") in recipe
    with pytest.raises(ValueError, match="needs a teacher"):
        fit("resnet20", archlab.load_dataset("digits"), tiny_recipe(distill="hard"),
            verbose=False)
