"""Test-time augmentation: the views are what they claim (mirror, corner crops placed where
torchvision's five_crop / ten_crop place them, shifts), the number of views, the blend, and
TTA through `evaluate` and `archlab eval`."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from archlab.cli import main
from archlab.train import Recipe, evaluate, fit
from archlab.train.tta import (TTASpec, enlarged_side, parse_tta, tta_predict, tta_views)

TINY = {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8}


def coordinate_image(side: int) -> torch.Tensor:
    """One image of 2 channels: channel 0 holds each pixel's row, channel 1 its column."""
    rows = torch.arange(side, dtype=torch.float32)[:, None].expand(side, side)
    cols = torch.arange(side, dtype=torch.float32)[None, :].expand(side, side)
    return torch.stack([rows, cols])[None]


def corner(view: torch.Tensor, which: str) -> tuple[int, int]:
    """(row, column) the given corner pixel of a view came from."""
    i, j = {"tl": (0, 0), "tr": (0, -1), "bl": (-1, 0), "br": (-1, -1)}[which]
    return int(view[0, 0, i, j]), int(view[0, 1, i, j])


def test_flip_is_the_plain_image_and_its_mirror():
    x = torch.randn(3, 2, 7, 7)
    views = tta_views(x, "flip")
    assert len(views) == 2 and torch.equal(views[0], x)
    for j in range(7):
        assert torch.equal(views[1][..., j], x[..., 6 - j])
    assert len(tta_views(x, "flip", hflip=False)) == 1   # data whose mirror is another class


def test_five_crops_sit_at_the_corners_and_centre():
    x = coordinate_image(10)                   # crops of 6 px from a 10 px image
    tl, tr, bl, br, centre = tta_views(x, "five_crop", size=6)
    assert corner(tl, "tl") == (0, 0) and corner(tl, "br") == (5, 5)
    assert corner(tr, "tl") == (0, 4) and corner(tr, "br") == (5, 9)
    assert corner(bl, "tl") == (4, 0) and corner(bl, "br") == (9, 5)
    assert corner(br, "tl") == (4, 4) and corner(br, "br") == (9, 9)
    assert corner(centre, "tl") == (2, 2) and corner(centre, "br") == (7, 7)


def test_ten_crops_are_torchvisions_with_each_crop_mirrored():
    from torchvision.transforms.v2 import functional as TF

    x = torch.randn(2, 3, 12, 12)    # an even margin: the centre crop has a centred mirror
    views = tta_views(x, "ten_crop", size=8)
    assert len(views) == 10
    five, mirrors = views[:5], views[5:]
    for mine, theirs in zip(five, TF.five_crop(x, [8, 8])):
        assert torch.equal(mine, theirs)
    for crop, mirror in zip(five, mirrors):                 # AlexNet: each patch reflected
        assert torch.equal(mirror, crop.flip(-1))
    # torchvision's ten_crop cuts the five crops of the mirrored image: the same ten views
    # (its top-left crop of the mirror is the mirror of our top-right crop, and so on).
    theirs = TF.ten_crop(x, [8, 8])[5:]
    for k, t in zip((1, 0, 3, 2, 4), theirs):
        assert torch.equal(mirrors[k], t)


def test_crops_of_a_training_size_batch_come_from_an_enlarged_image():
    x = torch.randn(2, 1, 28, 28)
    assert enlarged_side(28) == 32 and enlarged_side(224) == 256
    resized = tta_views(x, "five_crop")
    assert all(v.shape == x.shape for v in resized)
    assert not any(torch.allclose(v, x) for v in resized)   # upscaled: never the identity
    padded = tta_views(x, "five_crop", crop_from="pad")
    # Padded by 2 px on each side: the corner crops are the image moved by 2 px, and the
    # centre crop is the image itself.
    assert torch.equal(padded[4], x)
    assert torch.equal(padded[0][..., 2:, 2:], x[..., :-2, :-2])
    assert torch.equal(padded[3][..., :-2, :-2], x[..., 2:, 2:])


