"""`convkit predict`: files, folders and globs; table, JSON and CSV; unreadable files named while
the rest are predicted; and, on the real test sets written as PNG files, agreement with
`convkit evaluate`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import tiny_dataset
from PIL import Image

from convkit.cli import main
from convkit.train import TrainConfig, train
from convkit.use.predict import find_images, open_predictor, predict_files


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    data = tiny_dataset()
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    cfg = TrainConfig.from_dict(dict(model="mnist-mlp", epochs=2, batch_size=32))
    train(cfg, data=data, out=run_dir)
    return run_dir, data


def write_pngs(split, folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = split.images[i].numpy()
        array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        Image.fromarray(array).save(folder / f"{i:05d}.png")
    return [folder / f"{i:05d}.png" for i in range(count)]


def test_files_folders_and_globs(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/1.png", "a/deep/2.JPG", "a/notes.txt", "a/.hidden.png", "b.webp"):
        (tmp_path / name).write_bytes(b"x")
    files, missing = find_images([str(tmp_path / "a"), str(tmp_path / "*.webp"),
                                  str(tmp_path / "a" / "notes.txt"), str(tmp_path / "nope.png"),
                                  str(tmp_path / "a" / "1.png")])  # fmt: skip
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "a/1.png", "a/deep/2.JPG", "b.webp", "a/notes.txt",
    ]  # fmt: skip
    assert [(m.file, m.error) for m in missing] == [(str(tmp_path / "nope.png"), "no such file")]


def test_predictions_match_the_model_and_bad_files_are_named(tiny_run, tmp_path, capsys):
    run_dir, data = tiny_run
    files = write_pngs(data.test, tmp_path / "imgs", 12)
    (tmp_path / "imgs" / "broken.png").write_bytes(files[0].read_bytes()[:60])  # truncated
    (tmp_path / "imgs" / "text.png").write_text("not an image")

    code = main(["predict", str(run_dir), str(tmp_path / "imgs"), "--json", "--top-k", "2"])
    captured = capsys.readouterr()
    assert code == 1, "some files failed"
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]
    assert all(len(r["top"]) == 2 and r["top"][0]["probability"] >= r["top"][1]["probability"]
               for r in rows)  # fmt: skip
    labels = [data.classes[int(y)] for y in data.test.labels[:12]]
    assert sum(r["top"][0]["class"] == y for r, y in zip(rows, labels, strict=True)) >= 11
    err = captured.err
    assert f"{tmp_path / 'imgs' / 'broken.png'}" in err and "text.png" in err
    assert "2 of 14 inputs could not be predicted" in err

    # The same through the library, in batches of 5: the same answers.
    predictor = open_predictor(run_dir)
    again = [p for p in predict_files(predictor, files, top_k=2, batch_size=5)]
    assert [p.top[0][0] for p in again] == [r["top"][0]["class"] for r in rows]
    assert {r["top"][0]["class"] for r in rows} <= set(data.classes)


def test_table_and_csv_outputs(tiny_run, tmp_path, capsys):
    run_dir, data = tiny_run
    files = write_pngs(data.test, tmp_path / "imgs", 3)
    assert main(["predict", str(run_dir), *map(str, files), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[0].startswith(str(files[0])) and lines[0].count("%") == 3
    out_csv = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), str(tmp_path / "imgs"), "--csv", str(out_csv)]) == 0
    with open(out_csv, newline="") as f:
        table = list(csv.DictReader(f))
    assert [r["file"] for r in table] == [str(f) for f in files]
    assert {"class_1", "probability_1", "class_4", "conversion"} <= table[0].keys()
    assert abs(sum(float(table[0][f"probability_{i}"]) for i in range(1, 5)) - 1) < 1e-4


def test_decompression_bombs_are_refused_before_decoding_and_the_limit_can_be_raised(
    tiny_run, tmp_path, capsys
):
    run_dir, _ = tiny_run
    big = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(big)  # 9 megapixels, tiny on disk
    code = main(["predict", str(run_dir), str(big), "--max-pixels", "1000000"])
    err = capsys.readouterr().err
    assert code == 1 and "big.png" in err and "9,000,000" in err
    assert main(["predict", str(run_dir), str(big), "--max-pixels", "10000000"]) == 0


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_predict_agrees_with_evaluate_on_the_real_test_set_as_png_files(
    tmp_path, capsys, dataset, request
):
    from convkit.data import load_dataset

    root = request.getfixturevalue("real_data" if dataset == "mnist" else "real_cifar")
    recipe = ["mnist-cnn"] if dataset == "mnist" else ["cifar10-cnn", "--patience", "0"]
    run_dir = tmp_path / "run"
    args = [*recipe, "--limit", "5000", "--epochs", "1", "--data-dir", str(root), "--quiet"]
    assert main(["train", *args, "--out", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--data-dir", str(root), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)

    test = load_dataset(dataset, root).test
    write_pngs(test, tmp_path / "png", len(test))
    out_csv = tmp_path / "p.csv"
    assert main(["predict", str(run_dir), str(tmp_path / "png"), "--csv", str(out_csv)]) == 0
    with open(out_csv, newline="") as f:
        said = [r["class_1"] for r in csv.DictReader(f)]
    classes = load_dataset(dataset, root).classes
    truth = [classes[int(y)] for y in test.labels]
    accuracy = float(np.mean([s == t for s, t in zip(said, truth, strict=True)]))
    # The run's own answers on the stored arrays, as evaluate computes them (batches of 1,000).
    predictor = open_predictor(run_dir)
    stored = np.concatenate([
        predictor.probabilities(test.images[i : i + 1000].numpy()).argmax(1)
        for i in range(0, len(test), 1000)
    ])  # fmt: skip
    agree = float(np.mean([s == classes[k] for s, k in zip(said, stored, strict=True)]))
    print(
        f"{dataset}: predict on {len(said):,} PNG files {accuracy:.4%}, evaluate "
        f"{evaluated['test_accuracy']:.4%}; same answer as on the stored arrays: {agree:.4%}"
    )
    assert len(said) == len(test)
    assert agree >= 0.999
    assert abs(accuracy - evaluated["test_accuracy"]) <= 0.001
