"""What flattening loses, measured: the transforms against independent computations, the shift
grid and consistency against hand-counted answers, the report against `convkit evaluate`, the
pixel-permutation experiment through every use of a run, and bad input refused before anything
is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_dataset

from convkit.cli import main
from convkit.data.arrays import Split
from convkit.data.geometry import affine, rescale, rotate, translate
from convkit.errors import ConfigError
from convkit.inspect import robustness as R
from convkit.models import create_model
from convkit.models.layers import BlurPool, MaxPool
from convkit.models.permute import pixel_permutation
from convkit.runs import Run
from convkit.train import TrainConfig, evaluate_run, train

# ---- the transforms -----------------------------------------------------------------------------


def test_a_shift_is_array_slicing_with_zeros_coming_in():
    x = torch.randint(
        1, 256, (5, 2, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    for dx in range(-8, 9):
        for dy in range(-10, 11):
            expected = np.zeros_like(x.numpy())
            src = x.numpy()
            h, w = src.shape[-2:]
            for i in range(h):  # one pixel at a time: no slicing logic shared with the code
                for j in range(w):
                    if 0 <= i - dy < h and 0 <= j - dx < w:
                        expected[..., i, j] = src[..., i - dy, j - dx]
            assert np.array_equal(translate(x, dx, dy).numpy(), expected), (dx, dy)


def test_a_quarter_turn_is_rot90_and_no_turn_is_the_image():
    x = torch.randint(
        0, 256, (4, 3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    for k, angle in ((1, 90), (2, 180), (3, 270), (-1, -90)):
        assert torch.equal(rotate(x, angle), torch.rot90(x, k, dims=(-2, -1))), angle
    assert torch.equal(affine(x, 0, 1), x)
    assert torch.equal(rotate(x, 360), x)


def test_a_turn_goes_counterclockwise_and_a_scale_shrinks_about_the_centre():
    x = torch.zeros(1, 1, 21, 21, dtype=torch.uint8)
    x[..., 10, 15:19] = 255  # a bar to the right of the centre
    turned = rotate(x, 90)[0, 0]
    rows, cols = torch.nonzero(turned > 128, as_tuple=True)
    assert rows.max() < 10 and (cols == 10).all()  # now above the centre: counterclockwise
    small = rescale(x, 0.5)[0, 0]
    cols = torch.nonzero(small > 60, as_tuple=True)[1]
    assert cols.min() >= 12 and cols.max() <= 15  # half as far from the centre
    big = torch.full((1, 1, 20, 20), 200, dtype=torch.uint8)
    framed = rescale(big, 0.5)[0, 0]
    assert framed[0].max() == 0 and framed[10, 10] == 200  # a frame of zeros comes in


def test_transforms_refuse_what_they_cannot_take():
    with pytest.raises(ValueError, match="uint8"):
        translate(torch.zeros(1, 1, 4, 4), 1, 1)
    with pytest.raises(ConfigError, match="scale > 0"):
        rescale(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0)


# ---- anti-aliased pooling and the new models ------------------------------------------------------


def test_blurpool_has_maxpools_output_size_and_a_normalised_fixed_blur():
    for h, w in ((28, 28), (24, 24), (7, 9), (8, 5)):
        x = torch.rand(2, 3, h, w)
        assert BlurPool(3)(x).shape == MaxPool(2)(x).shape
    pool = BlurPool(4)
    assert torch.allclose(pool(torch.full((1, 4, 10, 10), 0.7)), torch.tensor(0.7))
    k = pool.kernel[0, 0]
    assert torch.allclose(k, torch.tensor([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0)
    assert not any(p.requires_grad for p in pool.parameters())  # a buffer, never trained


def test_blurpool_answers_a_one_pixel_shift_more_like_a_shifted_copy_than_maxpool():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 32, 32, generator=g)
    shifted = torch.roll(x, 1, dims=-1)  # one pixel: max pooling at stride 2 aliases here

    def change(pool):
        a, b = pool(x), pool(shifted)
        return float((a - b).abs().mean() / a.abs().mean())

    assert change(BlurPool(1)) < 0.6 * change(MaxPool(2))


def test_the_spatial_models_keep_their_sizes_and_the_aa_variants_their_parameters():
    counts = {n: sum(p.numel() for p in create_model(n).parameters()) for n in
              ("mnist-cnn", "mnist-cnn-aa", "mnist-gap", "mnist-gap-aa")}  # fmt: skip
    assert counts["mnist-cnn-aa"] == counts["mnist-cnn"] == 80_202
    assert counts["mnist-gap-aa"] == counts["mnist-gap"] == 35_834
    gap = create_model("mnist-gap")
    assert not any(isinstance(m, torch.nn.Linear) for m in gap.modules())  # no dense head
    assert create_model("mnist-gap").eval()(torch.zeros(3, 1, 40, 36)).shape == (3, 10)


# ---- the shift grid and consistency against hand-counted answers ----------------------------------


def dots(n: int = 300, size: int = 12, seed: int = 0) -> Split:
    """One bright pixel per image; its label is its row (size classes)."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, size, (n,), generator=g)
    cols = torch.randint(0, size, (n,), generator=g)
    images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    images[torch.arange(n), 0, rows, cols] = 255
    return Split(images, rows)


