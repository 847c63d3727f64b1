"""Training a config into a run folder, in three steps: prepare, the epoch loop, finish.

The run folder and its files belong to convkit.runs.Run; this module only decides what goes in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from convkit.data import Batches, Dataset, DatasetSpec, Split, holdout_split, load_dataset
from convkit.data.arrays import channel_stats, shard_of, to_float
from convkit.data.augment import (
    CropFlip,
    FlipTranslate,
    LowResolutionStart,
    ResizedCropFlip,
    translate_pad,
)
from convkit.data.memory import available_bytes
from convkit.errors import ConfigError
from convkit.models import create_model
from convkit.models.permute import (
    attach_pixel_permutation,
    permutation_digest,
    permute_pixels,
)
from convkit.models.tta import TTA_MODES, with_tta
from convkit.runs import Run, load_data, new_run_dir
from convkit.train import warmstart
from convkit.train.config import TrainConfig, epoch_parts
from convkit.train.engine import Engine, resolve_engine, speaks
from convkit.train.loop import means, predict_sums, train_one_epoch
from convkit.train.optim import Optimizer, build_optimizer, build_schedule, per_step
from convkit.train.progress import Progress
from convkit.train.provenance import provenance
from convkit.train.recipes import RECIPES

DataArg = Dataset | DatasetSpec | str | None  # a loaded dataset, a spec, a name, or cfg.dataset


def train(
    cfg: TrainConfig,
    *,
    data: DataArg = None,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: Progress | None = None,
    started: float | None = None,
) -> dict[str, Any] | None:
    """Train `cfg` into a new run folder (`out`, or runs/<recipe>-<time>); returns the result.

    `data` may be a loaded Dataset (tests train on tiny made-up ones), a spec or a name; by
    default the dataset `cfg` names. Under torchrun every process calls this and rank 0 alone
    writes the folder and returns the result (the others return None)."""
    started = time.perf_counter() if started is None else started
    progress = progress or Progress()
    for key in ("data", "init"):  # a resume must find them again from any working directory
        if getattr(cfg, key):
            cfg = cfg.replace(**{key: str(Path(getattr(cfg, key)).expanduser().resolve())})
    dataset, folder = _dataset(cfg, data, data_dir, download, progress)
    cfg = cfg.replace(dataset=dataset.spec.name)
    model, engine = _model_and_engine(cfg, dataset, progress, fresh=True)
    path = Path(out) if out else Path(engine.broadcast(str(new_run_dir(cfg.recipe or cfg.model))))
    run = Run(path)
    run.refuse_existing()
    s = _prepare(cfg, run, dataset, model, engine, progress, started, test_folder=_own_test(folder))
    s.folder = folder
    if engine.dist.is_main:
        Run.create(path, s.cfg)  # with the planned epochs, when they were planned
    _run_epochs(s)
    return _finish(s)


def resume(
    run_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    data: DataArg = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: Progress | None = None,
    started: float | None = None,
) -> dict[str, Any] | None:
    """Continue an interrupted run from its last finished epoch (model, optimizer, RNG, history).

    `overrides` may change only what cannot change the model, the data or the optimisation
    (TrainConfig.resumed); anything else is refused before a file is touched. The number of
    processes may differ from the interrupted run's."""
    started = time.perf_counter() if started is None else started
    progress = progress or Progress()
    run = Run(run_dir)
    if not run.resumable:
        raise ConfigError(
            f"{run.root} is not a resumable run folder (it needs config.json, written when a "
            f"run starts); start one with `convkit train RECIPE --out {run.root}`"
        )
    saved = run.config()
    overrides = {  # the same folder or file, named from elsewhere, is no change
        k: str(Path(v).expanduser().resolve()) if k in ("data", "init") and v else v
        for k, v in (overrides or {}).items()
    }
    cfg = saved.resumed(overrides)
    done = run.committed_epoch()
    if cfg.epochs < done:
        raise ConfigError(
            f"{run.root} has finished {done} epochs already; --epochs {cfg.epochs} would "
            f"train none (give more, or evaluate it with `convkit evaluate {run.root}`)"
        )
    dataset, folder = _dataset(cfg, data, data_dir, download, progress)
    if folder is not None:
        _check_same_folder(run, folder, progress)
    model, engine = _model_and_engine(cfg, dataset, progress, fresh=not run.has_state)
    if engine.dist.is_main:
        run.discard_partial_writes()
    s = _prepare(
        cfg, run, dataset, model, engine, progress, started, False, test_folder=_own_test(folder)
    )
    s.folder = folder
    # The changed settings reach config.json with the next epoch's commit, so the config and
    # the training state always agree (a damaged or edited config.json is then noticed).
    s.config_changed = cfg != saved
    if run.has_state:
        _restore(s)
    _run_epochs(s)
    return _finish(s)


