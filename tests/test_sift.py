"""SIFT's own detector in the classical baseline (`detector: dog`), its keypoints drawn by
`archlab explain sift-bovw`, and what `archlab info` and `archlab train` say of the
baseline. Checked against OpenCV's SIFT called directly, the geometry of a 90-degree
rotation, hand-computed histograms and the arrays of a fitted model."""
from __future__ import annotations

import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2", reason="the sift-bovw baseline needs opencv-python-headless")
skimage_data = pytest.importorskip("skimage.data")

from archlab.classical import (  # noqa: E402
    DOG_MIN_SIDE, BoVWConfig, SiftBoVW, create_classical, detect_dog,
)
from archlab.cli import main  # noqa: E402
from archlab.data import load_dataset  # noqa: E402

SIDE = 256
FAST = dict(kmeans_sample=2000)     # k-means on fewer descriptors: the test's seconds


@pytest.fixture(scope="module")
def camera():
    return cv2.resize(skimage_data.camera(), (SIDE, SIDE), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def digits():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    return train.subset(range(400)), test.subset(range(200))


def test_dog_keypoints_and_descriptors_are_opencv_sift_s(camera):
    desc = SiftBoVW(detector="dog", upscale=SIDE).describe(camera[None])
    kps, raw = cv2.SIFT_create().detectAndCompute(camera, None)
    assert len(kps) > 100 and desc.counts().tolist() == [len(kps)] and desc.side == SIDE
    np.testing.assert_allclose(desc.xy, [k.pt for k in kps], atol=1e-4)
    # RootSIFT by hand: the square root of the L1-normalised descriptor.
    np.testing.assert_allclose(desc.values, np.sqrt(raw / raw.sum(1, keepdims=True)), atol=1e-6)


def test_a_quarter_turn_turns_the_orientations(camera):
    k0, _, _ = detect_dog(camera)
    k1, _, _ = detect_dog(np.ascontiguousarray(np.rot90(camera)))   # counter-clockwise
    a0, a1 = (np.array([k.angle for k in ks]) for ks in (k0, k1))
    h0, h1 = (np.histogram(a, 36, (0, 360))[0] / len(a) for a in (a0, a1))
    # OpenCV's angle runs clockwise on the screen: a counter-clockwise quarter turn takes
    # 90 degrees off every orientation, a shift of the 10-degree histogram by -9 bins.
    shift = int(np.argmax([h0 @ np.roll(h1, -s) for s in range(36)]))
    assert shift == 36 - 9, shift
    assert np.abs(np.roll(h0, -9) - h1).sum() < 0.3
    # Keypoint by keypoint: (x, y) goes to (y, side - 1 - x), its angle to angle - 90.
    p0, p1 = (np.array([k.pt for k in ks]) for ks in (k0, k1))
    moved = np.stack([p0[:, 1], SIDE - 1 - p0[:, 0]], 1)
    dist = np.linalg.norm(moved[:, None] - p1[None], axis=-1)
    near, found = dist.argmin(1), dist.min(1) < 1.0
    assert found.mean() > 0.8
    turn = (a1[near[found]] - (a0[found] - 90) + 180) % 360 - 180
    assert (np.abs(turn) < 10).mean() > 0.7


def test_small_images_are_enlarged_for_the_detector(digits):
    _, test = digits
    kps, desc, seen = detect_dog(test.images[0, 0].numpy())   # 8x8 digits
    assert seen.shape == (DOG_MIN_SIDE, DOG_MIN_SIDE) and len(kps) == len(desc) > 0


@pytest.mark.parametrize("detector", ["dense", "dog"])
def test_histograms_have_one_bin_per_word(digits, detector):
    train, test = digits
    clf = create_classical("sift-bovw", detector=detector, upscale=32, step=4,
                           encoding="histogram", vocab_size=12, pyramid=(1,), **FAST)
    clf.fit(train.images[:150], train.targets[:150])
    desc = clf.describe(test.images[:6])
    code = clf.encode(desc)
    assert code.shape == (6, 12)
    # By hand: each descriptor's nearest word, counted, square-rooted, unit length.
    for i in range(6):
        rows = desc.values[desc.offsets[i]:desc.offsets[i + 1]]
        words = ((rows[:, None] - clf.vocabulary[None]) ** 2).sum(-1).argmin(1)
        hist = np.sqrt(np.bincount(words, minlength=12).astype(np.float64))
        np.testing.assert_allclose(code[i], hist / np.linalg.norm(hist), atol=1e-5)


def test_an_image_without_keypoints_gets_a_zero_code(digits):
    train, _ = digits
    clf = create_classical("sift-bovw", detector="dog", upscale=32, encoding="histogram",
                           vocab_size=8, pyramid=(1, 2), **FAST).fit(train.images[:100],
                                                             train.targets[:100])
    blank = np.full((2, 1, 8, 8), 128, np.uint8)
    assert clf.describe(blank).counts().tolist() == [0, 0]
    code = clf.encode(clf.describe(np.concatenate([blank, train.images[:1].numpy()])))
    assert code.shape == (3, 5 * 8) and np.isfinite(code).all()
    assert not code[:2].any() and np.linalg.norm(code[2]) == pytest.approx(1.0, abs=1e-5)
    # Scored by the SVM's intercepts alone: a valid class, never a crash.
    np.testing.assert_allclose(clf.decision_function(blank), clf.intercept[None].repeat(2, 0))
    assert 0 <= clf.predict(blank)[0] < 10


def test_dog_baseline_learns_digits_and_keeps_its_setting(digits, tmp_path):
    train, test = digits
    clf = create_classical("sift-bovw", detector="dog", upscale=32, **FAST)
    clf.fit(train.images, train.targets)
    acc = float((clf.predict(test.images) == test.targets.numpy()).mean())
    assert acc > 0.6, acc                  # chance is 0.1; about 0.9 measured
    again = SiftBoVW.load(clf.save(tmp_path / "dog.safetensors"))
    assert again.config.detector == "dog"
    np.testing.assert_array_equal(again.predict(test.images[:20]), clf.predict(test.images[:20]))


def test_an_unknown_detector_is_named_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown detector 'harris'; choose dense or dog"):
        create_classical("sift-bovw", detector="harris")
    assert BoVWConfig().detector == "dense"
    from archlab.study.protocol import ProtocolError, load_protocol

    text = ("name: t\ndata: {dataset: digits}\nmodels:\n"
            "  - {name: sift-bovw, model_kwargs: {detector: dog}}\n"
            "  - {name: sift-bovw, label: b, model_kwargs: {detector: harris}}\n")
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ProtocolError, match="line 5: .*unknown detector 'harris'"):
        load_protocol(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text(text.rsplit("  - {name: sift-bovw, label", 1)[0])
    assert load_protocol(tmp_path / "p.yaml").models[0].model_kwargs == {"detector": "dog"}


def test_explain_draws_the_keypoints_and_counts_them(tmp_path, capsys, camera):
    out = tmp_path / "kp"
    assert main(["explain", "sift-bovw", "skimage:camera", "--img-size", str(SIDE),
                 "--out", str(out)]) == 0
    expected = len(cv2.SIFT_create().detect(
        cv2.resize(skimage_data.camera(), (SIDE, SIDE), interpolation=cv2.INTER_LINEAR), None))
    printed = capsys.readouterr().out
    assert f"skimage:camera: {expected} keypoints" in printed
    png = out / "keypoints-skimage-camera.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "index.html").read_text()
    assert f"<td>{expected}</td>" in html and f"{expected} difference-of-Gaussians" in html
    from archlab.explain import list_pictures

    assert [p.file for p in list_pictures(out)] == [png.name]
    assert json.loads((out / "explain.json").read_text())["counts"] == {
        "skimage:camera": expected}
    assert main(["explain", "sift-bovw", "skimage:camera", "--method", "gradcam"]) == 2
    assert "not a network: gradcam does not apply" in capsys.readouterr().err
    assert main(["explain", "sift-bovw", "--out", str(out)]) == 2
    assert "give images" in capsys.readouterr().err


def test_info_describes_the_baseline(capsys):
    assert main(["info", "sift-bovw"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("not a network", "Lowe 2004", "Csurka et al. 2004", "linear SVM",
                  "none in the deep sense", "detector dense", "archlab compare"):
        assert words in text, words
    assert main(["info", "sift-bovw", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"name": "detector", "default": "dense"}.items() <= info["options"][1].items()
    # The count it gives is what a fit with the defaults stores, for 10 classes.
    train = load_dataset("digits", "train").subset(range(300))
    fitted = SiftBoVW(**FAST).fit(train.images, train.targets)    # the default sizes
    learned = info["learned_numbers"]
    assert sum(v for k, v in learned.items() if k != "classes") == fitted.num_params
    assert f"{fitted.num_params:,}" in text


def test_train_points_to_compare(capsys):
    assert main(["train", "--model", "sift-bovw", "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "archlab compare" in err and "not a network" in err