def test_shift_moves_by_a_sixteenth_repeating_the_border():
    x = coordinate_image(32)
    views = tta_views(x, "shift")
    assert len(views) == 5 and torch.equal(views[0], x)
    down_right = views[1]                       # moved by (2, 2): pixel (i, j) shows (i-2, j-2)
    assert corner(down_right, "br") == (29, 29)
    assert int(down_right[0, 0, 0, 0]) == 0 and int(down_right[0, 0, 5, 0]) == 3


@pytest.mark.parametrize("spec, hflip, count", [
    ("flip", True, 2), ("flip", False, 1), ("shift", True, 5), ("five_crop", True, 5),
    ("ten_crop", True, 10), ("ten_crop", False, 5), ("aug:8", True, 9),
    ("flip+shift", True, 6), (["flip", "shift"], True, 6), ("none", True, 1),
    ("flip+ten_crop", True, 12),
])
def test_the_number_of_views(spec, hflip, count):
    x = torch.randn(2, 1, 16, 16)
    assert parse_tta(spec).count(hflip) == count == len(tta_views(x, spec, hflip))


def test_bad_specs_are_named():
    with pytest.raises(ValueError, match="'tencrop'.*ten_crop"):
        parse_tta("tencrop")
    with pytest.raises(ValueError, match="aug:N"):
        parse_tta("aug:x")
    assert str(parse_tta("shift,flip")) == "flip+shift"
    assert parse_tta("ten_crop") == TTASpec(crops=10)


def test_aug_passes_repeat_with_the_seed():
    x = torch.randn(4, 3, 16, 16)
    a = tta_views(x, "aug:3", generator=torch.Generator().manual_seed(5))
    b = tta_views(x, "aug:3", generator=torch.Generator().manual_seed(5))
    c = tta_views(x, "aug:3", generator=torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a[1:], c[1:]))


class FlipInvariant(nn.Module):
    """A random convolutional net made mirror-symmetric: f(x) = g(x) + g(mirror of x)."""

    def __init__(self) -> None:
        super().__init__()
        self.g = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))

    def forward(self, x):
        return self.g(x) + self.g(x.flip(-1))


def test_flip_tta_of_a_flip_invariant_model_is_the_plain_prediction():
    torch.manual_seed(0)
    model = FlipInvariant()
    x = torch.randn(6, 1, 12, 12)
    model(x)
    plain = model(x).softmax(1)
    torch.testing.assert_close(tta_predict(model, x, "flip"), plain)
    # while a model that is not symmetric does change
    other = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(400, 5))
    assert not torch.allclose(tta_predict(other, x, "flip"), other(x).softmax(1))


def test_the_mean_and_fastais_blend():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    x = torch.randn(3, 1, 8, 8)
    probs = [model(v).softmax(1) for v in tta_views(x, "shift")]
    torch.testing.assert_close(tta_predict(model, x, "shift"), sum(probs) / 5)
    blended = 0.25 * probs[0] + 0.75 * sum(probs[1:]) / 4
    torch.testing.assert_close(tta_predict(model, x, "shift", beta=0.25), blended)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tta") / "run"
    recipe = Recipe(epochs=1, batch_size=64, lr=0.2, model_kwargs=TINY, threads=1,
                    progress=False, image_size=16)
    fit("resnet20", "digits", recipe, run_dir=run_dir, verbose=False)
    return run_dir


def test_evaluate_reports_the_views(digits_run):
    plain = evaluate(digits_run, "digits", split="all", device="cpu")
    assert plain.tta is None and plain.views == 1
    crops = evaluate(digits_run, "digits", split="all", device="cpu", tta="ten_crop")
    # Digits forbid mirrors (a mirrored 2 is no digit): ten_crop keeps the five crops.
    assert crops.tta == "ten_crop" and crops.views == 5
    assert crops.metrics.n == plain.metrics.n
    assert crops.metrics.top1 != plain.metrics.top1 or crops.metrics.loss != plain.metrics.loss
    # 'none' runs the TTA loop on the plain view: the same predictions as without TTA
    none = evaluate(digits_run, "digits", split="all", device="cpu", tta="none")
    assert none.metrics.confusion == plain.metrics.confusion


