"""Data: the sources, the split, decoding of awkward files, augmentation, loaders.

Every file a test reads is written by the test, except Fashion-MNIST, read from the Debian
package `dataset-fashion-mnist` when it is installed (skipped otherwise).
"""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archlab.data import (Augment, BatchPipeline, DataError, FileLoader, ImageData,
                          ImageFileError, MemoryLoader, channel_stats, dataset_splits,
                          eval_transform, file_transform, load_dataset, mix_batch, open_image,
                          pca_lighting, rand_augment, random_erasing, random_hflip,
                          random_translate, read_idx, stratified_split, train_val_split)
from archlab.data import named as named_sources

FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    # Statistics and downloads go to a temporary cache; nothing is fetched from the network.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHLAB_OFFLINE", "1")
    monkeypatch.delenv("ARCHLAB_DATA", raising=False)


def _png(path: Path, value: int = 128, size=(12, 10), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = value if mode == "L" else (value, 255 - value, value // 2)
    Image.new(mode, size, fill).save(path)
    return path


# --------------------------------------------------------------------------------------
# Named datasets
# --------------------------------------------------------------------------------------


def test_digits_train_and_test_are_a_stratified_partition():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(train) + len(test) == 1797
    assert train.images.dtype == torch.uint8 and train.images.shape[1:] == (1, 8, 8)
    assert int(train.images.max()) == 255  # 16 grey levels mapped onto 0..255
    assert train.classes == [str(i) for i in range(10)] and not train.hflip
    # Each class keeps its share: ~20% of it in the test split.
    full = load_dataset("digits", "all")
    for c, (n_all, n_test) in enumerate(zip(full.class_counts(), test.class_counts())):
        assert n_test == round(0.2 * n_all), c


def test_digits_upsampled_on_request():
    d = load_dataset("digits", "test", image_size=32)
    assert d.images.shape[1:] == (1, 32, 32) and d.image_size == 32


@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian package dataset-fashion-mnist "
                                                 "is not installed")
def test_fashion_mnist_from_the_debian_package():
    d = load_dataset("fashion-mnist", "test")
    assert d.images.shape == (10_000, 1, 28, 28) and d.images.dtype == torch.uint8
    assert d.class_counts() == [1000] * 10
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    # The idx file's first test image is an ankle boot (label 9), as in the paper's repo.
    assert int(d.targets[0]) == 9
    # The training set held in memory: 60,000 x 784 bytes, far below 1 GB.
    assert 60_000 * 28 * 28 < 2**30


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(named_sources, "_search_roots", lambda root: [tmp_path])
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_torchvision_datasets_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(named_sources, "_search_roots", lambda root: [tmp_path])
    with pytest.raises(DataError, match="ARCHLAB_DATA"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="CIFAR10.*download=True"):
        load_dataset("cifar10", "test")


def test_idx_reader_and_truncated_file(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = b"\x00\x00\x08\x03" + np.array([2, 3, 4], ">u4").tobytes() + images.tobytes()
    good = tmp_path / "a-idx3-ubyte.gz"
    good.write_bytes(gzip.compress(raw))
    assert np.array_equal(read_idx(good), images)
    cut = tmp_path / "b-idx3-ubyte"
    cut.write_bytes(raw[:-5])
    with pytest.raises(DataError, match="truncated"):
        read_idx(cut)
    (tmp_path / "c-idx3-ubyte").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "c-idx3-ubyte")


def test_unknown_spec_is_named():
    with pytest.raises(DataError, match="not a known name"):
        load_dataset("imagenet-9000")


# --------------------------------------------------------------------------------------
# The split
# --------------------------------------------------------------------------------------


def test_split_is_stratified_stable_and_nested():
    targets = torch.arange(1000) % 7            # 7 classes of 142-143 items
    val, train = stratified_split(targets, 0.1, seed=3)
    assert len(set(val.tolist()) & set(train.tolist())) == 0
    assert len(val) + len(train) == 1000
    counts = torch.bincount(targets[val], minlength=7)
    assert all(abs(int(c) - 0.1 * int(n)) <= 0.5
               for c, n in zip(counts, torch.bincount(targets)))
    # The same seed gives the same split; another seed another one.
    assert torch.equal(val, stratified_split(targets, 0.1, seed=3)[0])
    assert not torch.equal(val, stratified_split(targets, 0.1, seed=4)[0])
    # Held-out sets of growing fractions are nested.
    small = set(stratified_split(targets, 0.05, seed=3)[0].tolist())
    assert small <= set(val.tolist())


def test_training_subsets_of_growing_fractions_are_nested_and_share_the_validation():
    targets = torch.arange(3000) % 10
    fractions = (0.05, 0.1, 0.25, 0.5, 1.0)
    splits = [train_val_split(targets, 0.1, seed=2, train_fraction=f) for f in fractions]
    vals = {tuple(v.tolist()) for _, v in splits}
    assert len(vals) == 1                                  # one validation set for all
    trains = [set(t.tolist()) for t, _ in splits]
    assert [len(t) for t in trains] == [140, 270, 680, 1350, 2700]
    assert all(small < big for small, big in zip(trains, trains[1:]))
    assert not trains[-1] & set(splits[0][1].tolist())


def test_train_fraction_is_stratified_and_disjoint_from_val():
    targets = torch.arange(2000) % 10
    train, val = train_val_split(targets, 0.1, seed=0, train_fraction=0.25)
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(targets[train]).tolist() == [45] * 10   # 25% of 180 per class


# --------------------------------------------------------------------------------------
# Decoding awkward files
# --------------------------------------------------------------------------------------


def test_awkward_modes_are_converted_and_named(tmp_path):
    grey = _png(tmp_path / "grey.png", 77, mode="L")
    img, note = open_image(grey)
    assert img.mode == "RGB" and img.getpixel((0, 0)) == (77, 77, 77) and note is None

    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(rgba)        # fully transparent black
    img, note = open_image(rgba)
    assert img.getpixel((0, 0)) == (255, 255, 255) and "transparent" in note

    pal = tmp_path / "palette.png"
    indexed = Image.new("P", (4, 4), 1)
    indexed.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    indexed.save(pal)
    img, note = open_image(pal)
    assert img.getpixel((0, 0)) == (10, 200, 30) and "palette" in note

    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(cmyk)         # no ink: white
    img, note = open_image(cmyk)
    assert img.mode == "RGB" and min(img.getpixel((0, 0))) > 240 and "CMYK" in note

    deep = tmp_path / "sixteen.png"
    Image.fromarray(np.full((4, 4), 65535 // 2, dtype=np.uint16)).save(deep)
    img, note = open_image(deep, mode="L")
    assert abs(img.getpixel((0, 0)) - 127) <= 1 and "16" in note  # rescaled, not clipped


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "bomb"])
def test_bad_files_are_refused_with_their_name(tmp_path, kind):
    path = tmp_path / f"bad_{kind}.png"
    if kind == "empty":
        path.write_bytes(b"")
        match = "empty"
    elif kind == "truncated":
        arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        match = "truncated"
    elif kind == "text":
        path.write_text("this is a note, not an image")
        match = "not an image"
    else:
        _png(path, size=(300, 300))
        match = "decompression bomb"
    with pytest.raises(ImageFileError, match=match) as e:
        open_image(path, max_pixels=50_000)
    assert str(path) in str(e.value)


# --------------------------------------------------------------------------------------
# Folders and CSVs
# --------------------------------------------------------------------------------------


def _folder(root: Path) -> Path:
    for cls, value in (("cat", 40), ("dog", 200)):
        for i in range(3):
            _png(root / cls / f"{i}.png", value + i)
    (root / "empty").mkdir(parents=True)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_folder_dataset_reports_empty_classes_and_other_files(tmp_path):
    d = load_dataset(str(_folder(tmp_path / "pets")))
    assert d.classes == ["cat", "dog", "empty"] and len(d) == 6 and not d.in_memory
    assert d.class_counts() == [3, 3, 0]
    assert d.issues.count("empty class folders") == 1
    assert "notes.txt" in d.issues.items["ignored (not an image by its extension)"][0]
    with pytest.raises(DataError, match="empty.*holds no images"):
        load_dataset(str(tmp_path / "pets"), strict=True)


def test_folder_with_train_and_val_splits(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            _png(tmp_path / split / cls / "x.png")
    assert dataset_splits(str(tmp_path)) == ("train", "test")
    test = load_dataset(str(tmp_path), "test")
    assert test.spec["source"].endswith("val") and len(test) == 2


def test_folder_without_class_folders_and_foreign_classes(tmp_path):
    _png(tmp_path / "loose" / "a.png")
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(str(tmp_path / "loose"))
    _folder(tmp_path / "pets")
    with pytest.raises(DataError, match="not classes of this model"):
        load_dataset(str(tmp_path / "pets"), classes=["cat", "dog"])


def test_csv_dataset_names_every_bad_row(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png")
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label\nimg/a.png,cat\nimg/b.png,dog\nimg/missing.png,cat\n"
                        "img/a.png,horse\nimg/a.png\nimg/b.png,\n")
    d = load_dataset(str(csv_path), classes=["cat", "dog"])
    assert d.files == [str(tmp_path / "img" / "a.png"), str(tmp_path / "img" / "b.png")]
    assert d.targets.tolist() == [0, 1]
    text = "\n".join(d.issues.summary())
    assert "line 4" in text and "missing.png does not exist" in text
    assert "line 5" in text and "'horse'" in text
    assert "line 6" in text and "line 7" in text
    with pytest.raises(DataError, match="line 4"):
        load_dataset(str(csv_path), classes=["cat", "dog"], strict=True)
    # Without given classes, the labels found are the classes.
    assert load_dataset(str(csv_path)).classes == ["cat", "dog", "horse"]


def test_to_memory_skips_undecodable_files(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    d = load_dataset(str(root)).to_memory(8)
    assert d.images.shape == (6, 3, 8, 8) and d.in_memory
    assert "broken.png" in d.issues.items["skipped (cannot be decoded)"][0]


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------


def test_channel_stats_match_numpy_and_are_cached(tmp_path):
    d = load_dataset("digits", "test")
    stats = channel_stats(d)
    pixels = d.images.numpy().astype(np.float64) / 255
    assert math.isclose(stats["mean"][0], pixels.mean(), rel_tol=1e-9)
    assert math.isclose(stats["std"][0], pixels.std(), rel_tol=1e-6)
    cache = json.loads((tmp_path / "cache" / "archlab" / "stats.json").read_text())
    assert list(cache.values()) == [stats]
    assert channel_stats(d) == stats


# --------------------------------------------------------------------------------------
# Augmentation
# --------------------------------------------------------------------------------------


def _batch(n=6, c=3, size=16, seed=0):
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_translate_is_a_shifted_window_of_the_padded_image():
    x = _batch()
    g = torch.Generator().manual_seed(1)
    out = random_translate(x, 2, g, mode="constant")
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, dy:dy + 16, dx:dx + 16] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_mirrors_about_half_of_the_images():
    x = _batch(n=200)
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(f or torch.equal(o, i) for f, o, i in zip(flipped, out, x))
    assert 70 < sum(flipped) < 130


def test_mixup_and_cutmix_targets_follow_the_images():
    x, y = _batch(n=8), torch.arange(8) % 4
    out, soft = mix_batch(x, y, 4, mixup=0.4, cutmix=0.0, g=torch.Generator().manual_seed(0))
    assert torch.allclose(soft.sum(1), torch.ones(8))
    lam = soft[torch.arange(8), y].max().item()
    assert 0 <= lam <= 1
    ones = torch.ones(8, 1, 10, 10)
    zeros_then_ones = torch.cat([torch.zeros(4, 1, 10, 10), torch.ones(4, 1, 10, 10)])
    out, soft = mix_batch(zeros_then_ones, torch.tensor([0] * 4 + [1] * 4), 2, 0.0, 1.0,
                          torch.Generator().manual_seed(3))
    # Cutmix: the share of pasted pixels is the share of the other label.
    for img, t in zip(out, soft):
        pasted = (img != ones[0]).float().mean().item() if t[1] > t[0] else None
        if pasted is not None:
            assert math.isclose(pasted, t[0].item(), abs_tol=1e-6)


def test_random_erasing_and_lighting():
    x = _batch()
    g = torch.Generator().manual_seed(0)
    assert torch.equal(random_erasing(x, 0.0, g), x)
    erased = random_erasing(x, 1.0, g)
    assert all(not torch.equal(a, b) for a, b in zip(erased, x))
    x = torch.full((4, 3, 5, 5), 0.5)
    lit = pca_lighting(x, [0.2, 0.02, 0.005], torch.eye(3).tolist(), 0.1, g)
    shift = lit - x
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))  # one colour per image


