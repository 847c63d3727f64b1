"""The lecture's results, reproduced on the real data: each recipe must reach its target."""

from __future__ import annotations

import pytest

from convkit.train import get_recipe, train
from convkit.train.progress import Progress

pytestmark = pytest.mark.acceptance


def test_mnist_mlp_reaches_the_lecture_accuracy(tmp_path, real_data):
    result = train(
        get_recipe("mnist-mlp").config(),
        out=tmp_path / "run",
        data_dir=real_data,
        progress=Progress(enabled=False),
    )
    print(
        f"mnist-mlp: test accuracy {result['test_accuracy']:.4f} after {result['epochs']} "
        f"epochs, {result['train_seconds']:.1f}s training"
    )
    assert result["epochs"] == 10
    assert result["test_accuracy"] >= 0.980  # the lecture: 98.21%
