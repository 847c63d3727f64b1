"""convkit's optimizers and schedules against torch.optim's, the oracle they replace: the same
parameters after the same gradients, the same rates, state dicts that travel both ways, and no
torch._dynamo import (the reason they exist)."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from convkit.errors import ConfigError
from convkit.train import checkpoint
from convkit.train.config import TrainConfig
from convkit.train.optim import (
    SGD,
    Adam,
    AdamW,
    BatchSchedule,
    KerasRMSprop,
    PlateauSchedule,
    build_optimizer,
    build_schedule,
    per_step,
)

# (ours, torch.optim's single-tensor reference), each given the parameters
CASES = {
    "adam": (
        lambda ps, **kw: Adam(ps, lr=1e-2, weight_decay=1e-2, **kw),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2, foreach=False),
    ),
    "adamw": (
        lambda ps, **kw: AdamW(ps, lr=1e-2, weight_decay=0.1, **kw),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1, foreach=False),
    ),
    "sgd-momentum": (
        lambda ps, **kw: SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3, **kw),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-3, foreach=False),
    ),
    "sgd-nesterov": (
        lambda ps, **kw: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, **kw),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, foreach=False),
    ),
    "sgd-plain": (
        lambda ps, **kw: SGD(ps, lr=0.05, weight_decay=1e-3, **kw),
        lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=1e-3, foreach=False),
    ),
    "rmsprop": (  # Keras's RMSprop is PyTorch's with rho (alpha) 0.9 and eps 1e-7
        lambda ps, **kw: KerasRMSprop(ps, lr=1e-2, weight_decay=1e-3, **kw),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.9, eps=1e-7, weight_decay=1e-3),
    ),
}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 6 * 6, 16), nn.ReLU(), nn.Linear(16, 4))


def conv() -> nn.Module:
    """A small CNN laid out channels_last: fused kernels walk memory, not indices."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.Flatten(), nn.Linear(4 * 2 * 2, 4)
    )
    return model.to(memory_format=torch.channels_last)


def twins(make) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    a = make()
    return a, copy.deepcopy(a)


