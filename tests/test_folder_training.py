"""Training on the user's own image folder, end to end: `convkit data check PATH`, `convkit train
RECIPE --data PATH`, then evaluate, resume and predict, which find the folder and the class
names through the run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convkit.cli import main
from convkit.runs import Run

COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def colour_folder(root, n_per_class=40, seed=0):
    """Class folders of noisy single-colour pictures of several sizes (PNG and JPEG)."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            size = (int(rng.integers(20, 60)), int(rng.integers(20, 60)))
            noise = rng.integers(-40, 40, (size[1], size[0], 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            suffix = ".png" if i % 2 else ".jpg"
            Image.fromarray(pixels).save(root / name / f"{i}{suffix}")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("folder")
    folder = colour_folder(base / "colours")
    (folder / "red" / "notes.txt").write_text("not a picture")
    run_dir = base / "run"
    with pytest.MonkeyPatch.context() as mp:  # module fixtures run before the autouse isolation
        mp.setenv("XDG_CACHE_HOME", str(base / "cache"))
        code = main(["train", "cifar10-cnn", "--data", str(folder), "--epochs", "3",
                     "--patience", "0", "--batch-size", "16", "--out", str(run_dir), "--quiet"])  # fmt: skip
    assert code == 0
    return folder, run_dir


def test_a_folder_trains_and_the_run_remembers_it(trained, capsys):
    folder, run_dir = trained
    result = Run(run_dir).result()
    assert result["dataset"] == "folder:colours" and result["test_accuracy"] > 0.9
    assert result["config"]["data"] == str(folder)
    report = result["folder"]
    assert report["classes"] == ["blue", "green", "red"]
    assert report["unreadable"][0][0].endswith("notes.txt")
    kept = Run(run_dir).kept_model()
    assert kept.classes == ("blue", "green", "red") and kept.image_shape == (3, 32, 32)

    assert main(["evaluate", str(run_dir), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["test_accuracy"] == result["test_accuracy"]

    pictures = sorted((folder / "green").glob("*.png"))[:3]
    assert main(["predict", str(run_dir), *map(str, pictures), "--json"]) == 0
    said = [json.loads(line)["top"][0]["class"] for line in capsys.readouterr().out.splitlines()]
    assert said == ["green"] * 3


def test_a_folder_run_resumes(trained, tmp_path):
    folder, run_dir = trained
    copy = tmp_path / "run"
    copy.mkdir()
    for p in run_dir.iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    assert main(["train", "--resume", str(copy), "--epochs", "4", "--quiet"]) == 0
    assert [m["epoch"] for m in Run(copy).history()] == [1, 2, 3, 4]


def test_data_check_reports_classes_counts_and_unreadable_files(tmp_path, capsys):
    folder = colour_folder(tmp_path / "pics", n_per_class=5)
    (folder / "empty").mkdir()
    (folder / "blue" / "broken.jpg").write_bytes((folder / "blue" / "0.jpg").read_bytes()[:100])
    code = main(["data", "check", str(folder)])
    out = capsys.readouterr().out
    assert code == 0
    for text in ("blue", "green", "red", "broken.jpg", "empty folder", "fewer than 10"):
        assert text in out, text
    assert f"convkit train cifar10-cnn --data {folder}" in out

    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "one" / "only" / "a.png")
    code = main(["data", "check", str(tmp_path / "one")])
    assert code == 2 and "needs at least two classes" in capsys.readouterr().err


def test_image_size_needs_a_folder(capsys):
    assert main(["train", "cifar10-cnn", "--image-size", "64"]) == 2
    assert "give --data with it" in capsys.readouterr().err


def test_a_folder_gets_a_planned_length_and_augmentation_unless_the_user_says(tmp_path):
    from convkit.api import train_config

    folder = str(tmp_path)
    cfg = train_config("mnist-cnn", settings={"data": folder})
    # The recipe's own steps: 8 epochs over MNIST's 48,000 training images at batch 128.
    assert cfg.plan_steps == 8 * 375 and cfg.augment == "translate"  # digits: never mirrored
    assert train_config("cifar10-cnn", settings={"data": folder}).augment == "crop-flip"
    mine = train_config("mnist-cnn", settings={"data": folder, "epochs": 5, "augment": "none"})
    assert mine.plan_steps == 0 and mine.epochs == 5 and mine.augment == "none"
    assert train_config("cifar10-fast", settings={"data": folder}).augment == "flip-translate"
    plain = train_config("mnist-cnn")  # the recipe's own dataset: as the recipe says
    assert plain.plan_steps == 0 and plain.augment == "none" and plain.epochs == 8


def test_a_planned_run_says_its_plan_records_it_and_resumes_with_it(tmp_path, capsys):
    folder = colour_folder(tmp_path / "colours", n_per_class=20)
    run_dir = tmp_path / "run"
    code = main(["train", "cifar10-cnn", "--data", str(folder), "--plan-steps", "12",
                 "--batch-size", "8", "--patience", "0", "--out", str(run_dir)])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    # 60 images, 12 tested, the recipe's 10% of the rest held out: 43 to train on, 6 steps of
    # 8 an epoch.
    assert "Plan: 43 training images, batch 8: 2 epochs = 12 steps" in out
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["epochs"] == 2 and cfg["plan_steps"] == 12
    assert [m["epoch"] for m in Run(run_dir).history()] == [1, 2]
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--quiet"]) == 0
    assert [m["epoch"] for m in Run(run_dir).history()] == [1, 2, 3]


def test_one_image_per_class_is_refused_with_the_reason_and_nothing_written(tmp_path, capsys):
    for name in ("a", "b", "c"):
        (tmp_path / "one" / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (30 * len(name), 50, 90)).save(tmp_path / "one" / name / "x.png")
    run_dir = tmp_path / "run"
    assert main(["train", "cifar10-cnn", "--data", str(tmp_path / "one"),
                 "--out", str(run_dir)]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "no readable test image" in err and "2 or more images" in err and "test/" in err
    assert not run_dir.exists()


def test_fit_is_recorded_and_every_use_of_the_run_fits_alike(tmp_path, capsys):
    folder = tmp_path / "wide"
    rng = np.random.default_rng(0)
    for name, rgb in COLOURS.items():
        (folder / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(np.array(rgb) + rng.integers(-30, 30, (20, 60, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / name / f"{i}.png")
    run_dir = tmp_path / "run"
    assert main(["train", "cifar10-cnn", "--data", str(folder), "--fit", "pad", "--epochs", "1",
                 "--batch-size", "16", "--out", str(run_dir), "--quiet"]) == 0  # fmt: skip
    run = Run(run_dir)
    assert run.config().fit == "pad" and run.result()["config"]["fit"] == "pad"
    # the folder's cache was converted with it (and is kept apart from other fits' caches)
    caches = Path(os.environ["XDG_CACHE_HOME"]) / "convkit" / "folders"
    [manifest] = caches.glob("wide-3x32x32-pad-*/manifest.json")
    assert json.loads(manifest.read_text())["conversion"]["fit"] == "pad"
    # predict (and so inspect, export and the page, which share the conversion) pads alike
    picture = folder / "red" / "0.png"
    capsys.readouterr()
    assert main(["predict", str(run_dir), str(picture), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["conversion"] == "60x20 RGB -> resized to 32x11 -> padded to 32x32 with its " \
                                 "border's mean colour"  # fmt: skip
    # a bad value is named before anything is decoded or written
    with pytest.raises(SystemExit):
        main(["train", "cifar10-cnn", "--data", str(folder), "--fit", "squash",
              "--out", str(tmp_path / "bad")])  # fmt: skip
    assert "invalid choice: 'squash'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_run_from_before_fit_keeps_stretching(tmp_path):
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    from convkit.train import TrainConfig

    old = TrainConfig(data="/somewhere").to_dict()
    del old["fit"]  # convkit then stretched every image to the input
    (run_dir / "config.json").write_text(json.dumps(old))
    assert Run(run_dir).config().fit == "stretch"


def test_10000_images_against_5_and_a_1_by_10000_image_train_with_warnings(tmp_path, capsys):
    folder = tmp_path / "lopsided"
    (folder / "many").mkdir(parents=True)
    (folder / "few").mkdir()
    rng = np.random.default_rng(0)
    for i in range(10_000):
        Image.fromarray(rng.integers(0, 100, (8, 8), dtype=np.uint8)).save(
            folder / "many" / f"{i}.png"
        )
    for i in range(5):
        Image.fromarray(rng.integers(150, 255, (8, 8), dtype=np.uint8)).save(
            folder / "few" / f"{i}.png"
        )
    line = np.full((10_000, 1), 200, np.uint8)  # one pixel wide, 10,000 tall
    Image.fromarray(line).save(folder / "few" / "line.png")
    run_dir = tmp_path / "run"
    assert main(["train", "mnist-mlp", "--data", str(folder), "--epochs", "1", "--batch-size",
                 "256", "--out", str(run_dir)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "class 'few' has only 5 training images" in out  # the line image among them
    assert (
        "the classes are imbalanced: 'many' has 8,000 training images, 'few' 5 (1,600 times" in out
    )
    report = Run(run_dir).result()["folder"]
    assert report["counts"]["test"] == {"few": 1, "many": 2000} and not report["unreadable"]
    assert any("imbalanced" in w for w in report["warnings"])


def test_a_folder_that_changes_between_epochs(tmp_path, capsys):
    folder = colour_folder(tmp_path / "pics", n_per_class=12)
    run_dir = tmp_path / "run"
    args = ["train", "cifar10-cnn", "--data", str(folder), "--batch-size", "16", "--quiet"]
    assert main([*args, "--epochs", "1", "--out", str(run_dir)]) == 0
    # files come and go between epochs: said, then trained on
    (folder / "red" / "0.jpg").unlink()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(folder / "red" / "new.png")
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "changed since this run's last epoch" in out
    assert [m["epoch"] for m in Run(run_dir).history()] == [1, 2]
    # a new class cannot be resumed into the same outputs: refused, the run untouched
    (folder / "yellow").mkdir()
    for i in range(12):
        Image.new("RGB", (30, 30), (200, 200, 30)).save(folder / "yellow" / f"{i}.png")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert main(["train", "--resume", str(run_dir), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds the classes blue, green, red, yellow now" in err and "--init" in err
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_a_cache_rebuilt_under_a_training_leaves_its_images_as_they_were(tmp_path):
    from convkit.data.folders import load_folder

    folder = colour_folder(tmp_path / "pics", n_per_class=8)
    first = load_folder(folder, (3, 16, 16), log=lambda m: None)
    seen = first.dataset.train.images.clone()  # what the running training reads
    for p in (folder / "blue").glob("*.png"):
        p.unlink()  # another process changes the folder and loads it: a new cache
    second = load_folder(folder, (3, 16, 16), log=lambda m: None)
    assert len(second.dataset.train) < len(first.dataset.train)
    assert (first.dataset.train.images == seen).all()  # the mapped file lives on


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs"),
    [
        (782, 1),  # twice the recipe's dataset: half its epochs, its steps
        (391, 2),  # the recipe's size: the recipe
        (196, 8),  # 2x smaller: 2 x 2^2 epochs (its steps would give 4)
        (40, 100),  # 10x smaller: up to 100 epochs (its steps would give 20)
        (8, 100),  # 50x smaller: its steps give 98; at least 100
        (1, 500),  # a handful of images: its steps (782), at most 500
    ],
)
def test_a_smaller_folder_is_planned_more_passes(steps_per_epoch, epochs):
    from convkit.train import TrainConfig
    from convkit.train.runner import plan_epochs

    said = []
    cfg = TrainConfig(epochs=2, plan_steps=782, batch_size=128)  # cifar10-quick's plan
    planned = plan_epochs(cfg, steps_per_epoch * 128, steps_per_epoch, type("P", (), {
        "message": staticmethod(said.append)})())  # fmt: skip
    assert planned.epochs == epochs and planned.plan_steps == 782
    assert said[0].startswith(f"Plan: {steps_per_epoch * 128:,} training images, batch 128: "
                              f"{epochs} epochs = {epochs * steps_per_epoch:,} steps")  # fmt: skip


@pytest.mark.parametrize(
    "steps_per_epoch, epochs, warmup",
    [
        (98, 40, 2),  # resnet20-fast's own dataset: its 40 epochs, 2 of them warming up
        (196, 20, 1),  # twice as large: half the epochs, the warm-up still its twentieth
        (392 * 4, 2, 1),  # 16x larger: 2 epochs, one warming up (never all of them)
        (3920, 1, 0),  # one epoch: no whole epoch to warm up in
        (49, 100, 5),  # half as large: 100 passes (fewer images, more passes), 5 warming up
    ],
)
def test_a_planned_run_keeps_the_warmup_share_of_its_recipe(steps_per_epoch, epochs, warmup):
    from convkit.train import TrainConfig
    from convkit.train.runner import plan_epochs

    said = []
    cfg = TrainConfig(epochs=40, plan_steps=3920, batch_size=512, schedule="linear",
                      warmup_epochs=2)  # fmt: skip
    planned = plan_epochs(cfg, steps_per_epoch * 512, steps_per_epoch, type("P", (), {
        "message": staticmethod(said.append)})())  # fmt: skip
    assert (planned.epochs, planned.warmup_epochs) == (epochs, warmup)
    assert (f"the first {warmup} warming up" in said[0]) == bool(warmup)


def test_a_planned_run_rescales_the_recipes_epoch_parts_and_keeps_the_users():
    from convkit.api import train_config
    from convkit.errors import ConfigError
    from convkit.train.runner import plan_epochs

    def plan(settings):  # twice CIFAR-10's training images: 196 steps of 512 an epoch
        said = []
        cfg = train_config("cifar10-fast", settings={"plan_steps": 784, **settings})
        planned = plan_epochs(cfg, 100_000, 196, type("P", (), {
            "message": staticmethod(said.append)})())  # fmt: skip
        return planned, said[0]

    # the recipe's 784 steps make 4 epochs, and its 3 of 8 low-resolution and whitening-bias
    # epochs keep their share: 2 (1.5 rounded up) and 1.5 of 4, as the plan says
    planned, said = plan({})
    assert (planned.epochs, planned.low_res_epochs, planned.whiten_bias_epochs) == (4, 2, 1.5)
    assert "4 epochs = 784 steps, the first 2 on 26-pixel crops" in said
    # the user's own values stay as given
    planned, said = plan({"low_res_epochs": 2, "whiten_bias_epochs": 0.5})
    assert (planned.epochs, planned.low_res_epochs, planned.whiten_bias_epochs) == (4, 2, 0.5)
    assert "the first 2 on 26-pixel crops" in said
    # on a folder the recipe's whitening-bias epochs are off, so any there are the user's
    planned, _ = plan({"data": "/pictures", "whiten_bias_epochs": 3.0})
    assert (planned.epochs, planned.low_res, planned.whiten_bias_epochs) == (4, 0, 3.0)
    # and are refused, naming the plan, when the planned run is too short for them
    with pytest.raises(ConfigError, match="the plan gives 4 epochs for 100,000 training images"):
        plan({"low_res_epochs": 5})


def test_class_weights_aim_training_at_the_mix_it_is_tested_on():
    import torch

    from convkit.train import TrainConfig
    from convkit.train.runner import class_weights

    train = torch.tensor([0] * 500 + [1] * 50)  # 10 cats for every dog
    balanced_test = torch.tensor([0] * 200 + [1] * 200)
    auto = TrainConfig(data="/pictures")
    w = class_weights(auto, train, balanced_test, 2, test_folder=True)
    # each class by its test share over its train share (0.5/0.909, 0.5/0.0909), then scaled
    # so the weights average 1 over the training images
    assert w.tolist() == pytest.approx([0.55, 5.5])
    assert float((w[train]).mean()) == pytest.approx(1.0)
    # a split of the classes is mixed as the training images: nothing to correct
    assert class_weights(auto, train, torch.tensor([0] * 100 + [1] * 10), 2, True) is None
    assert class_weights(auto, train, balanced_test, 2, test_folder=False) is None
    # a class the test folder lacks is not dropped from training
    assert class_weights(auto, train, torch.tensor([0] * 50), 2, True) is None
    # balanced: every class alike in total, test mix or not; none: every image alike
    assert class_weights(auto.replace(class_weights="balanced"), train, train, 2, False).tolist() \
        == pytest.approx([0.55, 5.5])  # fmt: skip
    assert class_weights(auto.replace(class_weights="none"), train, balanced_test, 2, True) is None


def test_an_imbalanced_folder_with_a_balanced_test_folder_trains_weighted(tmp_path, capsys):
    folder = tmp_path / "pets"
    rng = np.random.default_rng(0)
    for split, counts in (("train", {"cat": 60, "dog": 6}), ("test", {"cat": 10, "dog": 10})):
        for name, n in counts.items():
            (folder / split / name).mkdir(parents=True)
            for i in range(n):
                rgb = COLOURS["red" if name == "cat" else "blue"]
                pixels = np.clip(np.array(rgb) + rng.integers(-60, 60, (24, 24, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / split / name / f"{i}.png")
    run_dir = tmp_path / "run"
    assert main(["train", "cifar10-quick", "--data", str(folder), "--epochs", "2",
                 "--batch-size", "16", "--out", str(run_dir)]) == 0  # fmt: skip
    assert "Class weights in the loss (auto): cat 0.55, dog 5.5" in capsys.readouterr().out
    assert Run(run_dir).config().class_weights == "auto"


def test_the_weighted_loss_totals_alike_however_images_are_batched():
    import torch

    from convkit.train.runner import WeightedCrossEntropy

    torch.manual_seed(0)
    logits, labels = torch.randn(12, 3), torch.tensor([0] * 9 + [1] * 2 + [2])
    loss = WeightedCrossEntropy(torch.tensor([0.5, 2.0, 3.0]), label_smoothing=0.1)
    each = torch.nn.functional.cross_entropy(logits, labels, reduction="none", label_smoothing=0.1)
    assert float(loss(logits, labels)) == pytest.approx(float((each * loss.weights[labels]).mean()))
    # as validation sums it: batch means times batch sizes, over any batching
    for size in (1, 5, 12):
        total = sum(float(loss(logits[i : i + size], labels[i : i + size])) * len(labels[i : i + size])
                    for i in range(0, 12, size))  # fmt: skip
        assert total / 12 == pytest.approx(float(loss(logits, labels)))
    only_zero_weight = WeightedCrossEntropy(torch.tensor([0.0, 1.0, 1.0]))
    assert float(only_zero_weight(logits[:3], labels[:3])) == 0.0  # never 0/0
