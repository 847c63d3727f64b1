"""convkit against a plain-PyTorch, tutorial-style loop, side by side in one run on one machine.

    python benchmarks/bench.py [--quick] [--json OUT.json] [--markdown OUT.md]

Jobs (each measured for convkit and for the baseline, one after the other, never at once):
  mlp        the lecture's MLP recipe: 10 epochs over 48,000 MNIST images at batch 128, with
             validation on 12,000 after each epoch; seconds of training and test accuracy
  cnn        the lecture's CIFAR-10 CNN at batch 32 (RMSprop): seconds for one epoch of 45,000
             images plus validation on 5,000, the second of two epochs
  resnet     ResNet-20 on CIFAR-10 at batch 128 (SGD): seconds per epoch, from 40 timed steps
  inference  images per second over the 10,000 test images, batch 1,000, MLP and CNN
  peak       the machine's matmul rate (4096 x 4096) in fp32 and bf16

The baseline is what a PyTorch tutorial writes: float tensors in a TensorDataset, a DataLoader,
torch.nn layers, the optimizer with its default implementation, fp32 and NCHW. Its models are the
same architectures with the same parameter counts. "Fraction of peak" divides the job's model
arithmetic (2 FLOP per multiply-accumulate; training counts 3x the forward pass) by its time and
by the measured matmul peak of the precision it ran in.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from convkit.data import Batches, holdout_split, load_dataset
from convkit.inspect.arithmetic import explain
from convkit.models import create_model
from convkit.train import get_recipe, train
from convkit.train.engine import cpu_has_native_bf16, resolve_engine
from convkit.train.loop import train_one_epoch
from convkit.train.optim import build_optimizer
from convkit.train.progress import Progress

# ---- the machine --------------------------------------------------------------------------------


def matmul_peak(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    """GFLOP/s of the best of `repeats` n x n matmuls."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def machine() -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": name,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "native_bf16": cpu_has_native_bf16(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---- the baseline: a tutorial-style PyTorch loop ------------------------------------------------


def machine_line(info: dict, peaks: dict[str, float]) -> str:
    """One sentence: when, on what, and the matmul peaks measured there."""
    return (
        f"Measured {info['date']} on {info['cpu']} ({info['cores']} cores, {info['threads']} "
        f"threads), torch {info['torch']}. Matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 "
        f"{peaks['bf16']:.0f} GFLOP/s."
    )


def baseline_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(512, 10),
    )


def baseline_cnn() -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:  # Keras 'same' for a 2x2 kernel
        return [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(cin, cout, 2), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(3, 16),
        *block(16, 32),
        *block(32, 64),
        nn.Dropout(0.3),
        nn.Flatten(),
        nn.Linear(1024, 500),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(500, 10),
    )


def as_float(split) -> TensorDataset:
    return TensorDataset(split.images.float() / 255.0, split.labels)


def baseline_epoch(model, loader, opt, loss_fn, max_steps: int | None = None) -> int:
    model.train()
    steps = 0
    for x, y in loader:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        steps += 1
        if max_steps and steps >= max_steps:
            break
    return steps