def train(model: nn.Module, opt, steps: range, seed: int = 0) -> None:
    """Real backward passes; step `i` always draws the same batch."""
    for i in steps:
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randn(8, 3, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def lockstep(model, opt, ref_model, ref_opt, steps: int) -> None:
    """Both optimizers step on the same gradients (copied with their memory layout)."""
    for i in range(steps):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(8, 3, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 4, (8,), generator=g)
        opt.zero_grad(set_to_none=True)
        ref_opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
            q.grad = p.grad.clone()
        opt.step()
        ref_opt.step()


def assert_same_params(a: nn.Module, b: nn.Module, exact: bool = False) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        if exact:
            assert torch.equal(p, q)
        else:
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
@pytest.mark.parametrize("make", [mlp, conv], ids=["mlp", "conv-channels-last"])
@pytest.mark.parametrize("case", list(CASES))
def test_twenty_steps_match_torch_optim(case, make, fused):
    ours, reference = CASES[case]
    model, ref_model = twins(make)
    opt, ref_opt = ours(model.parameters(), fused=fused), reference(ref_model.parameters())
    lockstep(model, opt, ref_model, ref_opt, 20)
    assert_same_params(model, ref_model)
    moved = next(model.parameters()) - next(twins(make)[0].parameters())
    assert moved.abs().max() > 1e-3  # the comparison is not between two idle models
    for p, state in opt.state.items():
        for value in state.values():
            if value.shape == p.shape:  # moments laid out as their parameter
                assert value.stride() == p.stride()


@pytest.mark.parametrize("case", list(CASES))
def test_a_state_dict_round_trip_continues_exactly(case):
    ours, _ = CASES[case]
    whole, cut = twins(conv)
    whole_opt = ours(whole.parameters())
    train(whole, whole_opt, range(20))

    cut_opt = ours(cut.parameters())
    train(cut, cut_opt, range(10))
    saved = copy.deepcopy({"model": cut.state_dict(), "opt": cut_opt.state_dict()})
    torch.manual_seed(1)
    again = conv()  # fresh parameters and a fresh optimizer, as a resumed process has
    again.load_state_dict(saved["model"])
    again_opt = ours(again.parameters())
    again_opt.param_groups[0]["lr"] *= 7  # the saved rate must win
    again_opt.load_state_dict(saved["opt"])
    train(again, again_opt, range(10, 20))
    assert_same_params(again, whole, exact=True)


def test_the_state_dict_has_torch_optims_format_and_torch_can_load_it():
    model, ref_model = twins(mlp)
    opt = Adam(model.parameters(), lr=1e-2)
    ref = torch.optim.Adam(ref_model.parameters(), lr=1e-2, fused=True)
    lockstep(model, opt, ref_model, ref, 3)
    ours, theirs = opt.state_dict(), ref.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()
    for i, state in ours["state"].items():
        assert state.keys() == theirs["state"][i].keys()
        for name, value in state.items():
            assert value.dtype == theirs["state"][i][name].dtype
            torch.testing.assert_close(value, theirs["state"][i][name], rtol=1e-5, atol=1e-7)
    torch_again = torch.optim.Adam(copy.deepcopy(model).parameters(), lr=1.0)
    torch_again.load_state_dict(copy.deepcopy(ours))
    assert torch_again.param_groups[0]["lr"] == 1e-2


class TorchKerasRMSprop(torch.optim.Adam):
    """convkit's KerasRMSprop as it was, on torch.optim.Adam: older run folders hold its state."""

    def __init__(self, params, lr: float, rho: float = 0.9, eps: float = 1e-7, **kwargs) -> None:
        super().__init__(params, lr=lr, betas=(0.0, rho), eps=eps, **kwargs)

    def step(self, *args, **kwargs):
        saved = []
        for group in self.param_groups:
            state = self.state.get(group["params"][0], {})
            c = math.sqrt(1.0 - group["betas"][1] ** (float(state.get("step", 0)) + 1))
            saved.append((group["lr"], group["eps"]))
            group["lr"], group["eps"] = group["lr"] / c, group["eps"] / c
        try:
            return super().step(*args, **kwargs)
        finally:
            for group, (lr, eps) in zip(self.param_groups, saved, strict=True):
                group["lr"], group["eps"] = lr, eps


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda ps: Adam(ps, lr=5e-3, fused=True),
            lambda ps: torch.optim.Adam(ps, lr=5e-3, fused=True),
        ),
        (
            lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4, fused=True),
        ),
        (
            lambda ps: KerasRMSprop(ps, lr=1e-3, fused=True),
            lambda ps: TorchKerasRMSprop(ps, lr=1e-3, fused=True),
        ),
    ],
    ids=["adam", "sgd", "rmsprop"],
)
def test_a_run_folder_written_with_torch_optim_resumes(tmp_path, ours, theirs):
    # The training state as convkit wrote it with torch.optim and a LambdaLR (whose
    # initial_lr lands in the param groups), through the real checkpoint code.
    torch.manual_seed(0)
    old, whole = twins(conv)
    old_opt, whole_opt = theirs(old.parameters()), theirs(whole.parameters())
    old_sched = torch.optim.lr_scheduler.LambdaLR(old_opt, lambda step: 0.9**step)
    whole_sched = torch.optim.lr_scheduler.LambdaLR(whole_opt, lambda step: 0.9**step)
    for i in range(8):
        train(old, old_opt, range(i, i + 1)), old_sched.step()
    meta = dict(config={}, epoch=1, best={}, since_best=0, train_seconds=0.0)
    checkpoint.save_training_state(tmp_path / "last.safetensors", old, old_opt, {}, **meta)

    torch.manual_seed(5)
    new = conv()
    new_opt = ours(new.parameters())
    new_sched = BatchSchedule(new_opt, lambda lr, step: lr * 0.9**step)
    checkpoint.restore_training_state(tmp_path / "last.safetensors", new, new_opt, {})
    new_sched.load_state_dict(old_sched.state_dict())
    for i in range(16):
        train(whole, whole_opt, range(i, i + 1)), whole_sched.step()
        if i >= 8:
            train(new, new_opt, range(i, i + 1)), new_sched.step()
            assert new_opt.param_groups[0]["lr"] == whole_opt.param_groups[0]["lr"]
    assert_same_params(new, whole)


