"""Optimizers and learning-rate schedules built from a TrainConfig, without torch.optim.

Every call into torch.optim (an Optimizer's constructor, `zero_grad`, `state_dict`, the functional
adam...) goes through a `torch._disable_dynamo` wrapper that imports torch._dynamo on first use:
about 1 s of start-up, a tenth of a 10-second training command. These classes call the kernels
torch.optim calls (`torch._fused_adam_`, `_fused_adamw_`, `_fused_sgd_`, or the same
`torch._foreach_*` arithmetic where no fused kernel is used), so they step as torch.optim does;
their state dicts have torch.optim's format, so run folders written with torch.optim resume.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch

from convkit.errors import ConfigError
from convkit.train.config import TrainConfig

FUSED_DEVICES = ("cpu", "cuda")  # where build_optimizer uses fused kernels (elsewhere: foreach)


class Optimizer:
    """What training, checkpoints and torch.amp.GradScaler use of a torch.optim.Optimizer:
    `param_groups` (dicts of "params" and hyper-parameters), `state` (parameter -> its state),
    `zero_grad`, `step`, `state_dict` and `load_state_dict`, in torch.optim's formats."""

    # Group keys a loaded state dict sets (the rest of a group says how to compute, which stays
    # this optimizer's: a run may resume on another device).
    hyper_parameters: tuple[str, ...] = ()
    # Flags torch.optim writes into each group that change the algorithm, with the only value
    # implemented here: a state dict that asks for another is refused, never run differently.
    algorithm: dict[str, Any] = {}
    state_keys: tuple[str, ...] = ()  # what each parameter's state holds once it has stepped

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        """`params`: tensors, or dicts of "params" and the hyper-parameters they change (groups).
        `defaults["fused"]` None: fused where every parameter is on a device that has the kernel."""
        params = list(params)
        if not params:
            raise ValueError("expected parameters to optimize, received an empty list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        groups = [{**g, "params": list(g["params"])} for g in groups]
        if defaults["fused"] is None:
            every = [p for g in groups for p in g["params"]]
            defaults["fused"] = all(p.device.type in FUSED_DEVICES for p in every)
        self.defaults = defaults
        self.param_groups = [{**defaults, **g} for g in groups]
        self.state: defaultdict[torch.Tensor, dict[str, Any]] = defaultdict(dict)
        for p in (p for g in self.param_groups if g["fused"] for p in g["params"]):
            if p.device.type not in FUSED_DEVICES or not p.is_floating_point():
                raise ValueError(
                    f"fused {type(self).__name__} needs floating-point parameters on "
                    f"{' or '.join(FUSED_DEVICES)}, received {p.dtype} on {p.device}"
                )
        # torch.amp.GradScaler hands fused kernels its scale and inf flag (attributes grad_scale
        # and found_inf) rather than unscaling first and waiting on the device for "no inf".
        self._step_supports_amp_scaling = all(g["fused"] for g in self.param_groups)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:  # as torch.optim: cut the gradient from any graph, then zero it
                    if p.grad.grad_fn is not None:
                        p.grad.detach_()
                    else:
                        p.grad.requires_grad_(False)
                    p.grad.zero_()

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        with torch.no_grad():
            for group in self.param_groups:
                params = [p for p in group["params"] if p.grad is not None]
                if params:
                    self._step_group(group, params)

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _amp(self, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(grad_scale, found_inf) on `device`, as torch.amp.GradScaler left them (or None)."""
        scale, inf = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
        return (
            None if scale is None else scale.to(device, non_blocking=True),
            None if inf is None else inf.to(device, non_blocking=True),
        )

    def state_dict(self) -> dict[str, Any]:
        """torch.optim's format: {"state": {index: {...}}, "param_groups": [{..., "params":
        [index, ...]}]}, parameters numbered in group order; tensors are the live state."""
        index: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            # torch.optim's own flags, as it writes them with fused=True or foreach=True
            foreach = None if group["fused"] else True
            packed |= {"foreach": foreach, "capturable": False, "differentiable": False}
            packed |= self.algorithm
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {index[id(p)]: s for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Continue from a state dict of this class or of torch.optim's same algorithm.

        Hyper-parameters come from the saved groups; tensors are copied in each parameter's
        device, dtype and memory layout (a fused kernel walks memory, so a channels_last
        parameter needs channels_last moments)."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"expected {len(self.param_groups)} parameter groups, "
                f"received a state dict with {len(saved_groups)}"
            )
        by_index: dict[int, tuple[torch.Tensor, dict[str, Any]]] = {}
        for group, saved in zip(self.param_groups, saved_groups, strict=True):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"expected a group of {len(group['params'])} parameters, received a state "
                    f"dict's group of {len(saved['params'])}"
                )
            for key, value in self.algorithm.items():
                if saved.get(key, value) != value:
                    raise ValueError(
                        f"{type(self).__name__} runs {key}={value!r}, received a state dict "
                        f"with {key}={saved[key]!r}"
                    )
            for key in self.hyper_parameters:
                if key in saved:
                    value = saved[key]
                    group[key] = tuple(value) if isinstance(value, list) else value  # betas
            by_index.update(
                (i, (p, group)) for i, p in zip(saved["params"], group["params"], strict=True)
            )
        self.state = defaultdict(dict)
        for idx, saved_state in state_dict["state"].items():
            if int(idx) not in by_index:  # int(): a JSON copy has string keys
                raise ValueError(f"state dict holds state for parameter {idx}, in no group")
            p, group = by_index[int(idx)]
            state = {k: v for k, v in saved_state.items() if v is not None}
            if not state:  # torch's SGD may keep momentum_buffer=None before its first step
                continue
            if sorted(state) != sorted(self.state_keys):
                raise ValueError(
                    f"expected {type(self).__name__} state {', '.join(self.state_keys)} for "
                    f"parameter {idx}, received {', '.join(state)}"
                )
            self.state[p] = {k: _copy_in(p, group, k, v) for k, v in state.items()}


def _new_step(p: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
    """A step count as torch.optim keeps it: fp32 on the parameter's device for the fused
    kernels, on the CPU otherwise (the bias corrections are then computed in Python)."""
    return torch.zeros((), dtype=torch.float32, device=p.device if group["fused"] else "cpu")


def _copy_in(p: torch.Tensor, group: dict[str, Any], key: str, value: Any) -> torch.Tensor:
    """A loaded state value as `p`'s state keeps it (a copy: loading never aliases the source)."""
    value = torch.as_tensor(value)
    if key == "step":
        return _new_step(p, group).copy_(value)
    if value.shape != p.shape:
        raise ValueError(f"expected {key} of shape {tuple(p.shape)}, received {tuple(value.shape)}")
    return torch.empty_like(p, memory_format=torch.preserve_format).copy_(value)


