"""What it identifies: the analyses checked against brute force and known answers, and the
report as a folder a browser can open."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convkit.cli import main
from convkit.errors import ConfigError
from convkit.inspect import analyses as A
from convkit.inspect.report import SECTIONS, write_report
from convkit.inspect.run import load_image, load_run
from convkit.models.layers import Conv2D, Dense, Flatten, MaxPool, keras_sequential
from convkit.train import evaluate_run

# ---- confusion matrix ---------------------------------------------------------------------------


def test_confusion_matrix_sums_to_the_test_set_and_its_diagonal_is_the_accuracy(
    tmp_path, real_data
):
    run = tmp_path / "mlp"
    quick = ["--limit", "2000", "--epochs", "1", "--precision", "fp32", "--quiet"]
    assert (
        main(["train", "mnist-mlp", *quick, "--out", str(run), "--data-dir", str(real_data)]) == 0
    )
    lr = load_run(run, data_dir=real_data)
    split = lr.test_split()
    proba = A.predict_proba(lr.model, lr.preprocess(split.images))
    conf = A.confusion(split.labels.numpy(), proba.argmax(1), lr.classes)
    assert conf.matrix.sum() == len(split) == 10_000
    measured = evaluate_run(run, data_dir=real_data, log=lambda m: None)["test_accuracy"]
    assert np.trace(conf.matrix) / conf.matrix.sum() == pytest.approx(measured, abs=1e-12)
    assert conf.accuracy == pytest.approx(measured, abs=1e-12)
    # Rows are true classes: each row sums to that class's count in the test set.
    assert conf.matrix.sum(1).tolist() == np.bincount(split.labels.numpy(), minlength=10).tolist()
    np.testing.assert_allclose(conf.recall, np.diag(conf.matrix) / conf.matrix.sum(1))
    top = conf.most_confused[0]
    i, j = lr.classes.index(top["true"]), lr.classes.index(top["predicted"])
    off = conf.matrix - np.diag(np.diag(conf.matrix))
    assert top["count"] == conf.matrix[i, j] == off.max()


def test_worst_mistakes_are_wrong_and_sorted_by_confidence():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 0, 1, 1, 1])
    wrong = A.worst_mistakes(proba, labels)
    assert [w["index"] for w in wrong] == [1, 2, 4]
    assert [w["probability"] for w in wrong] == [0.8, 0.6, 0.55]


# ---- top-activating patches against brute force -------------------------------------------------


def test_top_patches_are_the_receptive_field_crops_of_the_argmax_positions():
    torch.manual_seed(0)
    # Linear layers (no ReLU, no max-pool) so every pixel of a receptive field has a gradient:
    # the field found by differentiation is then the whole field, clipped to the image.
    model = keras_sequential(
        [
            Conv2D(2, 3, 3, padding="same"),
            Conv2D(3, 4, 3, strides=2, padding="valid"),
            Conv2D(4, 5, 2, padding="same"),
        ]
    ).eval()
    images = torch.rand(23, 2, 13, 13)
    layer = "conv2d_3"
    found = A.top_patches(model, images, layer, per_filter=4, batch_size=7)

    with torch.no_grad():
        act = model(images)  # (23, 5, h, w)
    n, c, h, w = act.shape
    for f in range(c):
        per_image, pos = act[:, f].reshape(n, -1).max(1)
        order = per_image.argsort(descending=True)[:4]
        hits = found["filters"][f]
        assert [hit["image"] for hit in hits] == order.tolist()
        for hit, img in zip(hits, order.tolist(), strict=True):
            i, j = divmod(int(pos[img]), w)
            assert hit["position"] == (i, j)
            assert hit["activation"] == pytest.approx(float(act[img, f, i, j]))
            x = images[img : img + 1].clone().requires_grad_()
            model(x)[0, f, i, j].backward()
            rows, cols = np.nonzero(x.grad[0].abs().sum(0).numpy())
            box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
            assert hit["box"] == tuple(int(b) for b in box)
            crop = A.crop(images[img].numpy(), hit["box"])
            np.testing.assert_array_equal(crop, images[img, :, box[0] : box[1], box[2] : box[3]])


# ---- Grad-CAM on a synthetic dataset with a known answer ----------------------------------------


def quadrant_data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """16x16 noise; the class is a bar's orientation (0 vertical, 1 horizontal), always drawn
    somewhere in the top-left quadrant. Nothing anywhere else says anything about the class."""
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    y = torch.randint(0, 2, (n,), generator=g)
    r = torch.randint(0, 4, (n,), generator=g)
    c = torch.randint(0, 4, (n,), generator=g)
    for k in range(n):
        i, j = int(r[k]), int(c[k])
        if y[k] == 0:
            x[k, 0, i : i + 5, j + 2] = 1.0
        else:
            x[k, 0, i + 2, j : j + 5] = 1.0
    return x, y


def test_grad_cam_peaks_in_the_quadrant_that_holds_the_class_signal():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = keras_sequential(
        [
            Conv2D(1, 8, 3, padding="same", activation="relu"),
            MaxPool(2),
            Conv2D(8, 8, 3, padding="same", activation="relu"),
            Flatten(),
            Dense(8 * 8 * 8, 2),
        ]
    )
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(150):
        x, y = quadrant_data(64, g)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = quadrant_data(40, g)
    model.eval()
    assert (model(x).argmax(1) == y).float().mean() > 0.95  # it learned the task
    in_quadrant = 0
    for k in range(len(x)):
        cam = A.grad_cam(model, x[k : k + 1])
        assert cam["layer"] == "conv2d_2" and cam["map"].shape == (16, 16)
        i, j = np.unravel_index(cam["map"].argmax(), cam["map"].shape)
        in_quadrant += i < 8 and j < 8
        sal = A.saliency(model, x[k : k + 1])["map"]
        assert sal[:8, :8].sum() > sal[8:, :].sum() + sal[:8, 8:].sum()
    assert in_quadrant >= 38, in_quadrant


# ---- user images --------------------------------------------------------------------------------


def test_any_image_is_converted_as_the_run_expects(tmp_path):
    rgba = np.full((60, 100, 4), 255, dtype=np.uint8)  # white, opaque
    rgba[20:40, 40:60, :3] = 0  # a black square in the middle
    Image.fromarray(rgba, "RGBA").save(tmp_path / "digit.png")
    got = load_image(tmp_path / "digit.png", (1, 28, 28))
    assert got["converted"].shape == (1, 28, 28) and got["converted"].dtype == np.uint8
    conversion = (
        "100x60 RGBA -> grey -> inverted (light background) -> resized to 28x17 -> padded to "
        "28x28 with its border's mean colour"  # fit auto: a grey image is padded, never cut
    )
    assert got["conversion"] == conversion
    assert got["converted"][0, 14, 14] == 255 and got["converted"][0, 0, 0] == 0
    # For MNIST, a drawing is framed as MNIST's digits were: the ink fit in 20x20, its centre
    # of mass at the centre of 28x28, wherever it was drawn.
    rgba[:] = 255
    rgba[5:15, 80:85, :3] = 0  # a small upright stroke near the top-right corner
    Image.fromarray(rgba, "RGBA").save(tmp_path / "stroke.png")
    got = load_image(tmp_path / "stroke.png", (1, 28, 28), digit_frame=True)
    a = got["converted"][0].astype(float)
    rows, cols = np.nonzero(a)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 <= 12
    assert (a.sum(1) * np.arange(28)).sum() / a.sum() == pytest.approx(13.5, abs=0.5)
    assert (a.sum(0) * np.arange(28)).sum() / a.sum() == pytest.approx(13.5, abs=0.5)
    assert got["conversion"].endswith("centred by mass in 28x28 (as MNIST)")
    grey = np.zeros((32, 32), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.jpg")
    got = load_image(tmp_path / "grey.jpg", (3, 32, 32))
    assert got["converted"].shape == (3, 32, 32) and got["conversion"] == "32x32 L -> RGB"


def test_bad_images_get_clear_errors(tmp_path):
    (tmp_path / "notes.png").write_text("this is not a picture")
    Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8)).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"notes\.png is not an image"):
        load_image(tmp_path / "notes.png", (1, 28, 28))
    with pytest.raises(ConfigError, match=r"cut\.png is a damaged image"):
        load_image(tmp_path / "cut.png", (1, 28, 28))
    with pytest.raises(ConfigError, match=r"missing\.png does not exist"):
        load_image(tmp_path / "missing.png", (1, 28, 28))


# ---- the report ---------------------------------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith("#"):
                self.refs.append(value)


def _check_report(folder: Path) -> dict:
    page = (folder / "index.html").read_text()
    parser = _Refs()
    parser.feed(page)
    assert parser.refs, "the page shows nothing"
    for ref in parser.refs:
        assert not re.match(r"^[a-z]+:", ref), f"{ref}: the report must be self-contained"
        assert (folder / ref).is_file(), f"index.html references {ref}, which does not exist"
    for png in folder.glob("*.png"):
        assert png.stat().st_size > 5000 and png.name in parser.refs  # drawn, and shown
    report = json.loads((folder / "report.json").read_text())
    _check_keys(report)
    return report


def _check_keys(report: dict) -> None:
    """report.json's shape is a published interface: pin its keys, in order."""
    assert list(report) == ["run", "sections"]
    for name, section in report["sections"].items():
        assert name in SECTIONS
        assert list(section) in (["images", "caption", "data"], ["note"]), (name, list(section))


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, real_cifar) -> Path:
    run = tmp_path_factory.mktemp("runs") / "cnn"
    quick = ["--limit", "1500", "--epochs", "1", "--quiet", "--data-dir", str(real_cifar)]
    assert main(["train", "cifar10-cnn", *quick, "--out", str(run)]) == 0
    return run


