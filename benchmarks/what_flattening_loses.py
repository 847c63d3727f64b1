"""The README's "What flattening loses" figures, from scratch, in one command.

Trains the MNIST recipes that differ only in their network (mnist-mlp, mnist-cnn, mnist-gap,
mnist-cnn-aa, mnist-gap-aa), runs `convkit robustness` on each with the MLP as the mCE baseline,
runs the permutation experiment (the MLP and the CNN on pixel-shuffled MNIST), and prints one
markdown table plus the compare picture. Each command runs in its own process, one after another,
and is timed from outside; nothing else should run on the machine meanwhile.

    python benchmarks/what_flattening_loses.py --out benchmarks/out/flattening [--seed 0]

The table's reports make every transformed copy from the whole test set (`--sample all`), so
its figures are exact. The speed benchmark is the whole default report on mnist-cnn (copies of a
5,000-image sample, clean accuracy on all 10,000), timed alone and with the MLP as baseline,
beside the time of the same shift grid made by a per-image Python loop (the baseline the issue
names: transforms as array operations against a loop per image).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench import machine, machine_line, matmul_peak  # noqa: E402  (one machine line for all)

MODELS = ("mnist-mlp", "mnist-cnn", "mnist-gap", "mnist-cnn-aa", "mnist-gap-aa")
PERMUTED = ("mnist-mlp", "mnist-cnn")


def convkit(*args: str) -> tuple[dict, float]:
    """Run `convkit ARGS --json` in a new process; (its JSON, seconds from start to exit)."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "convkit", *args, "--json"],
        check=True, capture_output=True, text=True, env=os.environ,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - t0


def loop_shift_grid_seconds(run: Path, k: int) -> float:
    """The baseline: the same (2K+1)^2 shifted test sets made one image at a time in Python."""
    import numpy as np

    from convkit.runs import Run, load_data

    kept = Run(run).kept_model()
    images = load_data(kept.cfg)[0].test.images.numpy()
    t0 = time.perf_counter()
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            out = np.zeros_like(images)
            for i in range(len(images)):  # per image, as a first attempt would
                img = np.roll(images[i], (dy, dx), axis=(-2, -1))
                if dy > 0:
                    img[:, :dy] = 0
                elif dy < 0:
                    img[:, dy:] = 0
                if dx > 0:
                    img[:, :, :dx] = 0
                elif dx < 0:
                    img[:, :, dx:] = 0
                out[i] = img
    return time.perf_counter() - t0


