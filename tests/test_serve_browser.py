"""The page of `convkit serve` in a real browser: headless Chromium driven by Playwright, against
the server running in-process (uvicorn on a free port), on runs trained here on the real data.

A mouse draws a 7 on the MNIST run's canvas (and a finger on a phone-sized page), a real
CIFAR-10 test image is uploaded and dropped, the runs are switched and their summary, conv
arithmetic, curves, confusion matrix and patches opened, a text file named .png shows its error
on the page, a run that trains during the test is watched epoch by epoch, an MLP and a CNN
answer one drawing side by side while it is moved and turned, and no request leaves
127.0.0.1. Each state is saved as a screenshot (CONVKIT_SCREENSHOTS, else a temporary folder;
the paths are printed). Outside CI the tests skip where Chromium, Playwright or the data are
missing; under CI (CI=true) they fail instead: `make test` installs Chromium first.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

pytestmark = pytest.mark.realdata

CHROMIUM = os.environ.get("CONVKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
MNIST_RUN = dict(epochs=2, limit=20_000)  # 97.2% in ~3 s (idle 2-core Zen 5); reads a drawn 7
CIFAR_RUN = dict(epochs=3, limit=15_000)  # 50.3% in ~10 s: sure of some test images
TIMEOUT_MS = 20_000  # the longest wait for the page (the confusion matrix classifies 10,000)


def _missing(what: str) -> None:
    """Skip for a missing browser or server piece; under CI, fail: these tests must run there."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"under CI the browser tests must run, but {what}")
    pytest.skip(what)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless (Playwright cannot download its own browsers here)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed: pip install -c constraints.txt -e '.[dev]'")
    if not Path(CHROMIUM).is_file():
        _missing(
            f"no Chromium at {CHROMIUM}: `apt-get install -y --no-install-recommends chromium` "
            "(`make test` does it), or set CONVKIT_CHROMIUM"
        )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def data_path(real_data: Path, real_cifar: Path) -> str:
    return os.pathsep.join(dict.fromkeys(str(p) for p in (real_data, real_cifar)))


@pytest.fixture(autouse=True)
def _real_data_env(_isolated, data_path, monkeypatch):
    """The server finds the test sets through CONVKIT_DATA (conftest clears it per test)."""
    monkeypatch.setenv("CONVKIT_DATA", data_path)


@pytest.fixture(scope="module")
def runs(browser, data_path, tmp_path_factory) -> dict[str, Path]:
    """A CIFAR-10 run and two MNIST runs (an MLP and a CNN), trained here on subsets of the real
    data; the MNIST runs get robustness reports made by hand (made_report)."""
    from convkit.runs import Run
    from convkit.train import get_recipe, train

    root = tmp_path_factory.mktemp("runs")
    folders = {}
    for name, recipe, changes in (
        ("cifar", "cifar10-cnn", CIFAR_RUN),
        ("mlp", "mnist-mlp", MNIST_RUN),
        ("mnist", "mnist-cnn", MNIST_RUN),  # trained last: the newest run, listed first
    ):
        t = time.perf_counter()
        cfg = get_recipe(recipe).config().replace(**changes)
        result = train(
            cfg, out=root / name, data_dir=data_path.split(os.pathsep)[0], download=False
        )
        print(f"{recipe}: {result['test_accuracy']:.2%} in {time.perf_counter() - t:.1f} s")
        folders[name] = root / name
        if name in REPORT_DROPS:
            run = Run(root / name)
            run.write_robustness(made_report(REPORT_DROPS[name]), run.weights_signature())
    return folders


# Accuracy lost per pixel of shift in the made reports: the MLP's falls, the CNN's holds.
REPORT_DROPS = {"mlp": 0.15, "mnist": 0.03}


