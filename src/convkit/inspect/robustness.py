"""How a trained model holds up when its test images are not what its training set was: moved,
turned, resized, corrupted, or drawn by other writers. The lecture's claim, measured: an MLP
that flattens the image loses where things are, so a digit moved a few pixels is a new input to
it; convolutions and pooling keep the spatial structure.

Everything here returns plain data (`robustness` a dict that becomes robustness.json); the
terminal table, the pictures and the web page are front ends over it. Each transformed test
set is made from the stored uint8 images by one array operation (convkit.data.geometry,
convkit.data.corruptions), deterministically from a seed, and scored exactly as `convkit
evaluate` scores the run: the same engine, precision, memory layout, batch size and test-time
augmentation. So the centre cell of the shift grid is the run's test accuracy, exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convkit.data import Batches, Split
from convkit.data import corruptions as C
from convkit.data.geometry import check_max_shift, rescale, rotate, translate
from convkit.errors import ConfigError
from convkit.models.tta import with_tta
from convkit.runs import KeptModel
from convkit.train.runner import eval_batch

TESTS = ("shift", "rotate", "scale", "corrupt")
ANGLES = tuple(range(-45, 50, 5))  # degrees, counterclockwise positive
SCALES = (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4)
CONSISTENCY_PAIRS = 1  # random pairs of shifts drawn per test image
# The transformed copies are made from this many test images, drawn at random (from the seed)
# and the same for every run of one test set, so a default report on MNIST's 10,000 stays under
# a minute on 2 cores. The clean accuracy is always scored on the whole test set; `sample=None`
# makes every copy from the whole test set (the centre cell is then the test accuracy).
SAMPLE = 5_000

DEFINITIONS = {
    "shift": "accuracy on the test set with every image moved dx pixels right and dy pixels "
    "down (negative: left, up), vacated pixels 0; grid rows are dy = -K..K, columns dx = -K..K",
    "shift_mean": "the mean accuracy over all (2K+1)^2 cells of the grid",
    "by_distance": "the mean accuracy over the cells at distance d = max(|dx|, |dy|) (the d-th "
    "ring of the grid around the centre)",
    "consistency": "shift consistency (Zhang 2019): the fraction of test images whose predicted "
    "class is the same for two shifts (dx, dy) drawn independently and uniformly from the grid",
    "rotate": "accuracy with every image turned by the angle about its centre (degrees, "
    "counterclockwise), bilinear, outside pixels 0",
    "scale": "accuracy with every image magnified by the factor about its centre (below 1: "
    "smaller), bilinear, outside pixels 0",
    "corruptions": "error (1 - accuracy) on the test set under each corruption at severities "
    "1-5 (MNIST-C's constants for grey images, CIFAR-10-C's for colour)",
    "mce": "corruption error (Hendrycks & Dietterich 2019): CE_c = sum over severities of this "
    "run's error / the baseline's; mCE = the mean of CE_c over corruptions",
    "relative_mce": "relative CE_c = sum over severities of (error - clean error) / the same for "
    "the baseline; relative mCE = their mean",
    "images": "accuracy on the image folder given with --images (class folders named as the "
    "run's classes), each file converted as `convkit predict` converts it",
    "sample": "the transformed copies are made from these test images, drawn at random without "
    "replacement from the seed (the same images for every run with this test set and seed); "
    "clean_accuracy is scored on the whole test set, sample.clean_accuracy on these images "
    "(the centre cell of the grid)",
}


# ---- scoring --------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """Predicted classes of uint8 images (N, C, H, W), computed as `convkit evaluate` computes
    them for the run (its engine, precision, layout, eval batch size and test-time
    augmentation)."""

    kept: KeptModel
    seen: int = 0  # images scored so far (for the throughput line)

    def __post_init__(self) -> None:
        from convkit.train.engine import resolve_engine

        cfg = self.kept.cfg
        self.engine = resolve_engine(
            cfg.device, cfg.precision, cfg.channels_last, "off", self.kept.model
        )
        model, _ = self.engine.prepare(self.kept.model)
        self.model = with_tta(model, cfg.tta).eval()

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(N,) int64 predicted classes, on the CPU."""
        split = Split(images, torch.zeros(len(images), dtype=torch.int64))
        batches = Batches(
            split.to(self.engine.device), eval_batch(self.kept.cfg, split),
            memory_format=self.engine.memory_format, **self.kept.normalization,
        )  # fmt: skip
        out = []
        for x, _ in batches:
            with self.engine.autocast():
                out.append(self.model(x).argmax(1).cpu())
        self.seen += len(images)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


