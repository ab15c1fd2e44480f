"""Speed: batch norm folded exactly, depthwise layers kept in fp32 under bf16, 1x1 and
patchify convolutions computed as matrix products with the convolution's gradients,
inference weights stored in bf16 with autocast's logits, the settings
chosen and recorded (a CPU without bf16 units gets fp32), the interleaved timing and its
ratio, and `archlab bench` against a peer with timm's columns. No test asserts a speed."""
from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch
from torch import nn

import archlab
from archlab.analysis import cpu_layers, speed
from archlab.analysis.bench import append_results, bench_model, describe_row
from archlab.analysis.fold import conv_bn_pairs, fold_batchnorm
from archlab.analysis.speed import Settings, choose
from archlab.analysis.timing import Timing, interleaved, ratio_interval
from archlab.cli import main
from archlab.models import list_families, list_models
from archlab.train import Recipe, fit

from peers import randomize_norms


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name, left", [("resnet18", 0), ("efficientnet_b0", 0),
                                        ("mobilenet_v2_100", 0), ("resnetv2_50", 17)])
def test_folded_batch_norm_gives_the_same_logits(name, left):
    torch.manual_seed(0)
    model = randomize_norms(archlab.create_model(name, num_classes=10)).eval()
    x = torch.randn(2, 3, 64, 64)
    folded = fold_batchnorm(model, x)
    # Pre-activation ResNet's norms follow an addition, not a convolution: they stay.
    assert _norms(folded) == left and _norms(model) > left
    y = torch.randn(3, 3, 64, 64)               # another batch than the one it traced
    with torch.no_grad():
        torch.testing.assert_close(folded(y), model(y), rtol=1e-4, atol=1e-4)


def test_a_conv_output_read_twice_is_not_folded():
    class Both(nn.Module):                      # the norm and the sum both read conv's output
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.other = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + self.other(y)

    assert conv_bn_pairs(Both().eval(), torch.randn(1, 3, 8, 8)) == []


def test_depthwise_layers_compute_in_fp32_under_bf16_with_the_same_keys():
    model = archlab.create_model("mobilenet_v2_100", num_classes=10)
    keys = list(model.state_dict())
    cpu_layers.depthwise_in_fp32(model)
    assert list(model.state_dict()) == keys
    dw = next(m for m in model.modules() if isinstance(m, cpu_layers.Float32DepthwiseConv2d))
    plain = next(m for m in model.modules() if type(m) is nn.Conv2d and m.groups == 1)
    x = torch.randn(1, dw.in_channels, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert dw(x).dtype == torch.float32
        assert plain(torch.randn(1, plain.in_channels, 8, 8)).dtype == torch.bfloat16


@pytest.mark.parametrize("kernel, stride, bias, side", [
    (1, 1, False, 7), (1, 2, True, 7),     # pointwise, and a ResNet's strided shortcut
    (4, 4, True, 17), (2, 2, False, 8)])   # patchify: ConvNeXt's stem (with a remainder)
def test_a_convolution_as_a_matrix_product_gives_the_convolutions_gradients(
        kernel, stride, bias, side):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, kernel, stride=stride, bias=bias)
    fast = cpu_layers.convolutions_as_matmul(nn.Sequential(copy.deepcopy(conv)))[0]
    assert type(fast) is cpu_layers.MatmulConv2d
    assert list(fast.state_dict()) == list(conv.state_dict())
    x = torch.randn(3, 6, side, side).contiguous(memory_format=torch.channels_last)
    outs, grads = [], []
    for m in (conv, fast):
        xi = x.clone().requires_grad_()
        y = m(xi)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        outs.append(y)
        grads.append([xi.grad] + [p.grad for p in m.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # The layout carries through, forward and backward (a contiguous gradient would send
    # the elementwise backward kernels before it down their slow mixed-layout path).
    assert outs[1].is_contiguous(memory_format=torch.channels_last)
    assert grads[1][0].is_contiguous(memory_format=torch.channels_last)
    contiguous = x.contiguous()             # any other layout takes the convolution
    torch.testing.assert_close(fast(contiguous), conv(contiguous))


def test_only_pointwise_and_patchify_convolutions_become_matrix_products():
    layers = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 1, groups=2),
                           nn.Conv2d(4, 4, 2, stride=1), nn.Conv2d(4, 4, 1, padding=1))
    cpu_layers.convolutions_as_matmul(layers)
    assert all(type(m) is nn.Conv2d for m in layers)