class Adam(Optimizer):
    """torch.optim.Adam (decoupled_weight_decay=False: the decay joins the gradient), or AdamW.

    `fused` (the default on the CPU and CUDA) runs PyTorch's one-kernel Adam; otherwise the
    `torch._foreach_*` arithmetic of torch.optim's foreach Adam."""

    hyper_parameters = ("lr", "betas", "eps", "weight_decay")
    algorithm = {"amsgrad": False, "maximize": False, "decoupled_weight_decay": False}
    state_keys = ("step", "exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        for name, value in [("lr", lr), ("eps", eps), ("weight_decay", weight_decay)]:
            if not value >= 0.0:
                raise ValueError(f"expected {name} >= 0, received {name}={value}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"expected betas in [0, 1), received betas={betas}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, fused=fused)
        super().__init__(params, defaults)

    def _lr_eps(self, group: dict[str, Any], step: torch.Tensor) -> tuple[float, float]:
        """The kernel's lr and eps for a group whose first stepping parameter has made `step`
        steps (KerasRMSprop rescales them)."""
        return group["lr"], group["eps"]

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = _new_step(p, group)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        m = [s["exp_avg"] for s in states]
        v = [s["exp_avg_sq"] for s in states]
        steps = [s["step"] for s in states]
        lr, eps = self._lr_eps(group, steps[0])
        beta1, beta2 = group["betas"]
        wd, decoupled = group["weight_decay"], self.algorithm["decoupled_weight_decay"]
        if not group["fused"]:
            _foreach_adam(params, grads, m, v, steps, lr, beta1, beta2, eps, wd, decoupled)
            return
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        lists = [params, grads, m, v, steps]
        for (device, _), (same, _) in _by_device_and_dtype(lists).items():
            grad_scale, found_inf = self._amp(device)
            torch._foreach_add_(same[4], 1)
            kernel(
                same[0], same[1], same[2], same[3], [], same[4], lr=lr, beta1=beta1,
                beta2=beta2, weight_decay=wd, eps=eps, amsgrad=False, maximize=False,
                grad_scale=grad_scale, found_inf=found_inf,
            )  # fmt: skip
            if found_inf is not None:  # a skipped step (inf or NaN gradients) is not counted
                torch._foreach_sub_(same[4], [found_inf] * len(same[4]))


class AdamW(Adam):
    """torch.optim.AdamW: Adam with the weight decay decoupled (p -= lr * wd * p first)."""

    algorithm = {**Adam.algorithm, "decoupled_weight_decay": True}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, fused)