def test_report_for_a_cnn_references_only_files_that_exist(cnn_run, real_cifar, tmp_path, capsys):
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "photo.png")
    out = tmp_path / "report"
    args = ["inspect", str(cnn_run), "--out", str(out), "--limit", "300", "--data-dir",
            str(real_cifar), "--image", str(tmp_path / "photo.png"), "--index", "3"]  # fmt: skip
    assert main(args) == 0
    assert f"Report: {out / 'index.html'}" in capsys.readouterr().out
    report = _check_report(out)
    sections = report["sections"]
    assert set(sections) == {"curves", "confusion", "mistakes", "filters", "features",
                             "patches", "attention", "robustness"}  # fmt: skip
    # Every section drew, except robustness: never computed unasked in a full report.
    assert all("note" not in s for name, s in sections.items() if name != "robustness")
    assert "convkit robustness" in sections["robustness"]["note"]
    assert sum(map(sum, sections["confusion"]["data"]["matrix"])) == 300
    assert sections["filters"]["data"]["shape"] == [16, 3, 2, 2]
    assert len(sections["features"]["images"]) == 2  # the file and test image 3
    assert sections["attention"]["data"][0]["conversion"] == (
        "70x50 RGB -> centre 50x50 cropped -> resized to 32x32"  # a photo: cropped, not squashed
    )
    assert sections["patches"]["data"]["layer"] == "conv2d_3"
    assert len(sections["patches"]["data"]["filters"]) == 64


