"""Training: schedules against their formulas, optimizer and loss details, determinism,
checkpoints and resume (a real SIGKILL too), failures, evaluation, prediction and the CLI.

Runs use a ResNet of one block per stage and 8-16-32 channels on scikit-learn's 8x8
digits: a few seconds each on a CPU.
"""
from __future__ import annotations

import copy
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from archlab.cli import main
from archlab.models.weights import CheckpointError
from archlab.train import Recipe, TrainingDiverged, TrainingInterrupted, evaluate, fit, predict
from archlab.train import checkpoint as ckpt
from archlab.train.losses import classification_loss
from archlab.train.schedules import Schedule, one_cycle, step_decay, warmup_cosine
from archlab.train.ema import ModelEMA
from archlab.train.optim import build_optimizer, param_groups
from conftest import TINY, StopAt

TINY_FLAG = "model_kwargs={layers: [1,1,1], widths: [8,16,32], stem_width: 8}"


def tiny_recipe(**kw) -> Recipe:
    base = dict(epochs=2, batch_size=64, lr=0.2, model_kwargs=TINY, threads=1,
                progress=False)
    return Recipe(**{**base, **kw})


pytestmark = pytest.mark.usefixtures("isolated")


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.read_model(run_dir)[0]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# --------------------------------------------------------------------------------------
# Schedules
# --------------------------------------------------------------------------------------


def test_one_cycle_follows_fastai():
    lr_max, total = 0.4, 1000
    lr, mom = one_cycle(0, total, lr_max)
    assert math.isclose(lr, lr_max / 25) and math.isclose(mom, 0.95)
    lr, mom = one_cycle(125, total, lr_max)          # half-way up: the cosine's midpoint
    assert math.isclose(lr, (lr_max / 25 + lr_max) / 2) and math.isclose(mom, 0.90)
    lr, mom = one_cycle(250, total, lr_max)
    assert math.isclose(lr, lr_max) and math.isclose(mom, 0.85)
    lr, mom = one_cycle(625, total, lr_max)          # half-way down
    assert math.isclose(lr, (lr_max + lr_max / 1e5) / 2) and math.isclose(mom, 0.90)
    lr, mom = one_cycle(999, total, lr_max)
    assert lr < lr_max / 1e4 and mom > 0.9499


def test_one_cycle_agrees_with_torchs_onecyclelr():
    total, lr_max = 2000, 0.1
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr_max, momentum=0.9)
    ref = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr_max, total_steps=total, pct_start=0.25, anneal_strategy="cos",
        div_factor=25, final_div_factor=1e5 / 25, base_momentum=0.85, max_momentum=0.95)
    for step in range(total):
        lr, mom = one_cycle(step, total, lr_max)
        assert math.isclose(lr, opt.param_groups[0]["lr"], rel_tol=0.02, abs_tol=1e-3 * lr_max)
        assert math.isclose(mom, opt.param_groups[0]["momentum"], abs_tol=1e-3)
        opt.step()
        ref.step()


def test_cosine_and_step_schedules():
    assert math.isclose(warmup_cosine(0, 100, 1.0, warmup=10), 0.1)
    assert math.isclose(warmup_cosine(9, 100, 1.0, warmup=10), 1.0)
    assert math.isclose(warmup_cosine(55, 100, 1.0, warmup=10, min_lr=0.2), 0.6)
    assert step_decay(29, 0.1, [30, 60]) == 0.1
    assert math.isclose(step_decay(30, 0.1, [30, 60]), 0.01)
    assert math.isclose(step_decay(75, 0.1, [30, 60]), 0.001)


def test_schedule_sets_momentum_of_sgd_and_beta1_of_adamw():
    model = nn.Linear(3, 2)
    sched = Schedule("onecycle", 100, 0.5, 10)
    for optimizer in ("sgd", "adamw"):
        opt = build_optimizer(model, Recipe(optimizer=optimizer))
        sched.apply(opt, 25)
        group = opt.param_groups[0]
        assert math.isclose(group["lr"], 0.5)
        mom = group["momentum"] if optimizer == "sgd" else group["betas"][0]
        assert math.isclose(mom, 0.85)


# --------------------------------------------------------------------------------------
# Optimizer, loss, EMA
# --------------------------------------------------------------------------------------


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = param_groups(model, 0.1)
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4


def test_adamw_uses_fastais_defaults():
    opt = build_optimizer(nn.Linear(2, 2), Recipe(optimizer="adamw"))
    assert isinstance(opt, torch.optim.AdamW)
    g = opt.param_groups[0]
    assert g["betas"] == (0.9, 0.99) and g["eps"] == 1e-5 and g["weight_decay"] == 0.01
    sgd = build_optimizer(nn.Linear(2, 2), Recipe()).param_groups[0]
    assert sgd["nesterov"] and sgd["momentum"] == 0.9


