"""Every registered model gets the same checks; its parameter count must match the canonical table."""

from __future__ import annotations

import pytest
import torch

from convkit.errors import ConfigError
from convkit.models import create_model, list_models, model_info, register
from convkit.models.layers import Dense, Dropout

# Canonical parameter counts at the model's default input and 10 classes.
CANONICAL = {
    "mnist-mlp": 669_706,  # the lecture's Keras summary
    "cifar10-cnn": 528_054,  # the lecture's CIFAR-10 CNN (its Keras summary)
    "mnist-cnn": 80_202,  # convkit's own design: 416 + 12,832 + 65,664 + 1,290
}


def test_every_model_has_a_canonical_count():
    assert sorted(CANONICAL) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
    assert sum(p.numel() for p in create_model(name).parameters()) == CANONICAL[name]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    info = model_info(name)
    model = create_model(name, num_classes=7)
    x = torch.rand(3, *info.input_shape)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


def test_builders_take_in_channels_and_input_size():
    model = create_model("mnist-mlp", num_classes=100, in_channels=3, input_size=(32, 32))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert sum(p.numel() for p in model.parameters()) == 3072 * 512 + 512 + 512 * 512 + 512 + 51300


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="'mnist-mlp' is already registered"):
        register("mnist-mlp", family="mlp", input_shape=(1, 28, 28), description="x")(
            lambda **k: None
        )


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'resnet9000'; known models: cifar10-cnn"):
        create_model("resnet9000")


def test_list_models_filters_by_pattern():
    assert list_models("mnist-*") == ["mnist-cnn", "mnist-mlp"]
    assert list_models("nothing-*") == []


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: Dense(784, 0), r"expected units >= 1, received units=0"),
        (lambda: Dense(0, 10), r"expected in_features >= 1, received in_features=0"),
        (lambda: Dense(784, 10, activation="tanhh"), r"received activation='tanhh'"),
        (lambda: Dropout(1.0), r"expected 0 <= rate < 1, received rate=1.0"),
        (lambda: Dropout(-0.1), r"received rate=-0.1"),
    ],
)
def test_layers_validate_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_dense_uses_keras_initialisation():
    torch.manual_seed(0)
    layer = Dense(784, 512)
    limit = (6 / (784 + 512)) ** 0.5  # glorot_uniform
    assert layer.weight.abs().max() <= limit and layer.weight.abs().max() > 0.95 * limit
    assert (layer.bias == 0).all()


@pytest.mark.parametrize("name", list_models())
def test_building_runs_no_dropout_and_leaves_training_mode(name, monkeypatch):
    # A builder that measures shapes must not draw dropout masks from the random stream.
    real, calls = torch.nn.functional.dropout, []

    def spy(x, p=0.5, training=True, inplace=False):
        calls.append(training)
        return real(x, p, training, inplace)

    monkeypatch.setattr(torch.nn.functional, "dropout", spy)
    model = create_model(name)
    assert True not in calls
    assert all(m.training for m in model.modules())


def test_sizes_a_model_cannot_take_are_clear_errors():
    with pytest.raises(
        ConfigError,
        match=r"model cifar10-cnn cannot take input shape "
        r"\(C,H,W\)=\(3,4,4\) with num_classes=10",
    ):
        create_model("cifar10-cnn", input_size=(4, 4))
    with pytest.raises(ConfigError, match=r"num_classes=0: expected units >= 1, received units=0"):
        create_model("mnist-cnn", num_classes=0)
