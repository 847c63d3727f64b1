"""Training on the user's own image folder, end to end: `convkit data check PATH`, `convkit train
RECIPE --data PATH`, then evaluate, resume and predict, which find the folder and the class
names through the run."""

from __future__ import annotations

import json

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