@pytest.mark.parametrize("optimizer, plain", [
    ("sgd", lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True)),
    ("adamw", lambda groups: torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.99), eps=1e-5)),
])
def test_the_fused_optimizer_steps_as_torchs_default_does(optimizer, plain):
    # The trainer's optimizer uses torch's fused kernel on a CPU (train/optim.py); three
    # steps with weight decay on one group only and momentum land where torch's
    # tensor-by-tensor default does, up to rounding.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4 * 36, 3))
    twin, start = copy.deepcopy(model), copy.deepcopy(model)
    fused = build_optimizer(model, Recipe(optimizer=optimizer, lr=0.1 if optimizer == "sgd"
                                          else 1e-3))
    assert fused.defaults["fused"] is True
    wd = fused.param_groups[0]["weight_decay"]
    reference = plain(param_groups(twin, wd))
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for net, opt in ((model, fused), (twin, reference)):
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # They did move (the convolution's bias, whose gradient the norm cancels, may not).
    moved = [not torch.allclose(a, b) for a, b in zip(model.parameters(), start.parameters())]
    assert moved[0] and all(moved[2:])


def test_loss_adds_weighted_aux_heads_and_takes_soft_targets():
    torch.manual_seed(0)
    main_logits, aux = torch.randn(4, 5), torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    ce = nn.functional.cross_entropy

    class GoogLeNetLike(nn.Module):
        aux_weight = 0.3

    loss, logits = classification_loss((main_logits, aux), y, GoogLeNetLike())
    assert torch.allclose(loss, ce(main_logits, y) + 0.3 * ce(aux, y))
    assert logits is main_logits
    # Without aux_weight (a distilled DeiT's second head), only the first output counts.
    loss, _ = classification_loss((main_logits, aux), y, nn.Module())
    assert torch.allclose(loss, ce(main_logits, y))
    soft = nn.functional.one_hot(y, 5).float()
    loss, _ = classification_loss(main_logits, soft, None, label_smoothing=0.1)
    assert torch.allclose(loss, ce(main_logits, y, label_smoothing=0.1))


def test_ema_update_is_a_weighted_average():
    model = nn.Linear(2, 1)
    ema = ModelEMA(model, 0.9)
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1000)  # past the warm-up: decay 0.9
    assert torch.allclose(ema.module.weight, 0.9 * before + 0.1 * model.weight)


# --------------------------------------------------------------------------------------
# Recipes
# --------------------------------------------------------------------------------------