def _accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predicted == labels).double().mean()) if len(labels) else float("nan")


# ---- the tests ------------------------------------------------------------------------------------


def shift_test(
    predict: Callable[[torch.Tensor], torch.Tensor],
    test: Split,
    max_shift: int,
    seed: int,
    clean: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The (2K+1) x (2K+1) grid of accuracies, its mean, the accuracy per ring and the shift
    consistency, from one prediction per image per cell. `clean`: the predictions already made
    for the unshifted images (the centre cell), so they are not scored twice."""
    k = max_shift
    offsets = list(range(-k, k + 1))
    preds = torch.empty(len(offsets), len(offsets), len(test), dtype=torch.int64)  # (dy, dx, N)
    for i, dy in enumerate(offsets):
        for j, dx in enumerate(offsets):
            if dx == dy == 0 and clean is not None:
                preds[i, j] = clean
            else:
                preds[i, j] = predict(translate(test.images, dx, dy))
    correct = preds == test.labels  # (dy, dx, N)
    grid = correct.double().mean(-1)  # (2K+1, 2K+1)
    ring = torch.tensor([[max(abs(dx), abs(dy)) for dx in offsets] for dy in offsets])
    by_distance = [
        {"distance": d, "accuracy": float(grid[ring == d].mean()), "cells": int((ring == d).sum())}
        for d in range(k + 1)
    ]
    # Consistency: for each image, two cells drawn independently and uniformly from the grid.
    g = torch.Generator().manual_seed(seed)
    n, cells = len(test), len(offsets) ** 2
    flat = preds.reshape(cells, n)
    pairs = torch.randint(cells, (2, CONSISTENCY_PAIRS, n), generator=g)
    same = flat.gather(0, pairs[0]) == flat.gather(0, pairs[1])
    return {
        "max_shift": k,
        "offsets": offsets,
        "grid": grid.tolist(),
        "mean": float(grid.mean()),
        "by_distance": by_distance,
        "consistency": float(same.double().mean()) if n else float("nan"),
        "consistency_pairs": int(same.numel()),
    }


def transform_test(
    predict: Callable[[torch.Tensor], torch.Tensor],
    test: Split,
    values: Sequence[float],
    transform: Callable[[torch.Tensor, float], torch.Tensor],
    key: str,
) -> list[dict[str, float]]:
    return [
        {key: float(v), "accuracy": _accuracy(predict(transform(test.images, v)), test.labels)}
        for v in values
    ]


def corruption_test(
    predict: Callable[[torch.Tensor], torch.Tensor],
    test: Split,
    names: Sequence[str],
    seed: int,
    clean_accuracy: float,
) -> dict[str, Any]:
    table = C.corruption_table(tuple(test.images.shape[1:]))
    items = []
    for name in names:
        errors = [
            1.0 - _accuracy(predict(C.corrupt(test.images, name, s, seed + s)), test.labels)
            for s in range(1, 6)
        ]
        items.append(
            {**table[name].to_dict(), "errors": errors, "mean_error": float(np.mean(errors))}
        )
    return {
        "source": sorted({table[n].source for n in names}),
        "clean_error": 1.0 - clean_accuracy,
        "items": items,
        "mean_error": float(np.mean([i["mean_error"] for i in items])) if items else None,
    }


def mean_corruption_error(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """mCE and relative mCE of `report` against `baseline` (both robustness reports with the
    same corruptions), normalised per corruption by the baseline's errors, as Hendrycks &
    Dietterich 2019 normalise by AlexNet's."""
    mine = {i["name"]: i["errors"] for i in report["corruptions"]["items"]}
    base = {i["name"]: i["errors"] for i in baseline["corruptions"]["items"]}
    missing = [n for n in mine if n not in base]
    if missing:
        raise ConfigError(
            f"the baseline's robustness results lack the corruption {missing[0]!r}; run "
            f"`convkit robustness {baseline['run']}` with the same --corruptions first"
        )
    clean, base_clean = report["corruptions"]["clean_error"], baseline["corruptions"]["clean_error"]
    per = {}
    for name, errors in mine.items():
        b = base[name]
        # A ratio with nothing to normalise by (the baseline made no errors under it, or no
        # more than on clean images) is undefined: None, and left out of its mean.
        ce = sum(errors) / sum(b) if sum(b) > 0 else None
        denom = sum(e - base_clean for e in b)
        rel = sum(e - clean for e in errors) / denom if denom > 0 else None
        per[name] = {"ce": ce, "relative_ce": rel}

    def mean(key: str) -> float | None:
        values = [v[key] for v in per.values() if v[key] is not None]
        return float(np.mean(values)) if values else None

    return {
        "baseline": baseline["run"],
        "baseline_model": baseline["model"],
        "mce": mean("ce"),
        "relative_mce": mean("relative_ce"),
        "left_out": {
            key: [n for n, v in per.items() if v[key] is None] for key in ("ce", "relative_ce")
        },
        "per_corruption": per,
    }


def folder_test(
    predict: Callable[[torch.Tensor], torch.Tensor], kept: KeptModel, folder: str | Path
) -> dict[str, Any]:
    """Accuracy on a folder of class folders (FOLDER/<class>/<image>), each image converted as
    `convkit predict` converts user images for this run."""
    from convkit.data.images import conversion_options, load_image

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"--images {root}: not a folder; give a folder of class folders")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [c for c in classes if c not in kept.classes]
    if not classes or unknown:
        raise ConfigError(
            f"--images {root}: expected class folders named as the run's classes "
            f"({', '.join(kept.classes)}), found "
            + (f"{unknown[0]!r}" if unknown else "no class folders")
        )
    options = conversion_options(kept.cfg.dataset, kept.image_shape, kept.cfg.fit)
    images, labels, failed = [], [], []
    for name in classes:
        for path in sorted((root / name).iterdir()):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                item = load_image(path, kept.image_shape, **options)
            except ConfigError as exc:
                failed.append(str(exc))
                continue
            images.append(item["converted"])
            labels.append(kept.classes.index(name))
    if not images:
        raise ConfigError(f"--images {root}: no readable image files in its class folders")
    x = torch.from_numpy(np.stack(images))
    y = torch.tensor(labels, dtype=torch.int64)
    return {
        "folder": str(root),
        "count": len(labels),
        "unreadable": failed,
        "accuracy": _accuracy(predict(x), y),
    }


