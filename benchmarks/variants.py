"""Variants of a recipe, each run for several seeds: mean and lowest test accuracy, time, FLOPs.

    python benchmarks/variants.py --seeds 5 "epochs=7 low_res_epochs=2" "tta=selective"

Each quoted argument is one variant: settings of `convkit train RECIPE` (as in a config file,
the names without --) on top of the recipe's; an empty string is the recipe itself. Every
seed is its own process, run one after the other. The FLOPs are counted from the model's
layer table: three passes for each training image at the size it trains at (forward, input
and weight gradients, less the first layer's input gradient), and one for each view of each
test image (selective: the plain view, and 5 more for the least confident 15% of each test
batch). `--flops-only` prints them without training. Issue 21 asks for each variant's 5-seed
mean, its FLOPs and its time beside airbench94 (`time_to_accuracy.py --marks cifar94`)."""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from time_to_accuracy import run_convkit

SELECTIVE_VIEWS = 5  # the views selective adds for each picked image (flip-translate's 6 - 1)
VIEWS = {"none": 1, "flip": 2, "flip-translate": 6}


def parse_variant(text: str) -> dict[str, object]:
    """ "epochs=8 tta=selective" -> {"epochs": 8, "tta": "selective"}"""
    settings: dict[str, object] = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"expected settings as name=value, received {item!r} in {text!r}")
        try:
            settings[key.replace("-", "_")] = json.loads(value)  # numbers and true/false
        except json.JSONDecodeError:
            settings[key.replace("-", "_")] = value
    return settings


def variant_flops(recipe: str, settings: dict[str, object]) -> dict[str, float]:
    """Training and test FLOPs (multiply-adds x 2) of `recipe` with `settings` on its dataset."""
    from convkit.api import train_config
    from convkit.data import get_dataset_spec
    from convkit.inspect.arithmetic import explain
    from convkit.models import create_model
    from convkit.models.tta import SELECTIVE_SHARE
    from convkit.train.runner import eval_batch

    cfg = train_config(recipe, settings=settings)  # as `convkit train RECIPE --x ...` resolves it
    spec = get_dataset_spec(cfg.dataset)
    c, h, w = spec.image_shape
    model = create_model(cfg.model)

    def per_image(side_h: int, side_w: int) -> tuple[int, int]:
        table = explain(model, (c, side_h, side_w))
        return table.total_macs, next(r.macs for r in table.layers if r.macs)

    images = spec.train_size - round(spec.train_size * cfg.val_split)
    train = 0
    for epoch in range(cfg.epochs):
        small = cfg.low_res and epoch < cfg.low_res_epochs
        macs, first = per_image(cfg.low_res, cfg.low_res) if small else per_image(h, w)
        train += 2 * images * (3 * macs - first)
    macs, _ = per_image(h, w)
    if cfg.tta == "selective":  # batch by batch, as the test runs; ties could add a few more
        batch = eval_batch(cfg, SimpleNamespace(images=torch.empty(0, c, h, w)))
        sizes = [min(batch, spec.test_size - i) for i in range(0, spec.test_size, batch)]
        passes = sum(n + SELECTIVE_VIEWS * math.ceil(SELECTIVE_SHARE * n) for n in sizes)
    else:
        passes = spec.test_size * VIEWS[cfg.tta]
    test = 2 * passes * macs
    return dict(train=train, test=test, total=train + test)


def flags(settings: dict[str, object]) -> list[str]:
    """{"epochs": 8, "freeze": True} -> ["--epochs", "8", "--freeze"]"""
    out: list[str] = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # switches: --freeze / --no-freeze
            out.append(flag if value else "--no-" + flag[2:])
        else:
            out += [flag, str(value)]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("variants", nargs="+", help='settings, e.g. "epochs=8 tta=selective"; "" for '
                   "the recipe itself")  # fmt: skip
    p.add_argument("--recipe", default="cifar10-fast")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--flops-only", action="store_true", help="count, do not train")
    p.add_argument("--json", dest="json_out", default=None, help="append one line a variant")
    args = p.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    base = variant_flops(args.recipe, {})["total"]
    print(
        "| variant | seeds | mean | lowest | per seed | seconds (median) | TFLOP | of the recipe's |"
    )
    print("|---|---:|---:|---:|---|---:|---:|---:|")
    for settings in variants:
        flops = variant_flops(args.recipe, settings)
        name = " ".join(f"{k}={v}" for k, v in settings.items()) or args.recipe
        runs = []
        if not args.flops_only:
            with tempfile.TemporaryDirectory() as tmp:
                for s in range(args.first_seed, args.first_seed + args.seeds):
                    runs.append(
                        run_convkit(args.recipe, s, Path(tmp) / f"seed{s}", flags(settings))
                    )
                    r = runs[-1]
                    print(f"  {name} seed {s}: {100 * r['accuracy']:.2f}%, {r['seconds']:.1f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
        acc = [100 * r["accuracy"] for r in runs]
        cells = (
            [f"{statistics.mean(acc):.2f}%", f"{min(acc):.2f}%", ", ".join(f"{a:.2f}" for a in acc),
             f"{statistics.median(r['seconds'] for r in runs):.1f}"]
            if runs else ["", "", "", ""]
        )  # fmt: skip
        print(f"| {name} | {len(runs)} | " + " | ".join(cells)
              + f" | {flops['total'] / 1e12:.1f} | {flops['total'] / base:.2f}x |", flush=True)  # fmt: skip
        if args.json_out:
            with open(args.json_out, "a") as f:
                f.write(json.dumps(dict(recipe=args.recipe, settings=settings, flops=flops,
                                        runs=runs)) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