def array_shift_grid_seconds(run: Path, k: int) -> float:
    from convkit.data.geometry import translate
    from convkit.runs import Run, load_data

    kept = Run(run).kept_model()
    images = load_data(kept.cfg)[0].test.images
    t0 = time.perf_counter()
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            translate(images, dx, dy)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/out/flattening", help="runs and pictures")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--models", default=",".join(MODELS))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(machine_line(machine(), peaks), flush=True)
    models = args.models.split(",")
    rows = []
    runs: dict[str, Path] = {}
    for model in models:
        path = out / f"{model}-seed{args.seed}"
        if not (path / "result.json").exists():
            convkit("train", model, "--seed", str(args.seed), "--out", str(path), "--quiet")
        runs[model] = path
    base = runs.get("mnist-mlp")
    for model, path in runs.items():
        extra = ["--baseline", str(base)] if base and model != "mnist-mlp" else []
        report, wall = convkit("robustness", str(path), "--seed", str(args.seed),
                               "--sample", "all", *extra)  # fmt: skip
        result = json.loads((path / "result.json").read_text())
        rows.append((model, result, report, wall))
        print(f"{model}: robustness {report['seconds']:.1f} s ({wall:.1f} s with start-up)",
              flush=True)  # fmt: skip
    permuted = []
    for model in PERMUTED:
        for perm in (0, 1):
            path = out / f"{model}-perm{perm}-seed{args.seed}"
            if perm == 0 and model in runs:  # the plain run above is this one
                path = runs[model]
            if not (path / "result.json").exists():
                convkit("train", model, "--seed", str(args.seed), "--permute-pixels", str(perm),
                        "--out", str(path), "--quiet")  # fmt: skip
            permuted.append((model, perm, json.loads((path / "result.json").read_text())))
    subprocess.run(
        [sys.executable, "-m", "convkit", "compare", *map(str, runs.values()), "--out", str(out)],
        check=True,
    )
    print()
    print("| model | parameters | clean accuracy | train s | shift grid mean | at 4 px | "
          "consistency | rotate ±30° | mean corruption error | mCE vs MLP | rel. mCE | "
          "robustness s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731

    def ratio(mce: dict, key: str) -> str:
        if not mce:
            return "100% (baseline)"
        left_out = mce.get("left_out", {}).get(key.replace("mce", "ce"), [])
        note = f" (without {', '.join(left_out)})" if left_out else ""
        return "undefined" if mce[key] is None else pct(mce[key]) + note

    for model, result, r, _ in rows:
        rot = {x["angle"]: x["accuracy"] for x in r["rotate"]}
        mce = r.get("mce") or {}
        print(
            f"| `{model}` | {result['params']:,} | {pct(r['clean_accuracy'])} | "
            f"{result['train_seconds']:.1f} | {pct(r['shift']['mean'])} | "
            f"{pct(r['shift']['by_distance'][-1]['accuracy'])} | "
            f"{pct(r['shift']['consistency'])} | "
            f"{pct(rot[-30.0])} / {pct(rot[30.0])} | {pct(r['corruptions']['mean_error'])} | "
            f"{ratio(mce, 'mce')} | {ratio(mce, 'relative_mce')} | {r['seconds']:.1f} |"
        )
    print()
    print("| model | pixels | test accuracy | train s |")
    print("|---|---|---:|---:|")
    for model, perm, result in permuted:
        what = "shuffled (seed 1)" if perm else "as they are"
        print(f"| `{model}` | {what} | {pct(result['test_accuracy'])} | "
              f"{result['train_seconds']:.1f} |")  # fmt: skip
    if "mnist-cnn" in runs:
        # Last, as they replace the saved exact reports (the compare picture is made above).
        exact = next(r for m, _, r, _ in rows if m == "mnist-cnn")
        cnn, pics = str(runs["mnist-cnn"]), str(out / "default-report")
        steps = [("convkit robustness CNN", [cnn])]
        if base:
            steps += [("convkit robustness MLP", [str(base)]),
                      ("convkit robustness CNN --baseline MLP (its saved default report reused)",
                       [cnn, "--baseline", str(base)])]  # fmt: skip
        print("\nThe default report (copies of a 5,000-image sample):")
        for what, extra in steps:
            report, wall = convkit("robustness", *extra, "--out", pics)
            print(
                f"  {what}: {report['seconds']:.1f} s in the report, {wall:.1f} s with "
                f"start-up; {report['images_scored']:,} images scored "
                f"({report['images_scored'] / report['seconds']:,.0f}/s)",
                flush=True,
            )
            if extra[0] == cnn:
                print(f"    shift mean {pct(report['shift']['mean'])} (whole test set: "
                      f"{pct(exact['shift']['mean'])}), consistency "
                      f"{pct(report['shift']['consistency'])} "
                      f"({pct(exact['shift']['consistency'])}), mean corruption error "
                      f"{pct(report['corruptions']['mean_error'])} "
                      f"({pct(exact['corruptions']['mean_error'])})")  # fmt: skip
        k = 4
        loop = loop_shift_grid_seconds(runs["mnist-cnn"], k)
        arrays = array_shift_grid_seconds(runs["mnist-cnn"], k)
        print(f"\nMaking the 81 shifted test sets (10,000 images each): array slicing "
              f"{arrays:.2f} s, a Python loop per image {loop:.2f} s ({loop / arrays:.0f}x)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