def test_rand_augment_is_reproducible_and_in_range():
    x = _batch(n=64)
    a = rand_augment(x, torch.Generator().manual_seed(5))
    b = rand_augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert sum(not torch.equal(i, o) for i, o in zip(x, a)) > 32


def test_eval_pipeline_normalises_and_resizes():
    x = torch.randint(0, 256, (2, 1, 8, 8), dtype=torch.uint8)
    out, _ = BatchPipeline(8, [0.5], [0.25])(x, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(out, (x.float() / 255 - 0.5) / 0.25)
    out, _ = BatchPipeline(16, [0.5], [0.25])(x, torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 1, 16, 16)


def test_flip_preset_only_mirrors():
    """`flip`: every image is itself or its mirror image, never shifted; `none` leaves all."""
    x = (_batch(n=64) * 255).to(torch.uint8)
    y = torch.zeros(64, dtype=torch.long)
    plain, _ = BatchPipeline(16, [0.0], [1.0])(x, y)
    g = torch.Generator().manual_seed(0)
    out, _ = BatchPipeline(16, [0.0], [1.0], Augment("flip"))(x, y, g)
    flipped = [torch.equal(o, p.flip(-1)) for o, p in zip(out, plain)]
    assert all(f or torch.equal(o, p) for f, o, p in zip(flipped, out, plain))
    assert 16 < sum(flipped) < 48
    same, _ = BatchPipeline(16, [0.0], [1.0], Augment("none"))(x, y, torch.Generator())
    assert torch.equal(same, plain)


@pytest.mark.parametrize("preset", ["none", "flip", "basic", "alexnet", "rrc", "randaugment"])
def test_file_transforms_give_the_size_asked(preset):
    img = Image.new("RGB", (50, 37), (10, 20, 30))
    out = file_transform(Augment(preset), 24)(img)
    assert out.shape == (3, 24, 24) and out.dtype == torch.uint8
    assert eval_transform(24)(img).shape == (3, 24, 24)


# --------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------


def test_memory_loader_covers_an_epoch_and_repeats_it():
    d = load_dataset("digits", "test")
    pipe = BatchPipeline(8, [0.5], [0.5], Augment("basic"), geometric=True)
    loader = MemoryLoader(d, 32, pipe, seed=0, drop_last=False)

    def epoch(e):
        loader.set_epoch(e)
        return [(x.clone(), labels.clone()) for x, _, labels in loader]

    first, again, second = epoch(0), epoch(0), epoch(1)
    assert sum(len(lb) for _, lb in first) == len(d)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][1], second[0][1])    # another order next epoch


