"""The registry, checkpoint conversion and the `archlab` command."""
from __future__ import annotations

import json

import pytest
import torch
import torchvision

import archlab
from archlab.cli import main
from archlab.models.weights import (CheckpointError, load_state_dict, read_state_dict,
                                    save_state_dict)


def test_unknown_model_lists_the_closest_names():
    with pytest.raises(KeyError, match="alexnet"):
        archlab.create_model("alexnett")


def test_list_models_filters():
    assert "alexnet" in archlab.list_models("alex*")
    assert archlab.list_models(family="alexnet") == ["alexnet", "alexnet_two_tower"]
    assert archlab.list_models("nothing-like-this*") == []


def test_create_model_applies_overrides_and_card():
    m = archlab.create_model("alexnet", num_classes=5, drop_rate=0.25)
    assert m.classifier.drop6.p == 0.25 and m.num_classes == 5
    assert m.card.name == "alexnet" and m.card.input_size == (3, 224, 224)
    assert archlab.create_model("alexnet", in_chans=1, small_input=True).card.input_size == (1, 32, 32)


def test_grayscale_adaptation_preserves_the_response_to_a_grey_image(tmp_path):
    torch.manual_seed(0)
    rgb = archlab.create_model("alexnet").eval()
    path = save_state_dict(rgb.state_dict(), tmp_path / "rgb.safetensors")
    grey = archlab.create_model("alexnet", in_chans=1, pretrained=str(path)).eval()
    x = torch.rand(1, 1, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(1, 3, 96, 96)), rtol=1e-4, atol=1e-5)
    # Repeat-and-scale is exact on a grey image when N is a multiple of 3.
    six = archlab.create_model("alexnet", in_chans=6, pretrained=str(path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(six(x.expand(1, 6, 96, 96)), rgb(x.expand(1, 3, 96, 96)),
                                   rtol=1e-4, atol=1e-5)


def test_classifier_of_another_size_is_reset_not_loaded():
    tv = torchvision.models.alexnet()
    m = archlab.create_model("alexnet", num_classes=10)
    report = load_state_dict(m, tv.state_dict(), "torchvision")
    assert report.reset == ["classifier.fc8.weight", "classifier.fc8.bias"]
    torch.testing.assert_close(m.features.conv1.weight, tv.features[0].weight)


def test_mismatch_names_the_missing_and_unexpected_keys():
    sd = torchvision.models.alexnet().state_dict()
    sd.pop("features.3.weight")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="features.conv2.weight.*\n.*extra.weight"):
        load_state_dict(archlab.create_model("alexnet"), sd, "torchvision")


def test_bad_checkpoint_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_state_dict(tmp_path / "empty.pth")
    good = save_state_dict({"w": torch.ones(100)}, tmp_path / "w.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(good.read_bytes()[:60])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(tmp_path / "cut.safetensors")
    torch.save({"w": torch.ones(3)}, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:40])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(tmp_path / "cut.pth")


def test_pickled_code_is_never_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("raise SystemExit('code ran')",))

    torch.save({"w": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="never loads"):
        read_state_dict(tmp_path / "evil.pth")


def test_named_weights_offline_fail_with_a_clear_message(monkeypatch):
    import torch.hub

    def offline(*a, **k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="offline.*pretrained="):
        archlab.create_model("alexnet", pretrained="tv:IMAGENET1K_V1")


def test_cli_convert_round_trip(tmp_path, capsys):
    torch.manual_seed(0)
    tv = torchvision.models.alexnet().eval()
    torch.save(tv.state_dict(), tmp_path / "alexnet.pth")
    out = tmp_path / "alexnet.safetensors"
    assert main(["convert", str(tmp_path / "alexnet.pth"), str(out)]) == 0
    assert "torchvision" in capsys.readouterr().out
    _, meta = read_state_dict(out)
    assert meta["archlab_model"] == "alexnet" and meta["converted_from"] == "torchvision"
    ours = archlab.create_model("alexnet", pretrained=str(out)).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))