def test_recipe_yaml_round_trip_and_unknown_keys(tmp_path):
    r = tiny_recipe(optimizer="adamw", milestones=(1, 2), schedule="step")
    path = tmp_path / "r.yaml"
    r.to_yaml(path)
    assert Recipe.load(str(path)) == r
    path.write_text("epochs: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match="learning_rate"):
        Recipe.load(str(path))
    with pytest.raises(ValueError, match="optimizer"):
        Recipe(optimizer="rmsprop")


def test_shipped_presets_load():
    from archlab.train.recipe import presets

    assert presets()
    for name in presets():
        assert Recipe.load(name).epochs >= 1


# --------------------------------------------------------------------------------------
# Runs: determinism, resume, failures
# --------------------------------------------------------------------------------------


def test_same_seed_same_run(tmp_path):
    r = tiny_recipe(augment="randaugment", mixup=0.2, cutmix=1.0, random_erasing=0.25,
                    ema=0.9, label_smoothing=0.1)
    a = fit("resnet20", "digits", r, run_dir=tmp_path / "a", verbose=False)
    b = fit("resnet20", "digits", r, run_dir=tmp_path / "b", verbose=False)
    strip = lambda h: [{k: v for k, v in row.items() if "time" not in k and k not in (  # noqa: E731
        "images_per_s", "data_frac")} for row in h]
    assert strip(a.history) == strip(b.history)
    assert a.test.top1 == b.test.top1
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    c = fit("resnet20", "digits", r.replace(seed=1), verbose=False)
    assert strip(c.history) != strip(a.history)
    # It learned something: 10 classes, chance is 10%.
    assert a.history[-1]["val_top1"] > 0.3


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_and_channels_last_train_on_the_cpu(precision):
    # The settings a GPU gets, exercised here on the CPU (fp16 with its gradient scaler).
    result = fit("resnet20", "digits", tiny_recipe(epochs=1, precision=precision,
                                                   channels_last=True), verbose=False)
    assert result.info["speed"]["precision"] == precision
    row = result.history[-1]
    assert math.isfinite(row["train_loss"]) and row["val_top1"] > 0.15
    conv = next(m for m in result.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_interrupted_mid_epoch_resumes_to_identical_weights(tmp_path):
    r = tiny_recipe(epochs=3, augment="randaugment", mixup=0.2, ema=0.9)
    fit("resnet20", "digits", r, run_dir=tmp_path / "full", verbose=False)

    with pytest.raises(TrainingInterrupted):
        fit("resnet20", "digits", r, run_dir=tmp_path / "cut", verbose=False,
            callbacks=[StopAt(27)])            # epoch 2, batch 7
    state = json.loads((tmp_path / "cut" / "checkpoint.json").read_text())
    assert state["step"] == 27 and state["batch_in_epoch"] == 7
    result = fit(None, "digits", None, run_dir=tmp_path / "cut", resume=True, verbose=False)
    assert len(result.history) == 3
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [row["val_top1"] for row in full] == [row["val_top1"] for row in result.history]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "archlab.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_epoch(run_dir: Path, epoch: int, proc: subprocess.Popen, timeout=300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            state = json.loads((run_dir / "checkpoint.json").read_text())
            if state["epoch"] >= epoch:
                return
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    raise TimeoutError


def test_sigterm_then_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A real process: SIGTERM saves and exits; SIGKILL loses the epoch in progress; each
    --resume continues, and the end is bit-for-bit the run that was never stopped."""
    epochs = 5
    run = tmp_path / "killed"
    args = ["train", "--model", "resnet20", "--data", "digits", "--epochs", str(epochs),
            "--batch-size", "64", "--lr", "0.2", "--threads", "1", "--no-progress",
            "--set", TINY_FLAG, "--out", str(run)]
    proc = _cli(*args)
    _wait_for_epoch(run, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "resume with --resume" in out

    proc = _cli("train", "--resume", str(run), "--no-progress")
    _wait_for_epoch(run, 3, proc)
    proc.kill()                                   # SIGKILL: no chance to save anything
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    proc = _cli("train", "--resume", str(run), "--no-progress")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    reference = fit("resnet20", "digits", tiny_recipe(epochs=epochs),
                    run_dir=tmp_path / "reference", verbose=False)
    assert_same_weights(weights(tmp_path / "reference"), weights(run))
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == epochs + 1 and len(reference.history) == epochs


class NaNAfter(nn.Module):
    """A tiny classifier whose output turns to NaN from a given training step."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.num_classes, self.calls, self.step = 10, 0, step

    def forward(self, x):
        out = self.fc(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls > self.step:
                out = out * float("nan")
        return out


def test_nan_loss_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    r = tiny_recipe(epochs=3, lr=0.01)
    with pytest.raises(TrainingDiverged, match=r"nan at step 23 \(epoch 2, batch 4"):
        fit(NaNAfter(23), "digits", r, run_dir=tmp_path, verbose=False)
    state = json.loads((tmp_path / "checkpoint.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 20
    assert all(torch.isfinite(t).all() for t in weights(tmp_path).values())
    assert "nan at step 23" in (tmp_path / "run.log").read_text()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_files_that_cannot_be_read(tmp_path):
    fit("resnet20", "digits", tiny_recipe(epochs=1), run_dir=tmp_path / "run", verbose=False)
    run = tmp_path / "run"
    state = json.loads((run / "checkpoint.json").read_text())
    weights_file = run / state["files"]["weights"]
    data = weights_file.read_bytes()
    weights_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(run)
    weights_file.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        ckpt.load_checkpoint(run)
    (run / "checkpoint.json").write_text('{"format": "archlab-checkpoint/1", "st')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(run)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        ckpt.load_checkpoint(tmp_path / "nowhere")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(CheckpointError, match="never loads"):
        ckpt.read_model(evil)
    foreign = tmp_path / "foreign.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not written by `archlab train`"):
        ckpt.read_model(foreign)


# --------------------------------------------------------------------------------------
# Using what a run leaves: evaluate, predict, the CLI
# --------------------------------------------------------------------------------------


def _image_folder(root: Path, n: int = 12) -> Path:
    """Two classes anyone can tell apart: dark and bright images with some noise."""
    g = torch.Generator().manual_seed(0)
    for cls, base in (("dark", 40), ("bright", 210)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = (base + torch.randint(-30, 30, (20, 20, 3), generator=g)).clamp(0, 255)
            Image.fromarray(arr.to(torch.uint8).numpy()).save(root / cls / f"{i}.png")
    return root


def test_train_on_a_folder_then_evaluate_and_predict(tmp_path):
    root = _image_folder(tmp_path / "shades")
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    r = tiny_recipe(epochs=3, batch_size=8, lr=0.05, image_size=16, val_fraction=0.25,
                    workers=0)
    result = fit("resnet20", str(root), r, run_dir=tmp_path / "run", verbose=False)
    assert result.issues.count("skipped (cannot be decoded)") == 1
    assert "broken.png" in (tmp_path / "run" / "run.log").read_text()
    ev = evaluate(tmp_path / "run", str(root), device="cpu", workers=0)
    assert ev.metrics.n == 24 and ev.metrics.classes == ["bright", "dark"]
    # The same folder decoded once into memory: the broken file is skipped at load.
    held = fit("resnet20", str(root), r.replace(in_memory=True), verbose=False)
    assert held.issues.count("skipped (cannot be decoded)") == 1
    assert held.history[-1]["val_top1"] > 0.5
    assert sum(map(sum, ev.metrics.confusion)) == 24
    assert ev.metrics.top1 > 0.9
    with pytest.raises(Exception, match="broken.png"):
        evaluate(tmp_path / "run", str(root), device="cpu", workers=0, strict=True)

    (tmp_path / "new").mkdir()
    Image.new("RGB", (30, 30), (230, 230, 230)).save(tmp_path / "new" / "light.png")
    Image.new("L", (30, 30), 20).save(tmp_path / "new" / "grey_dark.png")
    (tmp_path / "new" / "zero.jpg").write_bytes(b"")
    preds = predict(tmp_path / "run", [tmp_path / "new"], top_k=2, device="cpu")
    by_name = {Path(p["file"]).name: p for p in preds}
    assert by_name["light.png"]["top"][0]["class"] == "bright"
    assert by_name["grey_dark.png"]["top"][0]["class"] == "dark"
    assert math.isclose(sum(t["prob"] for t in by_name["light.png"]["top"]), 1.0,
                        rel_tol=1e-5)
    assert "empty" in by_name["zero.jpg"]["error"]


def test_file_dataset_resumes_mid_epoch_to_identical_weights(tmp_path):
    """Files are decoded and augmented in workers: the draws depend on (seed, epoch, item)
    only, so a run resumed mid-epoch with other workers sees the same batches."""
    root = _image_folder(tmp_path / "shades", n=10)
    r = tiny_recipe(epochs=2, batch_size=4, lr=0.05, image_size=12, augment="randaugment",
                    workers=0)
    fit("resnet20", str(root), r, run_dir=tmp_path / "full", verbose=False)

    with pytest.raises(TrainingInterrupted):
        fit("resnet20", str(root), r, run_dir=tmp_path / "cut", verbose=False,
            callbacks=[StopAt(6)])
    fit(None, str(root), None, run_dir=tmp_path / "cut", resume=True, verbose=False)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "cut"))


def test_cli_train_eval_predict(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", "digits", "--epochs", "1",
                 "--threads", "1", "--no-progress", "--set", TINY_FLAG,
                 "--out", str(run)]) == 0
    for name in ("model.safetensors", "best.safetensors", "checkpoint.json", "metrics.jsonl",
                 "metrics.csv", "recipe.yaml", "run.log"):
        assert (run / name).is_file(), name
    assert main(["train", "--model", "resnet20", "--data", "digits", "--out", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err

    assert main(["eval", str(run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    test = json.loads((run / "test_metrics.json").read_text())
    assert report["top1"] == test["top1"] and report["n"] == 359
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "top-1" in out and "true \\ predicted" in out

    digit = tmp_path / "seven.png"
    from archlab.data import load_dataset

    d = load_dataset("digits", "test")
    Image.fromarray(d.images[0, 0].numpy(), "L").save(digit)
    assert main(["predict", str(run / "model.safetensors"), str(digit), "--top-k", "3",
                 "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds[0]["top"]) == 3 and preds[0]["file"] == str(digit)
    assert main(["predict", str(run), str(digit)]) == 0
    assert "seven.png" in capsys.readouterr().out


# --------------------------------------------------------------------------------------
# Plugins, the stem, the progress bar
# --------------------------------------------------------------------------------------


class Recorder:
    """A plugin that records its hooks, trains on the plain loss times one, and keeps a
    counter in the checkpoint."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.resumed_with = None

    def on_model(self, trainer, net):
        self.calls.append("on_model")
        return net

    def on_setup(self, trainer):
        self.calls.append("on_setup")
        self.steps_per_epoch = trainer.steps_per_epoch

    def on_fit_start(self, trainer):
        self.calls.append("on_fit_start")

    def on_epoch_start(self, trainer, epoch):
        self.calls.append(f"on_epoch_start {epoch}")

    def loss(self, trainer, output, target, x):
        self.calls.append("loss")
        loss, logits = classification_loss(output, target, trainer.model,
                                           trainer.recipe.label_smoothing)
        return loss * 1.0, logits

    def on_step_end(self, trainer):
        self.calls.append("on_step_end")

    def on_train_epoch_end(self, trainer):
        self.calls.append(f"on_train_epoch_end {trainer.epoch}")

    def on_epoch_end(self, trainer, row):
        self.calls.append(f"on_epoch_end {row['epoch']}")

    def checkpoint_tensors(self, trainer):
        return {"recorder.steps": torch.tensor([trainer.step])}

    def on_resume(self, trainer, state, tensors):
        self.resumed_with = int(tensors["recorder.steps"][0])


def test_a_plugin_sees_its_hooks_in_order_and_keeps_its_state(tmp_path, digits):
    r = tiny_recipe(epochs=2, val_fraction=0.5)
    rec = Recorder()
    with pytest.raises(TrainingInterrupted):
        fit("resnet20", digits, r, run_dir=tmp_path / "run", verbose=False, plugins=[rec],
            callbacks=[StopAt(16)])
    per_epoch = rec.steps_per_epoch
    assert per_epoch < 14
    step = ["loss", "on_step_end"]
    assert rec.calls == (["on_model", "on_setup", "on_fit_start", "on_epoch_start 0"]
                         + step * per_epoch + ["on_train_epoch_end 1", "on_epoch_end 1",
                                                "on_epoch_start 1"] + step * (16 - per_epoch))
    again = Recorder()
    result = fit(None, digits, None, run_dir=tmp_path / "run", resume=True, verbose=False,
                 plugins=[again])
    assert again.resumed_with == 16 and len(result.history) == 2
    assert again.calls[:4] == ["on_model", "on_setup", "on_fit_start", "on_epoch_start 1"]


def test_pretrained_weights_keep_their_stem_at_small_sizes(tmp_path, digits):
    from archlab import create_model, save_state_dict
    from archlab.train import Trainer

    path = tmp_path / "random.safetensors"
    save_state_dict(create_model("resnet18", num_classes=10, in_chans=1).state_dict(), path)
    trainer = Trainer("resnet18", digits, Recipe(pretrained=str(path), image_size=32,
                                                 epochs=1, threads=1, progress=False),
                      run_dir=tmp_path / "run")
    assert trainer.model_kwargs["small_input"] is False
    assert trainer.info()["stem"].startswith("standard stem, as the pretrained weights")
    assert trainer.model.conv1.stride == (2, 2)         # ImageNet's stem, not CIFAR's
    trainer.run()
    head = (tmp_path / "run" / "run.log").read_text().splitlines()[:3]
    assert any("standard stem, as the pretrained weights were trained" in l for l in head)
    assert ckpt.read_model(tmp_path / "run")[1]["model_kwargs"]["small_input"] is False
    # Set explicitly, the small-input stem is used with pretrained weights too.
    small = Trainer("resnet18", digits, Recipe(pretrained=None, small_input=True,
                                               image_size=32, threads=1), verbose=False)
    assert small.model_kwargs["small_input"] is True and "small_input set" in small.stem


def test_small_images_without_weights_get_the_small_input_stem(digits):
    from archlab.train import Trainer

    trainer = Trainer("resnet18", digits, Recipe(image_size=28, threads=1), verbose=False)
    assert trainer.model_kwargs["small_input"] is True
    assert trainer.stem == "small-input stem (images of 28 px, 64 or less)"
    assert trainer.model.conv1.stride == (1, 1)


def test_progress_bar_writes_lines_to_a_file_and_nothing_when_off():
    import io

    from archlab.train.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(4, "epoch 1/1", file=out, log_every=0.0)
    for _ in range(4):
        bar.update(1, 64, lambda: "loss 0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in out.getvalue()
    assert lines[-1].startswith("epoch 1/1: 100%") and "4/4" in lines[-1]
    assert "img/s loss 0.5" in lines[-1]
    quiet = io.StringIO()
    bar = ProgressBar(4, "x", file=quiet, enabled=False)
    bar.update(4, 10)
    bar.close()
    assert quiet.getvalue() == "" and bar.count == 4
    slow = io.StringIO()
    bar = ProgressBar(4, "x", file=slow, log_every=30.0)
    bar.update(1, 10)
    assert slow.getvalue() == ""            # a log's first line comes after log_every
