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


def test_an_rgb_run(tmp_path, static):
    """A CIFAR-shaped run: a photo is resized to 32x32 RGB, the pictures come in colour."""
    import dataclasses

    from convkit.data.arrays import Dataset, Split
    from convkit.data.catalog import CIFAR10

    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(  # noqa: E731
        torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
    )
    spec = dataclasses.replace(CIFAR10, name="tinyrgb", train_size=64, test_size=16)
    rgb = Dataset(spec, split(64), split(16), {})
    cfg = dict(TINY, dataset="tinyrgb", model="cifar10-cnn", epochs=1)
    train(TrainConfig.from_dict(cfg), data=rgb, out=tmp_path / "rgb")
    photo = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    with TestClient(
        create_app([tmp_path], datasets={"tinyrgb": rgb}, static=static), base_url=BASE
    ) as c:
        [run] = c.get("/api/runs").json()["runs"]
        assert run["image_shape"] == [3, 32, 32] and not run["drawable"]
        answer = upload(c, "r1", png_of(photo), "photo.png", "?explain=1").json()
        assert answer["conversion"] == "120x90 RGB -> resized to 32x32"
        assert (
            decode(answer["input_png"]).size == (32, 32)
            and decode(answer["input_png"]).mode == "RGB"
        )
        assert decode(answer["gradcam_png"]).size == (32, 32) and len(answer["top"]) == 5
        test = c.get("/api/runs/r1/test-image?index=2").json()
        assert np.array_equal(
            np.asarray(decode(test["png"])), rgb.test.images[2].permute(1, 2, 0).numpy()
        )


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
