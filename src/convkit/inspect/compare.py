"""Runs side by side: what each is, what it reached, how long it took and how it holds up under
shifts and corruptions (where `convkit robustness` was run). Data first; the table is text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from convkit.errors import ConfigError
from convkit.runs import Run


def compare_runs(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One row per run folder, in the order given. A folder that is not a finished run is
    refused, naming it."""
    rows = []
    for path in paths:
        run = Run.open(path)
        result = run.result()
        if result is None:
            raise ConfigError(
                f"{run.root} has no result yet (result.json is written when training ends); "
                f"finish it with `convkit train --resume {run.root}`"
            )
        cfg = run.config()
        robust = run.robustness()
        shift = (robust or {}).get("shift") or {}
        mce = (robust or {}).get("mce") or {}
        corrupt = (robust or {}).get("corruptions") or {}
        rows.append(
            {
                "run": str(run.root),
                "label": run.root.name,
                "model": cfg.model,
                "params": result.get("params"),
                "dataset": cfg.dataset,
                "permute_pixels": cfg.permute_pixels,
                "test_accuracy": result.get("test_accuracy"),
                "train_seconds": result.get("train_seconds"),
                "robustness_test_images": scored_on(robust),
                "shift_mean": shift.get("mean"),
                "consistency": shift.get("consistency"),
                "mean_corruption_error": corrupt.get("mean_error"),
                "mce": mce.get("mce"),
                "mce_baseline": mce.get("baseline_model"),
                "robustness": robust,
            }
        )
    return rows


def scored_on(report: dict[str, Any] | None) -> int | None:
    """How many test images a robustness report made its transformed copies from."""
    if not report:
        return None
    return (report.get("sample") or {}).get("images", report.get("test_images"))


def format_table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table; '-' where a figure was not computed."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    header = ("run", "model", "params", "dataset", "test acc", "train s", "scored on",
              "shift mean", "consistency", "corr. error", "mCE")  # fmt: skip
    lines = [header]
    for r in rows:
        model = r["model"] + (f" (permuted {r['permute_pixels']})" if r["permute_pixels"] else "")
        mce = "-" if r["mce"] is None else f"{100 * r['mce']:.1f}% vs {r['mce_baseline']}"
        lines.append(
            (
                r["label"], model, f"{r['params']:,}" if r["params"] else "-", r["dataset"],
                pct(r["test_accuracy"]),
                "-" if r["train_seconds"] is None else f"{r['train_seconds']:.1f}",
                "-" if r["robustness_test_images"] is None
                else f"{r['robustness_test_images']:,} images",
                pct(r["shift_mean"]), pct(r["consistency"]), pct(r["mean_corruption_error"]), mce,
            )
        )  # fmt: skip
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) if i < 2 or i == 3 else str(c).rjust(w)
                  for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    )  # fmt: skip
