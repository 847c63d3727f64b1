"""`convkit serve`'s HTTP API (docs/serve-api.md) through Starlette's TestClient, on runs trained
here on tiny made-up data (served through create_app's `datasets`): every endpoint, its answers
against convkit's own functions (predict, the analyses), every bad request the contract names,
and the server still answering right after them. Seconds, not minutes."""

from __future__ import annotations

import base64
import io
import shutil
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_dataset
from PIL import Image

pytest.importorskip("starlette", reason="needs the serve extra: pip install -e '.[serve]'")
from starlette.testclient import TestClient  # noqa: E402

from convkit.data import geometry  # noqa: E402
from convkit.data.images import conversion_options, load_image  # noqa: E402
from convkit.errors import ConfigError  # noqa: E402
from convkit.inspect import analyses as A  # noqa: E402
from convkit.runs import Run  # noqa: E402
from convkit.serve import app as serve_app  # noqa: E402
from convkit.serve import create_app, views  # noqa: E402
from convkit.train import TrainConfig, train  # noqa: E402
from convkit.use.predict import open_predictor, predict_files  # noqa: E402

TINY = dict(dataset="tiny", batch_size=32, precision="fp32", epochs=2)
BASE = "http://127.0.0.1"  # the server answers only requests addressed to this machine
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """As `convkit serve` runs torch (one thread per request on two cores); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return tiny_dataset()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data) -> dict[str, Path]:
    """Run folders under one root, trained oldest first: mlp, cnn2 (another seed), cnn."""
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for name, changes in (
        ("mlp", dict(model="mnist-mlp", epochs=1)),
        ("cnn2", dict(model="mnist-cnn", seed=1)),
        ("cnn", dict(model="mnist-cnn")),
    ):
        train(TrainConfig.from_dict({**TINY, **changes}), data=data, out=root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def static(tmp_path_factory) -> Path:
    """A stand-in for the page (its real files are the page author's, in the package)."""
    folder = tmp_path_factory.mktemp("static")
    (folder / "index.html").write_text("<!doctype html><title>convkit</title>\n")
    (folder / "app.js").write_text("// page\n")
    return folder


@pytest.fixture(scope="module")
def client(runs, data, static):
    app = create_app([runs["cnn"].parent], datasets={"tiny": data}, static=static)
    with TestClient(app, base_url=BASE) as c:
        yield c


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def decode(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def bar_image(k: int) -> bytes:
    """A 56x56 drawing of class k of the tiny data: a bright bar in row band k, dark around."""
    a = np.zeros((28, 28), np.uint8)
    a[3 + 6 * k : 6 + 6 * k, 4:24] = 230
    return png_of(np.kron(a, np.ones((2, 2), np.uint8)))


def run_id(client, folder: Path) -> str:
    runs = client.get("/api/runs").json()["runs"]
    return next(r["id"] for r in runs if r["name"] == folder.name)


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str) and message
    return message


def upload(client, rid: str, content: bytes, name: str = "x.png", query: str = ""):
    files = {"image": (name, content, "image/png")}
    return client.post(f"/api/runs/{rid}/predict{query}", files=files)


# ---- listing and reading runs -------------------------------------------------------------------


def test_runs_are_listed_newest_first_with_their_summaries(client, runs):
    listed = client.get("/api/runs").json()["runs"]
    assert [r["name"] for r in listed] == ["cnn", "cnn2", "mlp"]
    assert sorted(r["id"] for r in listed) == ["r1", "r2", "r3"]  # found in name order
    cnn = listed[0]
    result = Run(runs["cnn"]).result()
    assert cnn == {
        "id": cnn["id"], "name": "cnn", "model": "mnist-cnn", "dataset": "tiny",
        "classes": ["bar0", "bar1", "bar2", "bar3"], "image_shape": [1, 28, 28],
        "drawable": True, "test_accuracy": result["test_accuracy"], "epochs": 2,
        "planned_epochs": 2, "training": False, "updated": cnn["updated"],
    }  # fmt: skip
    assert listed[2]["model"] == "mnist-mlp" and listed[2]["epochs"] == 1
    assert client.get("/api/runs").json()["runs"] == listed  # ids stay


def test_a_run_in_detail(client, runs):
    rid = run_id(client, runs["cnn"])
    d = client.get(f"/api/runs/{rid}").json()
    assert [m["epoch"] for m in d["history"]] == [1, 2]
    assert d["history"] == Run(runs["cnn"]).history()
    model = Run(runs["cnn"]).kept_model().model
    assert d["summary"]["total_params"] == sum(p.numel() for p in model.parameters())
    assert [r["name"] for r in d["explain"]["layers"]][:2] == ["conv2d_1", "max_pooling2d_1"]
    assert d["layers"] == A.spatial_layers(model) and d["first_conv"] == "conv2d_1"
    mlp = client.get(f"/api/runs/{run_id(client, runs['mlp'])}").json()
    assert mlp["layers"] == [] and mlp["first_conv"] is None and mlp["summary"]["layers"]


def test_pictures_of_a_run(client, runs, data):
    rid = run_id(client, runs["cnn"])
    drawn = {}
    for name in ("curves.png", "confusion.png", "filters.png", "patches.png"):
        r = client.get(f"/api/runs/{rid}/{name}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", name
        assert r.content.startswith(PNG_MAGIC) and Image.open(io.BytesIO(r.content)).width > 100
        drawn[name] = r.content
    for name in drawn:  # each computed once for these weights, then kept
        assert client.get(f"/api/runs/{rid}/{name}").content == drawn[name]
    one = client.get(f"/api/runs/{rid}/patches.png?layer=conv2d_1&filter=3")
    mosaic = Image.open(io.BytesIO(one.content))
    # 9 patches of the 5x5 receptive field (clipped at borders), 3 a side, 1-pixel gaps
    assert mosaic.size == (3 * 5 + 2, 3 * 5 + 2) and mosaic.mode == "L"
    mlp = run_id(client, runs["mlp"])
    assert client.get(f"/api/runs/{mlp}/filters.png").status_code == 200  # dense templates
    assert "no convolution" in error_of(client.get(f"/api/runs/{mlp}/patches.png"), 400)


def test_test_images(client, runs, data):
    rid = run_id(client, runs["cnn"])
    t = client.get(f"/api/runs/{rid}/test-image?index=7").json()
    assert t["index"] == 7 and t["label"] == f"bar{int(data.test.labels[7])}"
    assert np.array_equal(np.asarray(decode(t["png"])), data.test.images[7, 0].numpy())
    for _ in range(3):
        assert 0 <= client.get(f"/api/runs/{rid}/test-image").json()["index"] < len(data.test)


# ---- predictions --------------------------------------------------------------------------------


def test_an_upload_is_predicted_as_convkit_predict_does(client, runs, tmp_path):
    rid = run_id(client, runs["cnn"])
    answer = upload(client, rid, bar_image(2), "bar.png").json()
    (tmp_path / "bar.png").write_bytes(bar_image(2))
    [expected] = predict_files(open_predictor(runs["cnn"]), [tmp_path / "bar.png"])
    assert [(t["class"], pytest.approx(t["probability"], abs=1e-6)) for t in answer["top"]] == [
        (c, pytest.approx(p, abs=1e-6)) for c, p in expected.top[:4]
    ]
    assert answer["top"][0]["class"] == "bar2" and answer["conversion"] == expected.conversion
    assert decode(answer["input_png"]).size == (28, 28)
    assert "gradcam_png" not in answer and "features" not in answer


def test_explanations(client, runs):
    rid = run_id(client, runs["cnn"])
    answer = upload(client, rid, bar_image(1), query="?explain=1").json()
    cam = decode(answer["gradcam_png"])
    assert cam.size == (28, 28) and cam.mode == "RGB"
    assert [f["layer"] for f in answer["features"]] == [
        "conv2d_1", "max_pooling2d_1", "conv2d_2", "max_pooling2d_2",
    ]  # fmt: skip
    first = answer["features"][0]
    assert first["shape"] == [16, 24, 24]
    assert decode(first["png"]).size == (8 * 25 - 1, 2 * 25 - 1)  # 16 maps, 8 a row
    mlp = upload(client, run_id(client, runs["mlp"]), bar_image(1), query="?explain=1").json()
    assert mlp["gradcam_png"] is None and mlp["features"] == []


def test_a_test_image_by_index(client, runs, data):
    rid = run_id(client, runs["cnn"])
    answer = client.post(f"/api/runs/{rid}/predict?explain=1", json={"test_index": 5}).json()
    label = f"bar{int(data.test.labels[5])}"
    assert (
        answer["label"] == label and answer["conversion"] == f"test image #5 ({label}), as stored"
    )
    assert np.array_equal(np.asarray(decode(answer["input_png"])), data.test.images[5, 0].numpy())
    kept = Run(runs["cnn"]).kept_model()
    proba = A.predict_proba(kept.model.eval(), kept.preprocess(data.test.images[5:6]))[0]
    assert answer["top"][0] == {"class": kept.classes[proba.argmax()],
                                "probability": pytest.approx(float(proba.max()), abs=1e-6)}  # fmt: skip
    assert len(answer["top"]) == 4 and len(answer["features"]) == 4


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    """A CIFAR-shaped run on random 3x32x32 images: (its folder, its dataset)."""
    import dataclasses

    from convkit.data.arrays import Dataset, Split
    from convkit.data.catalog import CIFAR10

    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(  # noqa: E731
        torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
    )
    spec = dataclasses.replace(CIFAR10, name="tinyrgb", train_size=64, test_size=16)
    data = Dataset(spec, split(64), split(16), {})
    folder = tmp_path_factory.mktemp("rgb") / "rgb"
    cfg = dict(TINY, dataset="tinyrgb", model="cifar10-cnn", epochs=1)
    train(TrainConfig.from_dict(cfg), data=data, out=folder)
    return folder, data


def test_an_rgb_run(rgb, static):
    """A CIFAR-shaped run: a photo is resized to 32x32 RGB, the pictures come in colour."""
    folder, rgb = rgb
    photo = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    with TestClient(
        create_app([folder.parent], datasets={"tinyrgb": rgb}, static=static), base_url=BASE
    ) as c:
        [run] = c.get("/api/runs").json()["runs"]
        assert run["image_shape"] == [3, 32, 32] and not run["drawable"]
        answer = upload(c, "r1", png_of(photo), "photo.png", "?explain=1").json()
        assert answer["conversion"] == "120x90 RGB -> centre 90x90 cropped -> resized to 32x32"
        assert (
            decode(answer["input_png"]).size == (32, 32)
            and decode(answer["input_png"]).mode == "RGB"
        )
        assert decode(answer["gradcam_png"]).size == (32, 32) and len(answer["top"]) == 5
        test = c.get("/api/runs/r1/test-image?index=2").json()
        assert np.array_equal(
            np.asarray(decode(test["png"])), rgb.test.images[2].permute(1, 2, 0).numpy()
        )


# ---- moved and turned, several runs at once (the page's compare mode) ----------------------------


def moved(image: np.ndarray, dx: int = 0, dy: int = 0, angle: float = 0) -> np.ndarray:
    """An image (C, H, W) uint8 turned, then moved, by convkit.data.geometry."""
    x = torch.from_numpy(np.ascontiguousarray(image))[None]
    return geometry.translate(geometry.rotate(x, angle) if angle else x, dx, dy)[0].numpy()


def top_of(folder: Path, image: np.ndarray) -> list[dict]:
    """The five most likely classes of a converted image (C, H, W), computed here."""
    kept = Run(folder).kept_model()
    x = kept.preprocess(torch.from_numpy(np.ascontiguousarray(image))[None])
    proba = A.predict_proba(kept.model.eval(), x)[0]
    order = np.argsort(-proba, kind="stable")[:5]
    return [
        {"class": kept.classes[i], "probability": pytest.approx(float(proba[i]), abs=1e-6)}
        for i in order
    ]


def test_a_moved_and_turned_image_is_what_the_model_sees(client, runs, data, tmp_path):
    rid = run_id(client, runs["cnn"])
    (tmp_path / "bar.png").write_bytes(bar_image(1))
    shape = (1, 28, 28)
    base = load_image(tmp_path / "bar.png", shape, **conversion_options("tiny", shape))
    for dx, dy, angle, says in (
        (0, 6, 0, "moved 6 px down"),
        (-3, 2, 0, "moved 3 px left and 2 px down"),
        (0, 0, 30, "turned 30° counterclockwise"),
        (2, -1, -12.5, "turned 12.5° clockwise, then moved 2 px right and 1 px up"),
    ):
        query = f"?dx={dx}&dy={dy}&angle={angle}"
        answer = upload(client, rid, bar_image(1), "bar.png", query).json()
        image = moved(base["converted"], dx, dy, angle)
        assert np.array_equal(np.asarray(decode(answer["input_png"])), image[0]), query
        assert answer["conversion"] == f"{base['conversion']}; then {says}"
        assert answer["move"] == {"dx": dx, "dy": dy, "angle": angle}
        assert answer["top"] == top_of(runs["cnn"], image), query
    # bar 1 moved down one band of 6 rows is exactly bar 2, and answered so
    down = upload(client, rid, bar_image(1), query="?dy=6").json()
    assert down["top"] == upload(client, rid, bar_image(2)).json()["top"]
    assert down["top"][0]["class"] == "bar2"
    still = upload(client, rid, bar_image(1), query="?dx=0&dy=&angle=0").json()
    assert still == upload(client, rid, bar_image(1)).json() and "move" not in still
    explained = upload(client, rid, bar_image(1), query="?dx=4&explain=1").json()
    assert decode(explained["gradcam_png"]).size == (28, 28) and len(explained["features"]) == 4
    test = client.post(f"/api/runs/{rid}/predict?dx=-2&dy=3", json={"test_index": 5}).json()
    expected = moved(data.test.images[5].numpy(), -2, 3)
    assert np.array_equal(np.asarray(decode(test["input_png"])), expected[0])
    assert test["conversion"].endswith("as stored; then moved 2 px left and 3 px down")


def test_compare_answers_every_run_as_its_own_predict_does(client, runs):
    ids = [run_id(client, runs[name]) for name in ("mlp", "cnn", "cnn2")]
    files = {"image": ("bar.png", bar_image(1), "image/png")}
    move = "dx=3&dy=-2&angle=10"
    answer = client.post(f"/api/compare?runs={','.join(ids)}&{move}", files=files).json()
    assert answer["move"] == {"dx": 3, "dy": -2, "angle": 10}
    assert [a["run"] for a in answer["answers"]] == ids
    for rid, got in zip(ids, answer["answers"], strict=True):
        alone = upload(client, rid, bar_image(1), "bar.png", f"?{move}").json()
        assert {k: v for k, v in got.items() if k != "run"} == {
            k: v for k, v in alone.items() if k != "move"
        }
    first = answer["answers"][0]
    assert answer["input_png"] == first["input_png"] and answer["conversion"] == first["conversion"]
    assert first["conversion"].endswith("; then turned 10° counterclockwise, then moved 3 px right "
                                        "and 2 px up")  # fmt: skip
    # a test image, by its index in the runs' common test set
    pair = ",".join(ids[:2])
    test = client.post(f"/api/compare?runs={pair}&dx=-1", json={"test_index": 4}).json()
    for rid, got in zip(ids[:2], test["answers"], strict=True):
        alone = client.post(f"/api/runs/{rid}/predict?dx=-1", json={"test_index": 4}).json()
        assert got == {"run": rid, **{k: v for k, v in alone.items() if k != "move"}}
    single = client.post(f"/api/compare?runs={ids[1]}", files=files).json()  # one run is fine
    assert [a["run"] for a in single["answers"]] == [ids[1]] and single["move"]["dx"] == 0


def test_moves_and_comparisons_refuse_bad_parameters(client, runs):
    rid = run_id(client, runs["cnn"])
    ids = ",".join(run_id(client, runs[name]) for name in ("mlp", "cnn"))

    def compare(query: str, **body):
        body = body or {"files": {"image": ("bar.png", bar_image(1), "image/png")}}
        return client.post(f"/api/compare?{query}", **body)

    for query, says in (
        ("dx=1.5", "expected dx to be a whole number, received '1.5'"),
        ("dy=two", "expected dy to be a whole number, received 'two'"),
        ("dx=28", "expected -27 <= dx <= 27 for 28-pixel-wide images (a shift of 28 pixels "
                  "leaves nothing in the frame), received dx=28"),
        ("dy=-28", "expected -27 <= dy <= 27 for 28-pixel-high images"),
        ("angle=abc", "expected angle to be a number, received 'abc'"),
        ("angle=nan", "expected angle to be a number, received 'nan'"),
        ("angle=-inf", "expected angle to be a number, received '-inf'"),
        ("angle=181", "expected -180 <= angle <= 180 (degrees), received angle=181"),
    ):  # fmt: skip
        assert says in error_of(upload(client, rid, bar_image(1), query=f"?{query}"), 400)
        assert says in error_of(compare(f"runs={ids}&{query}"), 400)
        test = client.post(f"/api/runs/{rid}/predict?{query}", json={"test_index": 1})
        assert says in error_of(test, 400)
    edges = "dx=27&dy=-27&angle=-180"  # the farthest moves that leave a pixel in the frame
    assert upload(client, rid, bar_image(1), query=f"?{edges}").status_code == 200
    assert compare(f"runs={ids}&{edges}").status_code == 200
    many = ",".join(f"r{i}" for i in range(1, 10))
    for query, says in (
        ("", "expected runs=ID,ID,... (ids from GET /api/runs, separated by commas), "
             "received runs=''"),
        ("runs=", "received runs=''"),
        ("runs=r1,,r2", "received runs='r1,,r2'"),
        ("runs=r1,r1", "runs=r1,r1 names 'r1' more than once"),
        ("runs=r1,r99", "runs=r1,r99: no run with id 'r99'; GET /api/runs lists the runs"),
        (f"runs={many}", f"expected at most 8 runs to compare, received 9: runs={many}"),
    ):  # fmt: skip
        assert error_of(compare(query), 400).endswith(says), query
    assert "GET is not allowed" in error_of(client.get(f"/api/compare?runs={ids}"), 405)
    assert "multipart/form-data" in error_of(compare(f"runs={ids}", content=b"hi"), 400)
    far = compare(f"runs={ids}", json={"test_index": 60})
    assert "outside the test set" in error_of(far, 400)
    assert "decompression bomb" in error_of(
        compare(f"runs={ids}", files={"image": ("bomb.png", bomb_png(), "image/png")}), 413
    )
    assert compare(f"runs={ids}&dx=1").status_code == 200


def test_runs_of_different_inputs_are_not_compared(runs, data, rgb, static, tmp_path):
    """One image cannot be the input of a 1x28x28 run and of a 3x32x32 one; runs of one shape
    but different data share an upload, not a test image."""
    import dataclasses

    from convkit.data.arrays import Dataset

    other = tiny_dataset(seed=5)
    other = Dataset(dataclasses.replace(other.spec, name="tiny2"), other.train, other.test, {})
    cfg = TrainConfig.from_dict({**TINY, "dataset": "tiny2", "model": "mnist-mlp", "epochs": 1})
    train(cfg, data=other, out=tmp_path / "other")
    folder, rgb_data = rgb
    datasets = {"tiny": data, "tiny2": other, "tinyrgb": rgb_data}
    app = create_app([runs["cnn"].parent, folder, tmp_path], datasets=datasets, static=static)
    with TestClient(app, base_url=BASE) as c:
        ids = {r["name"]: r["id"] for r in c.get("/api/runs").json()["runs"]}
        cnn, colour, tiny2 = ids["cnn"], ids["rgb"], ids["other"]
        files = {"image": ("bar.png", bar_image(2), "image/png")}
        refused = error_of(c.post(f"/api/compare?runs={cnn},{colour}", files=files), 400)
        assert refused == (
            f"runs={cnn},{colour}: the runs take different inputs ({cnn} takes 1x28x28, "
            f"{colour} takes 3x32x32); compare runs of one image shape"
        )
        both = c.post(f"/api/compare?runs={cnn},{tiny2}&dy=1", files=files).json()
        assert [a["run"] for a in both["answers"]] == [cnn, tiny2]
        assert both["answers"][0]["input_png"] == both["answers"][1]["input_png"]
        index = c.post(f"/api/compare?runs={cnn},{tiny2}", json={"test_index": 0})
        assert "test_index needs runs of one test set" in error_of(index, 400)
        wide = c.post(f"/api/compare?runs={colour}&dx=31&dy=-31", files=files).json()
        assert decode(wide["input_png"]).size == (32, 32)
        assert "for 32-pixel-wide images" in error_of(
            c.post(f"/api/compare?runs={colour}&dx=32", files=files), 400
        )


# ---- robustness results (convkit robustness RUN) ------------------------------------------------


def made_report(drop: float) -> dict:
    """A robustness report with the keys `convkit robustness` writes, made by hand: accuracy
    falls by `drop` per pixel of shift and per 100 degrees of turn."""
    offsets = [-2, -1, 0, 1, 2]
    acc = lambda d: max(0.0, 0.95 - drop * d)  # noqa: E731
    grid = [[acc(max(abs(dx), abs(dy))) for dx in offsets] for dy in offsets]
    return {
        "clean_accuracy": 0.95,
        "test_images": 60,
        "shift": {
            "max_shift": 2, "offsets": offsets, "grid": grid, "mean": float(np.mean(grid)),
            "by_distance": [{"distance": d, "accuracy": acc(d), "cells": max(1, 8 * d)}
                            for d in range(3)],
            "consistency": 0.9,
        },
        "rotate": [{"angle": a, "accuracy": acc(abs(a) / 100)} for a in range(-45, 50, 15)],
        "scale": [{"scale": v, "accuracy": acc(abs(v - 1) * 5)} for v in (0.8, 0.9, 1.0, 1.1)],
        "created_at": "2026-11-25T10:00:00+00:00",
    }  # fmt: skip


def is_png(response) -> bool:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return Image.open(io.BytesIO(response.content)).width > 100


def test_robustness_results_and_their_pictures(runs, data, static, tmp_path):
    for name in ("cnn", "mlp"):  # copies: the module's runs keep their folders' times
        shutil.copytree(runs[name], tmp_path / name)
    report = made_report(0.2)
    Run(tmp_path / "cnn").write_robustness(report, Run(tmp_path / "cnn").weights_signature())
    app = create_app([tmp_path], datasets={"tiny": data}, static=static)
    with TestClient(app, base_url=BASE) as c:
        ids = {r["name"]: r["id"] for r in c.get("/api/runs").json()["runs"]}
        cnn, mlp = ids["cnn"], ids["mlp"]
        got = c.get(f"/api/runs/{cnn}/robustness").json()
        assert got["report"] == Run(tmp_path / "cnn").robustness()
        assert {k: got["report"][k] for k in report} == report
        assert got["command"] == f"convkit robustness {(tmp_path / 'cnn').resolve()}"
        assert c.get(f"/api/runs/{mlp}/robustness").json()["report"] is None
        shift = c.get(f"/api/runs/{cnn}/shift.png")
        assert is_png(shift) and c.get(f"/api/runs/{cnn}/shift.png").content == shift.content
        assert is_png(c.get(f"/api/runs/{cnn}/robustness.png"))
        assert is_png(c.get(f"/api/compare/robustness.png?runs={cnn},{mlp}"))  # mlp: left out
        none = "has no robustness results for its kept weights; `convkit robustness"
        assert none in error_of(c.get(f"/api/runs/{mlp}/shift.png"), 404)
        assert none in error_of(c.get(f"/api/runs/{mlp}/robustness.png"), 404)
        assert none in error_of(c.get(f"/api/compare/robustness.png?runs={mlp}"), 404)
        assert "no run with id 'r99'" in error_of(
            c.get("/api/compare/robustness.png?runs=r99"), 400
        )
        # a report of some tests only: the curves it has, no grid
        mlp_run = Run(tmp_path / "mlp")
        mlp_run.write_robustness(
            {k: v for k, v in report.items() if k != "shift"}, mlp_run.weights_signature()
        )
        assert "have no shift test" in error_of(c.get(f"/api/runs/{mlp}/shift.png"), 404)
        assert is_png(c.get(f"/api/runs/{mlp}/robustness.png"))
        # new weights: the report belongs to the old ones
        shutil.copy(runs["cnn2"] / "model.safetensors", tmp_path / "cnn" / "model.safetensors")
        assert c.get(f"/api/runs/{cnn}/robustness").json()["report"] is None
        assert error_of(c.get(f"/api/runs/{cnn}/shift.png"), 404)
        (tmp_path / "mlp" / "robustness.json").write_text("{")
        assert "robustness" in error_of(c.get(f"/api/runs/{mlp}/robustness"), 500)
        assert error_of(c.get("/api/runs/r99/robustness"), 404)


# ---- bad requests, and the server still right after them ----------------------------------------


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose header declares 10 billion pixels, with a few bytes of image data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_MAGIC + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_bad_uploads_are_refused_with_their_status(client, runs):
    rid = run_id(client, runs["cnn"])
    good = upload(client, rid, bar_image(3), query="?explain=1").json()
    assert "decompression bomb" in error_of(upload(client, rid, bomb_png(), "bomb.png"), 413)
    over = error_of(upload(client, rid, b"\0" * (10 * 2**20 + 1)), 413)  # the default limit
    assert over == "the upload is over the limit of 10 MB"
    text = error_of(upload(client, rid, b"this is text\n", "notes.png"), 415)
    assert text.startswith("notes.png is not an image convkit reads (PNG, JPEG")
    truncated = error_of(upload(client, rid, bar_image(3)[:60], "cut.png"), 415)
    assert "cut.png is a damaged image file" in truncated
    assert "empty" in error_of(upload(client, rid, b"", "empty.png"), 400)
    two = {"image": ("a.png", bar_image(1), "image/png"), "other": ("b.png", b"x", "image/png")}
    assert "Too many files" in error_of(client.post(f"/api/runs/{rid}/predict", files=two), 400)
    wrong_field = {"picture": ("a.png", bar_image(1), "image/png")}
    message = error_of(client.post(f"/api/runs/{rid}/predict", files=wrong_field), 400)
    assert "'picture'" in message
    no_file = client.post(f"/api/runs/{rid}/predict", files={"image": (None, "text")})
    assert '"image"' in error_of(no_file, 400)
    garbled = client.post(
        f"/api/runs/{rid}/predict",
        content=b"--xyz\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=abc"},
    )
    assert garbled.status_code == 400 and "error" in garbled.json()
    again = upload(client, rid, bar_image(3), query="?explain=1").json()
    assert again == good


def test_oversized_uploads_are_refused(runs, data, static):
    app = create_app([runs["cnn"]], datasets={"tiny": data}, static=static, max_upload=20_000)
    big = np.random.default_rng(0).integers(0, 256, (120, 120), dtype=np.uint8)  # ~14 KB
    with TestClient(app, base_url=BASE) as c:
        assert upload(c, "r1", png_of(big)).status_code == 200
        file_over = np.random.default_rng(0).integers(0, 256, (160, 160), dtype=np.uint8)
        assert len(png_of(file_over)) > 20_000  # within the body's slack, over the file limit
        assert "over the limit of" in error_of(upload(c, "r1", png_of(file_over)), 413)
        huge = b"\0" * 200_000  # a Content-Length over the limit: refused before reading
        assert error_of(upload(c, "r1", huge), 413)

        def chunks():  # no Content-Length: counted as it arrives
            yield b'--abc\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
            for _ in range(40):
                yield b"\0" * 10_000

        chunked = c.post(
            "/api/runs/r1/predict",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=abc"},
        )
        assert error_of(chunked, 413)
        assert upload(c, "r1", png_of(big)).status_code == 200


def test_malformed_bodies_and_queries(client, runs):
    rid = run_id(client, runs["cnn"])
    url = f"/api/runs/{rid}/predict"
    for body in (b"{", b"[1, 2]", b'{"test_index": "3"}', b'{"test_index": true}', b"\xff"):
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        assert error_of(r, 400), body
    assert "multipart/form-data" in error_of(client.post(url, content=b"hi"), 400)
    big_json = client.post(url, content=b" " * 70_000, headers={"content-type": "application/json"})
    assert error_of(big_json, 413) == "the JSON body is over the limit of 64 KB"
    assert "outside the test set" in error_of(client.post(url, json={"test_index": 60}), 400)
    assert error_of(client.post(url + "?explain=maybe", json={"test_index": 1}), 400)
    for query, status in (
        ("test-image?index=-1", 400), ("test-image?index=x", 400),
        ("patches.png?layer=dense_1", 400), ("patches.png?layer=conv2d_1&filter=16", 400),
        ("patches.png?filter=two", 400),
    ):  # fmt: skip
        assert error_of(client.get(f"/api/runs/{rid}/{query}"), status), query
    assert client.post(url, json={"test_index": 1}).status_code == 200


def test_unknown_runs_paths_methods_and_hosts(client, runs):
    for path in ("", "/curves.png", "/confusion.png", "/filters.png", "/patches.png",
                 "/test-image"):  # fmt: skip
        assert "no run with id 'r99'" in error_of(client.get(f"/api/runs/r99{path}"), 404)
    assert error_of(client.post("/api/runs/r99/predict", json={"test_index": 1}), 404)
    for path in ("/api/nothing", "/api/runs/r1/weights.bin", "/static/missing.js", "/x/../y"):
        assert error_of(client.get(path), 404), path
    assert "GET is not allowed" in error_of(client.get("/api/runs/r1/predict"), 405)
    assert "not 'evil.example'" in error_of(
        client.get("/api/runs", headers={"host": "evil.example"}), 403
    )
    assert client.get("/api/runs").status_code == 200


def test_the_page_and_its_files(client, static):
    page = client.get("/")
    assert page.status_code == 200 and page.text == (static / "index.html").read_text()
    assert client.get("/static/app.js").text == "// page\n"
    assert client.get("/static/../index.html").status_code == 404
    assert client.get("/api/runs").headers["x-content-type-options"] == "nosniff"


# ---- runs that change while the server runs -----------------------------------------------------


def test_training_runs_new_runs_and_new_weights(client, runs, data):
    root = runs["cnn"].parent
    before = {r["name"]: r["id"] for r in client.get("/api/runs").json()["runs"]}
    live = root / "live"  # a run between epochs: weights and history, no result yet
    shutil.copytree(runs["cnn"], live)
    (live / "result.json").unlink()
    Run.create(root / "starting", TrainConfig.from_dict({**TINY, "model": "mnist-cnn"}))
    listed = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert {n: listed[n]["id"] for n in before} == before  # ids stay
    assert listed["live"]["training"] and listed["live"]["test_accuracy"] is None
    assert listed["starting"]["training"] and listed["starting"]["epochs"] == 0
    assert not listed["cnn"]["training"]
    detail = client.get(f"/api/runs/{listed['live']['id']}").json()
    assert detail["training"] and len(detail["history"]) == 2
    start = listed["starting"]["id"]
    assert client.get(f"/api/runs/{start}").json()["history"] == []
    assert "no kept weights yet" in error_of(
        client.post(f"/api/runs/{start}/predict", json={"test_index": 0}), 409
    )
    assert "no finished epoch" in error_of(client.get(f"/api/runs/{start}/curves.png"), 404)
    # new weights in the folder (a better epoch kept): the next request uses them
    first = client.post(f"/api/runs/{listed['live']['id']}/predict", json={"test_index": 3})
    shutil.copy(runs["cnn2"] / "model.safetensors", live / "model.safetensors")
    second = client.post(f"/api/runs/{listed['live']['id']}/predict", json={"test_index": 3})
    other = client.post(f"/api/runs/{before['cnn2']}/predict", json={"test_index": 3})
    assert second.json() == other.json() != first.json()
    shutil.rmtree(live)
    assert error_of(client.get(f"/api/runs/{listed['live']['id']}"), 404)


def test_a_damaged_run_is_listed_with_its_error(tmp_path, data, static):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    with TestClient(create_app([tmp_path], static=static), base_url=BASE) as c:
        [run] = c.get("/api/runs").json()["runs"]
        assert "not valid JSON" in run["error"] and run["model"] is None
        assert c.get("/api/runs/r1").status_code == 500


def test_a_slow_request_does_not_stall_the_others(client, runs, monkeypatch):
    rid = run_id(client, runs["cnn"])
    slow_curves = views.curves_png

    def slow(*args):
        time.sleep(1.5)
        return slow_curves(*args)

    monkeypatch.setattr(views, "curves_png", slow)
    waiting = threading.Thread(target=client.get, args=(f"/api/runs/{rid}/curves.png",))
    waiting.start()
    time.sleep(0.2)
    started = time.perf_counter()
    assert client.get("/api/runs").status_code == 200
    assert client.post(f"/api/runs/{rid}/predict", json={"test_index": 0}).status_code == 200
    assert time.perf_counter() - started < 1.0
    waiting.join()


# ---- starting a server --------------------------------------------------------------------------


def test_paths_given_must_exist_and_runs_is_the_default(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no such run folder"):
        create_app([tmp_path / "nope"])
    monkeypatch.chdir(tmp_path)
    with TestClient(create_app(), base_url=BASE) as c:
        assert c.get("/api/runs").json() == {"runs": []}


def test_serve_binds_loopback_and_warns_for_other_addresses(runs, monkeypatch, capsys):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: served.append(sockets))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    serve_app.serve([runs["cnn"]], port=0)
    assert served[-1][0].getsockname()[0] == "127.0.0.1"
    assert "warning" not in capsys.readouterr().err
    serve_app.serve([runs["cnn"]], host="0.0.0.0", port=0)
    assert "warning: listening on 0.0.0.0" in capsys.readouterr().err
    for sockets in served:
        sockets[0].close()
    assert serve_app.is_loopback("::1") and not serve_app.is_loopback("192.168.1.2")
    assert serve_app._host_name("[::1]:8000") == "::1"
    assert serve_app._host_name("localhost:8000") == "localhost"


def test_non_finite_numbers_are_sent_as_null():
    body = serve_app.json_response({"loss": float("nan"), "x": [float("inf"), 1.5]}).body
    assert body == b'{"loss":null,"x":[null,1.5]}'
