"""transfer-224: the comparison article's protocol as written, its CPU variant, and both
run end to end on a tiny folder with random weights (no download here)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from PIL import Image

import archlab
from archlab.cli import main
from archlab.data import load_splits
from archlab.study import compare
from archlab.study.protocol import parse_protocol, preset_path
from archlab.train.device import set_deterministic

# The article's ladder, in its order (REFERENCE.md, "Recipes").
LADDER = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "xresnet50",
          "legacy_seresnet50", "legacy_seresnet101", "legacy_seresnet152", "resnext50_32x4d",
          "resnext101_32x4d", "legacy_seresnext50_32x4d", "legacy_seresnext101_32x4d",
          *[f"tf_efficientnet_b{i}" for i in range(8)]]


def _load(name: str, data: str = "some/folder", **kw):
    from archlab.study.protocol import load_protocol

    return load_protocol(name, data=data, **kw)


def test_the_articles_protocol_as_written():
    p = _load("transfer-224")
    assert [e.name for e in p.models] == LADDER
    assert p.data["subsample"] == 0.25 and p.data["image_size"] == 224
    assert p.body["deterministic"] is True
    for e in p.models:
        r = p.recipe_for(e, 0)
        assert r.fine_tune and r.head == "concat" and r.normalize == "model"
        assert (r.freeze_epochs, r.lr, r.epochs, r.unfrozen_lr) == (10, 1e-2, 10, (1e-5, 1e-4))
        assert (r.batch_size, r.image_size, r.schedule) == (64, 224, "onecycle")
        assert (r.optimizer, r.betas, r.eps, r.weight_decay) == ("adamw", (0.9, 0.99), 1e-5,
                                                                 0.01)
        assert r.deterministic and r.val_fraction == 0.2


def _weights_exist(name: str, spec: str) -> bool:
    """The named weights exist in the peer's own catalogue (checked offline)."""
    source, _, tag = spec.partition(":")
    peers = archlab.model_card(name).peers
    if source == "tv":
        import torchvision

        return tag in [w.name for w in torchvision.models.get_model_weights(
            peers["torchvision"])]
    if source == "timm":
        import timm

        return f"{peers['timm']}.{tag}" in timm.list_pretrained(peers["timm"] + "*")
    if source == "efficientnet-pytorch":
        from efficientnet_pytorch.utils import url_map

        return peers["efficientnet-pytorch"] in url_map
    return False


@pytest.mark.parametrize("preset", ["transfer-224", "transfer-224-cpu"])
def test_every_run_names_weights_its_peer_publishes(preset):
    p = _load(preset)
    for e in p.models:
        spec = p.recipe_for(e, 0).pretrained
        assert _weights_exist(e.name, spec), f"{e.name}: {spec}"
        # The note names the source in words, for the report and the dry run.
        assert e.note and spec.split(":")[-1].lower()[:4] in e.note.lower().replace("-", "")


def test_cpu_variant_is_the_same_protocol_cut_short():
    full, cpu = _load("transfer-224"), _load("transfer-224-cpu")
    assert {e.name for e in cpu.models} < set(LADDER)
    assert full.data == cpu.data and full.body["deterministic"] == cpu.body["deterministic"]
    a, b = (p.recipe_for(p.models[0], 0).to_dict() for p in (full, cpu))
    changed = {k for k in a if a[k] != b[k]}
    assert changed == {"freeze_epochs", "epochs"} and b["epochs"] < a["epochs"]


def test_dry_run_shows_the_runs_weights_and_schedule(capsys):
    assert main(["compare", "transfer-224", "--data", "some/folder", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "21 runs" in out and "25% of the images" in out and "224 px, batch 64" in out
    assert "phase 1: 10 epochs of onecycle, body frozen, new concat head, lr 0.01" in out
    assert "phase 2: 10 epochs of onecycle, all unfrozen, lr 1e-05 (stem) .. 0.0001" in out
    assert "adamw (betas 0.9, 0.99, eps 1e-05), weight decay 0.01 decoupled" in out
    assert "cuDNN deterministic" in out and "timm:gluon_in1k" in out
    assert "efficientnet-pytorch:" in out and "tv:IMAGENET1K_V1" in out


def _shapes_folder(root, per_class: int = 16):
    g = torch.Generator().manual_seed(0)
    for cls, base in (("dark", 40), ("mid", 128), ("bright", 210), ("red", 90)):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            arr = (base + torch.randint(-30, 30, (20, 20, 3), generator=g)).clamp(0, 255)
            if cls == "red":
                arr[..., 0] = 230
            Image.fromarray(arr.to(torch.uint8).numpy()).save(root / cls / f"{i}.png")
    return root


def test_cpu_variant_runs_on_a_tiny_folder_with_random_weights(tmp_path):
    folder = _shapes_folder(tmp_path / "images")
    body = yaml.safe_load(preset_path("transfer-224-cpu").read_text())
    body["data"].update(dataset=str(folder), image_size=32)
    body["recipe"].update(batch_size=8, freeze_epochs=1, epochs=1, workers=0)
    for m in body["models"]:
        m["recipe"]["pretrained"] = None        # random weights: nothing is downloaded
    body["models"] = body["models"][:1]         # resnet18: the protocol, not the ladder
    body["measure"] = {"throughput_batch": 8, "throughput_seconds": 0.1}
    proto = parse_protocol(body, source="transfer-224-cpu (tiny)")
    result = compare(proto, study=tmp_path / "study", progress=False, verbose=False,
                     report=False)
    assert result.failed_here == 0 and result.done_here == 1

    # A quarter of the 64 images (4 of each class), a fifth of them (1 a class) the test set.
    train, test = load_splits(str(folder), image_size=32, subsample=0.25, holdout=0.2)
    assert (len(train), len(test)) == (12, 4)
    assert torch.bincount(test.targets).tolist() == [1, 1, 1, 1]
    for run in result.runs:
        assert run.result["test_fingerprint"]["images"] == 4
        state = json.loads((tmp_path / "study" / run.run_dir / "checkpoint.json").read_text())
        assert state["recipe"]["deterministic"] is True        # recorded with the run
        assert state["recipe"]["fine_tune"] and state["recipe"]["freeze_epochs"] == 1


def test_deterministic_sets_cudnn_and_torch_and_undoes_it(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        set_deterministic(True)
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        set_deterministic(False)
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    torch.backends.cudnn.benchmark = False                 # as the test process found it
