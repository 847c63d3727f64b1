"""Where the lecture's MLP recipe spends its time, and how close to the matmul peak it can get.

    python benchmarks/mlp_profile.py [--epochs 10] [--json OUT.json]

Four measurements, one after the other on one machine (nothing else should run meanwhile):
  peaks     the machine's bf16 and fp32 matmul rate at 4096 x 4096, and the bf16 rate of each
            matmul one training step of the recipe makes (forward, the two backward products),
            at its own shapes: the bound on this recipe at batch 128 on these cores
  recipe    `convkit train mnist-mlp` itself: its training seconds (train + validation each
            epoch, as result.json counts them), the arithmetic it did and the fraction of the
            4096 peak that is
  phases    the same epoch loop, timed phase by phase with wall clocks between them: the next
            batch, forward, loss, backward, the optimizer, the schedule and the running sums;
            plus the validation pass
  ops       torch.profiler over one epoch of steps: self time per operator, grouped (matmuls,
            dropout, ReLU, casts, loss, optimizer, data, the rest)

FLOPs count 2 per multiply-accumulate: the forward pass, the weight gradients, and the input
gradients of every layer but the first (nothing needs the gradient of the images).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench import machine, machine_line, matmul_peak  # noqa: E402

from convkit.data import Batches, holdout_split, load_dataset  # noqa: E402
from convkit.models import create_model  # noqa: E402
from convkit.train import get_recipe, train  # noqa: E402
from convkit.train.engine import resolve_engine  # noqa: E402
from convkit.train.optim import build_optimizer  # noqa: E402
from convkit.train.progress import Progress  # noqa: E402

LAYERS = ((784, 512), (512, 512), (512, 10))  # the 512-512-10 MLP's dense layers (in, out)


def step_matmuls(batch: int) -> list[tuple[str, tuple[int, int, int]]]:
    """(what, (m, k, n)) of every matmul of one training step: m x k times k x n."""
    out = []
    for i, (fan_in, fan_out) in enumerate(LAYERS, start=1):
        out.append((f"dense {i} forward", (batch, fan_in, fan_out)))
        out.append((f"dense {i} weight grad", (fan_out, batch, fan_in)))
        if i > 1:
            out.append((f"dense {i} input grad", (batch, fan_out, fan_in)))
    return out


def shape_rate(m: int, k: int, n: int, dtype=torch.bfloat16, seconds: float = 0.3) -> float:
    """GFLOP/s of repeated (m, k) @ (k, n) matmuls, best of 5 timed blocks."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.mm(a, b, out=out)
    t = time.perf_counter()
    reps = 0
    while time.perf_counter() - t < 0.05:
        torch.mm(a, b, out=out)
        reps += 1
    reps = max(1, int(reps * seconds / 0.05 / 5))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b, out=out)
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * m * k * n / best / 1e9


def step_flops(batch: int) -> float:
    return sum(2 * m * k * n for _, (m, k, n) in step_matmuls(batch))


def eval_flops(images: int) -> float:
    return images * sum(2 * i * o for i, o in LAYERS)


def session(data_dir):
    cfg = get_recipe("mnist-mlp").config()
    data = load_dataset("mnist", data_dir)
    tr, va = holdout_split(data.train, cfg.val_split)
    torch.manual_seed(0)
    model = create_model("mnist-mlp")
    engine = resolve_engine(cfg.device, cfg.precision, cfg.channels_last, "off", model)
    model, step_model = engine.prepare(model)
    opt = build_optimizer(cfg, list(model.parameters()), engine.device)
    layout = {"memory_format": engine.memory_format}  # normalize "scale": uint8 / 255
    g = torch.Generator().manual_seed(0)
    batches = Batches(tr, cfg.batch_size, shuffle=True, generator=g, **layout)
    val = Batches(va, cfg.eval_batch_size, **layout)
    return cfg, engine, step_model, opt, batches, val


def phases(data_dir, epochs: int = 2) -> dict[str, float]:
    """Seconds per epoch of each phase of the training loop (the last of `epochs`)."""
    from convkit.train.optim import BatchSchedule

    cfg, engine, model, opt, batches, val = session(data_dir)
    loss_fn = torch.nn.CrossEntropyLoss()
    sched = BatchSchedule(opt, lambda lr, step: lr)  # a per-step schedule, as cosine is
    result: dict[str, float] = {}
    for _ in range(epochs):
        t = defaultdict(float)
        model.train()
        it = iter(batches)
        loss_sum = correct = None
        clock = time.perf_counter()
        while True:
            try:
                x, y = next(it)
            except StopIteration:
                break
            now = time.perf_counter()
            t["next batch (data)"] += now - clock
            clock = now
            with engine.autocast():
                logits = model(x)
            now = time.perf_counter()
            t["forward"] += now - clock
            clock = now
            loss = loss_fn(logits.float(), y)
            now = time.perf_counter()
            t["loss"] += now - clock
            clock = now
            opt.zero_grad(set_to_none=True)
            loss.backward()
            now = time.perf_counter()
            t["backward"] += now - clock
            clock = now
            opt.step()
            now = time.perf_counter()
            t["optimizer step"] += now - clock
            clock = now
            sched.step()
            now = time.perf_counter()
            t["schedule"] += now - clock
            clock = now
            batch_loss = loss.detach().double() * len(y)
            batch_correct = (logits.detach().argmax(1) == y).sum()
            loss_sum = batch_loss if loss_sum is None else loss_sum + batch_loss
            correct = batch_correct if correct is None else correct + batch_correct
            now = time.perf_counter()
            t["running sums"] += now - clock
            clock = now
        start = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            for x, y in val:
                with engine.autocast():
                    logits = model(x)
                loss_fn(logits.float(), y).item()
                int((logits.argmax(1) == y).sum())
        t["validation (12,000 images)"] = time.perf_counter() - start
        result = dict(t)
    return result