def brightest_row(images: torch.Tensor) -> torch.Tensor:
    """A 'model' that answers the row of the brightest pixel (row 0 for an empty image)."""
    return images.amax(dim=(1, 3)).argmax(dim=1)


def test_the_grid_has_dy_down_its_rows_and_dx_across_its_columns():
    test = dots()
    out = R.shift_test(brightest_row, test, 2, seed=0)
    grid = np.array(out["grid"])
    assert out["offsets"] == [-2, -1, 0, 1, 2] and grid.shape == (5, 5)
    # Moving right leaves the row, so the answer: right unless the dot left the frame.
    for j, dx in enumerate(out["offsets"]):
        cols = torch.nonzero(test.images[:, 0].amax(1))[:, 1]
        inside = ((cols + dx >= 0) & (cols + dx < 12)).double().mean()
        empty_and_row0 = ((cols + dx < 0) | (cols + dx >= 12)) & (test.labels == 0)
        assert grid[2, j] == pytest.approx(float(inside + empty_and_row0.double().mean()))
    # Moving down changes the row: only a dot that left the frame onto an empty image in row 0
    # can still be right.
    for i, dy in enumerate(out["offsets"]):
        if dy:
            assert grid[i].max() < 0.1
    assert out["by_distance"][0] == {"distance": 0, "accuracy": 1.0, "cells": 1}
    assert out["by_distance"][2]["cells"] == 16
    assert out["mean"] == pytest.approx(grid.mean())


def test_consistency_is_one_for_an_invariant_model_and_chance_of_equal_rows_otherwise():
    test = dots(n=4000, size=20)
    assert (
        R.shift_test(lambda x: torch.zeros(len(x), dtype=torch.int64), test, 3, 0)["consistency"]
        == 1.0
    )
    # brightest_row answers row + dy (while in frame): two random cells agree when their dy
    # agree, 1 in 7 (a little more for dots pushed out of the frame onto row 0).
    c = R.shift_test(brightest_row, test, 3, 0)["consistency"]
    assert 1 / 7 - 0.02 < c < 1 / 7 + 0.05


# ---- mCE against the papers' definition -----------------------------------------------------------


def test_mce_and_relative_mce_follow_hendrycks_and_dietterich():
    def report(name, clean, errors):
        return {"run": name, "model": name, "corruptions": {"clean_error": clean, "items": [
            {"name": c, "errors": e} for c, e in errors.items()]}}  # fmt: skip

    base = report("mlp", 0.02, {"a": [0.1, 0.2, 0.3, 0.4, 0.5], "b": [0.5] * 5})
    mine = report("cnn", 0.01, {"a": [0.05, 0.1, 0.15, 0.2, 0.25], "b": [0.5] * 5})
    m = R.mean_corruption_error(mine, base)
    assert m["per_corruption"]["a"]["ce"] == pytest.approx(0.75 / 1.5)
    assert m["per_corruption"]["b"]["ce"] == pytest.approx(1.0)
    assert m["mce"] == pytest.approx((0.5 + 1.0) / 2)
    rel_a = (0.75 - 5 * 0.01) / (1.5 - 5 * 0.02)
    rel_b = (2.5 - 5 * 0.01) / (2.5 - 5 * 0.02)
    assert m["relative_mce"] == pytest.approx((rel_a + rel_b) / 2)
    assert R.mean_corruption_error(base, base)["mce"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="lack the corruption 'c'"):
        R.mean_corruption_error(report("x", 0, {"c": [0.1] * 5}), base)


