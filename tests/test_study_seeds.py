"""Seeds made easy: a protocol's `seeds` is a list or a count, `load_protocol(seeds=N)` and
`archlab compare --seeds N` count up from the protocol's first seed, several values are the
seeds themselves; every mistake names its line."""
from __future__ import annotations

import pytest

from archlab.cli import main
from archlab.study.protocol import ProtocolError, load_protocol
from test_study_protocol import GOOD, line_of, problem, write

pytestmark = pytest.mark.usefixtures("isolated")


def test_seeds_are_a_list_or_a_count(tmp_path):
    assert load_protocol(write(tmp_path, GOOD)).seeds == [0, 1]
    assert load_protocol(write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: 3"))).seeds \
        == [0, 1, 2]
    assert load_protocol(write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: 1"))).seeds == [0]
    assert load_protocol(write(tmp_path, GOOD.replace("seeds: [0, 1]\n", ""))).seeds == [0]
    # The seeds are not hashed: a count and the list it stands for are one study.
    assert load_protocol(write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: 2"))).runs() \
        == load_protocol(write(tmp_path, GOOD, "b.yaml")).runs()


def test_load_protocol_takes_a_count_or_the_seeds(tmp_path):
    five = write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: [5]"))
    assert load_protocol(five, seeds=3).seeds == [5, 6, 7]       # from the first seed
    assert load_protocol(five, seeds=1).seeds == [5]
    assert load_protocol(five, seeds=[0, 1, 2]).seeds == [0, 1, 2]
    assert load_protocol(five, seeds=(9,)).seeds == [9]          # an iterable: the seeds
    assert load_protocol(five, seeds=range(2)).seeds == [0, 1]
    counted = write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: 4"), "c.yaml")
    assert load_protocol(counted, seeds=2).seeds == [0, 1]
    # Changing the seeds keeps the protocol's hash: the runs already done are kept.
    assert load_protocol(five, seeds=3).hash == load_protocol(five).hash
    assert load_protocol(five, seeds=3).runs()[0].key == load_protocol(five).runs()[0].key


def test_bad_seeds_name_their_line_and_the_fix(tmp_path):
    for bad, expected in (("seeds: 0", "seeds is a count (1 or more) or a list"),
                          ("seeds: -2", "seeds is a count (1 or more) or a list"),
                          ("seeds: [0, x]", "seeds is a count or a list of integers"),
                          ("seeds: true", "seeds is a count or a list of integers"),
                          ("seeds: [1, 1]", "seeds repeat")):
        text = GOOD.replace("seeds: [0, 1]", bad)
        msg = problem(tmp_path, text)
        assert f"line {line_of(text, bad)}: {expected}" in msg, (bad, msg)
    for count in (0, -1, True):
        msg = problem(tmp_path, GOOD, seeds=count)
        assert "--seeds: one value is a count of seeds, 1 or more" in msg, msg
        assert "--seeds 0 1 2" in msg and "seeds=[7]" in msg


def _dry_run_seeds(capsys, *args: str) -> list[int]:
    assert main(["compare", *args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("label"))
    # label (may hold spaces), model, seed, weights, status, run: the seed is 4th from the end
    return sorted({int(ln.split()[-4]) for ln in lines[header + 2:] if ln.strip()})


def test_cli_seeds_count_and_list(tmp_path, capsys):
    path = str(write(tmp_path, GOOD.replace("seeds: [0, 1]", "seeds: [5]")))
    study = ["--study", str(tmp_path / "study")]
    assert _dry_run_seeds(capsys, path, *study) == [5]
    assert _dry_run_seeds(capsys, path, *study, "--seeds", "3") == [5, 6, 7]
    assert _dry_run_seeds(capsys, path, *study, "--seeds", "0", "2") == [0, 2]
    assert main(["compare", path, *study, "--dry-run", "--seeds", "0"]) == 2
    assert "--seeds: one value is a count" in capsys.readouterr().err
    with pytest.raises(ProtocolError, match="seeds repeat"):
        load_protocol(path, seeds=[1, 1])