def test_channels_last_on_a_cpu_computes_1x1_and_patchify_convolutions_as_matrix_products():
    def pointwise(model):
        return sum(isinstance(m, cpu_layers.MatmulConv2d) for m in model.modules())

    model = archlab.create_model("resnet18", num_classes=10)
    Settings("fp32").prepare(model, "train")
    assert pointwise(model) == 0
    Settings("fp32", channels_last=True).prepare(model, "train")
    # resnet18's three downsampling shortcuts; its 3x3 and 7x7 convolutions are left alone.
    assert pointwise(model) == 3
    assert all(m.kernel_size == (1, 1) for m in model.modules()
               if isinstance(m, cpu_layers.MatmulConv2d))
    x = torch.randn(2, 3, 32, 32)
    run = Settings("bf16", channels_last=True, fuse_bn=True).prepare(
        archlab.create_model("mobilenet_v2_100", num_classes=10).eval(), "infer", x)
    # 16 expansions, 17 projections and the 1x1 head convolution, batch norms folded in.
    assert pointwise(run) == 34
    with torch.no_grad(), speed.autocast("cpu", "bf16"):
        assert run(Settings(channels_last=True).layout(x)).dtype == torch.bfloat16
    vit = archlab.create_model("vit_small_patch16_224", num_classes=10, img_size=32)
    Settings("fp32", channels_last=True).prepare(vit, "train")
    assert pointwise(vit) == 1              # the patch embedding