def test_one_section_alone_and_bad_requests(cnn_run, real_cifar, tmp_path, capsys):
    out = tmp_path / "filters"
    common = ["--data-dir", str(real_cifar), "--limit", "200"]
    assert main(["inspect", str(cnn_run), "--layer", "conv2d_1", "--out", str(out),
                 *common, "patches"]) == 0  # fmt: skip
    report = _check_report(out)
    assert list(report["sections"]) == ["patches"]
    assert report["sections"]["patches"]["data"]["receptive_field"] == [2, 2]
    capsys.readouterr()
    for bad, message in (
        (["nonsense"], "unknown section 'nonsense'"),
        (["--layer", "dense_1"], "--layer 'dense_1' is not a convolution or pooling layer"),
        (["--class", "unicorn"], "--class 'unicorn' is not one of airplane"),
        (["--image", str(tmp_path / "nope.png")], "nope.png does not exist"),
        (["--index", "99999"], "--index 99999 is outside the test set"),
    ):
        bad_out = tmp_path / "bad"
        assert main(["inspect", str(cnn_run), *bad, "--out", str(bad_out), *common]) == 2
        assert message in capsys.readouterr().err
        assert not bad_out.exists()  # nothing half-written


def test_report_for_the_mlp_says_what_does_not_apply(tmp_path, real_data):
    run = tmp_path / "mlp"
    quick = ["--limit", "1000", "--epochs", "1", "--quiet", "--data-dir", str(real_data)]
    assert main(["train", "mnist-mlp", *quick, "--out", str(run)]) == 0
    out = tmp_path / "report"
    assert main(["inspect", str(run), "--out", str(out), "--limit", "200", "--data-dir",
                 str(real_data)]) == 0  # fmt: skip
    sections = _check_report(out)["sections"]
    assert sections["filters"]["data"] == {"layer": "dense_1", "kind": "dense",
                                           "shape": [512, 1, 28, 28]}  # fmt: skip
    assert "no convolution" in sections["features"]["note"]
    assert "no convolution" in sections["patches"]["note"]
    assert sections["attention"]["data"][0]["gradcam_layer"] is None  # saliency only


