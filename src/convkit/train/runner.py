"""A training run as a folder: config, per-epoch metrics, checkpoints, result, curves.

runs/<recipe>-<time>/
  config.json        the resolved TrainConfig
  metrics.jsonl      one JSON object per epoch
  model.safetensors  the weights kept (best val loss, or last epoch), with the config
  last.safetensors   model + optimizer + RNG after the last finished epoch, for --resume
  result.json        test metrics, timings and provenance
  curves.png         loss and accuracy per epoch
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convkit.data import Batches, Split, holdout_split, load_dataset
from convkit.data.arrays import channel_stats, shard_of
from convkit.data.augment import random_crop_flip
from convkit.data.catalog import get_dataset_spec
from convkit.errors import ConfigError
from convkit.fileio import read_json, write_json, write_text
from convkit.models import create_model
from convkit.train import checkpoint
from convkit.train.config import TrainConfig
from convkit.train.engine import Engine, launched_by_torchrun, resolve_engine
from convkit.train.loop import means, predict_sums, train_one_epoch
from convkit.train.optim import build_optimizer, build_schedule, per_step
from convkit.train.progress import Progress
from convkit.train.provenance import provenance


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def last(self) -> Path:
        return self.root / "last.safetensors"

    @property
    def result(self) -> Path:
        return self.root / "result.json"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        write_text(self.metrics, "".join(json.dumps(m) + "\n" for m in history))


def new_run_dir(name: str, base: str | Path = "runs") -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{name}-{stamp}"
    n = 2
    while path.exists():
        path = Path(base) / f"{name}-{stamp}-{n}"
        n += 1
    return path


def normalization(cfg: TrainConfig, train_split: Split) -> dict[str, torch.Tensor]:
    """The per-channel mean and std to standardize with (from the training split), if asked."""
    if cfg.normalize != "standardize":
        return {}
    mean, std = channel_stats(train_split)
    return {"mean": mean, "std": std}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _epoch_line(m: dict[str, Any], epochs: int) -> str:
    line = (
        f"Epoch {m['epoch']}/{epochs} - {m['seconds']:.1f}s - loss: {m['loss']:.4f} "
        f"- accuracy: {m['accuracy']:.4f}"
    )
    if m.get("val_loss") is not None:
        line += f" - val_loss: {m['val_loss']:.4f} - val_accuracy: {m['val_accuracy']:.4f}"
    line += f" - {m['images_per_second']:,.0f} img/s"
    return line + (" (best, saved)" if m.get("improved") else "")


def train(
    cfg: TrainConfig,
    *,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: Progress | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Train `cfg` into a new run folder (`out`, or runs/<recipe>-<time>); returns the result.

    Under torchrun every process calls this; give them the same --out (the default name holds
    the start time, which the processes might not agree on, so rank 0's is shared)."""
    run = RunDir(Path(out) if out else _shared_run_dir(cfg.recipe or cfg.model))
    if run.last.exists():
        raise ConfigError(
            f"{run.root} already holds a run; resume it with --resume {run.root}, "
            f"or choose another --out"
        )
    if _rank() == 0:
        run.root.mkdir(parents=True, exist_ok=True)
        write_json(run.config, cfg.to_dict())
    return _fit(cfg, run, False, data_dir, download, progress or Progress(), started)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _shared_run_dir(name: str) -> Path:
    """A new run folder's name, chosen by rank 0 and shared with the other processes."""
    path = new_run_dir(name)
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo")  # the engine reuses it on the CPU
        names = [str(path)]
        dist.broadcast_object_list(names, src=0)
        path = Path(names[0])
    return path


