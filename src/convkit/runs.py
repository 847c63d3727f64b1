"""A training run as one folder, and the one object that writes and reads it.

runs/<recipe>-<time>/
  config.json        the resolved TrainConfig: the run's one source of truth for its settings
  metrics.jsonl      one JSON object per finished epoch
  model.safetensors  the weights kept (best val loss, or last epoch), with what it takes to use
                     them: classes, image shape, normalisation (and a copy of the config)
  last.safetensors   model + optimizer + RNG + history checksum after the last finished epoch:
                     the commit point of an epoch, written last
  result.json        test metrics, timings and provenance, written once at the end
  curves.png         loss and accuracy per epoch (drawn by front ends, not by training)
  model.onnx         the kept model exported by `convkit export` (when it was exported)
  robustness.json    the kept model on moved, turned, resized and corrupted test images
                     (`convkit robustness`), read back by compare, inspect and the web page

Training writes through `Run`; evaluate, inspect, predict, export and the web page read through
it. Nothing else knows these file names. Every file is written atomically (whole or not at all),
and an epoch's files are written kept weights, metrics, training state: a power cut at any
moment leaves a folder that resumes from its last finished epoch. A full disk, or a damaged
file, gives one error that names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from convkit.data import Dataset, load_dataset
from convkit.data.arrays import to_float
from convkit.data.catalog import get_dataset_spec
from convkit.errors import ConfigError, ConvkitError
from convkit.fileio import write_json, write_text
from convkit.models import create_model, model_info
from convkit.models.permute import attach_pixel_permutation, permutation_digest
from convkit.models.tta import with_tta
from convkit.train import checkpoint
from convkit.train.config import RESUMABLE, TrainConfig
from convkit.train.engine import resolve_precision

if TYPE_CHECKING:  # for annotations only
    from convkit.train.optim import Optimizer


CONFIG = "config.json"
METRICS = "metrics.jsonl"
WEIGHTS = "model.safetensors"
STATE = "last.safetensors"
RESULT = "result.json"
CURVES = "curves.png"
ONNX = "model.onnx"
ROBUSTNESS = "robustness.json"
CPU = torch.device("cpu")


def load_data(
    cfg: TrainConfig,
    *,
    data_dir: str | Path | None = None,
    download: bool = True,
    log=print,
) -> tuple[Dataset, Any]:
    """The dataset a config trains on: a registered one by name, or an image folder (`data`)
    converted to the model's input; returns (dataset, the folder's report or None)."""
    if not cfg.data:
        return load_dataset(cfg.dataset, data_dir, download=download, log=log), None
    from convkit.data.folders import load_folder
    from convkit.data.shards import is_shards

    c, h, w = model_info(cfg.model).input_shape
    shape = (c, cfg.image_size, cfg.image_size) if cfg.image_size else (c, h, w)
    if is_shards(cfg.data):
        return _load_shards(cfg, shape, log), None
    found = load_folder(
        cfg.data, shape, val_split=cfg.val_split, seed=cfg.seed, fit=cfg.fit, log=log
    )
    spec = dataclasses.replace(found.dataset.spec, name=f"folder:{found.dataset.spec.name}")
    return dataclasses.replace(found.dataset, spec=spec, val=found.val), found.report


def _load_shards(cfg: TrainConfig, shape: tuple[int, int, int], log) -> Dataset:
    """This process's part of a packed folder (`convkit data pack`), checked against what the
    config converts to: the shards hold images of one shape and fit, converted once."""
    from convkit.data.shards import load_shards, read_index

    index = read_index(cfg.data)
    packed = tuple(index["image_shape"])
    if packed != shape:
        size = f"--image-size {packed[1]}" if packed[1] == packed[2] else "the same input size"
        raise ConfigError(
            f"{cfg.data} holds {'x'.join(map(str, packed))} images and {cfg.model} is given "
            f"{'x'.join(map(str, shape))}: train with {size} and a model of {packed[0]} "
            f"channel{'s' * (packed[0] != 1)}, or pack the folder again for this input"
        )
    if cfg.fit != index["fit"]:
        raise ConfigError(
            f"{cfg.data} was packed with --fit {index['fit']}: train with --fit {index['fit']} "
            f"(predict converts pictures as the run says), or pack again with --fit {cfg.fit}"
        )
    if index["val"] != "folder" and index["val"] != cfg.val_split:
        raise ConfigError(
            f"{cfg.data} holds {index['val']:.0%} of its training images as val and the "
            f"recipe holds out {cfg.val_split:.0%}: train with --val-split {index['val']}, or "
            f"pack again with --recipe {cfg.recipe or cfg.model}"
        )
    from convkit.train.engine import torchrun_place

    rank, world = torchrun_place()
    found = load_shards(cfg.data, rank=rank, world=world, log=log)
    if found.dropped and rank == 0:
        log(
            f"{found.dropped:,} training images left out so that each of {world} processes "
            f"has {len(found.dataset.train):,} (shards of equal size lose none)"
        )
    spec = dataclasses.replace(found.dataset.spec, name=f"shards:{found.dataset.spec.name}")
    return dataclasses.replace(found.dataset, spec=spec)


def _predating(values: dict[str, Any]) -> dict[str, Any]:
    """A run's saved settings, with what it was trained with where a setting added since
    defaults to something else: runs from before `fit` stretched every image, and runs from
    before `class_weights` weighed every image alike."""
    before = {"fit": "stretch", "class_weights": "none"}
    return {**{k: v for k, v in before.items() if k not in values}, **values}


class RunWriteError(ConvkitError):
    """A file of the run folder could not be written (full disk, permissions, ...)."""


def new_run_dir(name: str, base: str | Path = "runs") -> Path:
    """A fresh folder name: base/<name>-<date>-<time>[-n]."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{name}-{stamp}"
    n = 2
    while path.exists():
        path = Path(base) / f"{name}-{stamp}-{n}"
        n += 1
    return path