def test_cli_eval_tta(digits_run, capsys):
    assert main(["eval", str(digits_run), "--data", "digits", "--split", "all",
                 "--tta", "five_crop", "--device", "cpu", "--no-confusion"]) == 0
    out = capsys.readouterr().out
    assert "TTA five_crop: mean of 5 views per image" in out
    assert main(["eval", str(digits_run), "--data", "digits", "--split", "all",
                 "--tta", "shift", "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["tta"] == "shift" and record["views"] == 5
    assert main(["eval", str(digits_run), "--data", "digits", "--tta", "tencrop"]) == 2
    assert "ten_crop" in capsys.readouterr().err


class Spy(nn.Module):
    """Records every batch it sees; answers with the mean of each channel."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.cat([x.mean((2, 3)), -x.mean((2, 3))], 1) * self.scale


def test_crops_of_image_files_come_from_the_image_the_plain_view_is_cut_from(tmp_path):
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(3):
            pixels = torch.randint(0, 256, (40, 40), dtype=torch.uint8).numpy()
            Image.fromarray(pixels, "L").save(tmp_path / label / f"{i}.png")
    pre = {"image_size": 16, "mean": [0.5], "std": [0.25], "crop_pct": 0.875, "in_chans": 1,
           "classes": ["a", "b"]}
    plain_spy, tta_spy = Spy(), Spy()
    evaluate(plain_spy, str(tmp_path), device="cpu", preprocess=pre, workers=0)
    result = evaluate(tta_spy, str(tmp_path), device="cpu", preprocess=pre, workers=0,
                      tta="flip+five_crop")
    assert result.views == 7 and len(tta_spy.seen) == 7
    # The loader read the images at 18 px (16 / 0.875); the plain view cut back out of them
    # is the usual evaluation view, and the corner crops are 16 px windows of the 18 px image.
    torch.testing.assert_close(tta_spy.seen[0], plain_spy.seen[0])
    torch.testing.assert_close(tta_spy.seen[1], plain_spy.seen[0].flip(-1))
    assert all(v.shape[-2:] == (16, 16) for v in tta_spy.seen)
    top_left, bottom_right = tta_spy.seen[2], tta_spy.seen[5]
    torch.testing.assert_close(top_left[..., 1:, 1:], tta_spy.seen[0][..., :-1, :-1])
    torch.testing.assert_close(bottom_right[..., :-1, :-1], tta_spy.seen[0][..., 1:, 1:])


def test_crops_at_the_training_scale_are_named_in_the_spec():
    # 'ten_crop:pad' cuts AlexNet's crops from the batch padded by reflection (the scale the
    # network trained at), exactly as crop_from='pad' does; plain 'ten_crop' upscales.
    from archlab.train.tta import parse_tta, tta_views

    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    padded = tta_views(x, "ten_crop:pad")
    assert len(padded) == 10
    for a, b in zip(padded, tta_views(x, "ten_crop", crop_from="pad")):
        assert torch.equal(a, b)
    # The centre crop of the padded image is the image itself: no zoom.
    assert torch.equal(padded[4], x)
    assert not torch.equal(tta_views(x, "ten_crop")[4], x)
    spec = parse_tta("flip+ten_crop:pad")
    assert spec.crop_from == "pad" and parse_tta(str(spec)) == spec
    assert str(parse_tta("five_crop")) == "five_crop"
    with pytest.raises(ValueError, match="ten_crop:resize or ten_crop:pad"):
        parse_tta("ten_crop:zoom")