# ---- the command on real runs ---------------------------------------------------------------------

QUICK = ["--limit", "2000", "--epochs", "1", "--precision", "fp32", "--quiet"]
LONGER = ["--limit", "6000", "--epochs", "2", "--precision", "fp32", "--quiet"]


def trained(tmp_path_factory, real_data, recipe: str) -> Path:
    out = tmp_path_factory.mktemp("runs") / recipe
    args = ["train", recipe, *LONGER, "--out", str(out), "--data-dir", str(real_data)]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory, real_data):
    return trained(tmp_path_factory, real_data, "mnist-mlp")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, real_data):
    return trained(tmp_path_factory, real_data, "mnist-cnn")


def robustness_json(capsys, *args) -> dict:
    capsys.readouterr()
    assert main(["robustness", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def shift_report(capsys, run, real_data, tmp_path, *extra) -> tuple[dict, float]:
    """The run's 3x3 shift report with `extra` options, and `convkit evaluate`'s accuracy."""
    report = robustness_json(capsys, run, "--only", "shift", "--max-shift", "1", *extra,
                             "--data-dir", real_data, "--out", tmp_path / "pics")  # fmt: skip
    measured = evaluate_run(run, data_dir=real_data, log=lambda m: None)["test_accuracy"]
    return report, measured


def test_the_centre_of_the_grid_is_the_runs_test_accuracy_exactly(
    mlp_run, real_data, capsys, tmp_path
):
    report, measured = shift_report(capsys, mlp_run, real_data, tmp_path, "--sample", "all")
    assert report["shift"]["grid"][1][1] == measured == report["clean_accuracy"]
    # The clean images are scored once: the centre cell reuses them.
    assert report["test_images"] == 10_000 and report["images_scored"] == 9 * 10_000
    assert report["sample"]["images"] == 10_000 and report["sample"]["clean_accuracy"] == measured
    assert 0 <= report["shift"]["consistency"] <= 1 and "consistency" in report["definitions"]
    assert Run(mlp_run).robustness()["shift"] == report["shift"]  # saved for compare and the page
    assert {Path(p).name for p in report["pictures"]} == {
        "shift_grid.png",
        "curves.png",
        "examples.png",
    }


def test_by_default_the_copies_are_made_from_a_seeded_sample_and_clean_stays_whole(
    mlp_run, real_data, capsys, tmp_path
):
    from convkit.inspect.robustness import SAMPLE, Scorer, sample_indices

    report, measured = shift_report(capsys, mlp_run, real_data, tmp_path, "--seed", "3")
    assert report["clean_accuracy"] == measured and report["test_images"] == 10_000
    assert report["sample"] == {**report["sample"], "images": SAMPLE, "of": 10_000, "seed": 3}
    assert report["images_scored"] == 10_000 + 8 * SAMPLE
    # The sample, recomputed independently: 5,000 distinct indices drawn from the seed, the same
    # for every run (so mCE compares the same images), scored by the run's own scorer.
    index = sample_indices(10_000, SAMPLE, seed=3)
    assert len(set(index.tolist())) == SAMPLE and torch.equal(
        index, sample_indices(10_000, SAMPLE, seed=3)
    )
    assert not torch.equal(index, sample_indices(10_000, SAMPLE, seed=4))
    run = Run(mlp_run)
    kept = run.kept_model()
    from convkit.runs import load_data

    test = load_data(kept.cfg, data_dir=real_data)[0].test
    right = Scorer(kept).predict(test.images[index]) == test.labels[index]
    assert report["sample"]["clean_accuracy"] == pytest.approx(float(right.double().mean()))
    assert report["shift"]["grid"][1][1] == report["sample"]["clean_accuracy"]
    lines = dict(R.summary_rows(report))
    assert f"on the {SAMPLE:,} the copies are made from" in " ".join(lines)


def test_the_mlp_loses_more_to_shifts_than_the_cnn_and_compare_shows_both(
    mlp_run, cnn_run, real_data, capsys, tmp_path
):
    args = ("--only", "shift,rotate", "--angles=-30,0,30", "--limit", "2000")
    args += ("--data-dir", real_data)
    mlp = robustness_json(capsys, mlp_run, *args)
    cnn = robustness_json(capsys, cnn_run, *args)
    assert [r["angle"] for r in mlp["rotate"]] == [-30.0, 0.0, 30.0]
    near = lambda r: r["shift"]["by_distance"][2]["accuracy"]  # noqa: E731
    print(
        [d["accuracy"] for d in mlp["shift"]["by_distance"]],
        [d["accuracy"] for d in cnn["shift"]["by_distance"]],
    )
    assert near(cnn) > near(mlp) + 0.1  # 2 pixels away, even after one epoch on 2,000 images
    capsys.readouterr()
    assert main(["compare", str(mlp_run), str(cnn_run), "--json", "--out", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == ["mnist-mlp", "mnist-cnn"]
    assert rows[0]["shift_mean"] == mlp["shift"]["mean"] and rows[1]["params"] == 80_202
    assert (tmp_path / "compare.png").stat().st_size > 1000
    assert main(["compare", str(mlp_run), str(cnn_run)]) == 0
    table = capsys.readouterr().out
    assert "mnist-mlp" in table and f"{100 * mlp['shift']['mean']:.2f}%" in table


def test_bad_input_gets_one_clear_error_and_nothing_is_written(
    mlp_run, real_data, capsys, tmp_path
):
    before = sorted(p.name for p in mlp_run.iterdir())
    saved = (
        (mlp_run / "robustness.json").read_bytes()
        if (mlp_run / "robustness.json").exists()
        else None
    )

    def refused(*args) -> str:
        capsys.readouterr()
        assert (
            main(["robustness", str(mlp_run), *map(str, args), "--out", str(tmp_path / "no")]) == 2
        )
        return capsys.readouterr().err

    assert "max_shift < 28" in refused("--max-shift", "28", "--data-dir", real_data)
    assert "unknown test 'blur'" in refused("--only", "shift,blur")
    for bad in ("0", "most"):  # refused by the parser: usage and the reason, exit status 2
        with pytest.raises(SystemExit) as stop:
            main(["robustness", str(mlp_run), "--sample", bad])
        assert stop.value.code == 2
        assert f"or all, received {bad!r}" in capsys.readouterr().err
    err = refused("--corruptions", "gausian_noise")
    assert "gausian_noise" in err and "gaussian_noise" in err  # the close match is suggested
    # A run whose test set cannot be found (nothing downloaded here).
    empty = tmp_path / "empty"
    empty.mkdir()
    err = refused("--data-dir", empty, "--no-download")
    assert "t10k-images-idx3-ubyte.gz" in err
    # A baseline of another dataset.
    other = tmp_path / "tiny"
    cfg = TrainConfig(model="mnist-mlp", dataset="tiny", epochs=1, batch_size=32, precision="fp32")
    train(cfg, data=tiny_dataset(), out=other)
    assert "same dataset" in refused("--baseline", other, "--data-dir", real_data)
    assert sorted(p.name for p in mlp_run.iterdir()) == before
    now = (
        (mlp_run / "robustness.json").read_bytes()
        if (mlp_run / "robustness.json").exists()
        else None
    )
    assert now == saved and not (tmp_path / "no").exists()


def test_compare_refuses_a_folder_that_is_not_a_finished_run(tmp_path, capsys):
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


# ---- the permutation experiment -------------------------------------------------------------------


def test_a_permuted_run_shuffles_pixels_in_training_evaluation_prediction_and_export(
    tmp_path, real_data, capsys
):
    out = tmp_path / "perm"
    assert main(["train", "mnist-mlp", *QUICK, "--permute-pixels", "7", "--out", str(out),
                 "--data-dir", str(real_data), "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["config"]["permute_pixels"] == 7
    # An MLP learns shuffled digits about as well as digits (same settings, same seed).
    plain_out = tmp_path / "plain"
    assert main(["train", "mnist-mlp", *QUICK, "--out", str(plain_out),
                 "--data-dir", str(real_data), "--json"]) == 0  # fmt: skip
    plain_result = json.loads(capsys.readouterr().out)
    assert result["test_accuracy"] > 0.6
    assert abs(result["test_accuracy"] - plain_result["test_accuracy"]) < 0.06
    measured = evaluate_run(out, data_dir=real_data, log=lambda m: None)["test_accuracy"]
    assert measured == result["test_accuracy"]
    # The kept model shuffles its input itself: the same as the plain network on shuffled pixels.
    kept = Run(out).kept_model()
    plain = create_model("mnist-mlp")
    plain.load_state_dict(kept.model.state_dict())
    x = torch.rand(5, 1, 28, 28)
    perm = pixel_permutation(7, (1, 28, 28))
    shuffled = x.reshape(5, -1)[:, perm].reshape(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(kept.model.eval()(x), plain.eval()(shuffled))
        assert not torch.allclose(kept.model(x), plain(x))
    # A different seed is a different shuffle, the same seed the same one.
    assert torch.equal(perm, pixel_permutation(7, (1, 28, 28)))
    assert not torch.equal(perm, pixel_permutation(8, (1, 28, 28)))
    # predict and export go through the same kept model.
    from PIL import Image

    from convkit.data import load_dataset

    digit = load_dataset("mnist", real_data).test.images[0, 0].numpy()
    Image.fromarray(digit).save(tmp_path / "d.png")
    assert main(["predict", str(out), str(tmp_path / "d.png"), "--json", "--top-k", "1"]) == 0
    top = json.loads(capsys.readouterr().out)["top"][0]
    with torch.no_grad():
        proba = torch.softmax(kept.model(kept.preprocess(torch.from_numpy(digit)[None, None])), 1)
    assert top["class"] == kept.classes[int(proba.argmax())]
    assert top["probability"] == pytest.approx(float(proba.max()), abs=1e-5)
    pytest.importorskip("onnxruntime")
    assert (
        main(["export", str(out), "--data-dir", str(real_data), "--json"]) == 0
    )  # checked against torch


def test_permute_pixels_must_be_a_seed():
    with pytest.raises(ConfigError, match="permute_pixels >= 0"):
        TrainConfig(permute_pixels=-1)


# ---- other writers' digits and the inspect report -------------------------------------------------


def test_an_image_folder_is_scored_as_predict_converts_it(mlp_run, real_data, capsys, tmp_path):
    from PIL import Image

    from convkit.data import load_dataset

    test = load_dataset("mnist", real_data).test
    folder = tmp_path / "writers"
    for i in range(30):  # dark digits on light paper, larger than 28x28, as people write them
        label = int(test.labels[i])
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        digit = 255 - test.images[i, 0].numpy()
        Image.fromarray(digit).resize((56, 56)).save(folder / str(label) / f"{i}.png")
    (folder / "3" / "notes.txt").write_text("not an image")
    (folder / "3").mkdir(exist_ok=True)
    report = robustness_json(capsys, mlp_run, "--only", "shift", "--max-shift", "0",
                             "--images", folder, "--data-dir", real_data)  # fmt: skip
    images = report["images"]
    assert images["count"] == 30 and len(images["unreadable"]) == 1
    assert "notes.txt" in images["unreadable"][0]
    # The same answers as `convkit predict` gives file by file.
    capsys.readouterr()
    main(["predict", str(mlp_run), str(folder), "--json", "--top-k", "1"])
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    right = sum(Path(a["file"]).parent.name == a["top"][0]["class"] for a in answers)
    assert images["accuracy"] == pytest.approx(right / 30)
    capsys.readouterr()
    assert main(["robustness", str(mlp_run), "--images", str(tmp_path / "nowhere")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_inspect_shows_saved_results_or_computes_the_shifts_when_asked(
    cnn_run, real_data, tmp_path
):
    from convkit.inspect.report import write_report
    from convkit.inspect.run import load_run

    lr = load_run(cnn_run, data_dir=real_data)
    (cnn_run / "robustness.json").unlink(missing_ok=True)
    page = write_report(lr, tmp_path / "all", limit=200, log=lambda m: None)
    section = json.loads((page.parent / "report.json").read_text())["sections"]["robustness"]
    assert "convkit robustness" in section["note"]  # not computed unasked
    page = write_report(lr, tmp_path / "asked", ("robustness",), limit=500, log=lambda m: None)
    section = json.loads((page.parent / "report.json").read_text())["sections"]["robustness"]
    assert section["data"]["test_images"] == 500 and "shift" in section["data"]
    assert (page.parent / "robustness_shift.png").exists()
    assert main(["robustness", str(cnn_run), "--only", "shift", "--max-shift", "1",
                 "--limit", "300", "--data-dir", str(real_data)]) == 0  # fmt: skip
    page = write_report(lr, tmp_path / "saved", ("curves", "robustness"), log=lambda m: None)
    section = json.loads((page.parent / "report.json").read_text())["sections"]["robustness"]
    assert section["data"]["test_images"] == 300 and section["data"]["shift"]["max_shift"] == 1
    assert "robustness_curves.png" in section["images"]


def test_the_default_shift_is_four_pixels_for_mnist_and_cifar():
    assert R.default_max_shift((1, 28, 28)) == R.default_max_shift((3, 32, 32)) == 4
    assert R.default_max_shift((3, 64, 64)) == 9


def test_mce_against_a_baseline_run_reuses_its_saved_report_or_computes_it(
    mlp_run, cnn_run, real_data, capsys
):
    args = ("--only", "corrupt", "--corruptions", "gaussian_noise,contrast", "--limit", "300")
    args += ("--data-dir", real_data)
    (mlp_run / "robustness.json").unlink(missing_ok=True)
    report = robustness_json(capsys, cnn_run, *args, "--baseline", mlp_run)
    assert not (mlp_run / "robustness.json").exists()  # the baseline was scored, not saved
    base = robustness_json(capsys, mlp_run, *args)
    again = robustness_json(capsys, cnn_run, *args, "--baseline", mlp_run)
    assert again["mce"] == report["mce"]  # the same figures from the baseline's saved report
    assert again["mce"] == R.mean_corruption_error(again, base)
    mine = {i["name"]: i["errors"] for i in report["corruptions"]["items"]}
    theirs = {i["name"]: i["errors"] for i in base["corruptions"]["items"]}
    ce = [sum(mine[n]) / sum(theirs[n]) for n in ("gaussian_noise", "contrast")]
    assert report["mce"]["mce"] == pytest.approx(sum(ce) / 2)
    capsys.readouterr()
    assert (
        main(["robustness", str(cnn_run), "--baseline", str(mlp_run), "--corruptions", "none"]) == 2
    )
    assert "baseline compares corruption errors" in capsys.readouterr().err


def test_a_saved_report_belongs_to_the_weights_it_scored(tmp_path, capsys):
    out = tmp_path / "tiny"
    cfg = TrainConfig(model="mnist-mlp", dataset="tiny", epochs=1, batch_size=32, precision="fp32")
    train(cfg, data=tiny_dataset(), out=out)
    run = Run(out)
    test = tiny_dataset().test
    report = R.robustness(run.kept_model(), test, tests=("shift",), max_shift=1)
    run.write_robustness(report, run.weights_signature())
    assert run.robustness()["shift"] == report["shift"]
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(out, copy)  # a copy keeps it (new times, same weights)
    assert Run(copy).robustness() is not None
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # other weights: the report no longer describes them
    weights.write_bytes(bytes(data))
    assert run.robustness() is None


def test_a_permutation_drawn_differently_later_is_refused(tmp_path, monkeypatch):
    from convkit.models import permute

    out = tmp_path / "perm"
    cfg = TrainConfig(model="mnist-mlp", dataset="tiny", epochs=1, batch_size=32,
                      precision="fp32", permute_pixels=5)  # fmt: skip
    train(cfg, data=tiny_dataset(), out=out)
    Run(out).kept_model()  # the same draw: fine
    original = permute.pixel_permutation
    monkeypatch.setattr(permute, "pixel_permutation", lambda s, shape: original(s + 1, shape))
    with pytest.raises(ConfigError, match="another pixel permutation"):
        Run(out).kept_model()