@torch.no_grad()
def baseline_accuracy(model, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total


# ---- jobs ---------------------------------------------------------------------------------------


def train_flops(name: str, shape, images: int) -> float:
    return 3 * 2 * explain(create_model(name), shape).total_macs * images


def job_mlp(data_dir, epochs: int) -> list[dict]:
    cfg = get_recipe("mnist-mlp").config().replace(epochs=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        r = train(cfg, out=Path(tmp) / "run", data_dir=data_dir, progress=Progress(enabled=False))
    data = load_dataset("mnist", data_dir)
    tr, va = holdout_split(data.train, 0.2)
    flops = train_flops("mnist-mlp", (1, 28, 28), len(tr) * epochs)
    ours = {
        "job": f"MLP recipe, {epochs} epochs, batch 128",
        "who": "convkit",
        "seconds": r["train_seconds"],
        "accuracy": r["test_accuracy"],
        "precision": r["engine"]["precision"],
        "flops": flops,
    }
    torch.manual_seed(0)
    model = baseline_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    train_loader = DataLoader(as_float(tr), batch_size=128, shuffle=True)
    val_loader = DataLoader(as_float(va), batch_size=128)
    t = time.perf_counter()
    for _ in range(epochs):
        baseline_epoch(model, train_loader, opt, loss_fn)
        baseline_accuracy(model, val_loader)
    seconds = time.perf_counter() - t
    acc = baseline_accuracy(model, DataLoader(as_float(data.test), batch_size=128))
    base = {**ours, "who": "plain PyTorch", "seconds": seconds, "accuracy": acc}
    base["precision"] = "fp32"
    return [ours, base]


def job_cnn(data_dir) -> list[dict]:
    cfg = get_recipe("cifar10-cnn").config().replace(epochs=2, patience=0)
    with tempfile.TemporaryDirectory() as tmp:
        r = train(cfg, out=Path(tmp) / "run", data_dir=data_dir, progress=Progress(enabled=False))
        second = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").open()][1]
    data = load_dataset("cifar10", data_dir)
    tr, va = holdout_split(data.train, 0.1)
    flops = train_flops("cifar10-cnn", (3, 32, 32), len(tr))
    ours = {
        "job": "CIFAR-10 CNN, one epoch, batch 32",
        "who": "convkit",
        "seconds": second["seconds"],
        "accuracy": None,
        "precision": r["engine"]["precision"],
        "flops": flops,
    }
    torch.manual_seed(0)
    model = baseline_cnn()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    train_loader = DataLoader(as_float(tr), batch_size=32, shuffle=True)
    val_loader = DataLoader(as_float(va), batch_size=32)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        baseline_epoch(model, train_loader, opt, loss_fn)
        baseline_accuracy(model, val_loader)
        times.append(time.perf_counter() - t)
    return [ours, {**ours, "who": "plain PyTorch", "seconds": times[1], "precision": "fp32"}]


def job_resnet(data_dir, steps: int) -> list[dict]:
    """Seconds per epoch of ResNet-20 at batch 128, from `steps` timed steps after 5 warm-up."""
    data = load_dataset("cifar10", data_dir)
    tr, _ = holdout_split(data.train, 0.1)
    per_epoch = -(-len(tr) // 128)
    cfg = get_recipe("resnet20").config()
    torch.manual_seed(0)
    model = create_model("resnet20")
    eng = resolve_engine("cpu", "auto", "auto", "off", model)
    model, step_model = eng.prepare(model)
    opt = build_optimizer(cfg, model.parameters())
    batches = Batches(
        tr[: 128 * (steps + 5)],
        128,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
        memory_format=eng.memory_format,
    )
    loss_fn = nn.CrossEntropyLoss()
    warm = Batches(tr[: 128 * 5], 128, memory_format=eng.memory_format)
    train_one_epoch(step_model, warm, opt, loss_fn, autocast=eng.autocast)
    t = time.perf_counter()
    train_one_epoch(step_model, batches, opt, loss_fn, autocast=eng.autocast)
    ours_step = (time.perf_counter() - t) / len(batches)
    flops = train_flops("resnet20", (3, 32, 32), len(tr))

    torch.manual_seed(0)
    model = create_model("resnet20")  # the same nn.Module, used as a tutorial would use it
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loader = DataLoader(as_float(tr), batch_size=128, shuffle=True)
    baseline_epoch(model, loader, opt, loss_fn, max_steps=5)
    t = time.perf_counter()
    n = baseline_epoch(model, loader, opt, loss_fn, max_steps=steps + 5)
    base_step = (time.perf_counter() - t) / n
    row = {"job": "ResNet-20, one epoch, batch 128", "accuracy": None, "flops": flops}
    return [
        {**row, "who": "convkit", "seconds": ours_step * per_epoch, "precision": eng.precision},
        {**row, "who": "plain PyTorch", "seconds": base_step * per_epoch, "precision": "fp32"},
    ]


def job_inference(data_dir) -> list[dict]:
    rows = []
    for name, dataset, shape, baseline in (
        ("mnist-mlp", "mnist", (1, 28, 28), baseline_mlp),
        ("cifar10-cnn", "cifar10", (3, 32, 32), baseline_cnn),
    ):
        test = load_dataset(dataset, data_dir).test
        flops = 2 * explain(create_model(name), shape).total_macs * len(test)
        model = create_model(name)
        eng = resolve_engine("cpu", "auto", "auto", "off", model)
        model, _ = eng.prepare(model)
        model.eval()
        batches = Batches(test, 1000, memory_format=eng.memory_format)
        with torch.inference_mode(), eng.autocast():
            for x, _ in Batches(test[:1000], 1000, memory_format=eng.memory_format):
                model(x)
            t = time.perf_counter()
            for x, _ in batches:
                model(x).argmax(1)
            ours = time.perf_counter() - t
        ref = baseline().eval()
        loader = DataLoader(as_float(test), batch_size=1000)
        with torch.no_grad():
            t = time.perf_counter()
            for x, _ in loader:
                ref(x).argmax(1)
            base = time.perf_counter() - t
        row = {"job": f"inference, {name}", "accuracy": None, "flops": flops}
        rows.append({**row, "who": "convkit", "seconds": ours, "precision": eng.precision,
                     "images_per_second": len(test) / ours})  # fmt: skip
        rows.append({**row, "who": "plain PyTorch", "seconds": base, "precision": "fp32",
                     "images_per_second": len(test) / base})  # fmt: skip
    return rows


# ---- report -------------------------------------------------------------------------------------


def finish(rows: list[dict], peaks: dict[str, float]) -> None:
    for r in rows:
        rate = r["flops"] / r["seconds"] / 1e9
        r["gflops"] = rate
        r["fraction_of_peak"] = rate / peaks[r["precision"]]
    by_job: dict[str, dict[str, dict]] = {}
    for r in rows:
        by_job.setdefault(r["job"], {})[r["who"]] = r
    for pair in by_job.values():
        if "convkit" in pair and "plain PyTorch" in pair:
            pair["convkit"]["speedup"] = (
                pair["plain PyTorch"]["seconds"] / pair["convkit"]["seconds"]
            )


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| job | who | precision | seconds | images/s | test accuracy | GFLOP/s | of peak "
        "| speed-up |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ips = f"{r['images_per_second']:,.0f}" if "images_per_second" in r else ""
        acc = f"{100 * r['accuracy']:.2f}%" if r["accuracy"] is not None else ""
        speed = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        lines.append(
            f"| {r['job']} | {r['who']} | {r['precision']} | {r['seconds']:.2f} | {ips} | {acc} "
            f"| {r['gflops']:.0f} | {100 * r['fraction_of_peak']:.0f}% | {speed} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--quick", action="store_true", help="1 MLP epoch, 10 ResNet steps (a check)")
    p.add_argument("--json", dest="json_out", default=None, help="write the results here")
    p.add_argument("--markdown", default=None, help="write the table here, as Markdown")
    p.add_argument("--only", nargs="*", default=["peak", "mlp", "cnn", "resnet", "inference"])
    args = p.parse_args(argv)

    info = machine()
    print(f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch "
          f"{info['torch']}, native bf16: {info['native_bf16']}", flush=True)  # fmt: skip
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    peaks["fp16"] = peaks["bf16"]
    print(f"Matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s")
    rows: list[dict] = []
    jobs = {
        "mlp": lambda: job_mlp(args.data_dir, 1 if args.quick else 10),
        "cnn": lambda: job_cnn(args.data_dir),
        "resnet": lambda: job_resnet(args.data_dir, 10 if args.quick else 40),
        "inference": lambda: job_inference(args.data_dir),
    }
    for name in args.only:
        if name in jobs and not (args.quick and name == "cnn"):
            t = time.perf_counter()
            rows += jobs[name]()
            print(f"  {name}: measured in {time.perf_counter() - t:.0f}s", flush=True)
    finish(rows, peaks)
    lines = table(rows)
    print("\n".join(lines))
    report = {"machine": info, "peak_gflops": peaks, "rows": rows}
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        head = [machine_line(info, peaks), ""]
        Path(args.markdown).write_text("\n".join(head + lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
