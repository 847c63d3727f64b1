"""Settings: layering, validation with the offending value named, and config files."""

from __future__ import annotations

import dataclasses

import pytest

from convkit.errors import ConfigError
from convkit.train import RECIPES, TrainConfig, get_recipe
from convkit.train.config import read_config_file


def test_recipe_sets_the_lecture_settings():
    cfg = get_recipe("mnist-mlp").config()
    assert (
        cfg.model,
        cfg.dataset,
        cfg.optimizer,
        cfg.batch_size,
        cfg.epochs,
        cfg.val_split,
        cfg.keep,
    ) == ("mnist-mlp", "mnist", "adam", 128, 10, 0.2, "best")


def test_layering_recipe_file_command_line(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochs = 3\nlr = 0.01\n")
    cfg = get_recipe("mnist-mlp").config().merged(read_config_file(path), str(path))
    cfg = cfg.merged({"lr": 0.5}, "command line")
    assert (cfg.epochs, cfg.lr, cfg.batch_size) == (3, 0.5, 128)


def test_a_shorter_or_longer_recipe_keeps_the_shares_of_its_epoch_counted_parts(tmp_path):
    from convkit.api import train_config

    def parts(recipe="cifar10-fast", **settings):
        cfg = train_config(recipe, settings=settings)
        return cfg.epochs, cfg.low_res, cfg.low_res_epochs, cfg.whiten_bias_epochs

    assert parts() == (8, 26, 3, 3.0)  # the recipe as it is
    assert parts(epochs=4) == (4, 26, 2, 1.5)  # 1.5 low-resolution epochs, rounded half up
    assert parts(epochs=12) == (12, 26, 5, 4.5)
    assert parts(epochs=2) == (2, 26, 1, 0.75)  # the last epoch stays at full size
    assert parts(epochs=1) == (1, 0, 0, 0.375)  # no low-resolution start left
    assert parts(epochs=4, low_res_epochs=3) == (4, 26, 3, 1.5)  # what the user sets stays
    assert parts(epochs=4, low_res=24) == (4, 24, 2, 1.5)
    assert parts(low_res=0) == (8, 0, 0, 3.0)  # either setting at 0 turns the start off
    assert parts(low_res_epochs=0) == (8, 0, 0, 3.0)
    assert parts(optimizer="sgd")[3] == parts(schedule="plateau", val_split=0.1)[3] == 0.0
    assert parts(model="resnet20")[3] == 0.0 and parts(model="cifar10-fast")[3] == 3.0

    def warmup(**settings):
        return train_config("resnet20-fast", settings=settings).warmup_epochs

    assert (warmup(), warmup(epochs=20), warmup(epochs=2), warmup(epochs=1)) == (2, 1, 1, 0)
    path = tmp_path / "c.toml"  # a config file's settings count as the user's
    path.write_text("epochs = 4\n")
    cfg = train_config("cifar10-fast", config=path, settings=dict(low_res=24))
    assert (cfg.low_res, cfg.low_res_epochs, cfg.whiten_bias_epochs) == (24, 2, 1.5)
    with pytest.raises(ConfigError, match=r"whiten_bias_epochs <= epochs.*=5.0 and epochs=4"):
        train_config("cifar10-fast", settings=dict(epochs=4, whiten_bias_epochs=5))
    with pytest.raises(ConfigError, match=r"low_res_epochs < epochs.*=4 and epochs=4"):
        train_config("cifar10-fast", settings=dict(epochs=4, low_res_epochs=4))
    with pytest.raises(ConfigError, match=r"needs both.*low_res=24, low_res_epochs=0"):
        train_config("cifar10-fast", settings=dict(epochs=1, low_res=24))


def test_a_recipe_on_a_folder_leaves_out_what_is_sized_for_its_own_dataset(tmp_path):
    from convkit.api import train_config

    cfg = train_config("cifar10-fast", settings=dict(data=str(tmp_path)))
    assert cfg.plan_steps == 8 * 25 and (cfg.low_res, cfg.whiten_bias_epochs) == (0, 0.0)
    cfg = train_config("cifar10-fast", settings=dict(data=str(tmp_path), epochs=4))
    assert (cfg.plan_steps, cfg.low_res, cfg.whiten_bias_epochs) == (0, 0, 1.5)
    cfg = train_config("cifar10-fast", settings=dict(data=str(tmp_path), low_res=24))
    assert (cfg.low_res, cfg.low_res_epochs, cfg.whiten_bias_epochs) == (24, 3, 0.0)


def test_json_config_and_int_for_float(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"lr": 1, "seed": 4}')
    cfg = TrainConfig().merged(read_config_file(path), str(path))
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.seed == 4


def test_unknown_setting_names_file_and_key(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epoch = 3\n")
    with pytest.raises(ConfigError, match=r"c.toml: unknown setting 'epoch'; settings are: recipe"):
        TrainConfig().merged(read_config_file(path), str(path))


def test_bad_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match=r"c.toml: not valid toml"):
        read_config_file(path)
    with pytest.raises(ConfigError, match=r"cannot read config file .*missing.toml"):
        read_config_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"epochs": 0}, r"expected epochs >= 1, received epochs=0"),
        (
            {"optimizer": "adagrad"},
            r"expected optimizer in adam, adamw, sgd, rmsprop, muon, "
            r"received optimizer='adagrad'",
        ),
        ({"val_split": 1.5}, r"received val_split=1.5"),
        ({"lr": 0.0}, r"expected lr > 0, received lr=0.0"),
        ({"val_split": 0.0}, r"keep=best needs a validation split"),
        ({"epochs": "ten"}, r"expected epochs to be int, received 'ten'"),
        ({"epochs": True}, r"expected epochs to be int, received True"),
        ({"momentum": float("nan")}, r"expected momentum to be a finite number, received nan"),
        ({"lr": float("inf")}, r"expected lr to be a finite number, received inf"),
    ],
)
def test_invalid_settings_are_named(changes, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().merged(changes, "test")


def test_every_recipe_builds():
    for name in RECIPES:
        assert get_recipe(name).config().recipe == name
    with pytest.raises(
        ConfigError, match="unknown recipe 'mnist'; recipes: alexnet-cifar, cifar10-cnn"
    ):
        get_recipe("mnist")


def test_the_fast_resnets_differ_from_each_other_in_the_network_alone():
    r20, r56 = (get_recipe(f"resnet{d}-fast").config() for d in (20, 56))
    assert (r20.model, r56.model) == ("resnet20", "resnet56")
    assert dataclasses.replace(r56, model="resnet20", recipe="resnet20-fast") == r20
    paper = get_recipe("resnet56").config()  # the paper's data and test: all 50,000 train
    assert (r56.val_split, r56.keep, r56.augment) == (paper.val_split, paper.keep, paper.augment)
    assert "93.03%" in get_recipe("resnet56-fast").target


def test_atomic_writes_have_the_usual_permissions(tmp_path):
    import os

    import torch

    from convkit.fileio import write_json
    from convkit.train.checkpoint import save_weights

    write_json(tmp_path / "a.json", {"x": 1})
    save_weights(tmp_path / "w.safetensors", torch.nn.Linear(2, 2), epoch=1)
    mask = os.umask(0)
    os.umask(mask)
    for name in ("a.json", "w.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "w.safetensors"]
