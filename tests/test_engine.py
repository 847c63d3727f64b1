"""The fast path's parts, each against the plain PyTorch it replaces."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from convkit.errors import ConfigError
from convkit.models import create_model
from convkit.models.layers import Dropout
from convkit.train import engine
from convkit.train.config import TrainConfig
from convkit.train.optim import KerasRMSprop, build_optimizer


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_rmsprop_on_the_fused_adam_kernel_is_keras_rmsprop(weight_decay):
    torch.manual_seed(0)
    shapes = [(7, 5), (5,), (3, 2, 2, 2)]
    ours = [torch.randn(s, requires_grad=True) for s in shapes]
    ref = [p.detach().clone().requires_grad_() for p in ours]
    opt = KerasRMSprop(ours, lr=1e-2, weight_decay=weight_decay, fused=True)
    # Keras's RMSprop is PyTorch's with rho (alpha) 0.9 and eps 1e-7.
    ref_opt = torch.optim.RMSprop(ref, lr=1e-2, alpha=0.9, eps=1e-7, weight_decay=weight_decay)
    for step in range(1, 31):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(ours, ref, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step(), ref_opt.step()
        if step % 5 == 0:  # a changing rate (as torch's StepLR(5, 0.5))
            for group in (*opt.param_groups, *ref_opt.param_groups):
                group["lr"] *= 0.5
    for p, q in zip(ours, ref, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**6)  # RMSprop's rate, kept
    assert opt.param_groups[0]["eps"] == 1e-7


def test_optimizers_are_fused_on_the_cpu():
    params = list(create_model("mnist-mlp", num_classes=10).parameters())
    for name in ("adam", "adamw", "sgd", "rmsprop"):
        opt = build_optimizer(TrainConfig(optimizer=name), params)
        assert opt.defaults["fused"] is True, name


def test_fast_dropout_keeps_the_rate_and_the_mean():
    torch.manual_seed(0)
    layer = Dropout(0.3)
    x = torch.ones(400, 1000)
    y = layer(x)
    kept = (y != 0).float().mean().item()
    assert kept == pytest.approx(0.7, abs=0.003)  # 400k draws: 4 standard errors is 0.003
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    # Columns and rows are masked independently (no repeating pattern from the bit reuse).
    assert (y != 0).float().mean(0).std().item() == pytest.approx((0.21 / 400) ** 0.5, rel=0.2)
    layer.eval()
    assert layer(x) is x


def test_fast_dropout_gradient_is_the_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = Dropout(0.5)(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * 2.0)


def test_precision_and_device_resolution(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(engine, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert engine.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(engine, "cpu_flags", lambda: frozenset({"avx2"}))
    assert engine.resolve_precision("auto", cpu) == "fp32"
    assert engine.resolve_precision("bf16", cpu) == "bf16"  # asked for: allowed, emulated
    with pytest.raises(ConfigError, match="fp16 on the CPU"):
        engine.resolve_precision("fp16", cpu)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert engine.resolve_device("auto") == cpu
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        engine.resolve_device("cuda")


def test_engine_lays_out_conv_models_channels_last():
    conv = engine.resolve_engine("cpu", "fp32", "auto", "off", create_model("lenet5"))
    mlp = engine.resolve_engine("cpu", "fp32", "auto", "off", create_model("mnist-mlp"))
    assert conv.channels_last and not mlp.channels_last
    model, step = conv.prepare(create_model("lenet5"))
    assert step is model
    weight = next(p for p in model.parameters() if p.ndim == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert conv.describe()["precision"] == "fp32" and conv.describe()["world_size"] == 1


FAULTS = """
import resource, sys, torch
from convkit.train.engine import keep_freed_memory
kept = keep_freed_memory()  # CONVKIT_MALLOC=system: False, glibc's defaults stay
for _ in range(10):  # the heap grows to its working size (faulting its pages in once)
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # a training step's pattern: the same large buffers, again and again
    torch.empty(64 << 20, dtype=torch.uint8).fill_(1)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is Linux's")
def test_kept_freed_memory_is_reused_without_faulting_its_pages_in_again():
    def faults(mode: str) -> tuple[str, int]:
        env = {k: v for k, v in os.environ.items() if k != "CONVKIT_MALLOC"}
        env |= {"CONVKIT_MALLOC": "system"} if mode == "system" else {}
        out = subprocess.run(
            [sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env
        )
        assert out.returncode == 0, out.stderr
        kept, count = out.stdout.split()
        return kept, int(count)

    pages = (64 << 20) // 4096  # one buffer, in 4 KiB pages
    kept, with_keep = faults("keep")
    not_kept, without = faults("system")
    assert kept == "True" and with_keep < pages  # reused: not even one buffer's pages again
    assert not_kept == "False"
    assert without > 5 * pages  # glibc's default: each buffer faulted in anew