# ---- the report -----------------------------------------------------------------------------------


def check_tests(only: Sequence[str]) -> tuple[str, ...]:
    unknown = [t for t in only if t not in TESTS]
    if unknown:
        raise ConfigError(f"unknown test {unknown[0]!r}; tests are: {', '.join(TESTS)}")
    return tuple(t for t in TESTS if t in only)


def check_sample(sample: int | None) -> None:
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int)
                               or sample < 1):  # fmt: skip
        raise ConfigError(f"expected a sample of >= 1 test images (or all), received {sample!r}")


def sample_indices(n: int, sample: int | None, seed: int) -> torch.Tensor | None:
    """Sorted indices of `sample` of n test images drawn at random without replacement from the
    seed (the same for every run of one test set); None when all n are used."""
    if sample is None or sample >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:sample].sort().values


def default_max_shift(image_shape: tuple[int, int, int]) -> int:
    """4 pixels for MNIST's 28x28 and CIFAR-10's 32x32 (the issue's K); a seventh of the
    shorter side elsewhere."""
    side = min(image_shape[1:])
    return 4 if side in (28, 32) else max(1, round(side / 7))


def robustness(
    kept: KeptModel,
    test: Split,
    *,
    run: str = "",
    tests: Sequence[str] = TESTS,
    max_shift: int | None = None,
    angles: Sequence[float] = ANGLES,
    scales: Sequence[float] = SCALES,
    corruptions: Sequence[str] | None = None,
    images: str | Path | None = None,
    seed: int = 0,
    sample: int | None = SAMPLE,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """The robustness report of a kept model on its test split (see DEFINITIONS): the clean
    accuracy on the whole split, every transformed copy made from `sample` of its images (None,
    or the split's size or more: all of them)."""
    started = time.perf_counter()
    shape = tuple(test.images.shape[1:])
    tests = check_tests(tests)
    check_sample(sample)
    k = default_max_shift(shape) if max_shift is None else max_shift
    check_max_shift(k, shape)
    if "corrupt" not in tests or (corruptions is not None and not list(corruptions)):
        names: list[str] = []
    else:  # None: the table's defaults for this image shape
        names = C.check_corruptions(corruptions, shape)
    for v in scales:
        if not v > 0:
            raise ConfigError(f"expected scales > 0, received {v}")
    scorer = Scorer(kept)
    clean = scorer.predict(test.images)
    index = sample_indices(len(test), sample, seed)
    part = test if index is None else Split(test.images[index], test.labels[index])
    part_clean = clean if index is None else clean[index]
    report: dict[str, Any] = {
        "run": run,
        "model": kept.cfg.model,
        "dataset": kept.cfg.dataset,
        "permute_pixels": kept.cfg.permute_pixels,
        "tta": kept.cfg.tta,
        "test_images": len(test),
        "seed": seed,
        "clean_accuracy": _accuracy(clean, test.labels),
        "sample": {
            "images": len(part),
            "of": len(test),
            "seed": seed,
            "clean_accuracy": _accuracy(part_clean, part.labels),
        },
    }
    log(f"clean: {100 * report['clean_accuracy']:.2f}% on {len(test):,} test images")
    if index is not None:
        log(f"transformed copies of {len(part):,} of them, drawn at random (seed {seed}; "
            f"clean: {100 * report['sample']['clean_accuracy']:.2f}%)")  # fmt: skip
    if "shift" in tests:
        report["shift"] = shift_test(scorer.predict, part, k, seed, clean=part_clean)
        log(f"shifts up to {k} px: mean {100 * report['shift']['mean']:.2f}%")
    if "rotate" in tests:
        report["rotate"] = transform_test(scorer.predict, part, angles, rotate, "angle")
        log("rotations: done")
    if "scale" in tests:
        report["scale"] = transform_test(scorer.predict, part, scales, rescale, "scale")
        log("scales: done")
    if "corrupt" in tests and names:
        report["corruptions"] = corruption_test(
            scorer.predict, part, names, seed, report["sample"]["clean_accuracy"]
        )
        log(f"corruptions: mean error {100 * report['corruptions']['mean_error']:.2f}%")
    if images is not None:
        report["images"] = folder_test(scorer.predict, kept, images)
    seconds = time.perf_counter() - started
    from convkit.train.provenance import provenance

    report.update(
        definitions=dict(DEFINITIONS),
        **provenance(),
        seconds=seconds,
        images_scored=scorer.seen,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return report


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, figure) lines of a report, for the terminal and the notebook."""
    pct = lambda v: f"{100 * v:.2f}%"  # noqa: E731
    rows = [(f"clean accuracy ({report['test_images']:,} test images)",
             pct(report["clean_accuracy"]))]  # fmt: skip
    sample = report.get("sample")
    if sample and sample["images"] < report["test_images"]:
        rows.append((f"  on the {sample['images']:,} the copies are made from",
                     pct(sample["clean_accuracy"])))  # fmt: skip
    if "shift" in report:
        s = report["shift"]
        rows.append((f"shift grid mean (|dx|, |dy| <= {s['max_shift']})", pct(s["mean"])))
        rows += [(f"  at distance {d['distance']}", pct(d["accuracy"])) for d in s["by_distance"]]
        rows.append(("shift consistency", pct(s["consistency"])))
    for key, unit in (("rotate", "angle"), ("scale", "scale")):
        if key in report:
            for r in report[key]:
                value = f"{r[unit]:+g} deg" if unit == "angle" else f"x{r[unit]:g}"
                rows.append((f"{key} {value}", pct(r["accuracy"])))
    if "corruptions" in report:
        for item in report["corruptions"]["items"]:
            errs = " ".join(f"{100 * e:5.1f}" for e in item["errors"])
            rows.append((f"error {item['name']} (sev 1-5)", errs))
        rows.append(("mean corruption error", pct(report["corruptions"]["mean_error"])))
    if "mce" in report:
        m = report["mce"]
        for key, what in (("mce", "mCE"), ("relative_mce", "relative mCE")):
            figure = "undefined" if m[key] is None else pct(m[key])
            rows.append((f"{what} vs {m['baseline_model']}", figure))
    if "images" in report:
        i = report["images"]
        rows.append((f"images in {i['folder']} ({i['count']})", pct(i["accuracy"])))
    return rows


def examples(
    image: torch.Tensor,
    report: dict[str, Any],
    seed: int = 0,
) -> list[tuple[str, list[tuple[str, np.ndarray]]]]:
    """One test image (C, H, W) uint8 under each transform the report tested, row by row:
    [(row label, [(caption, image)])], for a person to see what was measured."""
    x = image[None]
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    if "shift" in report:
        k = report["shift"]["max_shift"]
        steps = sorted({-k, -(k // 2), 0, k // 2, k})
        rows.append(("shift (dx = dy)", [(f"{d:+d} px", translate(x, d, d)[0].numpy())
                                         for d in steps]))  # fmt: skip
    if "rotate" in report:
        picks = _spread([r["angle"] for r in report["rotate"]])
        rows.append(("rotate", [(f"{a:+g} deg", rotate(x, a)[0].numpy()) for a in picks]))
    if "scale" in report:
        picks = _spread([r["scale"] for r in report["scale"]])
        rows.append(("scale", [(f"x{v:g}", rescale(x, v)[0].numpy()) for v in picks]))
    if "corruptions" in report:
        for item in report["corruptions"]["items"]:
            name = item["name"]
            rows.append(
                (
                    name,
                    [
                        (f"severity {s}", C.corrupt(x, name, s, seed + s)[0].numpy())
                        for s in range(1, 6)
                    ],
                )  # fmt: skip
            )
    return rows


# ---- a run folder in, a saved report out (the command line and the Python API) --------------------


def _spread(values: list[float], count: int = 5) -> list[float]:
    """Up to `count` of the values, evenly spread from the first to the last."""
    n = len(values)
    return list(dict.fromkeys(values[round(i * (n - 1) / (count - 1))] for i in range(count)))


def run_robustness(
    run_dir: str | Path,
    *,
    out: str | Path | None = None,
    only: Sequence[str] | None = None,
    max_shift: int | None = None,
    corruptions: Sequence[str] | None = None,
    angles: Sequence[float] | None = None,
    scales: Sequence[float] | None = None,
    baseline: str | Path | None = None,
    images: str | Path | None = None,
    seed: int = 0,
    sample: int | None = SAMPLE,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    pictures: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """`convkit robustness RUN`: the report of a run's kept model on its test set, saved as
    RUN/robustness.json, with pictures in `out` (default RUN/robustness). Every setting is
    checked before the data is loaded, and nothing is written unless the whole report is made.
    `corruptions` ["none"] or [] skips them; `baseline` adds mCE against another run of the
    same dataset (its saved report when it matches these settings, else computed). `sample`:
    how many test images the transformed copies are made from (None: all); `limit`: only the
    first N test images, for everything."""
    from convkit.data.geometry import check_max_shift
    from convkit.runs import Run, load_data

    run = Run.open(run_dir)
    weights = run.weights_signature()  # before loading: the report belongs to these weights
    kept = run.kept_model()
    shape = kept.image_shape
    tests = check_tests(only) if only else TESTS
    k = default_max_shift(shape) if max_shift is None else max_shift
    check_max_shift(k, shape)
    names = None
    if corruptions is not None:
        names = [n for n in corruptions if n != "none"]
        names = C.check_corruptions(names, shape) if names else []
    if limit is not None and limit < 1:
        raise ConfigError(f"expected limit >= 1, received {limit}")
    check_sample(sample)
    base = _baseline(baseline, kept, run_dir) if baseline is not None else None
    if base is not None and ("corrupt" not in tests or names == []):
        raise ConfigError(
            "a baseline compares corruption errors (mCE): keep 'corrupt' in the tests and name "
            "at least one corruption (or none, for the defaults)"
        )
    if images is not None and not Path(images).is_dir():
        raise ConfigError(f"--images {images}: not a folder; give a folder of class folders")
    test = load_data(kept.cfg, data_dir=data_dir, download=download, log=log)[0].test
    test = test[:limit] if limit else test
    common: dict[str, Any] = dict(
        tests=tests, max_shift=k, corruptions=names, seed=seed, sample=sample, log=log
    )
    if angles:
        common["angles"] = list(angles)
    if scales:
        common["scales"] = list(scales)
    log(f"Robustness of {run.root} ({kept.cfg.model} on {kept.cfg.dataset}), seed {seed}")
    report = robustness(kept, test, run=str(run.root), images=images, **common)
    if base is not None:
        base_run, base_kept = base
        saved = base_run.robustness()
        usable = (
            saved is not None
            and saved.get("seed") == seed
            and saved.get("test_images") == len(test)
            # a report from before samples made every copy from the whole test set
            and saved.get("sample", {"images": saved.get("test_images")})["images"]
            == report["sample"]["images"]
            and "corruptions" in saved
            and {i["name"] for i in report["corruptions"]["items"]}
            <= {i["name"] for i in saved["corruptions"]["items"]}
        )
        if not usable:
            log(f"Baseline {base_run.root}: scoring its corruptions with the same settings")
            saved = robustness(base_kept, test, run=str(base_run.root),
                               **{**common, "tests": ("corrupt",)})  # fmt: skip
        report["mce"] = mean_corruption_error(report, saved)
    folder = Path(out) if out else run.root / "robustness"
    report["pictures"] = (
        [str(p) for p in draw_robustness(report, test, folder, _title(kept))] if pictures else []
    )
    run.write_robustness(report, weights)
    return report


def _title(kept: KeptModel) -> str:
    perm = f", pixels shuffled ({kept.cfg.permute_pixels})" if kept.cfg.permute_pixels else ""
    return f"{kept.cfg.recipe or kept.cfg.model} on {kept.cfg.dataset}{perm}"


def _baseline(baseline: str | Path, kept: KeptModel, run_dir: str | Path):
    from convkit.runs import Run

    base_run = Run.open(baseline)
    base = base_run.kept_model()
    if base.cfg.dataset != kept.cfg.dataset or base.image_shape != kept.image_shape:
        shape = lambda s: "x".join(map(str, s))  # noqa: E731
        raise ConfigError(
            f"baseline {baseline} was trained on {base.cfg.dataset} ({shape(base.image_shape)}), "
            f"{run_dir} on {kept.cfg.dataset} ({shape(kept.image_shape)}): corruption errors "
            "compare only on the same test set; give a baseline run of the same dataset"
        )
    return base_run, base


def draw_robustness(report: dict[str, Any], test: Split, out: str | Path, title: str) -> list[Path]:
    """shift_grid.png, curves.png and examples.png (what was tested) in `out`."""
    from convkit.inspect import draw

    out = Path(out)
    paths: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        if "shift" in report:
            paths.append(draw.shift_heatmap_figure(report, out / "shift_grid.png", title))
        if any(key in report for key in ("shift", "rotate", "scale", "corruptions")):
            paths.append(
                draw.robustness_curves_figure([(title, report)], out / "curves.png", title)
            )
            rows = examples(test.images[0], report, seed=report["seed"])
            paths.append(
                draw.examples_figure(rows, out / "examples.png", f"{title}: what was tested")
            )
    except OSError as exc:
        raise ConfigError(f"cannot write pictures into {out}: {exc.strerror or exc}") from None
    return paths
