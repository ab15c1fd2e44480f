"""conv-mechanics: the matrix of a convolution at another size, the shift in a fixed frame,
a verdict that follows the numbers both ways, and the experiment end to end at a tiny scale."""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

from archlab.experiments import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, run_experiment
from archlab.experiments import conv_mechanics as cm


def test_the_identities_hold_with_stride_2_and_two_channels_in():
    m, diff = cm.identities(c_in=2, c_out=3, size=7, stride=2, padding=1, seed=3)
    assert m.shape == (3 * 4 * 4, 2 * 7 * 7)
    assert set(diff) == {"conv2d = M x", "input gradient = M^T g", "conv_transpose2d = M^T y"}
    assert max(diff.values()) < 1e-12
    # Each row holds at most one kernel's weights: 3x3 per input channel.
    assert int((m != 0).sum(dim=1).max()) <= 2 * 9


def test_the_matrix_by_hand():
    # A 1x1 kernel of weight 2 with stride 1 and no padding: M = 2 I.
    w = torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64)
    identity = torch.eye(9, dtype=torch.float64)
    assert torch.equal(cm.toeplitz(w, 3, stride=1, padding=0), 2 * identity)
    # A wrong matrix is caught: the check compares against PyTorch, not against itself.
    w = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    m = cm.toeplitz(w.flip(-1), 5)
    assert (m @ x.flatten() - F.conv2d(x, w, padding=1).flatten()).abs().max() > 1e-3


def test_a_shift_moves_the_content_in_a_fixed_frame():
    images = torch.zeros(1, 1, 6, 6)
    images[0, 0, 2, 1] = 1.0
    assert torch.equal(cm.shifted(images, 0), images)
    moved = cm.shifted(images, 2)
    assert moved.shape == images.shape and moved[0, 0, 2, 3] == 1.0 and moved.sum() == 1.0


def _numbers(unpooled, pooled, worst=1e-15):
    rng = np.random.default_rng(0)
    return {"max_diff": {"conv2d = M x": 1e-16, "input gradient = M^T g": worst},
            "shifts": [1, 2],
            "change": {"1": [list(unpooled + 0.01 * rng.standard_normal(40))] * 2,
                       "2": [list(pooled + 0.01 * rng.standard_normal(40))] * 2}}


def test_conv_mechanics_verdict_follows_the_numbers():
    assert cm.decide(_numbers(0.6, 0.4))[0] == HOLDS
    # An identity off by more than rounding: the claim fails, whatever pooling does.
    verdict, because = cm.decide(_numbers(0.6, 0.4, worst=1e-6))
    assert verdict == DOES_NOT_HOLD and "input gradient" in because
    # Pooled features that change more than the unpooled ones.
    assert cm.decide(_numbers(0.4, 0.6))[0] == DOES_NOT_HOLD
    # The same change with and without pooling: the numbers cannot say.
    verdict, because = cm.decide(_numbers(0.5, 0.5))
    assert verdict == INCONCLUSIVE and "2x2" in because


def test_conv_mechanics_runs_and_writes_its_page(tmp_path, monkeypatch):
    monkeypatch.setitem(cm.IMAGES, "quick", 30)
    outcome = run_experiment("conv-mechanics", Context(out_dir=tmp_path, verbose=False))
    record = json.loads((tmp_path / "conv-mechanics" / "verdict.json").read_text())
    assert record["numbers"]["images"] == 30
    assert [len(v) for v in record["numbers"]["change"]["1"]] == [30] * len(cm.SHIFTS)
    assert max(record["numbers"]["max_diff"].values()) < cm.TOLERANCE
    # The verdict on the page is the one the rule gives for the recorded numbers.
    assert cm.decide(record["numbers"]) == (record["verdict"], record["because"])
    assert outcome.verdict == record["verdict"]
    html = (tmp_path / "conv-mechanics" / "index.html").read_text()
    assert html.count("<svg") >= 2 and record["verdict"] in html


def test_without_fashion_mnist_the_digits_stand_in_and_the_page_says_so(monkeypatch):
    real = cm.load_dataset

    def no_fashion(spec, *args, **kwargs):
        if spec == "fashion-mnist":
            raise cm.DataError("no fashion-mnist under the root")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(cm, "load_dataset", no_fashion)
    images, name, notes = cm._images(Context(verbose=False), 5)
    assert name == "digits" and images.shape == (5, 1, 28, 28) and "digits" in notes[0]
