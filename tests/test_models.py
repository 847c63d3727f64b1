"""Every registered model gets the same checks; its parameter count must match the canonical table."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from convkit.errors import ConfigError
from convkit.models import create_model, list_models, model_info, register
from convkit.models.layers import Dense, Dropout

# Canonical parameter counts at the model's default input and number of classes.
CANONICAL = {
    "mnist-mlp": 669_706,  # the lecture's Keras summary
    "cifar10-cnn": 528_054,  # the lecture's CIFAR-10 CNN (its Keras summary)
    "lenet5": 61_706,  # LeCun et al. 1998 on 32x32 grey input
    # torchvision's counts at 1000 classes, 3x224x224
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    # He et al. 2016's CIFAR ResNets (option-A shortcuts)
    "resnet20": 269_722,
    "resnet32": 464_154,
    "resnet44": 658_586,
    "resnet56": 853_018,
    "resnet110": 1_727_962,
    # convkit's own small-image designs (no outside reference: these guard against changes)
    "mnist-cnn": 80_202,  # 416 + 12,832 + 65,664 + 1,290
    "mnist-fast": 29_178,  # 144 + 32 + 4,608 + 64 + 18,432 + 128 + 5,770
    "mnist-cnn-aa": 80_202,  # mnist-cnn's: BlurPool's blur is a fixed buffer, not a parameter
    # 3x3 convs 16, 16 | 32, 32 | 64 with BatchNorm (2 parameters a channel), a 1x1 conv to 10:
    # 160 + 32 + 2,320 + 32 + 4,640 + 64 + 9,248 + 64 + 18,496 + 128 + 650
    "mnist-gap": 35_834,
    "mnist-gap-aa": 35_834,
    "cifar10-quick": 33_946,  # 432 + 32 + 4,608 + 64 + 18,432 + 128 + 10,250
    # airbench's network: whitening 312 + blocks 50,944 + 738,304 + 1,180,672 + classifier 2,560
    # (BatchNorm counts its fixed scales too)
    "cifar10-fast": 1_972_792,
    "alexnet-cifar": 7_173_450,
    "vgg11-cifar": 9_756_426,
    "vgg13-cifar": 9_941_322,
    "vgg16-cifar": 15_253_578,
    "vgg19-cifar": 20_565_834,
    "resnet18-cifar": 11_173_962,  # the usual CIFAR ResNet-18 (3x3 stem, no max-pool)
    "resnet34-cifar": 21_282_122,
    "resnet50-cifar": 23_520_842,
}
SMALL_INPUT = 64  # ImageNet-size models are run at 64x64 for gradients (their 224 is counted)
TORCHVISION = json.loads(
    (Path(__file__).parent / "data" / "torchvision_state_dicts.json").read_text()
)


def on_meta(name: str, **kw) -> torch.nn.Module:
    """Build without memory or initialisation cost: for counting and shapes."""
    with torch.device("meta"):
        return create_model(name, **kw)


def test_every_model_has_a_canonical_count():
    assert sorted(CANONICAL) == list_models()


@pytest.mark.parametrize("name", list_models())
def test_parameter_count(name):
    assert sum(p.numel() for p in on_meta(name).parameters()) == CANONICAL[name]


@pytest.mark.parametrize("name", list_models())
def test_output_shape_at_the_default_input(name):
    info = model_info(name)
    out = on_meta(name, num_classes=7).eval()(torch.zeros(2, *info.input_shape, device="meta"))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_gets_a_finite_gradient(name):
    torch.manual_seed(0)
    info = model_info(name)
    c, h, w = info.input_shape
    size = (min(h, SMALL_INPUT), min(w, SMALL_INPUT))
    model = create_model(name, num_classes=7, input_size=size)
    out = model(torch.rand(3, c, *size))
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    # only cifar10-fast fixes weights by design: its whitening filters and BatchNorm scales
    assert all(n == "whiten.weight" or ".bn" in n for n in frozen), frozen
    for pname, p in model.named_parameters():
        if pname in frozen:
            assert p.grad is None
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", sorted(TORCHVISION["models"]))
def test_state_dict_matches_torchvision(name):
    ours = [[k, list(v.shape)] for k, v in on_meta(name).state_dict().items()]
    assert ours == TORCHVISION["models"][name]


def test_builders_take_in_channels_and_input_size():
    model = create_model("mnist-mlp", num_classes=100, in_channels=3, input_size=(32, 32))
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert sum(p.numel() for p in model.parameters()) == 3072 * 512 + 512 + 512 * 512 + 512 + 51300


@pytest.mark.parametrize("name", list_models())
def test_builders_take_exactly_the_sizes_and_are_named_after_the_model(name):
    builder = model_info(name).builder
    assert list(inspect.signature(builder).parameters) == [
        "num_classes",
        "in_channels",
        "input_size",
    ]
    assert builder.__name__ == name.replace("-", "_")  # so `grep 'def resnet20'` finds it


@pytest.mark.parametrize(
    "name,kw", [("resnet18", {"l": [1, 1, 1, 1]}), ("resnet20", {"n": 1}), ("vgg11", {"bn": True})]
)
def test_unknown_keywords_are_refused(name, kw):
    # These once reached the registration loops' variables and built another network.
    (key,) = kw
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{key}'"):
        create_model(name, **kw)


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="'mnist-mlp' is already registered"):
        register("mnist-mlp", family="mlp", input_shape=(1, 28, 28), description="x")(
            lambda **k: None
        )


def test_unknown_model_names_the_known_ones():
    with pytest.raises(
        ConfigError, match="unknown model 'resnet9000'; known models: alexnet, alexnet-cifar"
    ):
        create_model("resnet9000")


def test_list_models_filters_by_pattern():
    assert list_models("mnist-*") == [
        "mnist-cnn",
        "mnist-cnn-aa",
        "mnist-fast",
        "mnist-gap",
        "mnist-gap-aa",
        "mnist-mlp",
    ]
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
    model = on_meta(name)
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


def test_cli_models_json_filters_by_pattern(capsys):
    from convkit.cli import main

    assert main(["models", "resnet1*", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert sorted(rows) == ["resnet101", "resnet110", "resnet152", "resnet18", "resnet18-cifar"]
    assert rows["resnet152"]["params"] == 60_192_808 and rows["resnet152"]["family"] == "resnet"
    assert rows["resnet152"]["input_shape"] == [3, 224, 224]
    assert (
        rows["resnet110"]["input_shape"] == [3, 32, 32]
        and "He et al." in rows["resnet110"]["description"]
    )
