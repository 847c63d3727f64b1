"""The run path on tiny made-up data: run folders, resume, keep best/last, early stopping,
schedules, settings checked once, and damaged files named. Seconds, not minutes."""

from __future__ import annotations

import json
import random

import pytest
import torch
from conftest import tiny_dataset

import convkit.train.runner as runner
from convkit.cli import main
from convkit.errors import ConfigError, ConvkitError
from convkit.runs import Run
from convkit.train import TrainConfig, evaluate_run, resume, train
from convkit.train.checkpoint import load
from convkit.train.config import RESUMABLE

TINY = dict(model="mnist-mlp", dataset="tiny", epochs=3, batch_size=32, precision="fp32")
TIMING = ("seconds", "images_per_second")


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


def config(**changes) -> TrainConfig:
    return TrainConfig.from_dict({**TINY, **changes})


def history(run_dir) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in Run(run_dir).history()]


def same_weights(a, b) -> bool:
    wa, wb = load(a / "model.safetensors")[0], load(b / "model.safetensors")[0]
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_dataset_object_trains_evaluates_and_names_its_classes(tmp_path, data):
    result = train(config(), data=data, out=tmp_path / "run")
    assert result["test_accuracy"] > 0.9 and result["epochs"] == 3
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "config.json", "last.safetensors", "metrics.jsonl", "model.safetensors", "result.json",
    ]  # fmt: skip
    # (curves.png is drawn by the command line, not by training)
    again = evaluate_run(tmp_path / "run", data=data)
    assert again["test_accuracy"] == result["test_accuracy"]
    assert again["test_loss"] == pytest.approx(result["test_loss"], rel=1e-6)
    kept = Run(tmp_path / "run").kept_model()
    assert kept.classes == ("bar0", "bar1", "bar2", "bar3") and kept.image_shape == (1, 28, 28)
    assert kept.epoch == result["best_epoch"] and kept.cfg.dataset == "tiny"


@pytest.mark.parametrize(
    "settings",
    [
        dict(keep="last", val_split=0.0),
        dict(keep="best", schedule="cosine", epochs=4),
        dict(keep="best", schedule="plateau", optimizer="sgd", lr=0.05, epochs=4),
        dict(schedule="step", augment="crop-flip", normalize="standardize", model="mnist-cnn"),
        dict(
            model="cifar10-fast",
            optimizer="muon",
            lr=0.24,
            muon_momentum=0.6,
            momentum=0.85,
            lr_bias=2.0,
            lr_head=20.0,
            weight_decay=0.004,
            schedule="linear",
            augment="flip-translate",
            normalize="standardize",
            tta="flip-translate",
            label_smoothing=0.2,
            val_split=0.0,
            keep="last",
        ),  # fmt: skip
    ],
    ids=["last", "best-cosine", "plateau", "step-augment-cnn", "muon-whitened-tta"],
)
def test_an_interrupted_run_resumes_exactly(tmp_path, data, monkeypatch, settings):
    cfg = config(**settings)
    full = train(cfg, data=data, out=tmp_path / "full")

    real_epoch, calls = runner.train_one_epoch, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, data=data, out=tmp_path / "cut")
    monkeypatch.setattr(runner, "train_one_epoch", real_epoch)
    assert [m["epoch"] for m in Run(tmp_path / "cut").history()] == [1]

    resumed = resume(tmp_path / "cut", data=data)
    assert history(tmp_path / "cut") == history(tmp_path / "full")
    assert same_weights(tmp_path / "cut", tmp_path / "full")
    assert (resumed["test_accuracy"], resumed["test_loss"]) == (
        full["test_accuracy"],
        full["test_loss"],
    )


