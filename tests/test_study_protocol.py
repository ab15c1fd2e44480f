"""Protocols: the shipped presets parse, every mistake is named with its line and its fix,
the hash covers what changes training and nothing else, command-line changes apply."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from archlab.study.protocol import (
    ProtocolError, load_protocol, parse_duration, parse_protocol, presets,
)

GOOD = """\
name: tiny
data:
  dataset: digits
  val_fraction: 0.1
recipe:
  epochs: 2
  lr: 0.2
tta: [flip]
seeds: [0, 1]
models:
  - lenet5
  - name: resnet20
    label: resnet-tiny
    model_kwargs: {layers: [1, 1, 1], widths: [8, 16, 32], stem_width: 8}
    recipe: {lr: 0.1}
  - sift-bovw
"""


def write(tmp_path, text: str, name: str = "p.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problem(tmp_path, text: str, **kw) -> str:
    with pytest.raises(ProtocolError) as e:
        load_protocol(write(tmp_path, text), **kw)
    return str(e.value)


def line_of(text: str, needle: str) -> int:
    return next(i for i, ln in enumerate(text.splitlines(), 1) if needle in ln)


def test_shipped_presets_parse_and_build_every_model():
    assert {"quick-tour", "fashion-mnist-full", "transfer-224", "cifar10"} <= set(presets())
    for name in presets():
        kw = {"data": "some/folder"} if name.startswith("transfer-224") else {}
        p = load_protocol(name, **kw)           # builds every model on the meta device
        assert p.models and p.seeds and p.dataset
        for e in p.models:
            p.recipe_for(e, p.seeds[0])


def test_quick_tour_is_the_default_with_seven_families_and_a_baseline():
    from archlab.study.summary import family_of

    p = load_protocol()
    assert p.name == "quick-tour" and p.dataset == "fashion-mnist"
    families = {family_of(e.name) for e in p.models}
    assert len(families - {"classical"}) >= 7, families
    assert {"lenet", "vit", "classical"} <= families
    for e in p.models:
        if not e.classical:
            assert p.recipe_for(e, 0).small_input in (None, True)


def test_a_good_protocol_resolves_recipes(tmp_path):
    p = load_protocol(write(tmp_path, GOOD))
    assert [e.label for e in p.models] == ["lenet5", "resnet-tiny", "sift-bovw"]
    assert p.tta == ["flip"] and p.seeds == [0, 1]
    r = p.recipe_for(p.entry("resnet-tiny"), 1)
    assert (r.seed, r.lr, r.epochs, r.val_fraction) == (1, 0.1, 2, 0.1)
    assert r.model_kwargs == {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8}
    assert p.recipe_for(p.entry("lenet5"), 0).lr == 0.2
    runs = p.runs()
    assert len(runs) == 6 and len({r.key for r in runs}) == 6
    # Seed-major: every model's first seed comes before any second seed.
    assert [r.seed for r in runs] == [0, 0, 0, 1, 1, 1]


def test_misspelt_architecture_names_its_line_and_the_fix(tmp_path):
    text = GOOD.replace("  - lenet5", "  - lenet55").replace("name: resnet20", "name: resnet2O")
    msg = problem(tmp_path, text)
    assert "2 problems" in msg
    assert f"line {line_of(text, 'lenet55')}: unknown architecture 'lenet55'" in msg
    assert "did you mean 'lenet5'" in msg
    assert f"line {line_of(text, 'resnet2O')}: unknown architecture 'resnet2O'" in msg
    assert "'resnet20'" in msg


def test_misspelt_keys_name_their_line_and_the_fix(tmp_path):
    text = GOOD.replace("  epochs: 2", "  epcohs: 2").replace("seeds:", "seed:") \
        .replace("val_fraction", "val_fracion")
    msg = problem(tmp_path, text)
    assert f"line {line_of(text, 'epcohs')}: unknown recipe field 'epcohs'; did you mean " \
           "'epochs'?" in msg
    assert f"line {line_of(text, 'seed:')}: unknown protocol key 'seed'; did you mean " \
           "'seeds'?" in msg
    assert f"line {line_of(text, 'val_fracion')}: unknown data key 'val_fracion'" in msg


def test_bad_values_are_named(tmp_path):
    cases = {
        "val_fraction: 0.1": ("val_fraction: 1.5", "val_fraction is a fraction in [0, 1)"),
        "tta: [flip]": ("tta: [flop]", "unknown test-time view 'flop'"),
        "seeds: [0, 1]": ("seeds: [0, 0]", "seeds repeat"),
        "stem_width: 8}": ("stem_width: 8, wingspan: 3}", "resnet20 does not take these "
                                                            "model_kwargs"),
        "    recipe: {lr: 0.1}": ("    recipe: {lr: -1}", "resnet-tiny: lr must be positive"),
        "  - sift-bovw": ("  - {name: sift-bovw, model_kwargs: {vocab_sise: 8}}",
                          "sift-bovw has no option 'vocab_sise'; did you mean 'vocab_size'?"),
    }
    for old, (new, expected) in cases.items():
        text = GOOD.replace(old, new)
        msg = problem(tmp_path, text)
        assert expected in msg, (new, msg)
        assert f"line {line_of(text, new.strip())}:" in msg, msg
    assert "did you mean 'flip'?" in problem(tmp_path, GOOD.replace("[flip]", "[flop]"))
    msg = problem(tmp_path, GOOD + "budget: {run: ten minutes}\n")
    assert "is not a duration" in msg and "'10m'" in msg
    msg = problem(tmp_path, GOOD.replace("  epochs: 2", "  train_fraction: 0.5"))
    assert "train_fraction belongs under data:" in msg and "a model's own recipe" in msg
    msg = problem(tmp_path, GOOD.replace("  - sift-bovw", "  - lenet5"))
    assert "'lenet5' is listed twice" in msg
    text = GOOD + "jobs: 0\n"
    msg = problem(tmp_path, text)
    assert f"line {line_of(text, 'jobs: 0')}:" in msg and "a positive integer" in msg


def test_structural_mistakes(tmp_path):
    msg = problem(tmp_path, "data: {dataset: digits}\nmodels: [lenet5\n")
    assert "p.yaml, line 3: not valid YAML" in msg   # where the parser gave up
    assert "no dataset" in problem(tmp_path, "models: [lenet5]\n")
    assert "no models" in problem(tmp_path, "data: {dataset: digits}\n")
    assert "a protocol is a mapping" in problem(tmp_path, "- lenet5\n")
    with pytest.raises(ProtocolError, match="no protocol 'quick-tuor'.*did you mean 'quick-tour'"):
        load_protocol("quick-tuor")


def test_hash_covers_training_not_the_model_list(tmp_path):
    base = load_protocol(write(tmp_path, GOOD))
    fewer = load_protocol(write(tmp_path, GOOD.replace("  - lenet5\n", ""), "b.yaml"))
    renamed = load_protocol(write(tmp_path, GOOD.replace("name: tiny", "name: other")
                                  .replace("seeds: [0, 1]", "seeds: [0, 1, 2]"), "c.yaml"))
    faster = load_protocol(write(tmp_path, GOOD.replace("lr: 0.2", "lr: 0.3"), "d.yaml"))
    side_by_side = load_protocol(write(tmp_path, GOOD + "jobs: 2\n", "f.yaml"))
    assert side_by_side.jobs == 2 and base.jobs == 1
    assert base.hash == fewer.hash == renamed.hash == side_by_side.hash != faster.hash
    # Runs shared by two versions of a study keep their keys: nothing is redone.
    assert {r.key for r in fewer.runs()} < {r.key for r in base.runs()}
    assert not {r.key for r in faster.runs()} & {r.key for r in base.runs()}
    # A model's overrides are part of its runs' identity; its label is not.
    relabel = load_protocol(write(tmp_path, GOOD.replace("label: resnet-tiny",
                                                         "label: small"), "e.yaml"))
    assert {r.key for r in relabel.runs()} == {r.key for r in base.runs()}


def test_command_line_changes(tmp_path):
    path = write(tmp_path, GOOD)
    p = load_protocol(path, models=["resnet-tiny", "vgg11_bn"], data="fashion-mnist",
                      seeds=[3], overrides={"recipe.epochs": 1, "data.train_fraction": 0.5})
    assert [e.label for e in p.models] == ["resnet-tiny", "vgg11_bn"]
    assert p.entry("resnet-tiny").model_kwargs["stem_width"] == 8   # keeps its overrides
    assert p.dataset == "fashion-mnist" and p.seeds == [3]
    r = p.recipe_for(p.entry("vgg11_bn"), 3)
    assert (r.epochs, r.train_fraction) == (1, 0.5)
    assert p.hash != load_protocol(path).hash
    with pytest.raises(ProtocolError, match="--models resnt20: unknown architecture.*resnet20"):
        load_protocol(path, models=["resnt20"])
    with pytest.raises(ProtocolError, match="'recipie' is not a protocol key.*'recipe'"):
        load_protocol(path, overrides={"recipie.epochs": 1})


def test_durations():
    assert parse_duration(90) == 90.0
    assert parse_duration("10m") == 600.0
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration("45s") == 45.0
    assert parse_duration(None) is None
    for bad in ("10 minutes", "", "m", -5, True):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_protocol_round_trips_through_the_database_form(tmp_path):
    p = load_protocol(write(tmp_path, GOOD))
    again = parse_protocol(p.as_dict(), check_models=False)
    assert again.hash == p.hash
    assert [r.key for r in again.runs()] == [r.key for r in p.runs()]


def test_list_protocols_reads_every_preset():
    from archlab.study import list_protocols

    rows = {r["name"]: r for r in list_protocols()}
    assert set(rows) == set(presets())
    quick = load_protocol("quick-tour")
    assert rows["quick-tour"]["dataset"] == "fashion-mnist"
    assert rows["quick-tour"]["models"] == len(quick.models)
    assert rows["quick-tour"]["description"] == " ".join(quick.description.split())
    assert rows["transfer-224"]["dataset"] is None      # the dataset comes from --data


def test_a_model_may_train_on_its_own_share_of_the_training_pool(tmp_path):
    """A data-efficiency study: the fraction per model is accepted, reaches the run's
    recipe and its key; a model's own validation share or image size is still refused."""
    text = GOOD.replace("    recipe: {lr: 0.1}", "    recipe: {lr: 0.1, train_fraction: 0.25}")
    p = load_protocol(write(tmp_path, text))
    base = load_protocol(write(tmp_path, GOOD, "base.yaml"))
    assert p.recipe_for(p.entry("resnet-tiny"), 0).train_fraction == 0.25
    assert p.recipe_for(p.entry("lenet5"), 0).train_fraction == 1.0
    keys = {r.label: r.key for r in p.runs() if r.seed == 0}
    base_keys = {r.label: r.key for r in base.runs() if r.seed == 0}
    assert keys["resnet-tiny"] != base_keys["resnet-tiny"]
    assert keys["lenet5"] == base_keys["lenet5"]      # the other runs are kept
    for bad, expected in (("train_fraction: 1.5", "train_fraction is a fraction in (0, 1]"),
                          ("train_fraction: 0", "train_fraction is a fraction in (0, 1]"),
                          ("val_fraction: 0.2", "val_fraction belongs under data:"),
                          ("image_size: 16", "image_size belongs under data:")):
        text = GOOD.replace("    recipe: {lr: 0.1}", f"    recipe: {{lr: 0.1, {bad}}}")
        msg = problem(tmp_path, text)
        assert expected in msg and f"line {line_of(text, bad)}:" in msg, msg


def test_the_readme_protocol_example_is_valid():
    # The README's YAML example is what a newcomer copies: it must parse as it stands.
    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    text = readme.split("```yaml\nname: my-study", 1)[1].split("```", 1)[0]
    p = parse_protocol(yaml.safe_load("name: my-study" + text), source="README.md")
    entries = {m.label: m for m in p.models}
    assert entries["resnet20-10pct"].recipe == {"train_fraction": 0.1}
    assert entries["vit_tiny_patch4_32"].model_kwargs["pos_embedding"] == "sincos"
