"""SmallMapConv2d: the gathered-matmul weight gradient against PyTorch's own convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convkit.models.smallmap as smallmap
from convkit.models import create_model
from convkit.models.smallmap import SmallMapConv2d, weight_grad


def _pair(cin: int = 5, cout: int = 7) -> tuple[SmallMapConv2d, nn.Conv2d]:
    torch.manual_seed(0)
    ours = SmallMapConv2d(cin, cout, 3, padding=1)
    reference = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
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
def test_a_training_step_on_a_small_map_takes_the_gathered_way_with_pytorchs_gradients(
    monkeypatch, autocast
):
    calls = _counting(monkeypatch)
    ours, reference = _pair()
    x = torch.randn(8, 5, 4, 4).contiguous(memory_format=torch.channels_last)
    grads = []
    for conv in (ours, reference):
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = conv(xi)
        (out.float() * torch.arange(out.numel()).view_as(out).sin()).sum().backward()
        grads.append((out.detach().float(), xi.grad, conv.weight.grad))
    assert calls == [(8, 5, 4, 4)]
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else {}
    for a, b in zip(*grads, strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tol)


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
