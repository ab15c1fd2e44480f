"""The classical baseline: dense SIFT, a bag of visual words (VLAD or histograms) and a
linear SVM, on scikit-learn's 8x8 digits (upscaled), named in a protocol like a network."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the sift-bovw baseline needs opencv-python-headless")

from archlab.classical import (  # noqa: E402
    BoVWConfig, SiftBoVW, classical_card, create_classical, is_classical, list_classical,
)
from archlab.data import load_dataset  # noqa: E402

DIGITS = dict(upscale=32, step=4, patch=8)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def fitted(digits):
    train, _ = digits
    return create_classical("sift-bovw", **DIGITS).fit(train.images, train.targets,
                                                      classes=train.classes)


def test_sift_bovw_classifies_digits(fitted, digits):
    _, test = digits
    acc = float((fitted.predict(test.images) == test.targets.numpy()).mean())
    # 1,438 training digits; published dense-SIFT BoVW pipelines reach the high 90s here.
    assert acc >= 0.95, acc
    assert fitted.classes == [str(i) for i in range(10)]


def test_histogram_encoding_also_learns(digits):
    train, test = digits
    clf = create_classical("sift-bovw", **DIGITS, encoding="histogram", vocab_size=64)
    clf.fit(train.images, train.targets)
    acc = float((clf.predict(test.images) == test.targets.numpy()).mean())
    assert acc >= 0.85, acc
    assert clf.pca_components is None  # histograms quantise the raw descriptors


def test_dense_descriptors_are_rootsift_on_a_grid(digits):
    train, _ = digits
    clf = SiftBoVW(BoVWConfig(**DIGITS))
    desc = clf.describe(train.images[:5])
    centres = np.arange(4, 32 - 4 + 1e-6, 4)            # keypoint centres patch/2 .. up-patch/2
    side = len(centres)
    assert desc.values.shape == (5 * side * side, 128)
    assert desc.counts().tolist() == [side * side] * 5
    np.testing.assert_array_equal(desc.xy[:side, 0], centres)       # x runs fastest
    np.testing.assert_array_equal(desc.xy[side * side - 1], [centres[-1], centres[-1]])
    # RootSIFT: the square root of an L1-normalised histogram has unit L2 norm.
    np.testing.assert_allclose(np.linalg.norm(desc.values, axis=-1), 1.0, atol=1e-4)
    assert (desc.values >= 0).all()


def test_codes_have_the_pyramid_layout_and_unit_norm(fitted, digits):
    _, test = digits
    desc = fitted.describe(test.images[:7])
    code = fitted.encode(desc)
    cells = 1 + 4                                        # pyramid (1, 2)
    assert code.shape == (7, cells * fitted.config.vocab_size * fitted.config.pca_dims)
    np.testing.assert_allclose(np.linalg.norm(code, axis=1), 1.0, atol=1e-5)
    # Each word's block is normalised on its own (intra-normalisation) before the whole.
    blocks = code.reshape(7, cells * fitted.config.vocab_size, -1)
    for norms in np.linalg.norm(blocks, axis=-1):       # image by image
        nonzero = norms[norms > 1e-6]
        np.testing.assert_allclose(nonzero, nonzero.max(), rtol=1e-4)


def test_save_and_load_give_the_same_predictions(fitted, digits, tmp_path):
    _, test = digits
    path = fitted.save(tmp_path / "bovw.safetensors")
    again = SiftBoVW.load(path)
    np.testing.assert_array_equal(again.predict(test.images), fitted.predict(test.images))
    assert again.config == fitted.config and again.num_params == fitted.num_params
    with pytest.raises(ValueError, match="not a sift-bovw model"):
        from safetensors.numpy import save_file

        save_file({"x": np.zeros(2, np.float32)}, str(tmp_path / "other.safetensors"))
        SiftBoVW.load(tmp_path / "other.safetensors")


def test_registered_like_an_architecture():
    assert "sift-bovw" in list_classical() and is_classical("sift-bovw")
    card = classical_card("sift-bovw")
    assert card.family == "classical" and card.year == 2004 and "SIFT" in card.paper
    with pytest.raises(ValueError, match="unknown option.*vocab_sise"):
        create_classical("sift-bovw", vocab_sise=8)
    with pytest.raises(ValueError, match="encoding"):
        create_classical("sift-bovw", encoding="fisher")
    with pytest.raises(KeyError, match="no classical baseline"):
        create_classical("hog-svm")


def test_bad_images_are_named():
    clf = create_classical("sift-bovw", **DIGITS)
    with pytest.raises(TypeError, match="uint8"):
        clf.describe(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(RuntimeError, match="fit"):
        clf.predict(np.zeros((2, 1, 8, 8), np.uint8))