def test_a_folder_from_before_newer_settings_stays_readable_and_resumable(tmp_path, data):
    run_dir = tmp_path / "run"
    train(config(epochs=1, keep="last", val_split=0.0), data=data, out=run_dir)
    path = run_dir / "config.json"
    values = json.loads(path.read_text())
    later = ("tta", "low_res", "low_res_epochs", "muon_momentum", "lr_bias", "lr_head",
             "whiten_bias_epochs")  # fmt: skip
    for key in (*later, "warmup_epochs"):
        del values[key]  # settings convkit gained later: an older folder lacks them
    path.write_text(json.dumps(values))
    assert Run(run_dir).config() == TrainConfig.from_dict(values)  # at their defaults
    resume(run_dir, data=data)  # nothing to train, nothing changed: the folder stays as it is
    assert Run(run_dir).config().tta == "none"
    resume(run_dir, {"epochs": 2}, data=data)
    assert Run(run_dir).config().epochs == 2 and evaluate_run(run_dir, data=data)["epochs"] == 2


def test_a_resume_that_only_changes_the_test_time_augmentation_records_it(tmp_path, data):
    run_dir = tmp_path / "run"
    first = train(config(epochs=1, keep="last", val_split=0.0), data=data, out=run_dir)
    again = resume(run_dir, {"tta": "flip"}, data=data)
    assert again["config"]["tta"] == "flip" and again["epochs"] == first["epochs"] == 1
    assert Run(run_dir).config().tta == "flip"  # so evaluate, predict and export agree
    assert evaluate_run(run_dir, data=data)["test_accuracy"] == again["test_accuracy"]


def test_early_stopping_keeps_the_best_epoch_and_a_resume_stays_stopped(tmp_path, data):
    # A rate this high makes the val loss bounce, so patience 1 stops the run early.
    cfg = config(epochs=30, patience=1, optimizer="sgd", lr=0.5, momentum=0.9)
    result = train(cfg, data=data, out=tmp_path / "run")
    ms = Run(tmp_path / "run").history()
    assert result["stopped_early"] and len(ms) < 30 and not ms[-1]["improved"]
    best = min(ms, key=lambda m: m["val_loss"])
    assert result["best_epoch"] == best["epoch"] == Run(tmp_path / "run").kept_model().epoch
    again = resume(tmp_path / "run", {"epochs": 40}, data=data)
    assert again["epochs"] == len(ms) and again["test_accuracy"] == result["test_accuracy"]


def test_a_resume_that_would_change_the_model_is_refused_before_anything_is_written(
    tmp_path, data, capsys
):
    run_dir = tmp_path / "run"
    train(config(epochs=1), data=data, out=run_dir)
    before = snapshot(run_dir)
    with pytest.raises(ConfigError, match=r"model cannot change .*mnist-mlp.*mnist-cnn"):
        resume(run_dir, {"model": "mnist-cnn", "epochs": 3}, data=data)
    # The command line, as the defect was found: refused, named, nothing touched.
    code = main(["train", "--resume", str(run_dir), "--model", "mnist-cnn", "--epochs", "3"])
    assert code == 2 and "model cannot change" in capsys.readouterr().err
    for key, value in [("lr", 0.5), ("batch_size", 8), ("seed", 1), ("dataset", "mnist")]:
        with pytest.raises(ConfigError, match=f"{key} cannot change"):
            resume(run_dir, {key: value}, data=data)
    assert snapshot(run_dir) == before
    result = resume(run_dir, {"epochs": 2, "patience": 3, "eval_batch_size": 7}, data=data)
    assert result["epochs"] == 2 and Run(run_dir).config().epochs == 2