GROUPS = (  # (group, operator name fragments), first match wins
    ("matmuls", ("addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("dropout", ("randint", "random_", "bernoulli", "dropout", "aten::lt")),
    ("ReLU", ("relu", "threshold")),
    ("casts and copies", ("_to_copy", "aten::copy_", "aten::to", "clone")),
    ("loss", ("log_softmax", "nll_loss", "cross_entropy")),
    ("optimizer", ("_foreach", "addcmul", "addcdiv", "lerp", "sqrt")),
    ("data (indexing, scaling)", ("index", "aten::div", "aten::sub", "gather", "take")),
)


def ops(data_dir) -> tuple[dict[str, float], float]:
    """Self CPU milliseconds per group over one profiled epoch, and the epoch's wall seconds."""
    from torch.profiler import ProfilerActivity, profile

    from convkit.train.loop import train_one_epoch
    from convkit.train.optim import BatchSchedule

    cfg, engine, model, opt, batches, _ = session(data_dir)
    loss_fn = torch.nn.CrossEntropyLoss()
    sched = BatchSchedule(opt, lambda lr, step: lr)
    train_one_epoch(model, batches, opt, loss_fn, sched, None, engine.autocast)  # warm
    with profile(activities=[ProfilerActivity.CPU]) as p:
        start = time.perf_counter()
        train_one_epoch(model, batches, opt, loss_fn, sched, None, engine.autocast)
        wall = time.perf_counter() - start
    groups: dict[str, float] = defaultdict(float)
    for e in p.key_averages():
        name = e.key
        ms = e.self_cpu_time_total / 1000
        for group, fragments in GROUPS:
            if any(f in name for f in fragments):
                groups[group] += ms
                break
        else:
            groups["other operators"] += ms
    return dict(groups), wall


def hand_written_step_seconds(batch: int = 128, steps: int = 375) -> float:
    """Seconds per step of the same training step written out by hand, as a floor for eager
    PyTorch: no autograd, no modules, no autocast; bf16 weights as views of one flat buffer,
    the gradients written into one flat buffer by `out=` matmuls, one fused Adam over an fp32
    master copy, the same dropout masks (16 random bits per element) and random data."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    n = sum(i * o + o for i, o in LAYERS)
    master, m, v = torch.randn(n) * 0.01, torch.zeros(n), torch.zeros(n)
    flat, grad = master.to(torch.bfloat16), torch.zeros(n, dtype=torch.bfloat16)

    def views(buf):
        out, k = [], 0
        for i, o in LAYERS:
            out.append((buf[k : k + i * o].view(i, o), buf[k + i * o : k + i * o + o]))
            k += i * o + o
        return out

    (w1, b1), (w2, b2), (w3, b3) = views(flat)
    (gw1, gb1), (gw2, gb2), (gw3, gb3) = views(grad)
    images = torch.randint(0, 256, (48_000, 784), dtype=torch.uint8)
    labels = torch.randint(0, 10, (48_000,))
    count = torch.tensor(0.0)
    rows = torch.arange(batch)

    def mask(like: torch.Tensor, keep: float = 0.8) -> torch.Tensor:
        k = like.numel()
        bits = torch.randint(-(2**63), 2**63 - 1, (-(-k // 4),), dtype=torch.int64)
        bits = bits.view(torch.int16)[:k].view(like.shape)
        return (bits < round(keep * 65536) - 32768).to(torch.bfloat16).mul_(1 / keep)

    def step(index: torch.Tensor) -> None:
        x = images.index_select(0, index).to(torch.bfloat16).mul_(1 / 255)
        y = labels.index_select(0, index)
        h1 = torch.addmm(b1, x, w1).relu_()
        m1 = mask(h1)
        a1 = h1 * m1
        h2 = torch.addmm(b2, a1, w2).relu_()
        m2 = mask(h2)
        a2 = h2 * m2
        p = torch.softmax(torch.addmm(b3, a2, w3).float(), 1)
        F.nll_loss(torch.log(p), y)
        p[rows, y] -= 1
        gz = p.mul_(1 / batch).to(torch.bfloat16)
        torch.mm(a2.t(), gz, out=gw3)
        torch.sum(gz, 0, out=gb3)
        g2 = torch.mm(gz, w3.t()).mul_(m2).mul_(h2 > 0)
        torch.mm(a1.t(), g2, out=gw2)
        torch.sum(g2, 0, out=gb2)
        g1 = torch.mm(g2, w2.t()).mul_(m1).mul_(h1 > 0)
        torch.mm(x.t(), g1, out=gw1)
        torch.sum(g1, 0, out=gb1)
        count.add_(1)
        torch._fused_adam_([master], [grad.float()], [m], [v], [], [count], lr=1e-3,
                           beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-7,
                           amsgrad=False, maximize=False)  # fmt: skip
        flat.copy_(master)

    order = torch.randperm(48_000)
    batches = [order[i : i + batch] for i in range(0, 48_000 - batch + 1, batch)]
    for index in batches[:50]:
        step(index)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for i in range(steps):
            step(batches[i % len(batches)])
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs of the recipe run (default 10)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", help="write every figure here")
    args = p.parse_args(argv)
    out: dict = {"machine": machine()}
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    out["peaks"] = peaks
    print(machine_line(out["machine"], peaks), flush=True)

    batch = 128
    rates = [(what, mkn, shape_rate(*mkn)) for what, mkn in step_matmuls(batch)]
    step_at_shape_peak = sum(2 * m * k * n / (r * 1e9) for _, (m, k, n), r in rates)
    out["shapes"] = [{"matmul": w, "mkn": mkn, "gflops": r} for w, mkn, r in rates]
    print("\nbf16 matmul rate at the recipe's own shapes (batch 128):")
    for what, (m, k, n), r in rates:
        print(f"  {what:22s} {m:4d} x {k:4d} x {n:4d}: {r:6.0f} GFLOP/s "
              f"({100 * r / peaks['bf16']:.0f}% of the 4096 peak)")  # fmt: skip
    bound = step_flops(batch) / step_at_shape_peak / 1e9
    print(f"  one step's matmuls at these rates: {1e3 * step_at_shape_peak:.3f} ms, "
          f"{bound:.0f} GFLOP/s = {100 * bound / peaks['bf16']:.0f}% of the 4096 peak "
          "(the bound with nothing but matmuls)")  # fmt: skip
    out["bound_gflops"] = bound

    cfg = get_recipe("mnist-mlp").config().replace(epochs=args.epochs)
    with tempfile.TemporaryDirectory() as tmp:
        r = train(cfg, out=Path(tmp) / "run", data_dir=args.data_dir,
                  progress=Progress(enabled=False))  # fmt: skip
    steps = -(-48_000 // batch)
    flops = args.epochs * (steps * step_flops(batch) * 48_000 / (steps * batch)
                           + eval_flops(12_000))  # fmt: skip
    rate = flops / r["train_seconds"] / 1e9
    out["recipe"] = {"train_seconds": r["train_seconds"], "test_accuracy": r["test_accuracy"],
                     "flops": flops, "gflops": rate}  # fmt: skip
    print(f"\n`convkit train mnist-mlp` ({args.epochs} epochs): {r['train_seconds']:.2f} s of "
          f"training, test accuracy {100 * r['test_accuracy']:.2f}%, {flops / 1e12:.2f} TFLOP "
          f"(training steps and validation) = {rate:.0f} GFLOP/s, "
          f"{100 * rate / peaks['bf16']:.0f}% of the bf16 peak")  # fmt: skip

    t = phases(args.data_dir)
    total = sum(t.values())
    out["phases"] = t
    print(f"\nOne epoch, phase by phase (wall clock, {total:.2f} s in all):")
    for what, s in sorted(t.items(), key=lambda kv: -kv[1]):
        print(f"  {what:28s} {s:6.3f} s  {100 * s / total:5.1f}%")

    groups, wall = ops(args.data_dir)
    prof = sum(groups.values())
    out["ops"] = {"groups_ms": groups, "wall_s": wall}
    print(
        f"\nOne epoch of steps under torch.profiler ({wall:.2f} s wall with the profiler; "
        f"{prof / 1e3:.2f} s of operator self time on the main thread):"
    )
    for what, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {what:28s} {ms:8.1f} ms  {100 * ms / prof:5.1f}%")
    floor = hand_written_step_seconds(batch)
    out["hand_written_step_s"] = floor
    fl = step_flops(batch) / floor / 1e9
    print(f"\nThe same step written out by hand (no autograd, modules or autocast; one flat "
          f"buffer, one fused Adam): {1e3 * floor:.3f} ms = {fl:.0f} GFLOP/s, "
          f"{100 * fl / peaks['bf16']:.0f}% of the bf16 peak")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