def resume(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: Progress | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Continue an interrupted run from its last finished epoch (model, optimizer, RNG, history).

    The number of processes may differ from the interrupted run's."""
    run = RunDir(Path(run_dir))
    if not run.last.exists() or not run.config.exists():
        raise ConfigError(
            f"{run.root} is not a resumable run folder (it needs config.json and "
            f"last.safetensors, written after each finished epoch)"
        )
    cfg = TrainConfig.from_dict(read_json(run.config), str(run.config))
    if overrides:
        cfg = cfg.merged(overrides, "command line")
        if _rank() == 0:
            write_json(run.config, cfg.to_dict())
    return _fit(cfg, run, True, data_dir, download, progress or Progress(), started)


def _fit(
    cfg: TrainConfig,
    run: RunDir,
    resuming: bool,
    data_dir: str | Path | None,
    download: bool,
    progress: Progress,
    started: float | None,
) -> dict[str, Any]:
    started = time.perf_counter() if started is None else started
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # initialisation (and dropout, in one process)
    shuffle = torch.Generator().manual_seed(cfg.seed)  # the order of training samples
    augment_rng = torch.Generator().manual_seed(cfg.seed + 1)  # crops and flips
    generators = {"shuffle": shuffle, "augment": augment_rng}

    data = load_dataset(cfg.dataset, data_dir, download=download, log=progress.message)
    pool = data.train[: cfg.limit] if cfg.limit else data.train
    train_split, val_split = holdout_split(pool, cfg.val_split)
    c, h, w = data.spec.image_shape
    model = create_model(
        cfg.model, num_classes=data.spec.num_classes, in_channels=c, input_size=(h, w)
    )
    engine = resolve_engine(cfg.device, cfg.precision, cfg.channels_last, cfg.compile, model)
    rank, world = engine.dist.rank, engine.dist.world_size
    if rank != 0:
        progress = Progress(enabled=False)  # rank 0 alone prints and writes the run folder
    model, step_model = engine.prepare(model)
    optimizer = build_optimizer(cfg, model.parameters(), engine.device)
    norm = normalization(cfg, train_split)
    augment = (
        partial(random_crop_flip, pad=4, generator=augment_rng)
        if cfg.augment == "crop-flip"
        else None
    )
    layout = {"memory_format": engine.memory_format, **norm}
    dev = engine.device
    try:
        train_batches = Batches(
            train_split.to(dev),
            cfg.batch_size,
            shuffle=True,
            generator=shuffle,
            augment=augment,
            shard=(rank, world),
            **layout,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    val_batches = Batches(shard_of(val_split, rank, world).to(dev), cfg.eval_batch_size, **layout)
    scheduler = build_schedule(cfg, optimizer, len(train_batches))
    scaler = engine.grad_scaler()
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)  # categorical cross-entropy

    history: list[dict[str, Any]] = []
    best = {"epoch": 0, "val_loss": math.inf}
    since_best, train_seconds, first_epoch = 0, 0.0, 1
    if resuming:
        meta = checkpoint.restore_training_state(run.last, model, optimizer, generators)
        if scheduler is not None:
            state = dict(meta["scheduler"])
            # Milestones follow from the config; their JSON copy has string keys that never match.
            state.pop("milestones", None)
            scheduler.load_state_dict(state)
        best, since_best, train_seconds = meta["best"], meta["since_best"], meta["train_seconds"]
        first_epoch = meta["epoch"] + 1
        history = [m for m in run.read_metrics() if m["epoch"] <= meta["epoch"]]
        progress.message(f"Resuming {run.root} after epoch {meta['epoch']} of {cfg.epochs}")
    if rank != 0:
        # The checkpoint holds rank 0's random streams; the others draw their own dropout
        # masks and crops (the shuffle order is shared: every process must agree on it).
        torch.manual_seed(cfg.seed + 1000 * rank + first_epoch)
        augment_rng.manual_seed(cfg.seed + 1 + 1000 * rank + first_epoch)
    stopped_early = bool(cfg.patience) and since_best >= cfg.patience

    progress.message(
        f"Training {cfg.model} on {cfg.dataset}: {len(train_split):,} train / {len(val_split):,} "
        f"val / {len(data.test):,} test images, {count_params(model):,} parameters -> {run.root}"
    )
    progress.message(_engine_line(engine))
    for epoch in range(first_epoch, cfg.epochs + 1):
        if stopped_early:
            break
        t0 = time.perf_counter()
        progress.start_epoch(epoch, cfg.epochs, len(train_batches))
        lr = optimizer.param_groups[0]["lr"]
        sums = train_one_epoch(
            step_model,
            train_batches,
            optimizer,
            loss_fn,
            per_step(scheduler),
            progress.step,
            engine.autocast,
            scaler,
        )
        tr = means(dict(zip(SUMS, engine.all_sum(*(sums[k] for k in SUMS)), strict=True)))
        t_train = time.perf_counter() - t0
        va = _evaluate(engine, model, val_batches, loss_fn) if len(val_split) else None
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        if scheduler is not None and per_step(scheduler) is None:
            scheduler.step(va["loss"])  # plateau: once per epoch, on the validation loss
        improved = va is not None and va["loss"] < best["val_loss"]
        if improved:
            best, since_best = {"epoch": epoch, "val_loss": va["loss"]}, 0
        else:
            since_best += 1
        record = {
            "epoch": epoch,
            "loss": tr["loss"],
            "accuracy": tr["accuracy"],
            "val_loss": va["loss"] if va else None,
            "val_accuracy": va["accuracy"] if va else None,
            "lr": lr,
            "seconds": seconds,
            "images_per_second": len(train_split) / t_train,
            "improved": improved,
        }
        history.append(record)
        if rank == 0:
            _save_weights(cfg, run, model, norm, record)
            run.write_metrics(history)
            checkpoint.save_training_state(
                run.last,
                model,
                optimizer,
                generators,
                config=cfg.to_dict(),
                epoch=epoch,
                best=best,
                since_best=since_best,
                train_seconds=train_seconds,
                scheduler=scheduler.state_dict() if scheduler is not None else None,
            )
        progress.end_epoch(_epoch_line(record, cfg.epochs))
        stopped_early = bool(cfg.patience) and since_best >= cfg.patience
        if stopped_early:
            progress.message(
                f"Early stopping: val loss has not improved for {cfg.patience} "
                f"epochs (best: epoch {best['epoch']})"
            )

    engine.barrier()  # rank 0 has written the weights kept
    weights, _ = checkpoint.load(run.model)
    model.load_state_dict(weights)
    test_batches = Batches(shard_of(data.test, rank, world).to(dev), cfg.eval_batch_size, **layout)
    test = _evaluate(engine, model, test_batches, loss_fn)
    progress.message(f"Test accuracy: {100 * test['accuracy']:.4f}%")
    result = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "epochs": len(history),
        "best_epoch": best["epoch"] if cfg.keep == "best" else len(history),
        "stopped_early": stopped_early,
        "train_seconds": train_seconds,
        "seconds": time.perf_counter() - started,
        "params": count_params(model),
        "run_dir": str(run.root),
        "recipe": cfg.recipe,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "engine": engine.describe(),
        "data_files": {name: str(path) for name, path in data.files.items()},
        "started_at": started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance(),
    }
    if rank != 0:
        return result
    write_json(run.result, result)
    from convkit.inspect.plots import plot_training_curves  # matplotlib loads only here

    plot_training_curves(
        history,
        run.curves,
        title=f"{cfg.recipe or cfg.model} on {cfg.dataset}",
        best_epoch=result["best_epoch"],
    )
    result["seconds"] = time.perf_counter() - started
    write_json(run.result, result)
    return result