def _check_same_folder(run: Run, folder, progress: Progress) -> None:
    """A run resumed on an image folder that changed since its last epoch: other classes are
    refused (the model's outputs are the old ones); other files are said, then trained on."""
    trained = run.trained_folder()
    if trained is None:
        return
    if not speaks():  # under torchrun, rank 0 alone prints
        progress = Progress(enabled=False)
    if list(folder.classes) != trained["classes"]:
        raise ConfigError(
            f"{folder.path} holds the classes {', '.join(folder.classes)} now, and {run.root} "
            f"was trained on {', '.join(trained['classes'])}: a resume cannot change the "
            f"model's outputs. Put the folder back as it was, or start a new run from this "
            f"one's weights: convkit train RECIPE --data {folder.path} --init {run.root}"
        )
    if folder.fingerprint != trained["fingerprint"]:
        progress.message(
            f"Warning: {folder.path} changed since this run's last epoch (files added, removed "
            f"or edited): the epochs from here train on what it holds now, and its test split "
            f"may differ from the one the earlier epochs were measured on"
        )


# ---- prepare ------------------------------------------------------------------------------------


@dataclass
class Session:
    """Everything the epoch loop and the finish work on, built once by `_prepare`."""

    cfg: TrainConfig
    run: Run
    engine: Engine
    dataset: Dataset
    model: nn.Module  # the plain module (weights are saved from it)
    step_model: nn.Module  # what training steps call: DDP- and compile-wrapped as asked
    optimizer: Optimizer
    scheduler: Any
    loss_fn: nn.Module
    generators: dict[str, torch.Generator]
    norm: dict[str, torch.Tensor]  # per-channel mean and std, when standardizing
    train_batches: Batches
    val_batches: Batches
    n_train: int
    n_val: int
    progress: Progress
    started: float
    started_at: str = field(
        default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds")
    )
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"epoch": 0, "val_loss": math.inf})
    since_best: int = 0
    train_seconds: float = 0.0
    first_epoch: int = 1
    config_changed: bool = False  # a resume changed settings that config.json does not hold yet
    folder: Any = None  # an image folder's report (classes, counts, split, unreadable files)

    @property
    def stopped_early(self) -> bool:
        return bool(self.cfg.patience) and self.since_best >= self.cfg.patience

    def layout(self) -> dict[str, Any]:
        return {"memory_format": self.engine.memory_format, **self.norm}


def _dataset(cfg: TrainConfig, data, data_dir, download, progress) -> tuple[Dataset, Any]:
    """(the dataset to train on, an image folder's report or None): `data` when given (a
    Dataset, a spec or a name), else what the config names (a dataset, or --data's folder)."""
    if isinstance(data, Dataset):
        return data, None
    if data is not None:
        return load_dataset(data, data_dir, download=download, log=progress.message), None
    dataset, folder = load_data(cfg, data_dir=data_dir, download=download, log=progress.message)
    if folder is not None:
        from convkit.data.folders import format_table

        progress.message(format_table(folder))
    return dataset, folder