class KerasRMSprop(Adam):
    """Keras's RMSprop (rho=0.9, eps=1e-7, no momentum), run by the fused Adam kernel.

    PyTorch has no fused RMSprop, and its per-tensor RMSprop costs more per step than the
    lecture's CIFAR CNN's forward pass. Adam with beta1 = 0 keeps m = g and the same
    v = rho * v + (1 - rho) * g^2, and steps p -= lr * g / (sqrt(v) / c + eps) with
    c = sqrt(1 - rho^t). Passing lr / c and eps / c turns that into RMSprop's
    p -= lr * g / (sqrt(v) + eps) exactly. `lr` and `eps` in the param groups are RMSprop's.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        rho: float = 0.9,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        super().__init__(params, lr, (0.0, rho), eps, weight_decay, fused)

    def _lr_eps(self, group: dict[str, Any], step: torch.Tensor) -> tuple[float, float]:
        c = math.sqrt(1.0 - group["betas"][1] ** (float(step) + 1))  # t of the step to come
        return group["lr"] / c, group["eps"] / c


class SGD(Optimizer):
    """torch.optim.SGD with momentum (dampening 0), optionally Nesterov's, and L2 weight decay.

    A new momentum buffer starts at zero, so the first step's buf = momentum * 0 + g is g:
    torch's copy of the gradient into the buffer, without a separate first step."""

    hyper_parameters = ("lr", "momentum", "weight_decay", "nesterov")
    algorithm = {"dampening": 0, "maximize": False}
    state_keys = ("momentum_buffer",)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        fused: bool | None = None,
    ) -> None:
        for name, value in [("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)]:
            if not value >= 0.0:
                raise ValueError(f"expected {name} >= 0, received {name}={value}")
        if nesterov and momentum <= 0:
            raise ValueError(f"nesterov needs momentum > 0, received momentum={momentum}")
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, fused=fused
        )
        super().__init__(params, defaults)

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads = [p.grad for p in params]
        bufs = []
        if momentum != 0:
            for p in params:
                state = self.state[p]
                if not state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                bufs.append(state["momentum_buffer"])
        if not group["fused"]:
            _foreach_sgd(params, grads, bufs, lr, momentum, wd, group["nesterov"])
            return
        lists = [params, grads, bufs] if bufs else [params, grads]
        for (device, _), (same, _) in _by_device_and_dtype(lists).items():
            grad_scale, found_inf = self._amp(device)
            torch._fused_sgd_(
                same[0], same[1], same[2] if bufs else [], weight_decay=wd, momentum=momentum,
                lr=lr, dampening=0.0, nesterov=group["nesterov"], maximize=False,
                is_first_step=False, grad_scale=grad_scale, found_inf=found_inf,
            )  # fmt: skip


class Muon(SGD):
    """Muon (Jordan et al. 2024) for the groups marked "orthogonalize", SGD for the others.

    A Muon step keeps Nesterov momentum as SGD does (buf = m * buf + g; u = g + m * buf), then
    replaces the update by an approximately orthogonal matrix with the same singular vectors
    (three Newton-Schulz iterations on u seen as out_channels x (in_channels * k * k)), and
    first rescales each filter bank to norm sqrt(out_channels): the BatchNorm after every
    convolution makes the filters' scale irrelevant, so fixing it keeps the effective step
    size the schedule's. No weight decay applies to those groups."""

    hyper_parameters = ("lr", "momentum", "weight_decay", "nesterov", "orthogonalize")

    def __init__(self, params: Iterable[Any], **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("orthogonalize", False)
            if group["orthogonalize"]:
                group["fused"] = False
                for p in group["params"]:
                    if p.ndim < 2:
                        raise ValueError(
                            f"Muon orthogonalizes matrices and filters, received a parameter "
                            f"of shape {tuple(p.shape)}"
                        )
        self._step_supports_amp_scaling = all(g["fused"] for g in self.param_groups)

    def _step_group(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        if not group["orthogonalize"]:
            super()._step_group(group, params)
            return
        lr, momentum = group["lr"], group["momentum"]
        for p in params:
            state = self.state[p]
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buf = state["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)
            update = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
            p.mul_(len(p) ** 0.5 / p.norm().clamp(min=1e-12))
            matrix = newton_schulz(update.reshape(len(update), -1))
            p.add_(matrix.view(p.shape).to(p.dtype), alpha=-lr)


def newton_schulz(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """An approximately orthogonal matrix with the singular vectors of `g` (2-D): the quintic
    Newton-Schulz iteration of Muon, whose coefficients push every singular value of
    g / |g| into about [0.5, 1.5] in three steps (run in bf16, as Muon does)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.to(torch.bfloat16)
    x = x / (x.norm() + eps)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return x.T if tall else x


def _by_device_and_dtype(lists: list[list[torch.Tensor]]) -> dict:
    """{(device, dtype): (lists, _)}: a fused kernel takes tensors of one device and dtype."""
    return torch._C._group_tensors_by_device_and_dtype(lists, False)


def _foreach_adam(params, grads, m, v, steps, lr, beta1, beta2, eps, wd, decoupled) -> None:
    """torch.optim's foreach Adam (capturable=False), for devices without the fused kernel."""
    torch._foreach_add_(steps, 1)
    if wd != 0:
        if decoupled:
            torch._foreach_mul_(params, 1 - lr * wd)
        else:
            grads = torch._foreach_add(grads, params, alpha=wd)
    torch._foreach_lerp_(m, grads, 1 - beta1)
    torch._foreach_mul_(v, beta2)
    torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
    t = [s.item() for s in steps]
    step_size = [-(lr / (1 - beta1**k)) for k in t]
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, [(1 - beta2**k) ** 0.5 for k in t])
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, m, denom, step_size)


def _foreach_sgd(params, grads, bufs, lr, momentum, wd, nesterov) -> None:
    """torch.optim's foreach SGD (dampening 0), for devices without the fused kernel."""
    if wd != 0:
        grads = torch._foreach_add(grads, params, alpha=wd)
    if momentum != 0:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    torch._foreach_add_(params, grads, alpha=-lr)


def build_optimizer(
    cfg: TrainConfig,
    params: Iterable[torch.nn.Parameter],
    device: torch.device | None = None,
    whiten_bias: torch.nn.Parameter | None = None,
) -> Optimizer:
    """The optimizer, fused into one kernel per step where PyTorch has one for `device`.
    `whiten_bias`: the whitening layer's bias, which Muon trains for cfg.whiten_bias_epochs
    only, when that is set."""
    params = list(params)
    device = device or torch.device("cpu")
    fused = device.type in FUSED_DEVICES
    if cfg.optimizer == "adam":
        return Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "sgd":
        return SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused
        )
    if cfg.optimizer == "muon":
        groups = muon_groups(cfg, params, whiten_bias)
        return Muon(groups, momentum=cfg.momentum, nesterov=True, fused=fused)
    return KerasRMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def muon_groups(
    cfg: TrainConfig,
    params: list[torch.nn.Parameter],
    whiten_bias: torch.nn.Parameter | None = None,
) -> list[dict[str, Any]]:
    """Muon's parameter groups by shape: convolution filters (3-D, 4-D) orthogonalized at cfg.lr;
    linear layers' weights (2-D) and vectors (biases, BatchNorm shifts) by SGD at lr_head and
    lr_bias, their L2 coefficient weight_decay / rate so that each step decays the fraction
    weight_decay of them at the peak rate (as airbench sets torch's SGD). With
    cfg.whiten_bias_epochs, `whiten_bias` is a vector group of its own, last, whose
    "train_epochs" build_schedule reads."""
    short = bool(cfg.whiten_bias_epochs) and whiten_bias is not None
    if short and not any(p is whiten_bias for p in params):
        raise ConfigError(
            f"whiten_bias_epochs={cfg.whiten_bias_epochs} times the training of the whitening "
            "bias, which is not among the parameters trained (held by --freeze?): give "
            "--whiten-bias-epochs 0"
        )
    kinds = {
        "filters": [p for p in params if p.ndim >= 3],
        "head": [p for p in params if p.ndim == 2],
        "bias": [p for p in params if p.ndim <= 1 and not (short and p is whiten_bias)],
        "whiten_bias": [whiten_bias] if short else [],
    }
    rates = {
        "filters": cfg.lr,
        "head": cfg.lr_head,
        "bias": cfg.lr_bias,
        "whiten_bias": cfg.lr_bias,
    }
    groups = []
    for kind, members in kinds.items():
        if not members:
            continue
        lr = rates[kind]
        if kind == "filters":
            groups.append(
                dict(params=members, lr=lr, momentum=cfg.muon_momentum, weight_decay=0.0,
                     orthogonalize=True)
            )  # fmt: skip
        else:
            groups.append(dict(params=members, lr=lr, weight_decay=cfg.weight_decay / lr))
    if short:
        groups[-1]["train_epochs"] = cfg.whiten_bias_epochs
    return groups


# ---- learning-rate schedules --------------------------------------------------------------------


class BatchSchedule:
    """A rate set after every batch from the base rate and the number of batches done:
    group["lr"] = lr_at(base_lr, step), as torch's LambdaLR after `step` calls of step().

    Loading a state sets the rate for the loaded step, so a run resumed with more epochs
    continues where the longer schedule would be. `short` {group index: steps}: those groups'
    rates fall in a straight line from their base to 0 over their steps instead, then stay 0."""

    def __init__(
        self,
        optimizer: Optimizer,
        lr_at: Callable[[float, int], float],
        short: dict[int, int] | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.lr_at = lr_at
        self.short = short or {}
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.last_epoch = 0  # batches done (torch's name)
        self._set_rates()

    def step(self) -> None:
        self.last_epoch += 1
        self._set_rates()

    def _set_rates(self) -> None:
        step = self.last_epoch
        for i, (group, base) in enumerate(
            zip(self.optimizer.param_groups, self.base_lrs, strict=True)
        ):
            if i in self.short:
                group["lr"] = base * max(0.0, 1.0 - step / self.short[i])
            else:
                group["lr"] = self.lr_at(base, step)

    def state_dict(self) -> dict[str, Any]:
        """torch's key names: a LambdaLR's or MultiStepLR's saved state loads here too."""
        last_lr = [group["lr"] for group in self.optimizer.param_groups]
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs), "_last_lr": last_lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Needs "last_epoch"; takes "base_lrs" when present, ignores torch's other keys."""
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(lr) for lr in state.get("base_lrs", self.base_lrs)]
        self._set_rates()


class PlateauSchedule:
    """torch's ReduceLROnPlateau(mode="min", factor=0.5, patience=2, threshold=1e-4 relative,
    cooldown=0, min_lr=0, eps=1e-8), step for step: halve the rate when the metric (the val
    loss, once an epoch) has not improved by 0.01% on its best in 3 steps running."""

    factor, patience, threshold, cooldown, min_lr, eps = 0.5, 2, 1e-4, 0, 0.0, 1e-8

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.last_epoch = 0
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]

    def step(self, metric: float) -> None:
        current = float(metric)
        self.last_epoch += 1
        if current < self.best * (1.0 - self.threshold):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs in the cooldown do not count
        if self.num_bad_epochs > self.patience:
            for group in self.optimizer.param_groups:
                old = float(group["lr"])
                new = max(old * self.factor, self.min_lr)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    _STATE = ("best", "num_bad_epochs", "cooldown_counter", "last_epoch", "_last_lr")

    def state_dict(self) -> dict[str, Any]:
        """torch's key names: a ReduceLROnPlateau's saved state loads here too."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The counters and best value; the rate itself comes with the optimizer's state."""
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        self.last_epoch = int(state["last_epoch"])
        self._last_lr = list(state.get("_last_lr", self._last_lr))