SUMS = ("loss_sum", "correct", "seen")


def _evaluate(engine: Engine, model: nn.Module, batches: Batches, loss_fn) -> dict[str, float]:
    """Mean loss and accuracy over every process's shard of an evaluation set."""
    sums = predict_sums(model, batches, loss_fn, engine.autocast)
    return means(dict(zip(SUMS, engine.all_sum(*(sums[k] for k in SUMS)), strict=True)))


def _save_weights(cfg: TrainConfig, run: RunDir, model: nn.Module, norm, record) -> None:
    if record["improved"] or cfg.keep == "last":
        checkpoint.save_weights(
            run.model,
            model,
            config=cfg.to_dict(),
            epoch=record["epoch"],
            val_loss=record["val_loss"],
            normalization={k: v.tolist() for k, v in norm.items()},
        )


def _engine_line(engine: Engine) -> str:
    d = engine.describe()
    line = (
        f"Engine: {d['device_name'] if d['device'] != 'cpu' else 'cpu'}, {d['precision']}"
        f"{', channels_last' if d['channels_last'] else ''}"
        f"{', compiled' if d['compile'] else ''}, {d['threads']} threads"
    )
    if d["world_size"] > 1:
        line += f", {d['world_size']} processes ({d['backend']})"
    return line


def load_kept_model(run_dir: str | Path) -> tuple[RunDir, TrainConfig, nn.Module, dict[str, Any]]:
    """(run folder, config, model with the kept weights, the weights' metadata) of a run."""
    run = RunDir(Path(run_dir))
    if not run.model.exists():
        raise ConfigError(
            f"{run.root} is not a run folder with weights (no {run.model.name}); "
            f"train one with `convkit train RECIPE --out {run.root}`"
        )
    weights, meta = checkpoint.load(run.model)
    cfg = TrainConfig.from_dict(meta["config"], str(run.model))
    spec = get_dataset_spec(cfg.dataset)
    c, h, w = spec.image_shape
    model = create_model(cfg.model, num_classes=spec.num_classes, in_channels=c, input_size=(h, w))
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise ConfigError(f"{run.model} does not fit model {cfg.model}: {exc}") from None
    return run, cfg, model, meta


def evaluate_run(
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    started: float | None = None,
    log=print,
) -> dict[str, Any]:
    """Rebuild the model of a run folder from its checkpoint and measure it on the test set."""
    started = time.perf_counter() if started is None else started
    run, cfg, model, meta = load_kept_model(run_dir)
    data = load_dataset(cfg.dataset, data_dir, download=download, log=log)
    engine = resolve_engine(cfg.device, cfg.precision, cfg.channels_last, "off", model)
    model, _ = engine.prepare(model)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    norm = {k: torch.tensor(v) for k, v in meta.get("normalization", {}).items()}
    test_split = shard_of(data.test, engine.dist.rank, engine.dist.world_size).to(engine.device)
    batches = Batches(test_split, cfg.eval_batch_size, memory_format=engine.memory_format, **norm)
    test = _evaluate(engine, model, batches, loss_fn)
    history = run.read_metrics()
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "epochs": len(history),
        "checkpoint_epoch": meta.get("epoch"),
        "train_seconds": sum(m["seconds"] for m in history),
        "seconds": time.perf_counter() - started,
        "params": count_params(model),
        "run_dir": str(run.root),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "engine": engine.describe(),
    }