@pytest.mark.parametrize("family", list_families())
def test_inference_weights_stored_in_bf16_give_autocasts_logits(family):
    # Autocast would cast the weights to bf16 at every call; cast once ahead, they must be
    # the same numbers, so the logits are identical (every family's first model, small).
    torch.manual_seed(0)
    model = randomize_norms(archlab.create_model(list_models(family=family)[0],
                                                 small_input=True, num_classes=10)).eval()
    x = torch.randn(2, getattr(model, "in_chans", 3), 32, 32)
    s = Settings("bf16", channels_last=True)
    run = s.prepare(model, "infer", x)
    weights = [m.weight.dtype for m in run.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert weights and set(weights) == {torch.bfloat16}
    autocast_only = s.prepare(model, "infer", x, store_weights=False)
    with torch.no_grad(), s.autocast("cpu"):
        torch.testing.assert_close(run(s.layout(x)), autocast_only(s.layout(x)),
                                   rtol=0, atol=0)


def test_inference_settings_leave_the_callers_model_alone():
    model = archlab.create_model("mobilenet_v2_100", num_classes=10).eval()
    s = Settings("bf16", channels_last=True, fuse_bn=True)
    run = s.prepare(model, "infer", torch.randn(2, 3, 32, 32))
    assert run is not model and _norms(model) == 52 and _norms(run) == 0
    assert not any(isinstance(m, cpu_layers.Float32DepthwiseConv2d) for m in model.modules())
    conv = next(m for m in run.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_interleaved_alternates_the_contestants():
    calls = []
    timings = interleaved([lambda: calls.append("A"), lambda: calls.append("B")],
                          torch.device("cpu"), warmup=1, rounds=3, steps_per_round=2)
    # Warm-up (and one pacing step) each, then rounds of two steps each, in turn.
    assert calls == ["A", "A", "B", "B"] + ["A", "A", "B", "B"] * 3
    assert all(len(t.step_s) == 3 for t in timings)


def test_ratio_and_its_interval_by_hand():
    fast = Timing(0.0, [1.0, 1.1, 0.9, 1.0])
    slow = Timing(0.0, [2.0, 2.2, 1.8, 2.1])
    ratio, low, high = ratio_interval(fast, slow)
    # Paired rounds: 2, 2, 2 and 2.1 times; their geometric mean, and a t interval on logs.
    logs = [math.log(2.0), math.log(2.0), math.log(2.0), math.log(2.1)]
    mean = sum(logs) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / 3)
    half = 3.182446 * sd / 2                    # t(0.975, 3 df) x sd / sqrt(4)
    assert ratio == pytest.approx(math.exp(mean))
    assert (low, high) == pytest.approx((math.exp(mean - half), math.exp(mean + half)))
    assert Timing(0.0, [1.0, 2.0, 3.0, 4.0, 5.0]).spread_s == pytest.approx(2.0)


def test_a_cpu_without_bf16_units_never_gets_bf16(monkeypatch):
    monkeypatch.setattr(speed, "cpu_flags", lambda: {"avx2", "fma"})
    cpu = torch.device("cpu")
    assert speed.precisions_for(cpu) == ["fp32"]
    model = archlab.create_model("resnet20", num_classes=10)
    choice = choose(model, 8, 16, cpu, "train", rounds=1)
    assert choice.settings.precision == "fp32"
    assert set(choice.step_s) == {"fp32", "channels_last"}   # the layout was timed
    monkeypatch.setattr(speed, "cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    assert speed.precisions_for(cpu) == ["fp32", "bf16"]


@pytest.mark.parametrize("compiled_ms, kept", [(60.0, False), (30.0, True)])
def test_compiling_must_beat_the_eager_step_timed_before_it(monkeypatch, compiled_ms, kept):
    """An eager step timed beside the compiled one can come out slow (a CPU's speed
    drifts): the decision takes the faster of the two eager timings."""
    calls = []

    def fake_interleaved(steps, device, **kw):
        calls.append(len(steps))
        if len(calls) == 1:                    # the eager candidates, before any compiling
            return [Timing(0.1, [0.040 + 0.1 * i] * 3) for i in range(len(steps))]
        return [Timing(0.1, [0.070] * 3), Timing(1.0, [compiled_ms / 1e3] * 3)]

    monkeypatch.setattr(speed, "can_compile", lambda device: True)
    monkeypatch.setattr(torch, "compile", lambda model: model)
    monkeypatch.setattr(speed, "interleaved", fake_interleaved)
    model = archlab.create_model("resnet20", num_classes=10)
    choice = choose(model, 8, 16, torch.device("cpu"), "train", "fp32", None, False, None,
                    run_steps=10**6, rounds=1)
    assert calls == [2, 2] and choice.settings.compile is kept
    assert choice.step_s["compiled" if kept else "fp32"] == min(choice.step_s.values())


@pytest.mark.parametrize("again_ms, chosen", [((50.0, 30.0), "channels_last"),
                                              ((30.0, 50.0), "fp32")])
def test_the_closest_candidates_are_timed_again(monkeypatch, again_ms, chosen):
    calls = []

    def fake_interleaved(steps, device, **kw):
        calls.append((len(steps), kw["rounds"]))
        if len(calls) == 1:                    # fp32 first by 5%: too close to call
            return [Timing(0.1, [0.040] * 3), Timing(0.1, [0.042] * 3)]
        return [Timing(0.1, [ms / 1e3] * 6) for ms in again_ms]

    monkeypatch.setattr(speed, "interleaved", fake_interleaved)
    model = archlab.create_model("resnet20", num_classes=10)
    choice = choose(model, 8, 16, torch.device("cpu"), "train", "fp32", None, rounds=3)
    assert calls == [(2, 3), (2, 6)] and choice.settings.label() == chosen
    assert choice.step_s == {"fp32": again_ms[0] / 1e3, "channels_last": again_ms[1] / 1e3}
    assert "timed again" in choice.reason


def test_every_candidate_within_reach_is_timed_again_not_only_two(monkeypatch):
    timed_again = []

    def fake_interleaved(steps, device, **kw):
        if not timed_again and kw["rounds"] == 3:
            # fp32 first, channels_last 5% and bf16 10% behind it: all within 15%;
            # bf16+channels_last 50% behind: out of reach.
            return [Timing(0.1, [ms / 1e3] * 3) for ms in (40.0, 42.0, 44.0, 60.0)]
        timed_again.append(len(steps))
        return [Timing(0.1, [ms / 1e3] * 6) for ms in (52.0, 53.0, 41.0)]

    monkeypatch.setattr(speed, "interleaved", fake_interleaved)
    monkeypatch.setattr(speed, "precisions_for", lambda device: ["fp32", "bf16"])
    model = archlab.create_model("resnet20", num_classes=10)
    choice = choose(model, 8, 16, torch.device("cpu"), "train", "auto", None, rounds=3)
    assert timed_again == [3]
    assert choice.settings.label() == "bf16"
    assert choice.step_s["bf16+channels_last"] == 0.060    # from the first timing


def test_a_clear_winner_is_not_timed_again(monkeypatch):
    calls = []

    def fake_interleaved(steps, device, **kw):
        calls.append(len(steps))
        return [Timing(0.1, [0.040] * 3), Timing(0.1, [0.060] * 3)]

    monkeypatch.setattr(speed, "interleaved", fake_interleaved)
    model = archlab.create_model("resnet20", num_classes=10)
    choice = choose(model, 8, 16, torch.device("cpu"), "train", "fp32", None, rounds=3)
    assert calls == [2] and choice.settings.label() == "fp32"


def test_compiling_is_tried_only_for_a_long_run(monkeypatch):
    compiled = []

    def fake_compile(model):                    # the real one costs a minute on 2 cores
        compiled.append(model)
        return model

    monkeypatch.setattr(speed, "can_compile", lambda device: True)
    monkeypatch.setattr(torch, "compile", fake_compile)
    model = archlab.create_model("resnet20", num_classes=10)
    cpu = torch.device("cpu")
    long_run = choose(model, 8, 16, cpu, "train", "fp32", False, False, None,
                      run_steps=10**9, rounds=1)
    assert compiled and "compiled" in long_run.step_s     # timed beside the eager best
    compiled.clear()
    # A run shorter than COMPILE_MIN_RUN_S (made huge here: a loaded machine's step time
    # would otherwise decide) is not compiled, nor is one too short to measure at all.
    monkeypatch.setattr(speed, "COMPILE_MIN_RUN_S", 1e12)
    choose(model, 8, 16, cpu, "train", "fp32", False, False, None, run_steps=500, rounds=1)
    short = choose(model, 8, 16, cpu, "train", "fp32", False, False, None, run_steps=10,
                   rounds=1)
    assert not compiled and "too short" in short.reason
    # A run of fixed time (a budget): its steps are those that fit in its seconds.
    monkeypatch.setattr(speed, "COMPILE_MIN_RUN_S", 60)
    choose(model, 8, 16, cpu, "train", "fp32", False, False, None, run_seconds=30, rounds=1)
    assert not compiled
    choose(model, 8, 16, cpu, "train", "fp32", False, False, None, run_seconds=1e9, rounds=1)
    assert compiled
    compiled.clear()
    # Asked for, compiling is kept whatever the run's length.
    assert choose(model, 8, 16, cpu, "train", "fp32", None, False, True, run_steps=10,
                  rounds=1).settings.compile
    assert choose(model, 8, 16, cpu, "infer", "fp32", False, False, True).settings.compile


def test_choosing_leaves_weights_and_random_state_alone():
    model = archlab.create_model("resnet20", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    choose(model, 8, 16, torch.device("cpu"), "train", precision="fp32", rounds=1)
    assert torch.equal(torch.get_rng_state(), state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_short_run_is_not_measured_and_the_choice_is_recorded(tmp_path):
    r = Recipe(epochs=1, batch_size=64, model_kwargs={"layers": [1, 1, 1]}, threads=1,
               progress=False)
    assert (r.precision, r.channels_last, r.compile) == ("auto", None, None)
    result = fit("resnet20", "digits", r, run_dir=tmp_path / "run", verbose=False)
    speed_info = result.info["speed"]
    assert speed_info["precision"] == "fp32" and "too short" in speed_info["reason"]
    assert "speed: fp32" in (tmp_path / "run" / "run.log").read_text()
    state = json.loads((tmp_path / "run" / "checkpoint.json").read_text())
    assert state["speed"]["precision"] == "fp32"


def test_recipes_written_with_amp_still_load():
    assert Recipe.from_dict({"amp": True}).precision == "bf16"
    assert Recipe.from_dict({"amp": False}).precision == "fp32"
    assert Recipe.from_dict({"amp": None}).precision == "auto"
    assert Recipe.from_dict({"channels_last": "auto"}).channels_last is None
    with pytest.raises(ValueError, match="precision must be one of"):
        Recipe(precision="int8")


def test_bench_rows_against_a_peer_have_timms_columns(tmp_path):
    rows = bench_model("resnet18", vs="torchvision", peer_settings="default", modes=("infer",),
                       batch=2, img_size=32, precision="fp32", channels_last=True,
                       rounds=2, round_s=0.01, log=lambda _: None)
    ours, peer = rows
    assert (ours["library"], peer["library"], peer["model"]) == ("archlab", "torchvision",
                                                                 "resnet18")
    assert ours["settings"] == "channels_last+fused_bn" and peer["settings"] == "fp32"
    for column in ("infer_samples_per_sec", "infer_step_time", "infer_batch_size",
                   "infer_img_size", "infer_gmacs", "param_count", "device_name", "torch"):
        assert column in ours and column in peer
    assert ours["param_count"] == pytest.approx(11.69, abs=0.01)   # 1000 classes
    low, ratio, high = (peer["archlab_speedup_low"], peer["archlab_speedup"],
                        peer["archlab_speedup_high"])
    assert low <= high and ratio > 0
    path = append_results(rows, tmp_path / "bench.csv")
    append_results(rows[:1], path)
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["library"] for r in table] == ["archlab", "torchvision", "archlab"]
    assert "archlab_speedup" in table[0]
    jsonl = append_results(rows, tmp_path / "bench.jsonl")
    assert [json.loads(line)["library"] for line in jsonl.read_text().splitlines()] == [
        "archlab", "torchvision"]


def test_training_rows_name_the_optimizer_each_side_steps_with():
    # archlab's trainer steps SGD with torch's fused kernel; a peer's user gets torch's
    # default, and a peer in archlab's settings gets archlab's optimizer too.
    rows = bench_model("resnet18", vs="torchvision", peer_settings="both", modes=("train",),
                       batch=2, img_size=32, precision="fp32", channels_last=True,
                       rounds=1, round_s=0.01, log=lambda _: None)
    ours, default, same = rows
    assert (ours["optimizer"], default["optimizer"], same["optimizer"]) == (
        "sgd fused", "sgd", "sgd fused")
    assert (default["settings"], same["settings"]) == ("fp32", "channels_last")
    assert "+fused_sgd" in describe_row(ours) and "+fused_sgd" not in describe_row(default)


def test_bench_command_prints_the_ratio(tmp_path, capsys):
    out = tmp_path / "rows.csv"
    assert main(["bench", "resnet1[8]", "--vs", "torchvision", "--mode", "train",
                 "--img-size", "32", "--batch", "2", "--precision", "fp32",
                 "--no-channels-last", "--rounds", "2", "--round-seconds", "0.01",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "peak fp32" in text and "archlab" in text and "x [" in text
    assert "train_samples_per_sec" in out.read_text().splitlines()[0]


def test_bench_refuses_a_peer_the_model_does_not_have(capsys):
    assert main(["bench", "resnet20", "--vs", "timm"]) == 2
    assert "resnet20 has no timm counterpart" in capsys.readouterr().err
