"""The summary table as data, printed, and as JSON; checked against the lecture and sum(numel)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from convkit.cli import main
from convkit.errors import ConfigError
from convkit.inspect import format_summary, summarize
from convkit.models import create_model, list_models, model_info

LECTURE_ROWS = [  # the lecture's Keras summary of the 512-512-10 MLP
    ("flatten_1", "Flatten", (784,), 0),
    ("dense_1", "Dense", (512,), 401_920),
    ("dropout_1", "Dropout", (512,), 0),
    ("dense_2", "Dense", (512,), 262_656),
    ("dropout_2", "Dropout", (512,), 0),
    ("dense_3", "Dense", (10,), 5_130),
]


def test_mnist_mlp_matches_the_lecture():
    s = summarize(create_model("mnist-mlp"), (1, 28, 28), "mnist-mlp")
    assert [(r.name, r.type, r.output_shape, r.params) for r in s.layers] == LECTURE_ROWS
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (669_706, 669_706, 0)
    text = "\n".join(format_summary(s))
    assert "dense_1 (Dense)" in text and "(None, 512)" in text and "401,920" in text
    assert "Total params: 669,706" in text and "Non-trainable params: 0" in text


@pytest.mark.parametrize("name", list_models())
def test_totals_equal_sum_of_numel(name):
    with torch.device("meta"):
        model = create_model(name)
    s = summarize(model, model_info(name).input_shape, name)
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert sum(r.params for r in s.layers) == s.total_params


def test_frozen_parameters_are_non_trainable():
    model = create_model("mnist-mlp")
    model.dense_1.requires_grad_(False)
    s = summarize(model, (1, 28, 28))
    assert (s.trainable_params, s.non_trainable_params) == (669_706 - 401_920, 401_920)


def test_wrong_input_shape_is_a_clear_error():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ConfigError, match=r"cannot take input shape \(C,H,W\)=\(3,32,32\)"):
        summarize(model, (3, 32, 32), "tiny")


def test_summary_leaves_model_mode_alone():
    model = create_model("mnist-mlp").train()
    summarize(model, (1, 28, 28))
    assert model.training and all(not p.grad_fn for p in model.parameters())
    assert torch.is_grad_enabled()


def test_cli_json(capsys):
    assert main(["summary", "mnist-mlp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_params"] == 669_706 and out["trainable_params"] == 669_706
    assert out["non_trainable_params"] == 0
    assert out["layers"][1] == {
        "name": "dense_1",
        "type": "Dense",
        "output_shape": [512],
        "params": 401_920,
        "trainable": 401_920,
    }


def test_cli_input_shape(capsys):
    assert main(["summary", "mnist-mlp", "--input-shape", "3,32,32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layers"][0]["output_shape"] == [3072]


def test_cli_bad_input_shape(capsys):
    with pytest.raises(SystemExit):
        main(["summary", "mnist-mlp", "--input-shape", "3,32"])
    assert "expected C,H,W as three positive integers, received '3,32'" in capsys.readouterr().err
