"""SmallMapConv2d: the gathered-matmul weight gradient against PyTorch's own convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convkit.models.smallmap as smallmap
from convkit.models import create_model
from convkit.models.smallmap import SmallMapConv2d, weight_grad


def _pair(cin: int = 5, cout: int = 7, padding: int = 1) -> tuple[SmallMapConv2d, nn.Conv2d]:
    torch.manual_seed(0)
    ours = SmallMapConv2d(cin, cout, 3, padding=padding)
    reference = nn.Conv2d(cin, cout, 3, padding=padding, bias=False)
    reference.load_state_dict(ours.state_dict())
    return ours, reference


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    real = smallmap.weight_grad

    def counted(grad, x, kernel, padding):
        calls.append(tuple(x.shape))
        return real(grad, x, kernel, padding)

    monkeypatch.setattr(smallmap, "weight_grad", counted)
    return calls


@pytest.mark.parametrize("kernel,padding", [(3, 1), (3, 0), (1, 0), (5, 2)])
def test_weight_grad_matches_pytorchs_convolution_weight_gradient(kernel, padding):
    torch.manual_seed(1)
    x = torch.randn(6, 4, 5, 6, dtype=torch.float64)
    w = torch.randn(3, 4, kernel, kernel, dtype=torch.float64)
    out = F.conv2d(x, w, padding=padding)
    grad = torch.randn_like(out)
    expected = torch.nn.grad.conv2d_weight(x, w.shape, grad, padding=padding)
    torch.testing.assert_close(weight_grad(grad, x, kernel, padding), expected)
    # channels_last tensors, as the engine trains with, give the same numbers
    cl = torch.channels_last
    got = weight_grad(
        grad.contiguous(memory_format=cl), x.contiguous(memory_format=cl), kernel, padding
    )
    torch.testing.assert_close(got, expected)


def test_weight_grad_sums_chunks_of_images_to_the_same_result(monkeypatch):
    torch.manual_seed(2)
    x = torch.randn(9, 3, 4, 4)
    w = torch.randn(2, 3, 3, 3)
    grad = torch.randn_like(F.conv2d(x, w, padding=1))
    whole = weight_grad(grad, x, 3, 1)
    per_image = 4 * 4 * 9 * 3 * x.element_size()
    monkeypatch.setattr(smallmap, "GATHER_BYTES", 2 * per_image)  # 5 chunks: 2, 2, 2, 2, 1
    torch.testing.assert_close(weight_grad(grad, x, 3, 1), whole)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize(
    "batch,padding,size,input_grad",
    [(8, 1, (3, 3), True), (1, 1, (2, 4), True), (3, 0, (4, 5), True), (4, 1, (3, 3), False)],
)
def test_a_training_step_on_a_small_map_takes_the_gathered_way_with_pytorchs_gradients(
    monkeypatch, autocast, batch, padding, size, input_grad
):
    calls = _counting(monkeypatch)
    ours, reference = _pair(padding=padding)
    x = torch.randn(batch, 5, *size).contiguous(memory_format=torch.channels_last)
    results = []
    for conv in (ours, reference):
        xi = x.clone().requires_grad_(input_grad)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = conv(xi)
        (out.float() * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        results.append((out.detach().float(), xi.grad, conv.weight.grad))
    assert calls == [tuple(x.shape)]
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else {}
    for a, b in zip(*results, strict=True):
        if b is None:  # the input's gradient when it needs none
            assert a is None
            continue
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


def test_weight_grad_in_bf16_and_in_chunks_stays_within_bf16s_rounding(monkeypatch):
    torch.manual_seed(3)
    x = torch.randn(64, 8, 3, 3)
    w = torch.randn(4, 8, 3, 3)
    grad = torch.randn_like(F.conv2d(x, w, padding=1))
    exact = torch.nn.grad.conv2d_weight(x.double(), w.shape, grad.double(), padding=1)
    monkeypatch.setattr(smallmap, "GATHER_BYTES", 3 * 3 * 9 * 8 * 2 * 8)  # 8 chunks of 8 images
    got = weight_grad(grad.bfloat16(), x.bfloat16(), 3, 1)
    assert got.dtype == torch.bfloat16
    # values about 24 apart (576 products a weight): bf16 rounds inputs and result to ~0.4%
    torch.testing.assert_close(got.double(), exact, rtol=3e-2, atol=0.3)


def test_the_gathered_bf16_gradient_rounds_no_worse_than_pytorchs_own():
    torch.manual_seed(4)
    cl = torch.channels_last
    x = torch.randn(64, 32, 3, 3).bfloat16().contiguous(memory_format=cl)
    w = torch.randn(16, 32, 3, 3).bfloat16().contiguous(memory_format=cl)
    grad = torch.randn(64, 16, 3, 3).bfloat16().contiguous(memory_format=cl)
    exact = torch.nn.grad.conv2d_weight(x.double(), w.shape, grad.double(), padding=1)
    pytorchs = torch.ops.aten.convolution_backward(
        grad, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False]
    )[1]

    def error(got: torch.Tensor) -> float:
        return ((got.double() - exact).norm() / exact.norm()).item()

    assert error(weight_grad(grad, x, 3, 1)) <= 1.1 * error(pytorchs)


def test_eval_mode_mismatched_dtypes_and_odd_shapes_are_pytorchs_business(monkeypatch):
    calls = _counting(monkeypatch)
    ours, reference = _pair()
    x = torch.randn(2, 5, 3, 3, requires_grad=True)
    ours.eval()  # Grad-CAM and saliency take gradients in eval mode
    ours(x).sum().backward()
    ours.train()
    with pytest.raises(RuntimeError):  # as nn.Conv2d: input and weight dtypes must agree
        reference(x.double())
    with pytest.raises(RuntimeError):
        ours(x.double())
    assert ours(torch.randn(0, 5, 3, 3)).shape == (0, 7, 3, 3)
    assert calls == []
    with pytest.raises(ValueError, match="kernel_size"):
        SmallMapConv2d(2, 3, (3, 1), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="padding"):
        SmallMapConv2d(2, 3, 3, "same")  # type: ignore[arg-type]


def test_large_maps_evaluation_and_frozen_weights_keep_pytorchs_own_convolution(monkeypatch):
    calls = _counting(monkeypatch)
    ours, reference = _pair()
    big = torch.randn(2, 5, 7, 7)  # 49 output positions > SMALL_MAP
    small = torch.randn(2, 5, 3, 3)
    ours(big.requires_grad_()).sum().backward()
    with torch.no_grad():
        torch.testing.assert_close(ours(small), reference(small))
    ours.weight.requires_grad_(False)
    ours(small.requires_grad_()).sum().backward()
    assert calls == []
    assert small.grad is not None


def test_cifar10_fast_trains_its_last_block_the_gathered_way(monkeypatch):
    calls = _counting(monkeypatch)
    model = create_model("cifar10-fast")
    assert sum(isinstance(m, SmallMapConv2d) for m in model.modules()) == 6
    x = torch.randn(4, 3, 32, 32)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2, 3])).backward()
    assert calls == [(4, 256, 3, 3)]  # only the last convolution's map (3 x 3) is small
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