def _model_and_engine(
    cfg: TrainConfig, dataset: Dataset, progress: Progress | None, fresh: bool
) -> tuple[nn.Module, Engine]:
    """The model, initialised from the seed (or from --init weights when `fresh`), and the
    engine that will train it (which joins torchrun's process group with the backend its
    device needs)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # initialisation (and dropout, in one process)
    c, h, w = dataset.spec.image_shape
    model = create_model(
        cfg.model, num_classes=len(dataset.classes), in_channels=c, input_size=(h, w)
    )
    if cfg.permute_pixels:
        attach_pixel_permutation(model, cfg.permute_pixels, (c, h, w))
    notes = []
    if cfg.init and fresh:  # a resumed run restores its own weights
        state = warmstart.read_initial_weights(cfg.init)
        notes.append(warmstart.apply_initial_weights(model, state, cfg.init))
    if cfg.freeze:
        notes.append(warmstart.freeze_all_but_classifier(model))
    engine = resolve_engine(cfg.device, cfg.precision, cfg.channels_last, cfg.compile, model)
    if progress is not None and engine.dist.is_main:
        for line in notes:
            progress.message(line)
    return model, engine


def own_part(dataset: Dataset, split: Split, rank: int, world: int) -> Split:
    """This process's part of an evaluation split: all of it when the dataset holds only this
    process's part already (packed shards), else every world-th image."""
    return split if dataset.local else shard_of(split, rank, world)


def _own_test(folder) -> bool:
    """True for an image folder with its own test/ folder (not a split of its classes)."""
    return folder is not None and folder.split.get("test") == "folder"


def _prepare(
    cfg, run, dataset, model, engine, progress, started, fresh=True, test_folder=False
) -> Session:
    """Data split, batches, optimizer, schedule and loss, on the engine's device and layout.
    `test_folder`: the test images are a folder of their own, mixed as the user chose."""
    rank, world = engine.dist.rank, engine.dist.world_size
    progress = progress or Progress()
    if not engine.dist.is_main:
        progress = Progress(enabled=False)  # rank 0 alone prints and writes the run folder
    generators = {
        "shuffle": torch.Generator().manual_seed(cfg.seed),  # the order of training samples
        "augment": torch.Generator().manual_seed(cfg.seed + 1),  # crops and flips
    }
    pool = dataset.train[: cfg.limit] if cfg.limit else dataset.train
    if dataset.val is not None:  # an image folder's own val/ folder: nothing held out of train
        train_split, val_split = pool, dataset.val
    else:
        train_split, val_split = holdout_split(pool, cfg.val_split)
    n_train, n_val = len(train_split), len(val_split)
    if dataset.local:  # every process's images (each holds its own shards' part)
        n_train, n_val = (int(v) for v in engine.all_sum(n_train, n_val))

    def mine(split: Split) -> Split:
        return own_part(dataset, split, rank, world)

    norm = {}
    if cfg.normalize == "standardize":  # with the training split's per-channel mean and std
        stats = dataset.stats or channel_stats(train_split)  # shards: all processes' images
        norm = dict(zip(("mean", "std"), stats, strict=True))
    _check_model_fits(cfg, model, dataset)
    if hasattr(model, "fit_whitening") and not cfg.init:
        # A first layer fixed from the data (fine-tuning keeps the one it starts from; a
        # resumed run loads its own over this), from up to 5,000 training images as training
        # will see them.
        sample = to_float(train_split.images[:5000], **norm)
        if cfg.permute_pixels:  # as the model sees them: normalised, then shuffled by its hook
            sample = permute_pixels(sample, model.pixel_permutation)
        model.fit_whitening(sample)
    whiten_bias = model.whiten.bias if hasattr(model, "fit_whitening") else None
    model, step_model = engine.prepare(model)
    layout = {"memory_format": engine.memory_format, **norm}
    dev = engine.device
    # The memory left is shared by the processes torchrun started on this machine. Every
    # process must shuffle alike (each takes its part of the same batches): rank 0 decides.
    available = available_bytes() // max(1, engine.dist.local_world_size)
    window = shuffle_window(train_split, available)
    if not dataset.local:
        window = engine.broadcast(window)
    # Shards: each process shuffles its own images and takes batch_size / world of them a step
    batch, shard = (
        (cfg.batch_size // world, (0, 1)) if dataset.local else (cfg.batch_size, (rank, world))
    )
    try:
        if dataset.local and cfg.batch_size % world:
            raise ValueError(
                f"batch_size={cfg.batch_size} does not split evenly over {world} processes; "
                f"choose a multiple of {world}"
            )
        train_batches = Batches(
            train_split if window else train_split.to(dev), batch, shuffle=True,
            generator=generators["shuffle"], shard=shard,
            window=window, device=dev, **layout,
        )  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if window:
        size = row_bytes(train_split)
        progress.message(
            f"The training images ({len(train_split) * size / 1e9:.2f} GB) are more than half "
            f"the memory left ({available / 1e9:.2f} GB): each epoch shuffles blocks of "
            f"{window[1]:,} images, then the images within windows of {window[0]:,} "
            f"({window[0] * size / 1e9:.2f} GB), read from the disk one window at a time"
        )
    if cfg.plan_steps and fresh:  # a resumed run keeps the epochs it planned
        cfg = plan_epochs(cfg, n_train, len(train_batches), progress)
    # built for the length just planned: its low-resolution and whitening-bias epochs
    train_batches.augment = build_augmentation(cfg, train_split, generators["augment"])
    trainable = [p for p in model.parameters() if p.requires_grad]  # all but what --freeze holds
    optimizer = build_optimizer(cfg, trainable, engine.device, whiten_bias)
    val_batches = Batches(mine(val_split).to(dev), eval_batch(cfg, val_split), **layout)
    counts = None
    if dataset.local:
        mine_count = torch.bincount(train_split.labels, minlength=len(dataset.classes))
        counts = torch.tensor(engine.all_sum(*mine_count.tolist()))
    weights = class_weights(
        cfg, train_split.labels, dataset.test.labels, len(dataset.classes), test_folder, counts
    )
    if weights is not None:
        progress.message(
            f"Class weights in the loss ({cfg.class_weights}): "
            + ", ".join(
                f"{c} {w:.3g}" for c, w in zip(dataset.classes, weights.tolist(), strict=True)
            )
        )
        weights = weights.to(dev)
    return Session(
        cfg=cfg, run=run, engine=engine, dataset=dataset, model=model, step_model=step_model,
        optimizer=optimizer, scheduler=build_schedule(cfg, optimizer, len(train_batches)),
        # categorical cross-entropy, for training and validation (the test's is unweighted)
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        if weights is None
        else WeightedCrossEntropy(weights, cfg.label_smoothing),
        generators=generators, norm=norm, train_batches=train_batches, val_batches=val_batches,
        n_train=n_train, n_val=n_val, progress=progress, started=started,
    )  # fmt: skip


def build_augmentation(
    cfg: TrainConfig, train_split: Split, generator: torch.Generator
) -> Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor] | None:
    """The training augmentation cfg names (None for none), drawing from `generator`."""
    augment = None
    if cfg.augment == "crop-flip":
        augment = CropFlip(pad=4, generator=generator)
    elif cfg.augment == "translate":
        pad = translate_pad(tuple(train_split.images.shape))
        augment = CropFlip(pad=pad, generator=generator, flip=False)
    elif cfg.augment == "flip-translate":
        augment = FlipTranslate(len(train_split), 2, generator, seed=cfg.seed + 2)
    elif cfg.augment == "resized-crop-flip":
        augment = ResizedCropFlip(generator)
    if cfg.low_res:
        augment = LowResolutionStart(augment, cfg.low_res, cfg.low_res_epochs, generator)
    return augment