def test_cli_models_info_calc(capsys):
    assert main(["models", "alex*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "alexnet" and rows[0]["params"] == 61_100_840
    assert main(["info", "alexnet", "--layers"]) == 0
    out = capsys.readouterr().out
    assert "61,100,840" in out and "features.conv5" in out and "receptive field 195" in out
    assert main(["calc", "stack", "--kernel", "3", "--layers", "2"]) == 0
    assert "5x5" in capsys.readouterr().out
    assert main(["calc", "conv", "--size", "224", "--kernel", "7", "--stride", "2",
                 "--padding", "3"]) == 0
    assert "-> 112 px" in capsys.readouterr().out
    assert main(["calc", "rf", "3x1", "3x1d2"]) == 0
    assert "3x3 dilated 2 (spans 5), stride 1: field 7" in capsys.readouterr().out
    assert main(["calc", "attention", "--size", "512", "--patch", "16"]) == 0
    assert "262,145 tokens" in (out := capsys.readouterr().out) and "1,025 tokens" in out
    assert main(["calc", "fc", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fc_params"] == 30_001_000
    assert main(["calc", "reduce"]) == 0
    assert "120,422,400" in (out := capsys.readouterr().out) and "12,443,648" in out
    assert main(["calc", "rf", "3x1e2"]) == 2
    assert "is not KxS or KxSdD" in capsys.readouterr().err
    assert main(["info", "alexnett"]) == 2
    assert "Closest registered names: alexnet" in capsys.readouterr().err


def test_cli_info_reports_tokens_heads_and_compound_scaling(capsys):
    assert main(["info", "deit_tiny_distilled_patch16_224"]) == 0
    out = capsys.readouterr().out
    assert "5,910,800" in out and "num_heads=3" in out and "num_tokens=198" in out
    assert "2 prefix (class + distillation) + 14x14 patches" in out and "MACs" in out
    assert main(["info", "efficientnet_b3"]) == 0
    out = capsys.readouterr().out
    assert "width=1.2, depth=1.4, resolution=300" in out and "12,233,232" in out


def test_recipe_flags_come_from_the_recipe_fields(capsys):
    import dataclasses

    from archlab.cli import build_parser
    from archlab.cli.recipe_flags import recipe_from_args

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    text = " ".join(help_text.split())
    flagged = [f for f in dataclasses.fields(archlab.Recipe) if "help" in f.metadata]
    assert {"epochs", "batch_size", "lr", "precision", "fine_tune", "unfrozen_lr"} <= {
        f.name for f in flagged}
    for f in flagged:
        assert "--" + f.name.replace("_", "-") in text
        # argparse wraps lines at spaces and hyphens: compare without the whitespace.
        assert "".join(f.metadata["help"].split()) in "".join(help_text.split())
    assert "--channels-last, --no-channels-last" in text and "{sgd,adamw}" in text
    assert "{auto,fp32,bf16,fp16}" in text
    args = build_parser().parse_args(
        ["train", "--epochs", "3", "--precision", "fp32", "--no-channels-last",
         "--unfrozen-lr", "1e-4", "1e-3",
         "--set", "model_kwargs={act: tanh}", "--set", "moms=null"])
    recipe = recipe_from_args(args)
    assert (recipe.epochs, recipe.precision, recipe.channels_last, recipe.unfrozen_lr) == (
        3, "fp32", False, (1e-4, 1e-3))
    assert recipe.model_kwargs == {"act": "tanh"} and recipe.moms is None
    assert recipe.batch_size == archlab.Recipe().batch_size  # a flag not given leaves it


def test_set_is_parsed_once_as_yaml():
    from archlab.train import parse_assignments

    assert parse_assignments(["model_kwargs={act: tanh}", "recipe.epochs=3", "x = null"]) == {
        "model_kwargs": {"act": "tanh"}, "recipe.epochs": 3, "x": None}
    with pytest.raises(ValueError, match="KEY=VALUE.*'epochs'"):
        parse_assignments(["epochs"])
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_assignments(["model_kwargs={act: ["])


def test_cli_compare_list_reads_the_protocols(capsys):
    assert main(["compare", "--list"]) == 0
    out = capsys.readouterr().out
    assert "quick-tour" in out and "fashion-mnist" in out
    assert "transfer-224" in out and "(--data)" in out  # its dataset comes from --data
    assert main(["compare", "--set", "recipe.epochs", "--dry-run"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_the_top_level_api_names_every_step_of_the_users_path():
    import archlab.study
    from archlab.explain import explain

    # DESIGN.md's public API: compare and report join the top level beside fit and explain.
    assert archlab.compare is archlab.study.compare
    assert archlab.report is archlab.study.report
    assert archlab.explain is explain
    missing = [n for n in archlab.__all__ if not hasattr(archlab, n)]
    assert not missing, missing
