"""The Python API as a user meets it: `import convkit as ck` and nothing else of convkit.

Every function of the front door, its results shown as text (what the command line prints, run
here as a real `python -m convkit` process) and as HTML, and its errors for bad input: unknown
names (with their close matches), wrong-shaped arrays, folders that hold no run. Training runs
on small subsets of the real MNIST (limit=) or on tiny arrays, so the file takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import convkit as ck

PNG = b"\x89PNG\r\n\x1a\n"


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`convkit ARGS` in a fresh process, with the test's environment (offline, no cache)."""
    out = subprocess.run(
        [sys.executable, "-m", "convkit", *args], capture_output=True, text=True, env=os.environ
    )
    if check and out.returncode != 0:
        raise AssertionError(f"convkit {' '.join(args)} failed: {out.stderr}")
    return out


def cli_error(*args: str) -> str:
    out = cli(*args, check=False)
    assert out.returncode == 2, out
    prefix = "convkit: error: "
    assert out.stderr.startswith(prefix), out.stderr
    return out.stderr[len(prefix) :].strip()


def raised(call, *args, **kwargs) -> str:
    """The message of the convkit error `call` raises (a ConfigError: a problem the user fixes)."""
    with pytest.raises(Exception) as info:
        call(*args, **kwargs)
    assert type(info.value).__name__ == "ConfigError", info.value
    return str(info.value)


@pytest.fixture(scope="module")
def mnist_run(real_data, tmp_path_factory) -> ck.Run:
    """mnist-fast trained for one epoch on 2,000 MNIST images: a real run folder in seconds."""
    out = tmp_path_factory.mktemp("runs") / "fast"
    with pytest.MonkeyPatch.context() as mp:  # as tests/conftest.py isolates each test
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.setenv("CONVKIT_OFFLINE", "1")
        mp.setenv("CONVKIT_TENSOR_CACHE", "0")
        mp.delenv("CONVKIT_DATA", raising=False)
        return ck.train("mnist-fast", limit=2000, epochs=1, data_dir=real_data, out=out, quiet=True)


@pytest.fixture(scope="module")
def digits(real_data) -> ck.Dataset:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVKIT_TENSOR_CACHE", "0")
        return ck.load_dataset("mnist", data_dir=real_data, download=False)