BLOCK_BYTES = 1 << 20  # a block of rows read in one run: 1 MiB, 85 64x64 colour images


EVAL_PIXELS = 32 * 32  # eval_batch_size counts images of this many pixels (or fewer)


def eval_batch(cfg: TrainConfig, split: Split) -> int:
    """Images per evaluation batch: eval_batch_size for images up to 32x32 (MNIST, CIFAR-10),
    proportionally fewer for larger ones, so that evaluating a 224x224 folder does not take
    49 times the memory (the answers do not depend on the batch, but for --tta selective, which
    picks the least confident images of each batch)."""
    pixels = math.prod(split.images.shape[2:])
    return max(1, min(cfg.eval_batch_size, cfg.eval_batch_size * EVAL_PIXELS // max(1, pixels)))


def row_bytes(split: Split) -> int:
    """Bytes of one image of the split, as stored."""
    return math.prod(split.images.shape[1:]) * split.images.element_size()


def shuffle_window(split: Split, available: int) -> tuple[int, int] | None:
    """(rows, block) for Batches' window when the split's images take more than half of the
    `available` bytes (their pages, the window's copy, the model and the batches would not fit),
    with windows of a quarter of it; None to shuffle row by row."""
    row = row_bytes(split)
    if len(split) * row <= available // 2:
        return None
    block = max(1, BLOCK_BYTES // row)
    return max(block, available // 4 // row), block


MAX_PLANNED_EPOCHS = 500  # a folder of a handful of images would plan thousands


class WeightedCrossEntropy(nn.Module):
    """Cross-entropy with each image's loss times its class's weight, averaged over the images
    (not over the weights, as nn.CrossEntropyLoss(weight=...) does per batch): with weights that
    average 1 over the training images, a total that does not depend on how images are batched
    or spread over processes, and never 0/0."""

    def __init__(self, weights: torch.Tensor, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weights", weights)
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        losses = nn.functional.cross_entropy(
            logits, labels, reduction="none", label_smoothing=self.label_smoothing
        )
        return (losses * self.weights[labels]).mean()


# `class_weights=auto` weighs classes only where the test split's mix of classes differs from
# the training split's by more than this factor for some class (a stratified split's shares
# differ by rounding only).
MIX_DIFFERS = 1.25


def class_weights(
    cfg: TrainConfig,
    train_labels: torch.Tensor,
    test_labels: torch.Tensor,
    n_classes: int,
    test_folder: bool,
    train_counts: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Per class, its weight in the loss (None: all alike), averaging 1 over training images.
    `auto` weighs only for a test folder of the user's own (a split of the classes is mixed as
    the training images are, up to rounding). `train_counts`: the images per class of every
    process, when each holds only its own (shards), so that all weigh alike."""
    train = torch.bincount(train_labels.cpu(), minlength=n_classes).double()
    if train_counts is not None:
        train = train_counts.double()
    if cfg.class_weights == "none" or (cfg.class_weights == "auto" and not test_folder):
        return None
    if cfg.class_weights == "balanced":
        target = (train > 0).double()
    else:
        target = torch.bincount(test_labels.cpu(), minlength=n_classes).double()
    ratio = (target / target.sum()) / (train / train.sum()).clamp(min=1e-12)
    ratio[train == 0] = 0.0
    if cfg.class_weights == "auto":
        seen = ratio[train > 0]
        if seen.min() == 0 or (seen.max() <= MIX_DIFFERS and seen.min() >= 1 / MIX_DIFFERS):
            return None  # a class never tested is not dropped from training: all alike
    return (ratio / ((ratio * train).sum() / train.sum())).float()


# A folder k times smaller than the recipe's dataset gets k times the recipe's epochs (its
# number of steps), and up to SMALL_FOLDER_EPOCHS, k squared times: fewer images need more
# passes, each augmented anew. cifar10-quick (2 epochs of CIFAR-10) on 5,000 CIFAR-10 test
# images as JPEGs (benchmarks/default_folders.py): 20 epochs (its steps) 63.85%, 50 67.20%,
# 100 70.20%; on 1,000 of them 98 epochs (its steps) 51.35% and 100 52.55%.
SMALL_FOLDER_EPOCHS = 100


def plan_epochs(cfg: TrainConfig, images: int, steps_per_epoch: int, progress) -> TrainConfig:
    """The epochs for a training split of `images` from cfg.plan_steps, the steps the recipe
    makes in cfg.epochs epochs of its own dataset (at least 1, at most MAX_PLANNED_EPOCHS; see
    SMALL_FOLDER_EPOCHS), said before training."""
    same_steps = cfg.plan_steps / max(1, steps_per_epoch)
    smaller = same_steps / cfg.epochs  # how many times smaller than the recipe's dataset
    epochs = same_steps
    if smaller > 1:
        epochs = max(same_steps, min(SMALL_FOLDER_EPOCHS, cfg.epochs * smaller**2))
    epochs = min(MAX_PLANNED_EPOCHS, max(1, round(epochs)))
    why = (
        f"the recipe's {cfg.plan_steps:,} steps ({cfg.epochs} epochs of its dataset)"
        if epochs == round(same_steps) or smaller <= 1
        else f"the recipe makes {cfg.plan_steps:,} steps in {cfg.epochs} epochs of its "
        f"dataset, {smaller:.3g} times larger; a smaller folder gets more passes, up to "
        f"{SMALL_FOLDER_EPOCHS} epochs"
    )
    # the warm-up and the recipe's low-resolution and whitening-bias epochs keep their share
    parts = epoch_parts(cfg.to_dict(), cfg.epochs, epochs, keep=_users_parts(cfg))
    try:
        planned = cfg.replace(epochs=epochs, **parts)
    except ConfigError as e:
        raise ConfigError(
            f"the plan gives {epochs} epochs for {images:,} training images, which your "
            f"settings do not fit: {e}. Choose the length with --epochs N, or change them"
        ) from None
    ramp = f", the first {planned.warmup_epochs} warming up" if planned.warmup_epochs else ""
    if planned.low_res:
        ramp += f", the first {planned.low_res_epochs} on {planned.low_res}-pixel crops"
    progress.message(
        f"Plan: {images:,} training images, batch {cfg.batch_size}: {epochs} epochs = "
        f"{epochs * steps_per_epoch:,} steps{ramp} ({why}; --epochs N to choose)"
    )
    return planned


def _users_parts(cfg: TrainConfig) -> set[str]:
    """The low-resolution and whitening-bias epochs the user set, which a planned length keeps
    as given (the recipe's own keep their share instead): values other than the recipe's, and
    on a folder any whitening-bias epochs, since a folder's planned run has the recipe's off
    (api.folder_defaults). A value equal to the recipe's counts as the recipe's."""
    recipe = RECIPES.get(cfg.recipe)
    own = recipe.settings_dict() if recipe else {}
    if own.get("epochs"):  # the recipe's parts as --epochs fitted them
        own.update(epoch_parts(own, own["epochs"], cfg.epochs))
    parts = ("low_res_epochs", "whiten_bias_epochs")
    keep = {k for k in parts if getattr(cfg, k) != own.get(k, 0)}
    return keep | {"whiten_bias_epochs"} if cfg.data else keep


def _check_model_fits(cfg: TrainConfig, model: nn.Module, dataset: Dataset) -> None:
    """Settings that only some models can take, refused before anything trains."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if cfg.optimizer == "muon" and (not convs or not norms):
        raise ConfigError(
            f"optimizer=muon rescales convolution filters every step, which only a network with "
            f"BatchNorm after its convolutions ignores; {cfg.model} has "
            f"{len(convs)} convolutions and {len(norms)} BatchNorm layers: use another optimizer"
        )
    if cfg.whiten_bias_epochs and not hasattr(model, "fit_whitening"):
        raise ConfigError(
            f"whiten_bias_epochs={cfg.whiten_bias_epochs} times the training of a whitening "
            f"layer's bias, which {cfg.model} does not have: use a model with one, such as "
            "cifar10-fast, or --whiten-bias-epochs 0"
        )
    if not cfg.low_res:
        return
    c, h, w = dataset.spec.image_shape
    if cfg.low_res >= min(h, w):
        raise ConfigError(
            f"low_res={cfg.low_res} crops nothing from {h}x{w} images: give a size below "
            f"{min(h, w)}, or 0 for no progressive resolution"
        )
    probe = torch.zeros(2, c, cfg.low_res, cfg.low_res)
    training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(probe)
    except (RuntimeError, ValueError) as exc:
        out, why = None, str(exc).splitlines()[0]
    else:
        why = f"it gives outputs of shape {tuple(out.shape)}"
    finally:
        model.train(training)
    if out is None or tuple(out.shape) != (2, len(dataset.classes)):
        raise ConfigError(
            f"low_res={cfg.low_res}: {cfg.model} cannot take {cfg.low_res}x{cfg.low_res} crops "
            f"({why}); progressive resolution needs a model that ends in a global pool, such as "
            f"cifar10-fast, and crops it can still pool"
        )


def _restore(s: Session) -> None:
    """Model, optimizer, schedule, random streams and history as the last finished epoch left them."""
    meta, s.history = s.run.restore(s.model, s.optimizer, s.generators)
    if s.scheduler is not None:
        # The schedule's shape follows from the config: only its counters come from the state
        # (the keys torch.optim's schedulers wrote in older run folders too).
        s.scheduler.load_state_dict(meta["scheduler"])
    s.best, s.since_best, s.train_seconds = meta["best"], meta["since_best"], meta["train_seconds"]
    s.first_epoch = meta["epoch"] + 1
    s.progress.message(f"Resuming {s.run.root} after epoch {meta['epoch']} of {s.cfg.epochs}")


# ---- the epoch loop -----------------------------------------------------------------------------


def _run_epochs(s: Session) -> None:
    cfg, engine = s.cfg, s.engine
    if not engine.dist.is_main:
        # The checkpoint holds rank 0's random streams; the others draw their own dropout
        # masks and crops (the shuffle order is shared: every process must agree on it).
        rank = engine.dist.rank
        torch.manual_seed(cfg.seed + 1000 * rank + s.first_epoch)
        s.generators["augment"].manual_seed(cfg.seed + 1 + 1000 * rank + s.first_epoch)
    s.progress.message(
        f"Training {cfg.model} on {cfg.dataset}: {s.n_train:,} train / {s.n_val:,} val / "
        f"{s.dataset.spec.test_size if s.dataset.local else len(s.dataset.test):,} test images, "
        f"{count_params(s.model):,} parameters -> {s.run.root}"
    )
    s.progress.message(_engine_line(engine))
    for epoch in range(s.first_epoch, cfg.epochs + 1):
        if s.stopped_early:
            break
        record = _one_epoch(s, epoch)
        s.history.append(record)
        if engine.dist.is_main:
            _commit(s, record)
        s.progress.end_epoch(_epoch_line(record, cfg.epochs))
        if s.stopped_early:
            s.progress.message(
                f"Early stopping: val loss has not improved for {cfg.patience} "
                f"epochs (best: epoch {s.best['epoch']})"
            )


def _one_epoch(s: Session, epoch: int) -> dict[str, Any]:
    """Train one epoch, validate, step the schedule; returns the epoch's record."""
    t0 = time.perf_counter()
    s.progress.start_epoch(epoch, s.cfg.epochs, len(s.train_batches))
    s.train_batches.epoch = epoch
    lr = s.optimizer.param_groups[0]["lr"]
    sums = train_one_epoch(
        s.step_model, s.train_batches, s.optimizer, s.loss_fn, per_step(s.scheduler),
        s.progress.step, s.engine.autocast, s.engine.grad_scaler(),
    )  # fmt: skip
    tr = means(dict(zip(SUMS, s.engine.all_sum(*(sums[k] for k in SUMS)), strict=True)))
    t_train = time.perf_counter() - t0
    va = _evaluate(s.engine, s.model, s.val_batches, s.loss_fn) if s.n_val else None
    seconds = time.perf_counter() - t0
    s.train_seconds += seconds
    if s.scheduler is not None and per_step(s.scheduler) is None:
        s.scheduler.step(va["loss"])  # plateau: once per epoch, on the validation loss
    improved = va is not None and va["loss"] < s.best["val_loss"]
    if improved:
        s.best, s.since_best = {"epoch": epoch, "val_loss": va["loss"]}, 0
    else:
        s.since_best += 1
    return {
        "epoch": epoch,
        "loss": tr["loss"],
        "accuracy": tr["accuracy"],
        "val_loss": va["loss"] if va else None,
        "val_accuracy": va["accuracy"] if va else None,
        "lr": lr,
        "seconds": seconds,
        "images_per_second": s.n_train / t_train,
        "improved": improved,
    }


def _commit(s: Session, record: dict[str, Any]) -> None:
    """Save the epoch: kept weights when they improved (or keep=last), metrics, training state."""
    keep = None
    if record["improved"] or s.cfg.keep == "last":
        c, h, w = s.dataset.spec.image_shape
        keep = dict(
            config=s.cfg.to_dict(),
            epoch=record["epoch"],
            val_loss=record["val_loss"],
            normalization={k: v.tolist() for k, v in s.norm.items()},
            classes=list(s.dataset.classes),
            image_shape=[c, h, w],
        )
        if s.cfg.permute_pixels:
            keep["pixel_permutation_sha256"] = permutation_digest(s.model.pixel_permutation)
    state = dict(
        config=s.cfg.to_dict(),
        epoch=record["epoch"],
        best=s.best,
        since_best=s.since_best,
        train_seconds=s.train_seconds,
        scheduler=s.scheduler.state_dict() if s.scheduler is not None else None,
    )
    if s.folder is not None:  # what a resume checks the folder against
        state["folder"] = {"classes": list(s.dataset.classes), "fingerprint": s.folder.fingerprint}
    config = s.cfg if s.config_changed else None
    s.run.save_epoch(
        s.history, s.model, s.optimizer, s.generators, config=config, keep=keep, state=state
    )
    s.config_changed = False


# ---- finish -------------------------------------------------------------------------------------


def _finish(s: Session) -> dict[str, Any] | None:
    """Test the kept weights and write the result (once); rank 0 returns it."""
    cfg, engine = s.cfg, s.engine
    engine.barrier()  # rank 0 has written the weights kept
    s.model.load_state_dict(s.run.load_weights())
    test_split = own_part(s.dataset, s.dataset.test, engine.dist.rank, engine.dist.world_size)
    test_batches = Batches(test_split.to(engine.device), eval_batch(cfg, test_split), **s.layout())
    plain = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)  # as `evaluate` tests
    test = _evaluate(engine, with_tta(s.model, cfg.tta), test_batches, plain)
    tta = f" (test-time augmentation: {cfg.tta})" if cfg.tta != "none" else ""
    s.progress.message(f"Test accuracy: {100 * test['accuracy']:.4f}%{tta}")
    if not engine.dist.is_main:
        return None
    if s.config_changed:  # a resume that trained no epoch but changed how to test (--tta)
        s.run.write_config(cfg)
    result = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "epochs": len(s.history),
        "best_epoch": s.best["epoch"] if cfg.keep == "best" else len(s.history),
        "stopped_early": s.stopped_early,
        "train_seconds": s.train_seconds,
        "seconds": time.perf_counter() - s.started,
        "params": count_params(s.model),
        "run_dir": str(s.run.root),
        "recipe": cfg.recipe,
        "model": cfg.model,
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "engine": engine.describe(),
        "data_files": {name: str(path) for name, path in s.dataset.files.items()},
        **({"folder": s.folder.to_dict()} if s.folder is not None else {}),
        "started_at": s.started_at,
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance(),
    }
    s.run.write_result(result)
    return result


SUMS = ("loss_sum", "correct", "seen")


def _evaluate(engine: Engine, model: nn.Module, batches: Batches, loss_fn) -> dict[str, float]:
    """Mean loss and accuracy over every process's shard of an evaluation set."""
    sums = predict_sums(model, batches, loss_fn, engine.autocast)
    return means(dict(zip(SUMS, engine.all_sum(*(sums[k] for k in SUMS)), strict=True)))


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


# ---- evaluate -----------------------------------------------------------------------------------


def evaluate_run(
    run_dir: str | Path,
    *,
    data: DataArg = None,
    data_dir: str | Path | None = None,
    download: bool = True,
    started: float | None = None,
    tta: str | None = None,
    log=print,
) -> dict[str, Any]:
    """Rebuild the model of a run folder from its kept weights and measure it on the test set,
    with the run's own test-time augmentation unless `tta` names another (same weights, other
    views: nothing in the folder changes)."""
    started = time.perf_counter() if started is None else started
    if tta is not None and tta not in TTA_MODES:
        raise ConfigError(f"unknown tta {tta!r}; expected one of {', '.join(TTA_MODES)}")
    run = Run(run_dir)
    kept = run.kept_model()
    cfg = kept.cfg
    tta = cfg.tta if tta is None else tta
    if isinstance(data, Dataset):
        dataset = data
    elif data is not None:
        dataset = load_dataset(data, data_dir, download=download, log=log)
    else:
        dataset, _ = load_data(cfg, data_dir=data_dir, download=download, log=log)
    engine = resolve_engine(cfg.device, cfg.precision, cfg.channels_last, "off", kept.model)
    model, _ = engine.prepare(kept.model)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    test_split = own_part(dataset, dataset.test, engine.dist.rank, engine.dist.world_size)
    batches = Batches(
        test_split.to(engine.device), eval_batch(cfg, test_split), memory_format=engine.memory_format,
        **kept.normalization,
    )  # fmt: skip
    test = _evaluate(engine, with_tta(model, tta), batches, loss_fn)
    history = run.history()
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "epochs": len(history),
        "checkpoint_epoch": kept.epoch,
        "train_seconds": sum(m["seconds"] for m in history),
        "seconds": time.perf_counter() - started,
        "params": count_params(model),
        "run_dir": str(run.root),
        "model": cfg.model,
        "dataset": cfg.dataset,
        "tta": tta,
        "engine": engine.describe(),
    }


__all__ = ["Split", "evaluate_run", "resume", "train"]