def made_report(drop: float, k: int = 4) -> dict:
    """A robustness report with the keys `convkit robustness` writes, made by hand (this test
    checks the page, not the measurement): accuracy falls by `drop` per pixel of shift."""
    offsets = list(range(-k, k + 1))
    acc = lambda d: round(max(0.05, 0.98 - drop * d), 4)  # noqa: E731
    grid = [[acc(max(abs(dx), abs(dy))) for dx in offsets] for dy in offsets]
    return {
        "clean_accuracy": 0.98,
        "test_images": 10_000,
        "shift": {
            "max_shift": k, "offsets": offsets, "grid": grid, "mean": float(np.mean(grid)),
            "by_distance": [{"distance": d, "accuracy": acc(d), "cells": max(1, 8 * d)}
                            for d in range(k + 1)],
            "consistency": acc(1),
        },
        "rotate": [{"angle": a, "accuracy": acc(abs(a) / 10)} for a in range(-45, 50, 5)],
        "scale": [{"scale": v / 10, "accuracy": acc(abs(v - 10) * 2)} for v in range(6, 15)],
        "created_at": "2026-11-25T10:00:00+00:00",
    }  # fmt: skip


@contextlib.contextmanager
def _serving(app) -> Iterator[str]:
    """The app on uvicorn in a thread, on a free port of 127.0.0.1; yields its URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def url(runs) -> Iterator[str]:
    try:
        from convkit.serve.app import create_app
    except ImportError as e:
        _missing(f"the server does not import ({e}): pip install -c constraints.txt -e '.[serve]'")
    with _serving(create_app([runs["mnist"].parent])) as address:
        yield address


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("CONVKIT_SCREENSHOTS") or tmp_path_factory.mktemp("screens"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def page(browser, url):
    """A fresh laptop-sized page that records every request and fails the test on a script
    error or a request to anywhere but the server."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.requests, pg.errors = [], []
    pg.on("request", lambda r: pg.requests.append(r))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    yield pg
    context.close()
    outside = [r.url for r in pg.requests if not _local(r.url)]
    assert not outside, f"the page asked for resources outside the server: {outside}"
    assert not [e for e in pg.errors if "status of 4" not in e], pg.errors


def _local(address: str) -> bool:
    parts = urlsplit(address)
    return parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1"