def tiny_arrays(n: int = 64, seed: int = 0):
    """((x_train, y_train), (x_test, y_test)): grey 28x28 images whose class is where they are
    bright (left or right half), as Keras's load_data returns arrays."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    for i, label in enumerate(y):
        x[i, :, 14 * label : 14 * label + 14] += 200
    cut = n * 3 // 4
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


# ---- the front door ------------------------------------------------------------------------------


def test_import_convkit_loads_nothing_heavy_and_old_paths_still_work():
    code = (
        "import sys\n"
        "import convkit as ck\n"
        "heavy = [m for m in ('torch', 'numpy', 'matplotlib', 'PIL', 'IPython', 'nbclient',"
        " 'ipykernel') if m in sys.modules]\n"
        "print('heavy:', ','.join(heavy))\n"
        # the names that are also subpackages stay both, whichever is imported first
        "import convkit.train.runner, convkit.models\n"
        "assert callable(ck.train) and callable(ck.models)\n"
        "assert ck.train.TrainConfig is convkit.train.config.TrainConfig\n"
        "from convkit.models import create_model, list_models\n"
        "from convkit.train import TrainConfig, get_recipe, train\n"
        "from convkit.runs import Run\n"
        "from convkit.inspect.run import load_run\n"
        "from convkit.inspect import summarize, print_summary\n"
        "from convkit.data import load_dataset\n"
        "print(sorted(n for n in ck.__all__ if not hasattr(ck, n)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["heavy: ", "[]"]


def test_listings_show_as_the_command_line_prints_them_and_as_html():
    models = ck.models("mnist-*")
    assert "mnist-mlp" in models.column("name")
    mlp = next(r for r in models if r["name"] == "mnist-mlp")
    assert mlp["params"] == 669_706 and mlp["input_shape"] == [1, 28, 28]
    assert repr(models) + "\n" == cli("models", "mnist-*").stdout
    assert "<table>" in models._repr_html_() and "669,706" in models._repr_html_()
    assert json.loads(cli("models", "mnist-*", "--json").stdout) == list(models)

    recipes = ck.recipes()
    assert {"mnist-mlp", "cifar10-cnn", "cifar10-quick"} <= set(recipes.column("name"))
    assert repr(recipes) + "\n" == cli("recipes").stdout
    assert ck.models("no-such-*") == [] and repr(ck.models("no-such-*")) == ""


def test_datasets_lists_where_the_files_are(real_data):
    table = ck.datasets(data_dir=real_data)
    mnist = next(r for r in table if r["name"] == "mnist")
    assert mnist["available"] and mnist["where"] == str(real_data / "mnist")
    assert repr(table) + "\n" == cli("data", "list", "--data-dir", str(real_data)).stdout


def test_summary_and_explain_are_the_command_lines_tables():
    s = ck.summary("mnist-mlp")
    assert s.total_params == 669_706 and s.trainable_params == 669_706
    assert [r.params for r in s.layers] == [0, 401_920, 0, 262_656, 0, 5_130]
    assert repr(s) + "\n" == cli("summary", "mnist-mlp").stdout
    assert "Total params" in s._repr_html_() and "669,706" in s._repr_html_()
    assert s.to_dict()["total_params"] == 669_706
    assert ck.summary("cifar10-cnn").total_params == 528_054
    assert ck.summary("mnist-mlp", input_shape=(1, 32, 32)).layers[1].params == 1024 * 512 + 512

    a = ck.explain("cifar10-cnn")
    assert repr(a) + "\n" == cli("explain", "cifar10-cnn").stdout
    assert a.layers[0].output_shape == (16, 32, 32) and a.total_params == 528_054
    conv = ck.explain("conv", input_shape=(3, 32, 32), filters=16, kernel=2, padding="same")
    assert conv.layers[0].output_shape == (16, 32, 32)
    assert conv.layers[0].padding == (0, 1, 0, 1)  # Keras's even-kernel 'same'
    strided = ck.explain("conv", input_shape=(1, 28, 28), filters=8, kernel=3, stride=2)
    assert strided.layers[0].output_shape == (8, 13, 13)  # floor((28 - 3) / 2) + 1
    assert ck.explain("pool", input_shape=(16, 28, 28), kernel=2, stride=2).layers[
        0
    ].output_shape == (
        16,
        14,
        14,
    )
    assert "Output size" in conv._repr_html_() and "floor(" in conv._repr_html_()


def test_unknown_names_list_the_close_matches_with_the_command_lines_messages(tmp_path):
    message = raised(ck.summary, "mnist-cnnn")
    assert message.startswith("unknown model 'mnist-cnnn' (did you mean mnist-cnn")
    assert "known models: alexnet" in message
    assert message == cli_error("summary", "mnist-cnnn")
    assert raised(ck.explain, "resnet-18").startswith(
        "unknown model 'resnet-18' (did you mean resnet18"
    )

    message = raised(ck.train, "mnist-mpl")
    assert message.startswith("unknown recipe 'mnist-mpl' (did you mean mnist-mlp, ")
    assert "?); recipes: alexnet-cifar, cifar10-cnn" in message
    assert message == cli_error("train", "mnist-mpl")

    message = raised(ck.train, "mnist-mlp", model="mnist-cnnn")
    assert message.startswith("unknown model 'mnist-cnnn' (did you mean mnist-cnn")
    assert message == cli_error("train", "mnist-mlp", "--model", "mnist-cnnn")

    message = raised(ck.train, "mnist-mlp", epoch=3)
    assert message.startswith("train(): unknown setting 'epoch' (did you mean epochs?); settings")
    config = tmp_path / "c.toml"
    config.write_text("epoch = 3\n")
    from_file = cli_error("train", "mnist-mlp", "--config", str(config))
    assert from_file == message.replace("train()", str(config), 1)

    assert "unknown dataset 'mnst' (did you mean mnist?)" in raised(ck.load_dataset, "mnst")
    assert "did you mean mnist?" in raised(ck.train, "mnist-mlp", data="mnst")
    assert raised(ck.train, "mnist-mlp", dataset="fashion_mnist").startswith(
        "unknown dataset 'fashion_mnist' (did you mean fashion-mnist?)"
    )


def test_settings_are_checked_as_the_command_line_checks_them():
    assert raised(ck.train, "mnist-mlp", lr=0.0) == cli_error("train", "mnist-mlp", "--lr", "0")
    message = raised(ck.train, "mnist-mlp", optimizer="adagrad")
    assert message.startswith("expected optimizer in adam, adamw, sgd, rmsprop, muon")
    assert "expected epochs to be int, received 'ten'" in raised(
        ck.train, "mnist-mlp", epochs="ten"
    )
    assert "keep=best needs a validation split" in raised(ck.train, "mnist-mlp", val_split=0.0)
    assert raised(ck.train) == "name a RECIPE (see `convkit recipes`) or give --config FILE"


def test_a_folder_that_holds_no_run_is_refused_by_name(tmp_path):
    message = raised(ck.load, tmp_path / "nothing")
    assert message.startswith(f"{tmp_path / 'nothing'} is not a run folder (no config.json)")
    assert message == cli_error("compare", str(tmp_path / "nothing"))


# ---- data ----------------------------------------------------------------------------------------


def test_load_dataset_gives_arrays_class_names_and_a_picture(digits):
    assert digits.x_train.shape == (60_000, 1, 28, 28) and digits.x_train.dtype == np.uint8
    assert digits.y_train.shape == (60_000,) and digits.y_train.dtype == np.int64
    assert digits.x_test.shape == (10_000, 1, 28, 28) and digits.y_test[:3].tolist() == [7, 2, 1]
    assert digits.classes == tuple("0123456789") and digits.image_shape == (1, 28, 28)
    assert "60,000 train + 10,000 test" in repr(digits)
    grid = digits.show(6, split="test")
    assert grid._repr_png_().startswith(PNG) and grid.size[0] > 200
    assert "data:image/png;base64" in digits._repr_html_()
    assert "expected split 'train' or 'test'" in raised(digits.show, 4, split="val")
    assert ck.show(digits.x_train[:3], ["a", "b", "c"]).png.startswith(PNG)
    # any array: a filter's float output is stretched to 0..255
    assert ck.show([np.linspace(-1, 1, 64).reshape(8, 8)]).png.startswith(PNG)
    assert "show: image 0 has shape (2, 3, 4, 5)" in raised(ck.show, [np.zeros((2, 3, 4, 5))])


# ---- training ------------------------------------------------------------------------------------


def test_train_returns_a_run_and_prints_as_the_command_line(tmp_path, capsys):
    arrays = tiny_arrays()
    run = ck.train("mnist-mlp", data=arrays, epochs=2, val_split=0.25, out=tmp_path / "arrays")
    printed = capsys.readouterr().out
    assert "Training mnist-mlp on arrays: 36 train / 12 val / 16 test images" in printed
    assert "Epoch 1/2 - " in printed and "Epoch 2/2 - " in printed
    assert "Test accuracy: " in printed and f"Run folder: {tmp_path / 'arrays'}" in printed
    assert "\r" not in printed  # not a terminal: one line per epoch
    assert isinstance(run, ck.Run) and run.path == tmp_path / "arrays"
    assert run.result["test_accuracy"] == run.evaluate()["test_accuracy"]
    assert run.result["epochs"] == 2 and run.config.val_split == 0.25
    assert run.classes == ("0", "1") and run.result["dataset"] == "arrays"
    history = run.history
    assert history.column("epoch") == [1, 2] and len(repr(history).splitlines()) == 2
    assert repr(history).startswith("Epoch 1/2 - ") and "<table>" in history._repr_html_()
    assert (tmp_path / "arrays" / "curves.png").is_file()
    assert run.curves().png.startswith(PNG)
    assert "test accuracy" in run._repr_html_() and "data:image/png;base64" in run._repr_html_()

    again = ck.load(tmp_path / "arrays")
    assert repr(again) == repr(run) and again.history == history
    assert "trained on arrays given in Python" in raised(again.evaluate)
    assert again.evaluate(data=arrays)["test_accuracy"] == run.result["test_accuracy"]
    assert "robustness needs a registered dataset" in raised(again.robustness)

    run.resume(epochs=3, quiet=True)
    assert run.result["epochs"] == 3 and len(run.history) == 3
    message = raised(run.resume, epochs=4, lr=0.1)
    assert "lr cannot change" in message
    assert "resume(): unknown setting 'epoch'" in raised(run.resume, epoch=4)


def test_training_data_may_be_arrays_in_any_common_layout(tmp_path):
    (x, y), (xt, yt) = tiny_arrays(32)
    nhwc = ((x[..., None], y), (xt[..., None], yt))  # (N, H, W, 1), as Keras keeps them
    run = ck.train("mnist-mlp", data=nhwc, epochs=1, val_split=0.25, out=tmp_path / "a", quiet=True)
    assert run.result["params"] == 665_602  # the MLP, with 2 classes: 669,706 - 5,130 + 1,026
    assert "x_train: expected uint8 pixels 0..255" in raised(
        ck.train, "mnist-mlp", data=((x / 255.0, y), (xt, yt))
    )
    assert "one-hot labels? pass y.argmax(1)" in raised(
        ck.train, "mnist-mlp", data=((x, np.eye(2)[y]), (xt, yt))
    )
    assert "expected images (N, H, W), (N, C, H, W) or (N, H, W, C)" in raised(
        ck.train, "mnist-mlp", data=((x[:, :, :, None, None], y), (xt, yt))
    )
    assert "expected a dataset name, an image folder" in raised(ck.train, "mnist-mlp", data=42)


def test_train_on_an_image_folder(tmp_path):
    for k, (name, colour) in enumerate((("cat", (200, 40, 40)), ("dog", (40, 40, 200)))):
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (40 + i, 36), colour).save(tmp_path / "pets" / name / f"{k}{i}.png")
    run = ck.train(
        "cifar10-quick", data=tmp_path / "pets", epochs=1, out=tmp_path / "run", quiet=True
    )
    assert run.classes == ("cat", "dog") and run.config.data == str(tmp_path / "pets")
    assert run.result["folder"]["classes"] == ["cat", "dog"]
    predictions = run.predict(tmp_path / "pets" / "dog")
    assert len(predictions) == 12 and set(predictions.classes) <= {"cat", "dog"}


def test_the_api_trains_exactly_what_the_command_line_trains(mnist_run, real_data, tmp_path):
    out = tmp_path / "cli"
    args = ["train", "mnist-fast", "--limit", "2000", "--epochs", "1", "--quiet", "--json"]
    result = json.loads(cli(*args, "--data-dir", str(real_data), "--out", str(out)).stdout)
    assert result["config"] == mnist_run.result["config"]
    assert result["test_accuracy"] == mnist_run.result["test_accuracy"]
    assert result["params"] == mnist_run.result["params"] == 29_178


# ---- a run ---------------------------------------------------------------------------------------


def test_a_run_evaluates_and_shows_itself(mnist_run, real_data):
    run = ck.load(mnist_run.path, data_dir=real_data)
    assert run.path == mnist_run.path and ck.load(run) is run
    evaluation = run.evaluate()
    assert evaluation["test_accuracy"] == run.result["test_accuracy"] > 0.2  # chance: 0.1
    assert (
        repr(evaluation) + "\n"
        == cli("evaluate", str(run.path), "--data-dir", str(real_data)).stdout
    )
    assert repr(evaluation).splitlines()[1].startswith("Test accuracy: ")
    flipped = run.evaluate(tta="flip")  # digits and their mirrors: another loss
    assert evaluation["tta"] == "none" and flipped["tta"] == "flip"
    assert flipped["test_loss"] != pytest.approx(evaluation["test_loss"], rel=1e-3)
    assert "unknown tta 'sideways'" in raised(run.evaluate, tta="sideways")
    assert "test accuracy" in evaluation._repr_html_()
    assert repr(run).startswith(f"Run({str(run.path)!r}): mnist-fast on mnist, 1 epoch, ")
    model = run.model
    assert not model.training and sum(p.numel() for p in model.parameters()) == 29_178
    assert ck.summary(model, input_shape=(1, 28, 28)).total_params == 29_178
    assert "has no default input" in raised(ck.summary, model)


def test_predict_takes_paths_pil_images_and_arrays_by_one_conversion(mnist_run, digits, tmp_path):
    run = mnist_run
    for i in range(4):  # test images as the files a user would have
        Image.fromarray(digits.x_test[i, 0]).save(tmp_path / f"test{i}.png")
    files = run.predict(sorted(tmp_path.glob("test*.png")))
    from_cli = [
        json.loads(line)
        for line in cli("predict", str(run.path), str(tmp_path), "--json").stdout.splitlines()
    ]
    assert [p.to_dict() for p in files] == from_cli
    batch = run.predict(digits.x_test[:4])  # (N, C, H, W) as stored
    assert batch.classes == files.classes
    assert [p.top[0][1] for p in batch] == pytest.approx([p.top[0][1] for p in files], abs=1e-6)
    assert batch[0].conversion == "as given: the model's input 1x28x28"
    assert run.predict(digits.x_test[0, 0]).classes == batch.classes[:1]  # (H, W)
    assert run.predict(digits.x_test[:4, 0]).classes == batch.classes  # (N, H, W)
    pil = run.predict([Image.open(tmp_path / "test0.png"), Image.fromarray(digits.x_test[1, 0])])
    assert pil.classes == batch.classes[:2]

    drawing = Image.new("L", (200, 260), 255)  # a dark digit on white paper
    ImageDraw.Draw(drawing).line([(40, 40), (160, 40), (90, 230)], fill=0, width=18)
    converted = run.predict(drawing, top_k=3)[0]
    assert len(converted.top) == 3 and "inverted (light background)" in converted.conversion
    assert "centred by mass in 28x28" in converted.conversion

    shown = batch._repr_html_()
    assert shown.count("data:image/png;base64") == 4 and "top classes" in shown
    assert repr(batch).splitlines()[0].startswith("image 0\t")


def test_predict_refuses_what_is_not_an_image(mnist_run, tmp_path):
    run = mnist_run
    message = raised(run.predict, np.zeros((2, 3, 28, 28), np.uint8))
    assert message.startswith("expected uint8 pixels: an image (H, W), (H, W, 3) or (H, W, 4)")
    assert "(C, H, W) = (1, 28, 28)" in message and message.endswith("shape (2, 3, 28, 28)")
    assert raised(run.predict, np.zeros((5, 784), np.uint8)).endswith(
        "received shape (5, 784): flattened images? reshape them to (N, 1, 28, 28)"
    )
    assert "received shape (784,)" in raised(run.predict, np.zeros(784, np.uint8))
    assert "received shape (2, 28, 28, 28, 1)" in raised(
        run.predict, np.zeros((2, 28, 28, 28, 1), np.uint8)
    )
    assert "received dtype float64" in raised(run.predict, np.zeros((28, 28)))
    assert "cannot predict a dict" in raised(run.predict, {"x": 1})
    (tmp_path / "notes.png").write_text("not an image")
    assert f"{tmp_path / 'notes.png'} is not an image convkit reads" in raised(
        run.predict, tmp_path / "notes.png"
    )
    assert "no such file" in raised(run.predict, tmp_path / "missing.png")
    Image.new("L", (28, 28)).save(tmp_path / "blank.png")
    some = run.predict([tmp_path / "notes.png", tmp_path / "blank.png"])
    assert len(some) == 1 and [f.file for f in some.failures] == [str(tmp_path / "notes.png")]
    assert "expected --batch-size >= 1" in raised(run.predict, tmp_path / "blank.png", batch_size=0)


def test_inspect_shows_the_reports_pictures_inline(mnist_run, real_data):
    run = ck.load(mnist_run.path, data_dir=real_data)
    report = run.inspect("filters", "patches", "filters", limit=200)
    assert list(report["sections"]) == ["filters", "patches"]
    assert Path(report["page"]) == run.path / "inspect" / "index.html"
    shown = report._repr_html_()
    assert shown.count("data:image/png;base64") == 2 and "What each filter responds to" in shown
    assert repr(report).splitlines()[0] == f"Report: {run.path / 'inspect' / 'index.html'}"
    assert "unknown section 'filter'" in raised(run.inspect, "filter")


def test_robustness_and_compare(mnist_run, real_data):
    run = ck.load(mnist_run.path, data_dir=real_data)
    report = run.robustness(only="shift", max_shift=1, limit=200)
    shift = report["shift"]
    assert shift["max_shift"] == 1 and 0.0 <= shift["consistency"] <= 1.0
    assert report["clean_accuracy"] == shift["grid"][1][1]  # the centre is the plain test set
    assert "shift consistency" in repr(report) and "saved in" in repr(report).splitlines()[-1]
    assert report._repr_html_().count("data:image/png;base64") == len(report["pictures"]) == 3
    table = ck.compare([run, str(run.path)])
    assert table.column("consistency") == [shift["consistency"]] * 2
    assert repr(table) + "\n" == cli("compare", str(run.path), str(run.path)).stdout
    assert table._repr_html_().count("data:image/png;base64") == 3  # curves and two shift grids
    assert "unknown test 'shfit'" in raised(run.robustness, only="shfit")


def test_export_writes_a_checked_onnx_file(mnist_run, real_data, tmp_path):
    pytest.importorskip("onnxruntime")
    run = ck.load(mnist_run.path, data_dir=real_data)
    report = run.export(tmp_path / "digits.onnx")
    assert report.passed and report.path == tmp_path / "digits.onnx" and report.path.is_file()
    assert report.images_checked == 1000 and report.classes == tuple("0123456789")
