"""Time to accuracy: from typing the command to a test accuracy mark, convkit beside a baseline.

    python benchmarks/time_to_accuracy.py [--seeds N] [--marks MARK ... | all]
                                          [--airbench94 SCRIPT] [--json OUT.json]
                                          [--markdown OUT.md]

The marks (`make bench` runs the first three, minutes; `make bench-long` all, hours):
  mlp98     MNIST >= 98.2%, the lecture's MLP (`mnist-mlp`, 3 seeds); goal: training at >= 50%
            of the bf16 matmul peak measured in the same run (its FLOPs from the layer table)
  mnist99   MNIST >= 99.0% (`mnist-fast`, 10 seeds, none below 98.9%); goal: <= 10 s
  cifar68   CIFAR-10 >= 68% (`cifar10-quick`, 5 seeds); goal: <= 15 s
  cifar94   CIFAR-10 >= 94% (`cifar10-fast`, 5 seeds); goal: <= 0.65x airbench94's time
  resnet20  CIFAR-10 >= 91.25% with He et al.'s ResNet-20 (`resnet20-fast`, 3 seeds);
            goal: <= 40 minutes
  resnet56  CIFAR-10 >= 93.03% with He et al.'s ResNet-56 (`resnet56-fast`, 3 seeds); its
            time is reported (no goal)

For each mark, one after the other, never at once:
  convkit        `python -m convkit train RECIPE --seed S` in a new process, S = 0 .. N-1.
                 "Seconds" runs from starting the process to its exit: imports, data, model,
                 training, testing, writing the run folder, and drawing the curves, which comes
                 after the result is printed. "To result" is the command's own count from its
                 start to the printed test accuracy. One untimed run first fills the tensor
                 cache and the page cache, as on any machine that has trained once.
  plain PyTorch  benchmarks/plain_baseline.py MARK (mlp98, mnist99, cifar68): the tutorial
                 recipe for that mark, tested after every epoch; seconds from starting the
                 process to the first epoch at the mark.
  airbench94     for cifar94: the CIFAR-10 speed record's recipe ported to the CPU, a script
                 kept outside this repository (its code is not ours) and given as
                 --airbench94 SCRIPT. It is run as `SCRIPT DATA_DIR` (the CONVKIT_DATA folder
                 that holds cifar-10/cifar-10-batches-bin) and prints one JSON object a line,
                 the last with "test_accuracy" and "train_seconds". It runs twice: as it comes,
                 and with glibc's malloc keeping freed memory as convkit's does
                 (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ at its maximum); the goal is
                 against the faster of the two.
  the paper      for resnet20 and resnet56: `convkit train resnet20` or `resnet56` (He et al.'s
                 164 epochs of batch 128, hours) timed for 3 epochs and scaled to 164 from
                 the epochs after the first; its accuracy is the paper's.
The table says whether each mark's accuracy and goal were met (resnet56 has no time goal). The
machine's matmul peaks are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from convkit.train.recipes import PAPER_ERROR

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


@dataclass(frozen=True)
class Mark:
    recipe: str
    dataset: str
    target: float  # mean test accuracy over the seeds
    lowest: float  # no seed below this
    seeds: int
    goal: float  # seconds from the command's start to the printed result (0: none, or below)
    goal_ratio: float = 0.0  # or: at most this times the baseline's seconds
    goal_peak: float = 0.0  # or: training at least this fraction of the bf16 matmul peak
    warmup: str = ""  # the recipe of the untimed first run (default: the mark's own)


# He et al. 2016's test accuracies (Table 6), by the name of the recipe that follows the paper
PAPER = {f"resnet{depth}": 1 - error / 100 for depth, error in PAPER_ERROR.items()}
MARKS = {  # the issues' marks and goals
    "mlp98": Mark(
        "mnist-mlp", "MNIST (the lecture's MLP)", 0.982, 0.0, seeds=3, goal=0.0, goal_peak=0.5
    ),  # fmt: skip
    "mnist99": Mark("mnist-fast", "MNIST", 0.99, 0.989, seeds=10, goal=10.0),
    "cifar68": Mark("cifar10-quick", "CIFAR-10", 0.68, 0.0, seeds=5, goal=15.0),
    "cifar94": Mark(
        "cifar10-fast",
        "CIFAR-10",
        0.94,
        0.0,
        seeds=5,
        goal=0.0,
        goal_ratio=0.65,
        warmup="cifar10-quick",  # fills the same tensor cache in seconds, not 15 minutes
    ),
    "resnet20": Mark(
        "resnet20-fast",
        "CIFAR-10 (ResNet-20)",
        PAPER["resnet20"],
        0.0,
        seeds=3,
        goal=2400.0,
        warmup="cifar10-quick",
    ),
    "resnet56": Mark(
        "resnet56-fast",
        "CIFAR-10 (ResNet-56)",
        PAPER["resnet56"],
        0.0,
        seeds=3,
        goal=0.0,  # no time goal: the issue asks how long it takes
        warmup="cifar10-quick",
    ),
}
DEFAULT_MARKS = ["mlp98", "mnist99", "cifar68"]  # minutes; the others take hours: by name
LONG_MARKS = list(MARKS)
# glibc's malloc set as convkit sets it (train/engine.py): freed memory is kept, not returned
KEEP_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}


def run_convkit(recipe: str, seed: int, out: Path, flags: list[str] | None = None) -> dict:
    """`convkit train recipe` with `flags` (settings on top of the recipe's) in its own process."""
    cmd = [sys.executable, "-m", "convkit", "train", recipe, "--seed", str(seed), "--out", str(out)]
    cmd += [*(flags or []), "--json", "--quiet"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    result = json.loads(proc.stdout)
    return dict(
        seed=seed, accuracy=result["test_accuracy"], seconds=wall,
        to_result=result["seconds"], train_seconds=result["train_seconds"],
    )  # fmt: skip


def run_baseline(mark: str, max_epochs: int) -> dict:
    cmd = [sys.executable, str(HERE / "plain_baseline.py"), mark, "--max-epochs", str(max_epochs)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    epochs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode not in (0, 1) or not epochs:  # 1: ran every epoch, mark not reached
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
    last = epochs[-1]
    return dict(
        reached=proc.returncode == 0, epochs=last["epoch"], accuracy=last["test_accuracy"],
        seconds=wall, train_seconds=last["train_seconds"], history=epochs,
    )  # fmt: skip


def cifar10_folder() -> str:
    """The first folder of CONVKIT_DATA (a PATH-like list) holding the CIFAR-10 binary batches."""
    import os

    for folder in os.environ.get("CONVKIT_DATA", "").split(os.pathsep):
        if folder and (Path(folder) / "cifar-10" / "cifar-10-batches-bin").is_dir():
            return folder
    raise SystemExit("airbench94 reads CIFAR-10 from a CONVKIT_DATA folder: none holds one")


def run_airbench94(script: str, env: dict[str, str] | None = None) -> dict:
    import os

    cmd = [sys.executable, script, cifar10_folder()]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines or "test_accuracy" not in lines[-1]:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr}")
    last = lines[-1]
    how = ", glibc malloc keeping freed memory" if env else ""
    return dict(
        # One seed: its time is the reference, whatever side of 94% this seed falls (its mean
        # over 1,000 GPU runs is 94.01%).
        who=f"airbench94 CPU port, seed 0{how}", reached=True,
        epochs=len(lines) - 1, accuracy=last["test_accuracy"], seconds=wall,
        train_seconds=last["train_seconds"], history=lines,
    )  # fmt: skip


def run_paper_schedule(recipe: str, epochs: int = 3) -> dict:
    """He et al. 2016's schedule (`convkit train resnet20` or `resnet56`: 164 epochs of batch
    128, hours on 2 cores) estimated: the command's time for `epochs` epochs, plus 164 -
    `epochs` more at the mean time of its epochs after the first (which pays one-time costs).
    The accuracy is the paper's (PAPER); it is not run to the end."""
    full = 164
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "convkit", "train", recipe, "--epochs", str(epochs)]
        cmd += ["--out", str(Path(tmp) / "run"), "--json", "--quiet"]
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        lines = (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
    per_epoch = statistics.mean(json.loads(line)["seconds"] for line in lines[1:epochs])
    result, more = json.loads(proc.stdout), (full - epochs) * per_epoch
    return dict(
        who=f"He et al. 2016's schedule (`convkit train {recipe}`), {full} epochs estimated "
        f"from {epochs} timed ({per_epoch:.1f} s an epoch after the first); the paper's "
        "accuracy", reached=True, epochs=full, accuracy=PAPER[recipe],
        seconds=wall + more, train_seconds=result["train_seconds"] + more, estimated=True,
    )  # fmt: skip


def recipe_flops(recipe: str, shape: tuple[int, ...], images: int) -> float:
    """Multiply-adds x 2 of a recipe's training and validation, from the model's layer table:
    three passes for each training image (forward, input and weight gradients), less the
    first layer's input gradient, which nothing needs; one for each validation image."""
    from convkit.inspect.arithmetic import explain
    from convkit.models import create_model
    from convkit.train import get_recipe

    cfg = get_recipe(recipe).config()
    table = explain(create_model(cfg.model), shape)
    first = next(r.macs for r in table.layers if r.macs)
    val = round(images * cfg.val_split)
    per_epoch = 3 * (images - val) * table.total_macs - (images - val) * first
    return 2 * cfg.epochs * (per_epoch + val * table.total_macs)


def measure(name: str, seeds: int | None, max_epochs: int, airbench94: str | None) -> dict:
    mark = MARKS[name]
    with tempfile.TemporaryDirectory() as tmp:
        run_convkit(mark.warmup or mark.recipe, 0, Path(tmp) / "warm-up")
        runs = []
        for s in range(seeds or mark.seeds):
            runs.append(run_convkit(mark.recipe, s, Path(tmp) / f"seed{s}"))
            r = runs[-1]
            print(f"  {mark.recipe} seed {s}: {100 * r['accuracy']:.2f}%, {r['seconds']:.1f} s",
                  flush=True)  # fmt: skip
    extra = {}
    if mark.goal_peak:
        from convkit.data import get_dataset_spec
        from convkit.train import get_recipe
        from convkit.train.engine import cpu_has_native_bf16

        spec = get_dataset_spec(get_recipe(mark.recipe).config().dataset)
        extra["flops"] = recipe_flops(mark.recipe, spec.image_shape, spec.train_size)
        extra["precision"] = "bf16" if cpu_has_native_bf16() else "fp32"  # what auto picks
    baselines = []
    if name in PAPER:  # resnet20 and resnet56: the marks named after the paper's recipes
        baselines.append(run_paper_schedule(name))
    elif name != "cifar94":
        baselines.append(dict(who="plain PyTorch", **run_baseline(name, max_epochs)))
    elif airbench94:  # as it comes, then with memory kept as convkit keeps it
        baselines += [run_airbench94(airbench94), run_airbench94(airbench94, KEEP_MEMORY)]
    else:
        print("  no --airbench94 SCRIPT: no baseline run", flush=True)
    for base in baselines:
        est = " (estimated)" if base.get("estimated") else ""
        print(f"  {base['who']}: {100 * base['accuracy']:.2f}% after {base['epochs']} epochs, "
              f"{base['seconds']:.1f}s{est}", flush=True)  # fmt: skip
    return dict(mark=name, **asdict(mark), runs=runs, baselines=baselines, **extra)


def summary(m: dict) -> dict:
    accs = [r["accuracy"] for r in m["runs"]]
    secs = [r["seconds"] for r in m["runs"]]
    return dict(
        mean=statistics.mean(accs), low=min(accs), seconds=statistics.median(secs),
        to_result=statistics.median(r["to_result"] for r in m["runs"]),
        train=statistics.median(r["train_seconds"] for r in m["runs"]),
    )  # fmt: skip


def table(measured: list[dict], peaks: dict[str, float]) -> list[str]:
    lines = [
        "| mark | who | test accuracy | seconds from start | to result | training | speed-up "
        "| mark and goal met? |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in measured:
        s, bases = summary(m), m["baselines"]
        name = f"{m['dataset']} >= {100 * m['target']:.2f}".rstrip("0").rstrip(".") + "%"
        accs = ", ".join(f"{100 * r['accuracy']:.2f}" for r in m["runs"])
        accurate = s["mean"] >= m["target"] and s["low"] >= m["lowest"]
        # against the fastest baseline (airbench94 runs with and without convkit's malloc)
        b = min(bases, key=lambda b: b["seconds"]) if bases else None
        speedup, met = "", f"accuracy {'yes' if accurate else 'NO'}"
        if b is not None:
            ratio = b["seconds"] / s["seconds"]
            speedup = f"{ratio:.1f}x" if b["reached"] else f"> {ratio:.1f}x"
        if m.get("goal_peak"):
            share = m["flops"] / s["train"] / (peaks[m["precision"]] * 1e9)
            met += (f", training at {100 * share:.0f}% of the {m['precision']} peak (goal "
                    f"{100 * m['goal_peak']:.0f}%) {'yes' if share >= m['goal_peak'] else 'NO'}")  # fmt: skip
        elif m.get("goal_ratio"):
            if b is None:
                met += ", no baseline run"
            else:
                fast = s["seconds"] <= m["goal_ratio"] * b["seconds"]
                met += f", <= {m['goal_ratio']:g}x the faster baseline's time {'yes' if fast else 'NO'}"
        elif m["goal"]:
            fast = s["to_result"] <= m["goal"]
            met += f", <= {m['goal']:.0f} s to result {'yes' if fast else 'NO'}"
        else:
            met += ", its time reported (no goal)"
        lines.append(
            f"| {name} | convkit `{m['recipe']}`, {len(m['runs'])} seeds (median time) "
            f"| mean {100 * s['mean']:.2f}%, lowest {100 * s['low']:.2f}% ({accs}) "
            f"| {s['seconds']:.1f} | {s['to_result']:.1f} | {s['train']:.1f} | {speedup} | {met} |"
        )
        for b in bases:
            if b.get("estimated"):
                reached = "estimated"
            elif b["reached"]:
                reached = f"epoch {b['epochs']}"
            else:
                reached = f"not reached in {b['epochs']} epochs"
            lines.append(
                f"| {name} | {b['who']} ({reached}) | {100 * b['accuracy']:.2f}% "
                f"| {b['seconds']:.1f} |  | {b['train_seconds']:.1f} |  |  |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    import torch
    from bench import machine, machine_line, matmul_peak

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--marks", nargs="*", default=DEFAULT_MARKS, choices=[*MARKS, "all"],
        help=f"default: {' '.join(DEFAULT_MARKS)} (minutes); all: every mark (hours)",
    )  # fmt: skip
    p.add_argument(
        "--airbench94", default=None, help="cifar94's baseline: a CPU port of airbench94.py"
    )
    p.add_argument(
        "--seeds", type=int, default=None,
        help="convkit runs per mark, seeds 0..N-1 (default: the mark's own: mnist99 10, cifar68 "
        "and cifar94 5, mlp98, resnet20 and resnet56 3)",
    )  # fmt: skip
    p.add_argument("--max-epochs", type=int, default=30, help="the baselines' limit")
    p.add_argument("--json", dest="json_out", default=None, help="write the results here")
    p.add_argument("--markdown", default=None, help="write the table here, as Markdown")
    args = p.parse_args(argv)

    info = machine()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    head = machine_line(info, peaks)
    print(head, flush=True)
    measured = []
    for mark in LONG_MARKS if "all" in args.marks else args.marks:
        print(f"{mark}:", flush=True)
        measured.append(measure(mark, args.seeds, args.max_epochs, args.airbench94))
    lines = table(measured, peaks)
    print("\n".join(lines))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": info, "peak_gflops": peaks, "marks": measured}
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text("\n".join([head, "", *lines]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
