"""The lecture's results, reproduced on the real data: each recipe must reach its target."""

from __future__ import annotations

import pytest

from convkit.train import get_recipe, train
from convkit.train.progress import Progress

pytestmark = pytest.mark.acceptance


def run(recipe: str, tmp_path, data_root, capsys, **changes) -> dict:
    result = train(
        get_recipe(recipe).config().replace(**changes),
        out=tmp_path / "run",
        data_dir=data_root,
        progress=Progress(enabled=False),
    )
    with capsys.disabled():  # the figures belong in the CI log, passing or not
        print(
            f"\n{recipe}: test accuracy {result['test_accuracy']:.4f} after {result['epochs']} "
            f"epochs (best {result['best_epoch']}), {result['train_seconds']:.1f}s training, "
            f"{result['train_seconds'] / result['epochs']:.1f}s per epoch"
        )
    return result


def test_mnist_mlp_reaches_the_lecture_accuracy(tmp_path, real_data, capsys):
    result = run("mnist-mlp", tmp_path, real_data, capsys)
    assert result["epochs"] == 10
    assert result["test_accuracy"] >= 0.980  # the lecture: 98.21%


def test_mnist_cnn_beats_the_mlp(tmp_path, real_data, capsys):
    result = run("mnist-cnn", tmp_path, real_data, capsys)
    assert result["params"] < 669_706 / 8
    assert result["test_accuracy"] >= 0.992


def test_cifar10_cnn_reaches_the_lecture_accuracy(tmp_path, real_cifar, capsys):
    # The full recipe runs until early stopping (seed 0: 46 epochs, 13 minutes here). Its learning
    # rate depends only on validation losses, never on the epoch budget, so its first 20 epochs
    # are exactly these; the lecture's 68% must be reached within them.
    result = run("cifar10-cnn", tmp_path, real_cifar, capsys, epochs=20)
    assert result["test_accuracy"] >= 0.68  # the lecture: 0.68


def test_mnist_fast_reaches_99_percent_in_one_epoch(tmp_path, real_data, capsys):
    result = run("mnist-fast", tmp_path, real_data, capsys)
    assert (result["epochs"], result["config"]["val_split"]) == (1, 0.0)  # all 60,000 train
    assert result["test_accuracy"] >= 0.990


def test_cifar10_quick_reaches_the_lecture_accuracy_in_two_epochs(tmp_path, real_cifar, capsys):
    result = run("cifar10-quick", tmp_path, real_cifar, capsys)
    assert (result["epochs"], result["config"]["val_split"]) == (2, 0.0)  # all 50,000 train
    assert result["test_accuracy"] >= 0.68  # the lecture: 0.68