def test_a_state_dict_for_another_algorithm_is_refused():
    params = list(mlp().parameters())
    amsgrad = torch.optim.Adam(params, amsgrad=True)
    with pytest.raises(ValueError, match="amsgrad=False, received a state dict with amsgrad=True"):
        Adam(params).load_state_dict(amsgrad.state_dict())
    with pytest.raises(ValueError, match="decoupled_weight_decay=False"):
        Adam(params).load_state_dict(AdamW(params).state_dict())
    adam = Adam(params)
    adam.zero_grad()
    for p in params:
        p.grad = torch.ones_like(p)
    adam.step()
    with pytest.raises(ValueError, match="expected SGD state momentum_buffer"):
        SGD(params, momentum=0.9).load_state_dict(adam.state_dict())
    with pytest.raises(
        ValueError, match="expected 1 parameter groups, received a state dict with 2"
    ):
        Adam(params).load_state_dict(
            Adam([{"params": params[:1]}, {"params": params[1:]}]).state_dict()
        )


@pytest.mark.parametrize("case", ["adam", "sgd-momentum"])
def test_grad_scaler_steps_and_skips_as_with_torch_fused(case):
    """torch.amp.GradScaler hands fused kernels its scale; a step with an inf is skipped."""
    ours, _ = CASES[case]
    theirs = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2, fused=True),
        "sgd-momentum": lambda ps: torch.optim.SGD(
            ps, lr=0.05, momentum=0.9, weight_decay=1e-3, fused=True
        ),
    }[case]
    model, ref_model = twins(mlp)
    runs = [
        (model, ours(model.parameters(), fused=True)),
        (ref_model, theirs(ref_model.parameters())),
    ]
    scalers = [torch.amp.GradScaler("cpu", init_scale=1024.0) for _ in runs]
    for i in range(6):
        x = torch.randn(8, 3, 6, 6, generator=torch.Generator().manual_seed(i))
        if i == 2:
            x[0, 0, 0, 0] = math.inf
        for (m, opt), scaler in zip(runs, scalers, strict=True):
            opt.zero_grad()
            scaler.scale(m(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
    assert [s.get_scale() for s in scalers] == [512.0, 512.0]
    assert_same_params(model, ref_model, exact=True)


def test_build_optimizer_builds_each_config_optimizer_fused_on_the_cpu():
    params = list(mlp().parameters())
    kinds = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": KerasRMSprop}
    for name, kind in kinds.items():
        opt = build_optimizer(TrainConfig(optimizer=name, weight_decay=1e-3), params)
        assert type(opt) is kind and opt.param_groups[0]["fused"] is True, name
        assert opt.param_groups[0]["weight_decay"] == 1e-3
    assert (
        build_optimizer(TrainConfig(optimizer="sgd", momentum=0.8), params).defaults["momentum"]
        == 0.8
    )
    mps = build_optimizer(TrainConfig(), params, torch.device("mps"))  # foreach elsewhere
    assert mps.param_groups[0]["fused"] is False and not mps._step_supports_amp_scaling


# ---- schedules ----------------------------------------------------------------------------------


def rates(opt, schedule, steps: int) -> list[float]:
    out = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        schedule.step()
        out.append(opt.param_groups[0]["lr"])
    return out


def schedule(name: str, epochs: int = 3, steps_per_epoch: int = 7):
    opt = Adam(mlp().parameters(), lr=0.1)
    return opt, build_schedule(TrainConfig(schedule=name, epochs=epochs), opt, steps_per_epoch)


def torch_rates(make, steps: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    return rates(opt, make(opt), steps)


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_cosine_step_and_linear_rates_are_torch_schedulers_rates():
    total = 21  # 3 epochs of 7 batches
    cosine = lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))  # noqa: E731
    linear = lambda step: 1.0 - min(step, total) / total  # noqa: E731
    expected = {
        "cosine": torch_rates(lambda o: torch.optim.lr_scheduler.LambdaLR(o, cosine), 25),
        "linear": torch_rates(lambda o: torch.optim.lr_scheduler.LambdaLR(o, linear), 25),
        "step": torch_rates(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [10, 15], 0.1), 25),
    }
    for name, want in expected.items():
        opt, sched = schedule(name)
        assert per_step(sched) is sched
        assert rates(opt, sched, 25) == want, name  # the same floats, not merely close
    # Two batches in all: both milestones at 1, where MultiStepLR multiplies by 0.1**2 at once.
    opt, sched = schedule("step", epochs=1, steps_per_epoch=2)
    step2 = torch_rates(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [1, 1], 0.1), 3)
    assert rates(opt, sched, 3) == step2
    opt, sched = schedule("linear")
    got = rates(opt, sched, 25)
    assert got[0] == 0.1 and got[20] > 0 and got[21:] == [0.0] * 5  # 0 after the last batch
    assert sorted(got, reverse=True) == got