Schedule = BatchSchedule | PlateauSchedule


def build_schedule(cfg: TrainConfig, optimizer: Optimizer, steps_per_epoch: int) -> Schedule | None:
    """The learning-rate schedule, or None for a constant rate.

    cosine, linear and step set the rate after every batch; plateau steps once per epoch on the
    validation loss.
    """
    short = {  # groups trained for part of the run (muon_groups' whitening bias)
        i: max(1, round(group["train_epochs"] * steps_per_epoch))
        for i, group in enumerate(optimizer.param_groups)
        if group.get("train_epochs")
    }
    if cfg.schedule == "constant":
        return BatchSchedule(optimizer, lambda lr, step: lr, short) if short else None
    if cfg.schedule == "plateau":
        return PlateauSchedule(optimizer)
    total = max(1, cfg.epochs * steps_per_epoch)  # batches in the whole run
    if cfg.schedule == "step":  # He et al. 2016: lr / 10 at 32k and 48k of 64k iterations
        return BatchSchedule(optimizer, multistep([total // 2, total * 3 // 4], 0.1), short)
    # cosine and linear: from lr down to 0 over every step of the run after the warm-up, if any
    warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)
    if cfg.schedule == "linear":
        decay = lambda k, n: 1.0 - k / n  # noqa: E731
    else:
        decay = lambda k, n: 0.5 * (1.0 + math.cos(math.pi * k / n))  # noqa: E731

    def lr_at(lr: float, step: int) -> float:
        if step < warm:  # a straight line from 0 towards lr
            return lr * step / warm
        return lr * decay(min(step - warm, total - warm), total - warm)

    return BatchSchedule(optimizer, lr_at, short)


def multistep(milestones: list[int], gamma: float) -> Callable[[float, int], float]:
    """lr_at for a rate multiplied by `gamma` at each milestone passed, multiplied in turn
    (lr * gamma * gamma, not lr * gamma**2) as torch's MultiStepLR does, so it gives the same
    floats; a milestone listed twice counts gamma**2 at once, as there too."""
    counts = sorted(Counter(milestones).items())
    marks = [m for m, _ in counts]

    def lr_at(lr: float, step: int) -> float:
        for _, count in counts[: bisect_right(marks, step)]:
            lr = lr * gamma**count
        return lr

    return lr_at


def per_step(scheduler: Schedule | None) -> BatchSchedule | None:
    """The scheduler to step after every batch (None for per-epoch or no schedule)."""
    return scheduler if isinstance(scheduler, BatchSchedule) else None