def test_settings_are_merged_from_every_layer_then_checked_once(tmp_path, capsys):
    file = tmp_path / "c.toml"
    file.write_text("val_split = 0\n")
    layers = [("recipe", {"keep": "best"}), (str(file), {"val_split": 0.0})]
    with pytest.raises(ConfigError, match="keep=best needs a validation split"):
        TrainConfig.layered(layers)
    cfg = TrainConfig.layered([*layers, ("command line", {"keep": "last"})])
    assert (cfg.val_split, cfg.keep) == (0.0, "last")
    # The command line gets past the settings to the (here missing) data.
    code = main(["train", "mnist-mlp", "--config", str(file), "--keep", "last",
                 "--data-dir", str(tmp_path), "--no-download"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "needs a validation split" not in err and "mnist" in err


def test_a_run_folder_that_never_finished_an_epoch_resumes_from_the_start(tmp_path, data):
    run_dir = tmp_path / "run"
    Run.create(run_dir, config())  # as a power cut right after the start leaves it
    with pytest.raises(ConfigError, match="no model.safetensors"):
        evaluate_run(run_dir, data=data)
    result = resume(run_dir, data=data)
    full = train(config(), data=data, out=tmp_path / "full")
    assert result["test_accuracy"] == full["test_accuracy"]
    assert history(run_dir) == history(tmp_path / "full")


# ---- damaged files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, data):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    train(config(epochs=2), data=data, out=run_dir)
    return run_dir


def damaged_copies(finished_run, tmp_path, name: str):
    """(description, run folder) pairs: the run with `name` truncated, or with one bit flipped
    at one of several random places (seeded)."""
    original = (finished_run / name).read_bytes()
    rng = random.Random(name)
    cases = [("truncated to half", original[: len(original) // 2]), ("emptied", b"")]
    for _ in range(6):
        i, bit = rng.randrange(len(original)), rng.randrange(8)
        flipped = bytearray(original)
        flipped[i] ^= 1 << bit
        cases.append((f"bit {bit} of byte {i} flipped", bytes(flipped)))
    for k, (what, content) in enumerate(cases):
        folder = tmp_path / f"case{k}"
        folder.mkdir()
        for p in finished_run.iterdir():
            (folder / p.name).write_bytes(content if p.name == name else p.read_bytes())
        yield what, folder


@pytest.mark.parametrize(
    "name", ["model.safetensors", "last.safetensors", "config.json", "metrics.jsonl"]
)
def test_a_damaged_file_is_named_never_a_traceback(finished_run, tmp_path, data, name):
    for what, folder in damaged_copies(finished_run, tmp_path, name):
        run = Run(folder)
        reader = {
            "model.safetensors": run.kept_model,
            "last.safetensors": lambda f=folder: resume(f, {"epochs": 3}, data=data),
            "config.json": run.config,
            "metrics.jsonl": run.history,
        }[name]
        try:
            reader()
        except ConvkitError as exc:
            assert str(folder / name) in str(exc), (what, str(exc))
        else:  # a flip that leaves valid settings is an edit a resume may make: allowed
            changed = {
                k
                for k, v in run.config().to_dict().items()
                if v != Run(finished_run).config().to_dict()[k]
            }
            assert name == "config.json" and changed and changed <= set(RESUMABLE), (what, changed)
        # Whatever else reads the folder fails the same way, or (when it never needs the
        # damaged file, or replaces it) succeeds; never another exception.
        for action in (evaluate_run, lambda f, data: resume(f, {"epochs": 3}, data=data)):
            try:
                action(folder, data=data)
            except ConvkitError as exc:
                assert str(folder / name) in str(exc), (what, str(exc))


def test_the_command_line_names_a_damaged_file_without_a_traceback(finished_run, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in finished_run.iterdir():
        folder.joinpath(p.name).write_bytes(p.read_bytes())
    config_file = folder / "config.json"
    config_file.write_text(config_file.read_text().replace('"seed": 0', '"seed": 1'))
    code = main(["evaluate", str(folder)])
    err = capsys.readouterr().err
    assert code == 2 and f"{config_file}: damaged or edited: seed is 1" in err
    assert "Traceback" not in err
    assert json.loads((finished_run / "config.json").read_text())["seed"] == 0


# ---- fine-tuning --------------------------------------------------------------------------------


def test_fine_tuning_from_a_state_dict_with_another_class_count(tmp_path, data, capsys):
    source = tmp_path / "source"
    train(config(epochs=2), data=data, out=source)
    three = tiny_dataset(classes=3, seed=5)
    weights = tmp_path / "w.safetensors"
    (source / "model.safetensors").rename(weights)  # a plain state dict file, as users have

    result = train(config(epochs=2, init=str(weights)), data=three, out=tmp_path / "tuned")
    out = capsys.readouterr().out
    assert "classifier dense_3 (4 classes there) replaced by a new one for 3" in out
    assert result["test_accuracy"] > 0.9
    kept = Run(tmp_path / "tuned").kept_model()
    assert kept.classes == ("bar0", "bar1", "bar2")

    frozen = train(config(epochs=2, init=str(weights), freeze=True), data=three,
                   out=tmp_path / "frozen")  # fmt: skip
    assert "only the classifier dense_3 trains (1,539 of 666,115 parameters)" in (
        capsys.readouterr().out
    )
    start, end = load(weights)[0], load(tmp_path / "frozen" / "model.safetensors")[0]
    assert all(torch.equal(start[k], end[k]) for k in end if not k.startswith("dense_3."))
    assert not torch.equal(start["dense_3.weight"][:3], end["dense_3.weight"])
    assert frozen["test_accuracy"] > 0.5


def test_initial_weights_that_do_not_fit_are_named(tmp_path, data):
    source = tmp_path / "cnn"
    train(config(epochs=1, model="mnist-cnn"), data=data, out=source)
    with pytest.raises(ConfigError, match=rf"--init {source} does not fit this model"):
        train(config(init=str(source)), data=data, out=tmp_path / "mlp")
    assert not (tmp_path / "mlp").exists()
    with pytest.raises(ConfigError, match="freeze keeps the initial weights: give --init"):
        config(freeze=True)


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl"])
def test_every_single_bit_flip_in_the_json_files_is_noticed(finished_run, tmp_path, name):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in finished_run.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    original = (finished_run / name).read_bytes()
    run = Run(folder)
    read = run.config if name == "config.json" else run.history
    missed = []
    # The values a resume may change are not checked against the training state (a resume
    # writes them just before it), so a flip that leaves them valid goes unnoticed; any other
    # flip must not.
    text = original.decode()
    line_of = [text.count("\n", 0, i) for i in range(len(original))]
    allowed = {n for n, line in enumerate(text.splitlines()) if line.strip().split('"')[1:2]
               and line.strip().split('"')[1] in RESUMABLE}  # fmt: skip
    for i in range(len(original)):
        for bit in (0, 5):
            flipped = bytearray(original)
            flipped[i] ^= 1 << bit
            (folder / name).write_bytes(bytes(flipped))
            try:
                read()
                if not (name == "config.json" and line_of[i] in allowed):
                    missed.append((i, bit))
            except ConvkitError as exc:
                assert str(folder / name) in str(exc), (i, bit, str(exc))
    assert not missed, f"{len(missed)} of {2 * len(original)} flips went unnoticed: {missed[:5]}"


def test_a_resume_cut_between_its_new_config_and_its_commit_still_opens(
    finished_run, tmp_path, data
):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in finished_run.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    run = Run(folder)
    run.write_config(run.config().replace(epochs=4))  # as a resume --epochs 4 writes it first
    assert run.config().epochs == 4 and run.kept_model().epoch == 2
    result = resume(folder, data=data)
    assert result["epochs"] == 4 and [m["epoch"] for m in run.history()] == [1, 2, 3, 4]


def test_a_missing_history_or_too_few_epochs_is_refused(finished_run, tmp_path, data):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in finished_run.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    with pytest.raises(ConfigError, match="has finished 2 epochs already; --epochs 1"):
        resume(folder, {"epochs": 1}, data=data)
    (folder / "metrics.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"metrics.jsonl is missing, but the run has finished"):
        evaluate_run(folder, data=data)
    with pytest.raises(ConfigError, match=r"metrics.jsonl is missing"):
        resume(folder, {"epochs": 3}, data=data)


def test_an_uncommitted_or_odd_history_line(finished_run, tmp_path, data):
    folder = tmp_path / "run"
    folder.mkdir()
    for p in finished_run.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    metrics = folder / "metrics.jsonl"
    good = metrics.read_text()
    metrics.write_text(good + '{"epoch": 9}\n')
    with pytest.raises(ConfigError, match=r"metrics.jsonl: damaged at line 3"):
        Run(folder).history()
    last = json.loads(good.splitlines()[-1])
    metrics.write_text(good + json.dumps({**last, "epoch": 3}) + "\n")  # written, not committed
    assert [m["epoch"] for m in Run(folder).history()] == [1, 2]
    metrics.write_text(good.replace('"epoch": 1', '"epoch": "1"'))
    with pytest.raises(ConfigError, match=r"metrics.jsonl: damaged at line 1"):
        Run(folder).history()