def test_report_json_keys_for_a_drawn_section_and_a_note(cnn_run, real_cifar, tmp_path):
    lr = dataclasses.replace(load_run(cnn_run, data_dir=real_cifar), history=[])  # no curves
    out = tmp_path / "report"
    write_report(lr, out, ("curves", "filters"), log=lambda m: None)
    report = json.loads((out / "report.json").read_text())
    _check_keys(report)
    assert report["run"] == str(cnn_run)
    assert report["sections"]["curves"] == {
        "note": "this run has no per-epoch metrics (metrics.jsonl is empty)"
    }
    filters = report["sections"]["filters"]
    assert filters["images"] == ["filters.png"] and filters["caption"].startswith("The 16 kernels")
    assert filters["data"] == {"layer": "conv2d_1", "kind": "conv", "shape": [16, 3, 2, 2]}
    assert sorted(p.name for p in out.iterdir()) == ["filters.png", "index.html", "report.json"]


def test_only_the_sections_asked_for_are_drawn(cnn_run, real_cifar, tmp_path):
    out = tmp_path / "mistakes"
    args = ["inspect", str(cnn_run), "--out", str(out), "--limit", "200", "--data-dir",
            str(real_cifar), "mistakes"]  # fmt: skip
    assert main(args) == 0
    # Mistakes needs the test-set predictions that the confusion matrix also uses, but only
    # mistakes was asked for: no confusion.png, and nothing about it in the page or the json.
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "mistakes.png", "report.json"]
    report = _check_report(out)
    assert list(report["sections"]) == ["mistakes"]
    assert report["sections"]["mistakes"]["images"] == ["mistakes.png"]
    page = (out / "index.html").read_text()
    assert re.findall(r'<h2 id="([a-z]+)"', page) == ["mistakes"]
    assert re.findall(r'<a href="#([a-z]+)"', page) == ["mistakes"]
    assert "Confusion" not in page and "confusion" not in page


def test_curves_of_a_one_epoch_run_show_whole_epochs_and_no_accuracy_above_one(
    tmp_path, monkeypatch
):
    from convkit.inspect import plots

    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)  # keep the figure to look at
    history = [dict(epoch=1, loss=0.094, accuracy=0.975)]  # mnist-fast: one epoch
    plots.plot_training_curves(history, tmp_path / "curves.png", best_epoch=1)
    loss_ax, acc_ax = figures[0].axes
    for ax in (loss_ax, acc_ax):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks == [1.0]
    assert acc_ax.get_ylim()[1] <= 1.0