def _shot(page, shots: Path, name: str, full_page: bool = True, top: bool = True) -> Path:
    path = shots / f"{name}.png"
    if top:  # the runs list is sticky: a full page is shot from the top
        page.evaluate("() => window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    print(f"screenshot: {path}")
    return path


def _choose(page, run_id: str) -> None:
    page.click(f'.run-item[data-run="{run_id}"]')
    page.wait_for_selector(f'#run[data-run="{run_id}"]', state="visible")


def _run_id(page, folder: Path) -> str:
    return page.get_attribute(f'.run-item[data-name="{folder.name}"]', "data-run")


def _top(page) -> tuple[str, float]:
    row = page.locator("#top5 li").first
    return row.locator(".cls").inner_text(), float(row.locator(".pct").inner_text().rstrip("%"))


# A 7 as two strokes, the bar then the slant, in the canvas's own 280x280 pixels.
SEVEN = [[(70, 55), (140, 52), (205, 55)], [(205, 55), (165, 140), (130, 235)]]


def _draw_seven(page, canvas: str = "#canvas") -> None:
    """The 7 drawn with the mouse."""
    box = page.locator(canvas).bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    for points in SEVEN:
        page.mouse.move(box["x"] + points[0][0] * sx, box["y"] + points[0][1] * sy)
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(box["x"] + x * sx, box["y"] + y * sy, steps=12)
        page.mouse.up()


def test_draw_a_seven(page, url, runs, shots):
    page.goto(url)
    _choose(page, _run_id(page, runs["mnist"]))
    assert page.is_visible("#canvas")
    predicts = []
    page.on("request", lambda r: "/predict" in r.url and predicts.append(r))
    started = time.monotonic()
    _draw_seven(page)
    drew = time.monotonic() - started
    # the last drawing is always predicted: wait until nothing is pending, then read the answer
    page.wait_for_function(
        "() => !draw.busy && !draw.timer && !draw.dirty && !$('answer-body').hidden"
    )
    digit, percent = _top(page)
    print(f"drawn 7 read as {digit} ({percent}%), {len(predicts)} predictions in {drew:.2f} s")
    assert digit == "7", f"the drawn 7 was read as {digit} ({percent}%)"
    assert 1 <= len(predicts) <= 2 + drew / 0.3, "predictions are not debounced"
    last = predicts[-1]
    assert last.headers["content-type"].startswith("multipart/form-data")
    assert "explain=1" in last.url
    assert page.inner_text("#conversion").startswith("Conversion: 280x280"), "not the canvas"
    size = page.evaluate("() => [$('input-img').naturalWidth, $('input-img').naturalHeight]")
    assert size == [28, 28], f"the model's input is shown at {size}"
    assert page.locator("#features figure").count() >= 4  # mnist-cnn: 2 convs, 2 pools
    assert page.locator("#gradcam-img").evaluate("img => img.naturalWidth") > 0
    _shot(page, shots, "draw-seven")
    page.click("#clear")
    assert page.is_hidden("#answer-body")


@pytest.fixture(scope="module")
def cifar_png(runs, data_path, tmp_path_factory) -> tuple[Path, str]:
    """A real CIFAR-10 test image the run classifies right, by the widest margin, as a PNG."""
    import torch
    from PIL import Image

    from convkit.inspect.run import load_run

    run = load_run(runs["cifar"], data_dir=data_path.split(os.pathsep)[-1], download=False)
    test = run.test_split()
    images, labels = test.images[:500], test.labels[:500]
    with torch.inference_mode(), run.autocast():
        probs = run.model(run.preprocess(images)).float().softmax(1)
    top2 = probs.topk(2, dim=1)
    margin = torch.where(top2.indices[:, 0] == labels, top2.values[:, 0] - top2.values[:, 1], -1)
    i = int(margin.argmax())
    assert margin[i] > 0, "the CIFAR-10 run classifies none of 500 test images right"
    path = tmp_path_factory.mktemp("upload") / f"cifar-test-{i}.png"
    Image.fromarray(np.ascontiguousarray(images[i].permute(1, 2, 0).numpy())).save(path)
    return path, run.classes[int(labels[i])]


def test_upload_a_cifar_image(page, url, runs, cifar_png, shots):
    path, label = cifar_png
    page.goto(url)
    _choose(page, _run_id(page, runs["cifar"]))
    assert page.is_hidden("#draw-box"), "a CIFAR-10 run (RGB 32x32) offers no canvas"
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#answer-body", state="visible")
    page.wait_for_function("n => $('given-caption').textContent === n", arg=path.name)
    cls, percent = _top(page)
    print(f"{path.name} ({label}) read as {cls} ({percent}%)")
    assert cls == label
    assert page.locator("#top5 li").count() == 5
    size = page.evaluate("() => [$('input-img').naturalWidth, $('input-img').naturalHeight]")
    assert size == [32, 32]
    _shot(page, shots, "upload-cifar")
    page.click("#random")
    page.wait_for_function("n => $('given-caption').textContent !== n", arg=path.name)
    _drop_file(page, "#drop", path)  # the same image dropped on the drop zone
    page.wait_for_function("n => $('given-caption').textContent === n", arg=path.name)
    assert page.is_visible("#answer-body") and _top(page)[0] == label


def _drop_file(page, selector: str, path: Path) -> None:
    """Drag and drop a file from outside the browser, as the page receives it."""
    page.evaluate(
        """([selector, name, b64]) => {
          const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
          const data = new DataTransfer();
          data.items.add(new File([bytes], name, { type: "image/png" }));
          const target = document.querySelector(selector);
          for (const type of ["dragenter", "dragover", "drop"]) {
            target.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
          }
        }""",
        [selector, path.name, base64.b64encode(path.read_bytes()).decode()],
    )


def test_switch_runs_and_one_click_views(page, url, runs, shots):
    page.goto(url)
    mnist, cifar = _run_id(page, runs["mnist"]), _run_id(page, runs["cifar"])
    assert page.locator(".run-item").first.get_attribute("data-run") == mnist  # newest first
    _choose(page, cifar)
    assert "cifar10-cnn" in page.inner_text("#run-title") and page.is_hidden("#draw-box")
    page.click("#random")  # a random test image, predicted by its index
    page.wait_for_selector("#answer-body", state="visible")
    assert "test image" in page.inner_text("#given-caption")
    page.wait_for_function("() => $('filters-img').naturalWidth > 0")
    _choose(page, mnist)
    assert "mnist-cnn" in page.inner_text("#run-title") and page.is_visible("#canvas")
    assert page.is_hidden("#answer-body"), "the previous run's answer is cleared"
    page.wait_for_function("() => $('curves-img').naturalWidth > 0")
    page.click("#tab-summary")
    assert page.locator("#summary-table tbody tr").count() >= 8
    assert "conv2d_1 (Conv2D)" in page.inner_text("#summary-table")
    assert "80,202" in page.inner_text("#summary-table tfoot")  # mnist-cnn's parameters
    page.keyboard.press("ArrowRight")  # tabs follow the arrow keys too
    assert "Receptive field" in page.inner_text("#explain-table thead")
    page.click("#tab-confusion")
    page.wait_for_function("() => $('confusion-img').naturalWidth > 0", timeout=60_000)
    page.select_option("#patch-layer", "conv2d_1")
    page.fill("#patch-filter", "3")
    page.click("#patches-form button")
    page.wait_for_function("() => $('patches-img').naturalWidth > 0", timeout=60_000)
    _shot(page, shots, "switch-runs")


def test_a_bad_file_shows_a_readable_error(page, url, runs, shots, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("this is text, not a picture\n")
    page.goto(url)
    _choose(page, _run_id(page, runs["mnist"]))
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#error", state="visible")
    message = page.inner_text("#error-text")
    print(f"error shown: {message}")
    assert "bad.png" in message and "image" in message and "{" not in message
    _shot(page, shots, "bad-file", full_page=False)
    page.focus("#random")  # the server and the page go on after the error; keys work
    page.keyboard.press("Enter")
    page.wait_for_selector("#answer-body", state="visible")
    assert page.is_hidden("#error")


def test_phone_layout_draws_with_a_finger(browser, url, runs, shots):
    phone = browser.new_context(
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    phone.set_default_timeout(TIMEOUT_MS)
    page = phone.new_page()
    try:
        page.goto(url)
        _choose(page, _run_id(page, runs["mnist"]))
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px phone"
        assert page.evaluate("() => getComputedStyle($('canvas')).touchAction") == "none"
        page.evaluate("() => $('draw-box').scrollIntoView()")
        box = page.locator("#canvas").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
        cdp = phone.new_cdp_session(page)
        for points in SEVEN:
            _finger_stroke(cdp, box, points)
        page.wait_for_function(
            "() => !draw.busy && !draw.timer && !draw.dirty && !$('answer-body').hidden"
        )
        assert _top(page)[0] == "7", f"the 7 drawn by finger was read as {_top(page)}"
        page.evaluate("() => $('draw-box').scrollIntoView()")
        _shot(page, shots, "phone-draw", full_page=False, top=False)
        page.evaluate("() => $('answer').scrollIntoView()")
        _shot(page, shots, "phone-answer", full_page=False, top=False)
    finally:
        phone.close()


def _finger_stroke(cdp, box, points) -> None:
    """A real touch stroke through `points` (canvas pixels): Chromium's input pipeline turns it
    into pointer events of type touch, as a phone's screen does."""
    sx, sy = box["width"] / 280, box["height"] / 280
    path = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        path += [(x0 + (x1 - x0) * t / 8, y0 + (y1 - y0) * t / 8) for t in range(1, 9)]
    for i, (x, y) in enumerate(path):
        at = {"x": box["x"] + x * sx, "y": box["y"] + y * sy}
        kind = "touchStart" if i == 0 else "touchMove"
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [at]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_the_page_loads_nothing_from_outside(page, url):
    page.goto(url)
    page.wait_for_selector(".run-item")
    page.wait_for_load_state("networkidle")
    kinds = {r.resource_type for r in page.requests}
    assert {"document", "script", "stylesheet"} <= kinds
    hosts = {urlsplit(r.url).hostname for r in page.requests if r.url.startswith("http")}
    assert hosts == {"127.0.0.1"}, hosts
    fonts = page.evaluate("() => [...document.fonts].map(f => f.family)")
    assert fonts == [], f"web fonts loaded: {fonts}"


class _Gate:
    """Training progress that holds the run after each finished epoch until the test says go:
    the page is checked against a run that is really training, one epoch at a time."""

    def __init__(self):
        from convkit.train.progress import Progress

        self.quiet = Progress(enabled=False)
        self.finished = threading.Semaphore(0)  # released once per committed epoch
        self.go = threading.Semaphore(0)
        self.error: BaseException | None = None  # what stopped the training thread

    def __getattr__(self, name):
        return getattr(self.quiet, name)

    def end_epoch(self, line: str) -> None:
        self.finished.release()
        assert self.go.acquire(timeout=120), "the test never let the epoch go"

    def train(self, cfg, **kwargs) -> None:
        """train(cfg, **kwargs) through this gate; an error is kept for the test to raise."""
        from convkit.train import train

        try:
            train(cfg, progress=self, **kwargs)
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e
            self.finished.release()

    def wait_epoch(self, epoch: int) -> None:
        assert self.finished.acquire(timeout=120), f"epoch {epoch} did not finish in 2 minutes"
        if self.error is not None:
            raise AssertionError(f"training stopped before epoch {epoch}") from self.error


def test_watch_it_learn(page, url, runs, data_path, shots):
    """A run that trains while the page watches: each new epoch refreshes the curves, the
    filters and the answer for the current drawing; the end shows the test accuracy."""
    from convkit.train import get_recipe

    gate, folder = _Gate(), runs["mnist"].parent / "live"
    cfg = get_recipe("mnist-cnn").config().replace(epochs=2, limit=2_000)
    data_dir = data_path.split(os.pathsep)[0]
    job = threading.Thread(
        target=gate.train, args=(cfg,), kwargs=dict(out=folder, data_dir=data_dir)
    )
    job.start()
    try:
        gate.wait_epoch(1)
        page.goto(url)
        run_id = _run_id(page, folder)
        assert "training…" in page.inner_text(f'.run-item[data-run="{run_id}"]')
        _choose(page, run_id)
        assert "epoch 1 of 2" in page.inner_text("#run-live")
        _draw_seven(page)
        page.wait_for_function(
            "() => !draw.busy && !draw.timer && !draw.dirty && !$('answer-body').hidden"
        )
        _shot(page, shots, "watch-it-learn")
        maps = page.inner_html("#features")
        with page.expect_request(lambda r: "curves.png?epochs=2" in r.url):
            with page.expect_request(lambda r: "filters.png?epochs=2" in r.url):
                with page.expect_response(lambda r: "/predict" in r.url):
                    gate.go.release()  # epoch 2 runs; the page polls every 2 s
        page.wait_for_function("m => $('features').innerHTML !== m", arg=maps)
        gate.wait_epoch(2)
        gate.go.release()  # the run tests its kept weights and writes its result
        page.wait_for_selector("#run-live", state="hidden", timeout=60_000)
        assert "test accuracy" in page.inner_text("#run-meta")
    finally:
        for _ in range(3):
            gate.go.release()
        job.join(timeout=120)


# ---- compare: one drawing, several runs, moved and turned ---------------------------------------


def _answers(page) -> dict[str, list[list[str]]]:
    """Each compared run's answer as the page shows it: {run id: [[class, "12.3%"], ...]}."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.cmp-panel')].map((p) => [
             p.dataset.run,
             [...p.querySelectorAll('.top5 li')].map((li) =>
               [li.querySelector('.cls').textContent, li.querySelector('.pct').textContent]),
           ]))"""
    )


def _settled(page, move: str) -> None:
    """Wait until nothing is pending and the answers on show are those for `move` "dx,dy,angle"."""
    page.wait_for_function(
        "m => !cmp.busy && !cmp.timer && !cmp.dirty && $('cmp-panels').dataset.move === m",
        arg=move,
    )


def _as_the_api_says(page, url, png: bytes, shown: dict, dx: int, dy: int, angle: int) -> None:
    """Each run's answer on the page is what POST /api/runs/{id}/predict answers for the same
    drawing moved (dx, dy) and turned `angle`."""
    for run_id, rows in shown.items():
        response = page.request.post(
            f"{url}api/runs/{run_id}/predict?dx={dx}&dy={dy}&angle={angle}",
            multipart={"image": {"name": "drawing.png", "mimeType": "image/png", "buffer": png}},
        )
        assert response.ok, response.text()
        top = response.json()["top"]
        assert [c for c, _ in rows] == [t["class"] for t in top], (run_id, dx, dy, angle)
        for (_, percent), t in zip(rows, top, strict=True):
            assert abs(float(percent.rstrip("%")) - 100 * t["probability"]) <= 0.051, (run_id, t)


def test_compare_two_runs_on_one_drawing(page, url, runs, shots):
    """The acceptance test of the compare mode: two runs ticked, one drawing, both answer;
    moved by the buttons and turned by the slider, each answer follows as the API says."""
    page.goto(url)
    mlp, cnn, cifar = (_run_id(page, runs[n]) for n in ("mlp", "mnist", "cifar"))
    page.check(f'.cmp-tick[data-compare="{mlp}"]')
    assert page.is_disabled(f'.cmp-tick[data-compare="{cifar}"]'), "3x32x32 beside 1x28x28"
    page.check(f'.cmp-tick[data-compare="{cnn}"]')
    page.wait_for_selector(f'#compare[data-runs="{mlp},{cnn}"]', state="visible")
    assert page.is_hidden("#run") and page.locator(".cmp-panel").count() == 2
    _draw_seven(page, "#cmp-canvas")
    _settled(page, "0,0,0")
    data_url = page.evaluate("() => $('cmp-canvas').toDataURL('image/png')")
    png = base64.b64decode(data_url.split(",", 1)[1])
    still = _answers(page)
    assert set(still) == {mlp, cnn} and all(len(rows) == 5 for rows in still.values())
    assert still[cnn][0][0] == "7", f"the CNN read the drawn 7 as {still[cnn][0]}"
    _as_the_api_says(page, url, png, still, 0, 0, 0)
    for _ in range(4):
        page.click("#cmp-right")
    page.click("#cmp-down")
    _settled(page, "4,1,0")
    moved = _answers(page)
    print(f"still: {still}\nmoved 4 right, 1 down: {moved}")
    assert moved != still, "moving the drawing changed no answer"
    _as_the_api_says(page, url, png, moved, 4, 1, 0)
    assert page.inner_text("#cmp-dx-out") == "4 px right"
    size = page.evaluate(
        "() => [$('cmp-input-img').naturalWidth, $('cmp-input-img').naturalHeight]"
    )
    assert size == [28, 28]
    assert page.inner_text("#cmp-conversion").endswith("then moved 4 px right and 1 px down")
    # the made reports' accuracy at this shift, beside each live answer
    for run_id, name in ((mlp, "mlp"), (cnn, "mnist")):
        grid = made_report(REPORT_DROPS[name])["shift"]["grid"]
        line = page.inner_text(f'.cmp-panel[data-run="{run_id}"] .cmp-measured')
        assert line == f"Every test image moved so: {100 * grid[4 + 1][4 + 4]:.2f}% right."
        page.wait_for_function(f"() => $('cmp-shift-{run_id}').naturalWidth > 0")
    page.wait_for_function("() => $('cmp-curves-img').naturalWidth > 0")
    _shot(page, shots, "compare-moved")
    page.focus("#cmp-angle")
    for _ in range(20):  # the slider, by the keyboard: 20 degrees clockwise
        page.keyboard.press("ArrowLeft")
    _settled(page, "4,1,-20")
    turned = _answers(page)
    assert page.inner_text("#cmp-angle-out") == "20° clockwise"
    _as_the_api_says(page, url, png, turned, 4, 1, -20)
    page.click("#cmp-reset")
    _settled(page, "0,0,0")
    assert _answers(page) == still
    page.click("#cmp-close")  # back to one run
    page.wait_for_selector("#run", state="visible")
    assert page.is_hidden("#compare")
    _choose(page, cnn)  # the CNN's own robustness results, in a tab
    page.click("#tab-robustness")
    page.wait_for_function("() => $('shift-img').naturalWidth > 0 && $('robust-img').naturalWidth")
    assert "moved up to 4 px" in page.inner_text("#robust-note")
    _shot(page, shots, "robustness-tab")
    page.click("#compare-open")
    page.wait_for_selector("#compare", state="visible")
    _settled(page, "0,0,0")
    assert _answers(page) == still  # the drawing and its answers were kept
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: one column, no overflow
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, f"the compare view is {width} px wide on a 390 px phone"
    page.evaluate("() => $('compare').scrollIntoView()")
    _shot(page, shots, "compare-phone", full_page=False, top=False)