@pytest.mark.filterwarnings("ignore:Detected call of")
def test_a_per_batch_schedule_resumes_from_its_own_or_torchs_state():
    opt, sched = schedule("step")
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, [10, 15], 0.1)
    rates(opt, sched, 12), rates(ref_opt, ref, 12)
    states = copy.deepcopy([sched.state_dict(), ref.state_dict()])
    want = rates(ref_opt, ref, 10)
    for state in states:
        again_opt, again = schedule("step")
        again.load_state_dict(state)
        assert rates(again_opt, again, 10) == want
    # More epochs on resume stretch the schedule: the rate is where the longer one would be.
    longer_opt, longer = schedule("cosine", epochs=6)
    longer.load_state_dict(schedule("cosine")[1].state_dict() | {"last_epoch": 21})
    assert longer_opt.param_groups[0]["lr"] == pytest.approx(0.05)  # half way through 42


def test_plateau_is_torch_reduce_lr_on_plateau_step_for_step():
    metrics = [1.0, 0.9, 0.9, 0.89995, 0.9, 0.95, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6,
               0.49, math.nan, 0.5, 0.5, 0.5, 0.5]  # fmt: skip
    opt, sched = schedule("plateau")
    assert per_step(sched) is None and isinstance(sched, PlateauSchedule)
    ref_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, factor=0.5, patience=2)
    got, want = [], []
    for i, metric in enumerate(metrics):
        sched.step(metric), ref.step(metric)
        got.append(opt.param_groups[0]["lr"]), want.append(ref_opt.param_groups[0]["lr"])
        if i == 8:  # resume from torch's state, as an old run folder holds it
            opt2, sched2 = schedule("plateau")
            sched2.load_state_dict(copy.deepcopy(ref.state_dict()))
            opt2.param_groups[0]["lr"] = ref_opt.param_groups[0]["lr"]  # the optimizer's part
    assert got == want and len(set(got)) >= 4  # it halved at least three times
    for metric in metrics[9:]:
        sched2.step(metric)
    assert opt2.param_groups[0]["lr"] == want[-1]
    assert sched2.state_dict() == {k: ref.state_dict()[k] for k in sched2.state_dict()}


# ---- start-up -----------------------------------------------------------------------------------

_NO_DYNAMO = """
import sys
import torch
from convkit.train.config import TrainConfig
from convkit.train.optim import build_optimizer, build_schedule
model = torch.nn.Linear(4, 3)
for name, schedule in [("adam", "cosine"), ("adamw", "linear"), ("sgd", "step"),
                       ("rmsprop", "plateau")]:
    cfg = TrainConfig(optimizer=name, schedule=schedule)
    opt = build_optimizer(cfg, model.parameters())
    sched = build_schedule(cfg, opt, 10)
    opt.zero_grad(set_to_none=True)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched.step(1.0) if schedule == "plateau" else sched.step()
    opt.load_state_dict(opt.state_dict())
    sched.load_state_dict(sched.state_dict())
print("torch._dynamo" in sys.modules)
"""


def test_optimizers_and_schedules_never_import_torch_dynamo():
    out = subprocess.run(
        [sys.executable, "-c", _NO_DYNAMO], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_warmup_rises_in_a_straight_line_then_follows_the_schedule_over_the_rest():
    opt = Adam(mlp().parameters(), lr=0.1)
    cfg = TrainConfig(schedule="linear", epochs=4, warmup_epochs=1)
    got = rates(opt, build_schedule(cfg, opt, 5), 22)  # 20 steps, then two past the end
    assert got[:6] == pytest.approx([0.0, 0.02, 0.04, 0.06, 0.08, 0.1])
    assert got[5:21] == pytest.approx([0.1 * (1 - k / 15) for k in range(16)])
    assert got[21:] == pytest.approx([0.0, 0.0])
    opt = Adam(mlp().parameters(), lr=0.1)
    cfg = TrainConfig(schedule="cosine", epochs=3, warmup_epochs=1)
    got = rates(opt, build_schedule(cfg, opt, 4), 12)
    assert got[2] == pytest.approx(0.05)
    assert got[4:13] == pytest.approx(
        [0.1 * 0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(9)]
    )


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(schedule="step", warmup_epochs=1), "cosine or linear"),
        (dict(schedule="linear", epochs=3, warmup_epochs=3), "warmup_epochs < epochs"),
        (dict(schedule="linear", warmup_epochs=-1), "warmup_epochs >= 0"),
    ],
)
def test_warmup_refuses_what_it_cannot_do(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)
