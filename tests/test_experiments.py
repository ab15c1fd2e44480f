"""The experiments: their wiring at a tiny scale, and verdicts that follow the numbers (fed
made-up numbers both ways, the verdict flips)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from archlab.cli import main
from archlab.experiments import (DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Context, get_experiment,
                                 list_experiments, run_experiment)
from archlab.experiments import relu_low_dim


def test_every_experiment_says_what_it_claims():
    for e in list_experiments():
        assert e.name and e.claim and e.source and e.paper, e
    with pytest.raises(KeyError, match="did you mean relu-low-dim"):
        get_experiment("relu-low-dm")
    with pytest.raises(ValueError, match="scale"):
        Context(scale="huge")


def test_relu_collapse_by_hand():
    # T = I: ReLU keeps a point whole only when both coordinates are positive.
    x = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [-2.0, 3.0]])
    assert relu_low_dim.collapsed(x, np.eye(2)).tolist() == [False, True, True, True]
    # Many directions: some two stay positive for every point.
    angles = np.linspace(0, 2 * np.pi, 30, endpoint=False)
    t = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert not relu_low_dim.collapsed(relu_low_dim.spiral(200), t).any()


def test_relu_low_dim_verdict_follows_the_numbers():
    lost = {2: [0.7, 0.75, 0.72], 3: [0.5, 0.52, 0.49], 15: [0.0, 0.0, 0.0], 30: [0.0] * 3}
    assert relu_low_dim.decide(lost)[0] == HOLDS
    # Were the narrow embeddings lossless, or the wide ones lossy, the claim would fail.
    assert relu_low_dim.decide({**lost, 2: [0.0, 0.01, 0.0]})[0] == DOES_NOT_HOLD
    assert relu_low_dim.decide({**lost, 30: [0.3, 0.35, 0.32]})[0] == DOES_NOT_HOLD
    # Two draws far apart: the interval cannot say.
    verdict, because = relu_low_dim.decide({**lost, 15: [0.0, 0.02]})
    assert verdict == INCONCLUSIVE and "n=15" in because


def test_an_experiment_runs_and_writes_its_page(tmp_path, capsys):
    assert main(["experiment", "relu-low-dim", "--seeds", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "relu-low-dim" / "verdict.json").read_text())
    assert record["verdict"] in out and record["scale"] == "quick"
    assert len(record["numbers"]["lost"]["2"]) == 3
    # The verdict on the page is the one the rule gives for the recorded numbers.
    lost = {int(n): v for n, v in record["numbers"]["lost"].items()}
    assert relu_low_dim.decide(lost)[0] == record["verdict"]
    html = (tmp_path / "relu-low-dim" / "index.html").read_text()
    assert "<svg" in html and record["verdict"] in html and "<script src" not in html
    assert main(["experiment", "list"]) == 0
    assert "relu-low-dim" in capsys.readouterr().out
    assert main(["experiment", "nope"]) == 2


def test_run_experiment_returns_the_outcome(tmp_path):
    outcome = run_experiment("relu-low-dim", Context(seeds=2, out_dir=tmp_path, verbose=False))
    assert outcome.verdict in (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE)
    assert [row[0] for row in outcome.rows] == list(relu_low_dim.DIMS)
