"""Conv arithmetic checked against oracles: the shapes PyTorch produces, a brute-force receptive
field (which input pixels change an output), and PyTorch's own FLOP counter."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from convkit.cli import main
from convkit.inspect.arithmetic import explain
from convkit.models import create_model, list_models, model_info
from convkit.models.layers import Conv2D, MaxPool, keras_sequential

padding = st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2))
conv = st.builds(
    lambda k, s, p, d, c: ("conv", k, s, p, d, c),
    st.integers(1, 5),
    st.integers(1, 3),
    padding,
    st.integers(1, 2),
    st.integers(1, 3),
)
pool = st.builds(
    lambda k, s, p: ("pool", k, s, p, 1, None),
    st.integers(1, 3),
    st.one_of(st.none(), st.integers(1, 3)),
    st.sampled_from(["same", "valid"]),
)
stacks = st.lists(st.one_of(conv, pool), min_size=1, max_size=4)


def build(stack, in_channels: int) -> nn.Module:
    layers, c = [], in_channels
    for kind, k, s, p, d, out in stack:
        if kind == "conv":
            layers.append(Conv2D(c, out, k, s, p, activation="relu", dilation=d))
            c = out
        else:
            layers.append(MaxPool(k, s, p))
    return keras_sequential(layers)


def runs(model: nn.Module, shape) -> bool:
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
        return True
    except RuntimeError:  # input too small for some window: not a case to check
        return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks, h=st.integers(1, 24), w=st.integers(1, 24), c=st.integers(1, 3))
def test_formula_predicts_the_shapes_pytorch_produces(stack, h, w, c):
    model = build(stack, c)
    assume(runs(model, (c, h, w)))
    for row in explain(model, (c, h, w)).layers:
        predicted = [int(re.search(r"= (\d+)$", f).group(1)) for f in row.formula]
        assert predicted == list(row.output_shape[1:]), (row, stack)
        if row.padding is not None and "same" in str(stack):
            pass
    # Keras's 'same': the output is ceil(input / stride), whatever the kernel.
    for layer, row in zip(model, explain(model, (c, h, w)).layers, strict=True):
        if layer.pad_mode == "same":
            assert list(row.output_shape[1:]) == [
                math.ceil(n / s) for n, s in zip(row.input_shape[1:], row.stride, strict=True)
            ]


def influencing_pixels(model: nn.Module, shape):
    """Brute force: for each output position, the (rows, cols) of input pixels that change it."""
    c, h, w = shape
    model = model.double().eval()
    for p in model.parameters():  # all-positive weights: a positive pixel always propagates
        nn.init.ones_(p) if p.ndim > 1 else nn.init.zeros_(p)
    with torch.no_grad():
        base = model(torch.zeros(1, c, h, w, dtype=torch.float64))
        pokes = torch.zeros(h * w, c, h, w, dtype=torch.float64)
        pokes.view(h * w, c, h * w)[torch.arange(h * w), :, torch.arange(h * w)] = 1.0
        changed = (model(pokes) - base).abs().sum(1) > 0  # (pixel, oh, ow)
    for oi in range(changed.shape[1]):
        for oj in range(changed.shape[2]):
            pixels = changed[:, oi, oj].nonzero().flatten()
            yield (oi, oj), set((pixels // w).tolist()), set((pixels % w).tolist())


def check_window(found: tuple[set[int], set[int]], window, image: tuple[int, int]) -> None:
    """Influencing pixels lie inside the window; when the whole (2-D) window lies inside the
    image, its first and last rows and columns are hit (the chained first and last taps)."""
    inside = all(0 <= lo and hi <= n - 1 for (lo, hi), n in zip(window, image, strict=True))
    for pixels, (lo, hi) in zip(found, window, strict=True):
        assert all(lo <= x <= hi for x in pixels), (sorted(pixels), lo, hi)
        if inside:
            assert min(pixels) == lo and max(pixels) == hi, (sorted(pixels), lo, hi)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack=stacks, h=st.integers(1, 16), w=st.integers(1, 16))
def test_receptive_field_matches_brute_force(stack, h, w):
    model = build(stack, 1)
    assume(runs(model, (1, h, w)))
    last = explain(model, (1, h, w)).layers[-1]
    (rh, rw), (jh, jw), (sh, sw) = last.receptive_field, last.jump, last.start
    for (oi, oj), rows, cols in influencing_pixels(model, (1, h, w)):
        window = ((sh + oi * jh, sh + oi * jh + rh - 1), (sw + oj * jw, sw + oj * jw + rw - 1))
        check_window((rows, cols), window, (h, w))


def test_receptive_field_of_a_plain_stack_is_every_pixel_of_the_window():
    # No dilation, stride <= kernel, window inside the image: the field is solid.
    model = build(
        [
            ("conv", 3, 1, "valid", 1, 2),
            ("pool", 2, 2, "valid", 1, None),
            ("conv", 3, 1, "valid", 1, 2),
        ],
        1,
    )
    last = explain(model, (1, 16, 16)).layers[-1]
    assert (last.receptive_field, last.jump, last.start) == ((8, 8), (2, 2), (0, 0))
    for (oi, oj), rows, cols in influencing_pixels(model, (1, 16, 16)):
        assert rows == set(range(2 * oi, 2 * oi + 8)) and cols == set(range(2 * oj, 2 * oj + 8))


@pytest.mark.parametrize("name", list_models())
def test_macs_match_pytorch_flop_counter(name):
    info = model_info(name)
    with torch.device("meta"):
        model = create_model(name).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *info.input_shape, device="meta"))
    assert 2 * explain(model, info.input_shape).total_macs == counter.get_total_flops()


def test_lecture_cnn_numbers():
    a = explain(create_model("cifar10-cnn"), (3, 32, 32), "cifar10-cnn")
    convs_pools = [r for r in a.layers if r.kernel is not None]
    assert [r.receptive_field[0] for r in convs_pools] == [2, 3, 5, 7, 11, 15]
    assert [r.jump[0] for r in convs_pools] == [1, 2, 2, 4, 4, 8]
    first = a.layers[0]
    assert first.padding == (0, 1, 0, 1)  # Keras: the extra pixel at the bottom and right
    assert first.formula[0] == "floor((32 + 0 + 1 - 2) / 1) + 1 = 32"
    assert first.macs == 16 * 32 * 32 * 3 * 2 * 2
    assert a.total_params == 528_054
    flat = next(r for r in a.layers if r.type == "Flatten")
    assert flat.receptive_field == (32, 32) and flat.jump is None


def test_cli_explain_json(capsys):
    assert main(["explain", "cifar10-cnn", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    first = out["layers"][0]
    assert {
        "name",
        "input_shape",
        "output_shape",
        "params",
        "macs",
        "receptive_field",
        "jump",
    } <= first.keys()
    assert first["input_shape"] == [3, 32, 32] and first["output_shape"] == [16, 32, 32]
    assert first["padding"] == {"top": 0, "bottom": 1, "left": 0, "right": 1}
    assert out["total_params"] == 528_054 and out["total_macs"] == 1_762_184


def test_cli_explain_single_layers(capsys):
    args = [
        "explain",
        "conv",
        "--input-shape",
        "3,32,32",
        "--filters",
        "16",
        "--kernel",
        "2",
        "--stride",
        "1",
        "--padding",
        "same",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "floor((32 + 0 + 1 - 2) / 1) + 1 = 32" in text and "208" in text
    assert (
        main(
            [
                "explain",
                "pool",
                "--input-shape",
                "16,5,5",
                "--kernel",
                "2",
                "--stride",
                "2",
                "--padding",
                "same",
                "--json",
            ]
        )
        == 0
    )
    row = json.loads(capsys.readouterr().out)["layers"][0]
    assert row["output_shape"] == [16, 3, 3] and row["padding"]["bottom"] == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["conv", "--input-shape", "3,32,32", "--kernel", "0"],
            "expected kernel_size >= 1, received kernel_size=0",
        ),
        (["conv", "--input-shape", "3,32,32", "--padding", "full"], "received padding='full'"),
        (
            ["conv", "--input-shape", "3,32,32", "--stride", "0"],
            "expected strides >= 1, received strides=0",
        ),
        (["conv"], "needs --input-shape"),
        (["mnist-mlp", "--input-shape", "1,0,28"], "expected C,H,W as three positive integers"),
        (["cifar10-cnn", "--input-shape", "3,4,4"], "cannot take input shape (C,H,W)=(3,4,4)"),
        (
            ["alexnet", "--input-shape", "3,28,28"],
            "model alexnet cannot take input shape (C,H,W)=(3,28,28)",
        ),
    ],
)
def test_cli_explain_errors(capsys, args, message):
    try:
        code = main(["explain", *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "build_layer,message",
    [
        (lambda: Conv2D(3, 0, 2), "expected filters >= 1, received filters=0"),
        (lambda: Conv2D(3, 8, (2, 0)), "expected kernel_size >= 1, received kernel_size=0"),
        (lambda: Conv2D(3, 8, 2, padding=-1), "expected padding >= 0, received padding=-1"),
        (lambda: Conv2D(3, 8, 2, activation="gelu"), "received activation='gelu'"),
        (lambda: MaxPool(0), "expected pool_size >= 1, received pool_size=0"),
        (
            lambda: MaxPool(2, padding="full"),
            "expected padding 'same' or 'valid', received padding='full'",
        ),
    ],
)
def test_layers_validate(build_layer, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build_layer()


def test_global_average_pooling_sees_the_whole_image():
    from convkit.models.layers import Dense, GlobalAvgPool

    model = keras_sequential(
        [
            Conv2D(3, 8, 3, padding="same", activation="relu"),
            MaxPool(2),
            GlobalAvgPool(),
            Dense(8, 10),
        ]
    )
    out = model(torch.rand(2, 3, 20, 12))
    assert out.shape == (2, 10)
    rows = explain(model, (3, 20, 12)).layers
    assert [r.type for r in rows] == ["Conv2D", "MaxPool", "GlobalAvgPool", "Dense"]
    assert rows[1].receptive_field == (4, 4) and rows[1].jump == (2, 2)
    assert rows[2].output_shape == (8,) and rows[2].receptive_field == (20, 12)
    assert rows[2].jump is None and rows[3].macs == 80


@pytest.mark.parametrize("name", ["resnet20", "resnet18-cifar"])  # option-A and 1x1-conv shortcuts
def test_receptive_field_of_residual_networks_matches_brute_force(name):
    net = create_model(name)
    # through the first block that downsamples, whose shortcut must not extend the chain
    trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.layer1, net.layer2[0])
    rows = explain(trunk, (3, 16, 16)).layers
    assert any("downsample" in r.name for r in rows)
    last = rows[-1]
    (rh, rw), (jh, jw), (sh, sw) = last.receptive_field, last.jump, last.start
    assert last.jump == (2, 2)
    for (oi, oj), rs, cs in influencing_pixels(trunk, (3, 16, 16)):
        window = ((sh + oi * jh, sh + oi * jh + rh - 1), (sw + oj * jw, sw + oj * jw + rw - 1))
        check_window((rs, cs), window, (16, 16))


def test_adaptive_pooling_to_one_is_global():
    rows = {r.name: r for r in explain(create_model("resnet20"), (3, 32, 32)).layers}
    assert rows["avgpool"].receptive_field == (32, 32) and rows["avgpool"].jump is None
    assert rows["fc"].receptive_field == (32, 32)
    assert rows["layer3.2.conv2"].jump == (4, 4)