@dataclass
class KeptModel:
    """The weights a run kept, as a ready model (CPU, fp32) with what it takes to feed it."""

    cfg: TrainConfig
    model: nn.Module
    classes: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W) of the uint8 images it takes
    mean: torch.Tensor | None  # (C,) on the [0, 1] scale, when the run standardized
    std: torch.Tensor | None
    epoch: int | None  # the epoch whose weights these are
    val_loss: float | None

    @property
    def normalization(self) -> dict[str, torch.Tensor]:
        return {} if self.mean is None else {"mean": self.mean, "std": self.std}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) -> the float input the model was trained on."""
        return to_float(images, self.mean, self.std)

    @property
    def classifier(self) -> nn.Module:
        """What to predict with: the model, behind the test-time augmentation the run was
        tested with (--tta). Gradients and feature maps are the plain model's."""
        return with_tta(self.model, self.cfg.tta)

    def cpu_autocast(self) -> contextlib.AbstractContextManager:
        """The run's precision on the CPU, so predictions match its own evaluation (bf16 where
        it trained in bf16 and this CPU does bf16 natively); gradients stay fp32."""
        if resolve_precision(self.cfg.precision.replace("fp16", "auto"), CPU) == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()


class Run:
    """One run folder. `Run.create` starts one, `Run.open` reads an existing one."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root / name

    @property
    def curves(self) -> Path:
        """Where front ends draw the training curves."""
        return self._path(CURVES)

    @property
    def onnx_path(self) -> Path:
        """Where `convkit export` writes the kept model as ONNX unless told otherwise."""
        return self._path(ONNX)

    # ---- starting and opening ------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | Path, cfg: TrainConfig) -> Run:
        """A new run folder holding `cfg`. A new folder appears whole (with its config.json) or
        not at all; a folder that holds a run already is refused."""
        run = cls(root)
        run.refuse_existing()
        if run.root.is_dir():
            run.write_config(cfg)  # an empty folder, or one whose run never finished an epoch
            return run
        run.root.parent.mkdir(parents=True, exist_ok=True)
        with run._writing(run.root):
            tmp = Path(tempfile.mkdtemp(prefix=f".{run.root.name}.", dir=run.root.parent))
            try:
                os.chmod(tmp, 0o777 & ~_umask())
                write_json(tmp / CONFIG, cfg.to_dict())
                os.rename(tmp, run.root)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return run

    def refuse_existing(self) -> None:
        if self._path(STATE).exists():
            raise ConfigError(
                f"{self.root} already holds a run; resume it with --resume {self.root}, "
                f"or choose another --out"
            )

    @classmethod
    def open(cls, root: str | Path) -> Run:
        run = cls(root)
        if not run._path(CONFIG).is_file():
            raise ConfigError(
                f"{run.root} is not a run folder (no {CONFIG}); train one with "
                f"`convkit train RECIPE --out {run.root}`"
            )
        return run

    def discard_partial_writes(self) -> list[Path]:
        """Remove the temporary files a killed write left behind (never a run's own file)."""
        names = (CONFIG, METRICS, WEIGHTS, STATE, RESULT, CURVES, ONNX, ROBUSTNESS)
        stale = [p for n in names for p in self.root.glob(f".{n}.*.tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    @property
    def resumable(self) -> bool:
        """True when the run has a config (and maybe finished epochs) to continue from."""
        return self._path(CONFIG).is_file()

    @property
    def has_state(self) -> bool:
        """True once an epoch has finished (its training state is saved)."""
        return self._path(STATE).is_file()

    @property
    def has_weights(self) -> bool:
        return self._path(WEIGHTS).is_file()

    # ---- the config ----------------------------------------------------------------------------

    def config(self) -> TrainConfig:
        """The run's settings (config.json), checked against the copy its checkpoint carries."""
        path = self._path(CONFIG)
        values = _read_json(path, "the run's settings")
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: damaged: expected a table of settings")
        values = _predating(values)
        if self.has_state:
            saved = self._state_metadata()["config"]
            # A setting added to convkit after the run started is missing from its config.json
            # and stands at its default (which is what the run trained with).
            defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
            for key, value in saved.items():
                # A resume's new epochs (etc.) reach config.json just before the training
                # state: a cut between the two writes leaves them different, legitimately.
                here = values.get(key, defaults.get(key))
                if key not in RESUMABLE and here != value:
                    checkpoint.load(self._path(STATE))  # a damaged state is named as such
                    raise ConfigError(
                        f"{path}: damaged or edited: {key} is {here!r} there but "
                        f"{value!r} in {STATE}, which holds the run's state; put back "
                        f"{key} = {value!r}"
                    )
        try:
            return TrainConfig.from_dict(values, str(path))
        except ConfigError as exc:  # a rule between settings names no file: say which
            message = str(exc)
            raise ConfigError(
                message if str(path) in message else f"{path}: damaged or edited: {message}"
            ) from None

    def write_config(self, cfg: TrainConfig) -> None:
        with self._writing(self._path(CONFIG)):
            write_json(self._path(CONFIG), cfg.to_dict())

    # ---- history and result --------------------------------------------------------------------

    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records, checked against the checksum the training state keeps."""
        path = self._path(METRICS)
        if not path.exists():
            if self.has_state:
                raise ConfigError(f"{path} is missing, but the run has finished epochs; {_RECOVER}")
            return []
        lines = _read_text(path, "the per-epoch metrics").splitlines(keepends=True)
        records = [_epoch_record(path, n, line) for n, line in enumerate(lines, 1)]
        if self.has_state:
            meta = self._state_metadata()
            covered = [line for line, r in zip(lines, records, strict=True)
                       if r["epoch"] <= meta["epoch"]]  # fmt: skip
            if "history_sha256" in meta and _digest(covered) != meta["history_sha256"]:
                checkpoint.load(self._path(STATE))  # a damaged state is named as such
                raise ConfigError(
                    f"{path}: damaged: its first {len(covered)} records do not match the "
                    f"checksum kept in {STATE}; {_RECOVER}"
                )
            records = [r for r in records if r["epoch"] <= meta["epoch"]]  # committed only
        return records

    def committed_epoch(self) -> int:
        """The last epoch whose training state is saved (0 before the first)."""
        return self._state_metadata()["epoch"] if self.has_state else 0

    def trained_folder(self) -> dict[str, Any] | None:
        """For a run on an image folder, what its last saved epoch trained on: {"classes",
        "fingerprint"} (None before the first epoch, or for runs from before it was kept)."""
        return self._state_metadata().get("folder") if self.has_state else None

    def _state_metadata(self) -> dict[str, Any]:
        path = self._path(STATE)
        return checkpoint.check_state_metadata(path, checkpoint.read_metadata(path))

    def result(self) -> dict[str, Any] | None:
        path = self._path(RESULT)
        return _read_json(path, "the run's result") if path.exists() else None

    def write_result(self, result: dict[str, Any]) -> None:
        with self._writing(self._path(RESULT)):
            write_json(self._path(RESULT), result)

    def robustness(self) -> dict[str, Any] | None:
        """The saved `convkit robustness` report of the kept weights, or None (none saved, or
        saved for weights the run has since replaced)."""
        path = self._path(ROBUSTNESS)
        if not path.exists():
            return None
        report = _read_json(path, "the robustness report")
        if not isinstance(report, dict) or "clean_accuracy" not in report:
            raise ConfigError(f"{path}: damaged: not a robustness report; run `convkit "
                              f"robustness {self.root}` again")  # fmt: skip
        if not self.has_weights or report.get("weights") != self.weights_signature():
            return None
        return report

    def write_robustness(self, report: dict[str, Any], weights: str) -> None:
        """Save a report of the kept weights whose `weights_signature()` was `weights` when
        they were loaded (a resume may have replaced them since: the report is then stale)."""
        with self._writing(self._path(ROBUSTNESS)):
            write_json(self._path(ROBUSTNESS), {**report, "weights": weights})

    def weights_signature(self) -> str:
        """Which kept weights a derived file belongs to: the SHA-256 of model.safetensors (it
        survives a copy of the folder; 0.3 s for ResNet-152's 240 MB)."""
        h = hashlib.sha256()
        try:
            with open(self._path(WEIGHTS), "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as exc:
            raise ConfigError(f"cannot read {self._path(WEIGHTS)}: {exc.strerror}") from None
        return h.hexdigest()

    # ---- epochs --------------------------------------------------------------------------------

    def save_epoch(
        self,
        history: list[dict[str, Any]],
        model: nn.Module,
        optimizer: Optimizer,
        generators: dict[str, torch.Generator],
        *,
        config: TrainConfig | None = None,
        keep: dict[str, Any] | None,
        state: dict[str, Any],
    ) -> None:
        """Commit a finished epoch: the config when a resume changed it, the kept weights (when
        `keep` gives their metadata), the metrics, then the training state, whose write is the
        commit point."""
        if config is not None:
            self.write_config(config)
        if keep is not None:
            with self._writing(self._path(WEIGHTS)):
                checkpoint.save_weights(self._path(WEIGHTS), model, **keep)
        lines = [json.dumps(m) + "\n" for m in history]
        with self._writing(self._path(METRICS)):
            write_text(self._path(METRICS), "".join(lines))
        with self._writing(self._path(STATE)):
            checkpoint.save_training_state(
                self._path(STATE), model, optimizer, generators,
                history_sha256=_digest(lines), **state,
            )  # fmt: skip

    def restore(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        generators: dict[str, torch.Generator],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(the saved training state's metadata, the history up to its epoch)."""
        meta = checkpoint.restore_training_state(self._path(STATE), model, optimizer, generators)
        history = [m for m in self.history() if m["epoch"] <= meta["epoch"]]
        return meta, history

    def load_weights(self) -> dict[str, torch.Tensor]:
        return checkpoint.load(self._path(WEIGHTS))[0]

    # ---- the kept model ------------------------------------------------------------------------

    def kept_model(self) -> KeptModel:
        """The kept weights as a model, with its classes and preprocessing."""
        if not self.has_weights:
            raise ConfigError(
                f"{self.root} is not a run folder with weights (no {WEIGHTS}); train one with "
                f"`convkit train RECIPE --out {self.root}`, or resume it if it was interrupted"
            )
        path = self._path(WEIGHTS)
        weights, meta = checkpoint.load(path)
        cfg = self.config() if self._path(CONFIG).is_file() else TrainConfig.from_dict(
            _predating(meta["config"]), str(path)
        )  # fmt: skip
        if "classes" in meta:
            classes, shape = tuple(meta["classes"]), tuple(meta["image_shape"])
        else:  # written before runs recorded them: the dataset's
            spec = get_dataset_spec(cfg.dataset)
            classes, shape = tuple(spec.classes), spec.image_shape
        c, h, w = shape
        model = create_model(cfg.model, num_classes=len(classes), in_channels=c, input_size=(h, w))
        if cfg.permute_pixels:  # the run trained on shuffled pixels: every use shuffles them too
            attach_pixel_permutation(model, cfg.permute_pixels, (c, h, w))
            kept = meta.get("pixel_permutation_sha256")
            if kept is not None and kept != permutation_digest(model.pixel_permutation):
                raise ConfigError(
                    f"{path}: this PyTorch draws another pixel permutation from seed "
                    f"{cfg.permute_pixels} than the one the run trained with; use the PyTorch "
                    f"version in {self._path(RESULT)}"
                )
        try:
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise ConfigError(f"{path} does not fit model {cfg.model}: {exc}") from None
        norm = meta.get("normalization") or {}
        return KeptModel(
            cfg=cfg,
            model=model,
            classes=classes,
            image_shape=(c, h, w),
            mean=torch.tensor(norm["mean"]) if "mean" in norm else None,
            std=torch.tensor(norm["std"]) if "std" in norm else None,
            epoch=meta.get("epoch"),
            val_loss=meta.get("val_loss"),
        )

    # ---- writing -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self, path: Path) -> Iterator[None]:
        """Turn a failed write into one error that names the file and says what is safe."""
        try:
            yield
        except OSError as exc:
            raise RunWriteError(_write_failure(self, path, exc)) from None
        except Exception as exc:  # safetensors reports a failed write as its own error type
            if "No space left" in str(exc) or "Disk quota" in str(exc):
                raise RunWriteError(_write_failure(self, path, exc)) from None
            raise


_RECOVER = "restore it from a backup, or train the run again"


def _write_failure(run: Run, path: Path, exc: Exception) -> str:
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        why = f"{why}: the filesystem holding {run.root} is full"
    saved = (
        f"the last finished epoch's checkpoint in {run.root} is untouched: free some space, "
        f"then continue with `convkit train --resume {run.root}`"
        if run.has_state
        else "no epoch had finished, so there is nothing to resume yet"
    )
    return f"cannot write {path} ({why}); {saved}"


_RECORD_KEYS = ("epoch", "loss", "accuracy", "seconds")


def _epoch_record(path: Path, n: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        record = None
    if (
        not isinstance(record, dict)
        or not all(k in record for k in _RECORD_KEYS)
        or type(record["epoch"]) is not int
    ):
        raise ConfigError(
            f"{path}: damaged at line {n} (not an epoch record: {line[:60]!r}); {_RECOVER}"
        )
    return record


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: damaged: {what} is not UTF-8 text; {_RECOVER}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(_read_text(path, what))
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: damaged: {what} is not valid JSON ({exc}); {_RECOVER}"
        ) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
