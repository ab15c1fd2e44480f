"""Fixtures shared by the training and study tests."""
from __future__ import annotations

import pytest
import torch

# A CIFAR ResNet of one block per stage, 8-16-32 channels: a run on the 8x8 digits takes a
# second or two on one CPU thread.
TINY = {"layers": [1, 1, 1], "widths": [8, 16, 32], "stem_width": 8}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No cache or download outside the test's directory; torch's thread count restored
    (a recipe's `threads` sets it for the process)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("ARCHLAB_OFFLINE", "1")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of small-model tests (`pytestmark =
    pytest.mark.usefixtures("one_torch_thread")`): two threads on two cores shared with the
    other pytest-xdist worker run several times slower (3x measured on the models' common
    tests, up to 20x on explain's)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 1,797 8x8 digits."""
    from archlab.data import load_dataset

    return load_dataset("digits")


class StopAt:
    """Trainer callback: ask the run to stop (as SIGINT would) after global step `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer) -> None:
        if trainer.step == self.step:
            trainer.request_stop()