def test_file_loader_skips_bad_files_or_stops_when_strict(tmp_path):
    root = _folder(tmp_path / "pets")
    (root / "dog" / "zero.png").write_bytes(b"")
    _png(root / "cat" / "tiny.png", size=(4, 4))
    d = load_dataset(str(root))
    pipe = BatchPipeline(8, [0.5] * 3, [0.5] * 3)
    loader = FileLoader(d, 4, pipe, eval_transform(8), shuffle=False, drop_last=False,
                        workers=0)
    loader.set_epoch(0)
    seen = sum(len(labels) for _, _, labels in loader)
    assert seen == len(d) - 1
    issues = loader.issues
    assert "zero.png" in issues.items["skipped (cannot be decoded)"][0]
    assert any("tiny.png" in m and "upscaled" in m
               for m in issues.items["converted or resized"])
    strict = FileLoader(d, 4, pipe, eval_transform(8), shuffle=False, workers=0, strict=True)
    with pytest.raises(ImageFileError, match="zero.png"):
        list(strict)


def test_file_augmentation_does_not_depend_on_the_workers(tmp_path):
    root = _folder(tmp_path / "pets")
    d = load_dataset(str(root))
    pipe = BatchPipeline(8, [0.5] * 3, [0.5] * 3, Augment("randaugment"), geometric=False)

    def run(workers):
        loader = FileLoader(d, 3, pipe, file_transform(Augment("randaugment"), 8), seed=1,
                            workers=workers)
        loader.set_epoch(2)
        return [x for x, _, _ in loader]

    a, b = run(0), run(2)
    assert len(a) == len(b) == 2 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_imagedata_checks_its_arguments():
    with pytest.raises(ValueError):
        ImageData("x", "train", ["a"], torch.zeros(2, dtype=torch.long),
                  images=torch.zeros(3, 1, 2, 2, dtype=torch.uint8))
