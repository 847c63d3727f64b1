"""`convkit serve`: the web page's HTTP API (docs/serve-api.md), Starlette on uvicorn.

A thin front end: runs are found and summarised by serve/catalog.py, models kept by
serve/models.py, request bodies read within limits by serve/uploads.py, and every answer
computed by serve/views.py from convkit.runs, convkit.inspect.analyses and convkit.inspect.draw.

The event loop only routes: reading files, loading models, decoding images and every analysis
run in worker threads. Torch work and drawing go through one limiter of two threads (the
machine this targets has two cores, and torch uses both for one image already), decoding
uploads through another, so a slow request waits its turn without stalling the others, and
the answers that need no model (the list of runs) keep coming.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import socket
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convkit.data.images import MAX_PIXELS
from convkit.errors import ConfigError, ConvkitError
from convkit.serve import uploads, views
from convkit.serve.catalog import RunCatalog, RunEntry
from convkit.serve.errors import ApiError
from convkit.serve.models import ModelCache, TestSets

STATIC = Path(__file__).parent / "static"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
COMPUTE_THREADS = 2  # torch work and drawing at once
DECODE_THREADS = 2  # uploads decoded at once (a 50-megapixel photo takes 0.5 GB to convert)
MAX_COMPARED = 8  # runs answering one image at once (each a forward pass per change)
MAX_ANGLE = 180  # degrees either way: every turn once


@dataclass
class ServeState:
    catalog: RunCatalog
    models: ModelCache
    tests: TestSets
    static: Path
    max_upload: int
    max_pixels: int
    compute: anyio.CapacityLimiter
    decode: anyio.CapacityLimiter

    def entry(self, request: Request) -> RunEntry:
        run_id = request.path_params["id"]
        entry = self.catalog.get(run_id)
        if entry is None:
            raise ApiError(404, f"no run with id {run_id!r}; GET /api/runs lists the runs")
        return entry

    async def work(self, fn, *args: Any) -> Any:
        """fn(*args) in a worker thread, at most COMPUTE_THREADS at once."""
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=self.compute)


def _state(request: Request) -> ServeState:
    return request.app.state.serve


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity (a diverged run's loss): they are sent as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_response(data: Any, status: int = 200) -> Response:
    body = json.dumps(_finite(data), allow_nan=False, separators=(",", ":"))
    return Response(body, status, media_type="application/json")


def png_response(png: bytes) -> Response:
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


def _int_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"expected {name} to be a whole number, received {text!r}") from None


def _number_param(request: Request, name: str) -> float:
    text = request.query_params.get(name)
    if text is None or text == "":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ApiError(400, f"expected {name} to be a number, received {text!r}")
    return value


def _move(request: Request) -> views.Move:
    """dx, dy (whole pixels) and angle (degrees) from the query; their range against the
    image's size is checked once the run's image shape is known (views.Move.check)."""
    dx, dy = _int_param(request, "dx") or 0, _int_param(request, "dy") or 0
    angle = _number_param(request, "angle")
    if not -MAX_ANGLE <= angle <= MAX_ANGLE:
        raise ApiError(
            400,
            f"expected {-MAX_ANGLE} <= angle <= {MAX_ANGLE} (degrees), received angle={angle:g}",
        )
    return views.Move(dx, dy, angle + 0.0)  # -0.0 is 0


def _compared(request: Request) -> list[RunEntry]:
    """The runs named by ?runs=ID,ID,... (ids from GET /api/runs), each once."""
    s = _state(request)
    text = request.query_params.get("runs", "")
    ids = [part.strip() for part in text.split(",")]
    usage = "ids from GET /api/runs, separated by commas"
    if not text.strip() or not all(ids):
        raise ApiError(400, f"expected runs=ID,ID,... ({usage}), received runs={text!r}")
    if len(ids) > MAX_COMPARED:
        raise ApiError(400, f"expected at most {MAX_COMPARED} runs to compare, received "
                            f"{len(ids)}: runs={text}")  # fmt: skip
    twice = [i for i in dict.fromkeys(ids) if ids.count(i) > 1]
    if twice:
        raise ApiError(400, f"runs={text} names {twice[0]!r} more than once")
    entries = []
    for run_id in ids:
        entry = s.catalog.get(run_id)
        if entry is None:
            raise ApiError(400, f"runs={text}: no run with id {run_id!r}; GET /api/runs lists "
                                "the runs")  # fmt: skip
        entries.append(entry)
    return entries


def _shapes(s: ServeState, entries: list[RunEntry]) -> dict[str, Any]:
    """Each run's image shape as its folder says (null before it is known)."""
    shapes = {}
    for entry in entries:
        summary = s.catalog.summary(entry)
        if "error" in summary:
            raise ApiError(500, summary["error"])
        shapes[entry.id] = summary["image_shape"]
    return shapes


def _one_shape(text: str, shapes: dict[str, Any]) -> tuple[int, ...] | None:
    """The image shape the runs share; 400 when they differ (one image cannot be the input of
    a 1x28x28 run and of a 3x32x32 one)."""
    known = {k: tuple(v) for k, v in shapes.items() if v}
    if len(set(known.values())) > 1:
        each = ", ".join(f"{k} takes {'x'.join(map(str, v))}" for k, v in known.items())
        raise ApiError(400, f"runs={text}: the runs take different inputs ({each}); compare runs "
                            "of one image shape")  # fmt: skip
    return next(iter(known.values()), None)


def _flag(request: Request, name: str) -> bool:
    text = request.query_params.get(name, "0").lower()
    if text not in ("0", "1", "true", "false", ""):
        raise ApiError(400, f"expected {name}=1 or {name}=0, received {text!r}")
    return text in ("1", "true")


# ---- endpoints ----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    page = _state(request).static / "index.html"
    if not page.is_file():
        raise ApiError(404, f"the page is not installed (no {page})")
    return FileResponse(page, headers={"Cache-Control": "no-cache"})


async def list_runs(request: Request) -> Response:
    return json_response({"runs": await run_in_threadpool(_state(request).catalog.scan)})


async def run_detail(request: Request) -> Response:
    s = _state(request)
    return json_response(await s.work(views.run_detail, s.catalog, s.entry(request), s.models))


async def curves(request: Request) -> Response:
    s = _state(request)
    return png_response(await s.work(views.curves_png, s.catalog, s.entry(request)))


async def confusion(request: Request) -> Response:
    s = _state(request)
    loaded = await run_in_threadpool(s.models.get, s.entry(request).root)
    return png_response(await s.work(views.confusion_png, loaded, s.tests))


async def filters(request: Request) -> Response:
    s = _state(request)
    loaded = await run_in_threadpool(s.models.get, s.entry(request).root)
    return png_response(await s.work(views.filters_png, loaded))


async def patches(request: Request) -> Response:
    s = _state(request)
    entry, k = s.entry(request), _int_param(request, "filter")
    layer = request.query_params.get("layer") or None
    loaded = await run_in_threadpool(s.models.get, entry.root)
    return png_response(await s.work(views.patches_png, loaded, s.tests, layer, k))


async def test_image(request: Request) -> Response:
    s = _state(request)
    entry, index = s.entry(request), _int_param(request, "index")
    loaded = await run_in_threadpool(s.models.get, entry.root)
    return json_response(await run_in_threadpool(views.test_image, loaded, s.tests, index))


async def predict(request: Request) -> Response:
    s = _state(request)
    entry, explained, move = s.entry(request), _flag(request, "explain"), _move(request)
    source = await uploads.read_predict_body(request, s.max_upload)
    loaded = await run_in_threadpool(s.models.get, entry.root)
    move.check(loaded.kept.image_shape)
    if source.test_index is not None:
        item = await run_in_threadpool(views.test_item, loaded, s.tests, source.test_index)
    else:
        item = await _convert(s, source, loaded)
    return json_response(await s.work(views.predict, loaded, item, explained, move))


async def _convert(s: ServeState, source: uploads.PredictSource, loaded) -> dict[str, Any]:
    kept = loaded.kept
    convert = partial(
        uploads.convert_upload, source, kept.image_shape, kept.cfg.dataset, kept.cfg.fit
    )
    return await anyio.to_thread.run_sync(convert, s.max_pixels, limiter=s.decode)


async def compare(request: Request) -> Response:
    """One image (an upload, or a test image of the runs' common test set) answered by every
    run named, moved and turned alike."""
    s = _state(request)
    entries, move = _compared(request), _move(request)
    text = request.query_params["runs"]
    shape = _one_shape(text, await run_in_threadpool(_shapes, s, entries))
    if shape is not None:  # bad parameters are refused before the body is read
        move.check(shape)
    source = await uploads.read_predict_body(request, s.max_upload)
    loaded = [await run_in_threadpool(s.models.get, e.root) for e in entries]
    kept_shapes = {e.id: one.kept.image_shape for e, one in zip(entries, loaded, strict=True)}
    move.check(_one_shape(text, kept_shapes) or loaded[0].kept.image_shape)
    keys, items = [], {}  # one conversion (or test image) per kind of run
    for one in loaded:
        cfg = one.kept.cfg
        if source.test_index is None:
            key: tuple = (cfg.dataset, one.kept.image_shape, cfg.fit)  # conversion_options
            if key not in items:
                items[key] = await _convert(s, source, one)
        else:
            key = (cfg.dataset, cfg.data, cfg.image_size)  # which test set (models.TestSets)
            if items and key not in items:
                raise ApiError(400, f"runs={text}: test_index needs runs of one test set; these "
                                    "were trained on different data (send an image instead)")  # fmt: skip
            if key not in items:
                get = partial(views.test_item, one, s.tests, source.test_index)
                items[key] = await run_in_threadpool(get)
        keys.append(key)
    runs = [(e.id, one, items[k]) for e, one, k in zip(entries, loaded, keys, strict=True)]
    return json_response(await s.work(views.compare, runs, move))


async def robustness(request: Request) -> Response:
    s = _state(request)
    return json_response(await run_in_threadpool(views.robustness, s.entry(request)))


async def shift_picture(request: Request) -> Response:
    s = _state(request)
    return png_response(await s.work(views.shift_png, s.entry(request)))


async def robustness_picture(request: Request) -> Response:
    s = _state(request)
    return png_response(await s.work(views.robustness_png, [s.entry(request)]))


async def compare_robustness_picture(request: Request) -> Response:
    s = _state(request)
    return png_response(await s.work(views.robustness_png, _compared(request)))


# ---- errors: every one is {"error": "one readable sentence"} ------------------------------------


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response({"error": exc.message}, exc.status)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no such path: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:  # 400 from the multipart parser (two files, a malformed body): its detail says why
        message = exc.detail
    return json_response({"error": message}, exc.status_code)


async def convkit_error(request: Request, exc: Exception) -> Response:
    """A run folder or dataset the server cannot read (damaged, missing): its message."""
    return json_response({"error": str(exc)}, 500)


async def disconnected(request: Request, exc: Exception) -> Response:
    return json_response({"error": "the client went away before sending its whole body"}, 400)


async def internal_error(request: Request, exc: Exception) -> Response:
    """A bug: the traceback goes to the server's log (uvicorn prints it), the page gets a line."""
    return json_response(
        {"error": f"internal error ({type(exc).__name__}); see the server's log"}, 500
    )


# ---- the application ----------------------------------------------------------------------------


class LocalOnly:
    """Answers only requests addressed to this machine by name (`allowed_hosts`, None: any),
    so a web page elsewhere cannot reach a local server through DNS rebinding; adds headers
    that keep browsers from guessing content types or caching the API's answers."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] | None):
        self.app, self.allowed = app, allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = _host_name(Headers(scope=scope).get("host", ""))
        if self.allowed is not None and host not in self.allowed:
            message = f"this server answers requests to {', '.join(self.allowed)}, not {host!r}"
            return await json_response({"error": message}, 403)(scope, receive, send)
        api = scope["path"].startswith("/api/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers.append((b"x-content-type-options", b"nosniff"))
                if api and not any(k == b"cache-control" for k, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _host_name(host: str) -> str:
    """The name in a Host header, without its port: 'localhost:8000' -> 'localhost',
    '[::1]:8000' -> '::1'."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def create_app(
    paths: list[Path] | list[str] | None = None,
    *,
    max_upload: int = uploads.MAX_UPLOAD,
    max_pixels: int = MAX_PIXELS,
    allowed_hosts: tuple[str, ...] | None = LOCAL_HOSTS,
    datasets: dict | None = None,
    data_dir: str | Path | None = None,
    static: Path = STATIC,
) -> Starlette:
    """The web page and its API over the runs in `paths` (run folders, or folders searched for
    run folders; none: runs/). `datasets` maps dataset names to loaded Datasets used instead
    of loading them (data made in memory); `data_dir` is where the test sets are looked for
    first (then CONVKIT_DATA and the cache, as everywhere: nothing is downloaded)."""
    roots = [Path(p) for p in paths] if paths else [Path("runs")]
    missing = [str(p) for p in roots if paths and not p.exists()]
    if missing:
        raise ConfigError(f"{', '.join(missing)}: no such run folder or folder of runs")
    state = ServeState(
        catalog=RunCatalog(roots),
        models=ModelCache(),
        tests=TestSets(datasets, data_dir=data_dir),
        static=Path(static),
        max_upload=max_upload,
        max_pixels=max_pixels,
        compute=anyio.CapacityLimiter(COMPUTE_THREADS),
        decode=anyio.CapacityLimiter(DECODE_THREADS),
    )
    state.catalog.scan()  # ids for the runs there now, in the order found
    app = Starlette(
        routes=_routes(state.static),
        middleware=[Middleware(LocalOnly, allowed_hosts=allowed_hosts)],
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            ConvkitError: convkit_error,
            ClientDisconnect: disconnected,
            Exception: internal_error,
        },
    )
    app.state.serve = state
    return app


def _routes(static: Path) -> list[Route | Mount]:
    run = "/api/runs/{id}"
    return [
        Route("/", index),
        Route("/api/runs", list_runs),
        Route(run, run_detail),
        Route(f"{run}/curves.png", curves),
        Route(f"{run}/confusion.png", confusion),
        Route(f"{run}/filters.png", filters),
        Route(f"{run}/patches.png", patches),
        Route(f"{run}/test-image", test_image),
        Route(f"{run}/predict", predict, methods=["POST"]),
        Route(f"{run}/robustness", robustness),
        Route(f"{run}/shift.png", shift_picture),
        Route(f"{run}/robustness.png", robustness_picture),
        Route("/api/compare", compare, methods=["POST"]),
        Route("/api/compare/robustness.png", compare_robustness_picture),
        Mount("/static", StaticFiles(directory=static, check_dir=False), name="static"),
    ]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    paths: list[Path] | list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    **options: Any,
) -> None:
    """Serve the page and its API until interrupted (Ctrl-C); port 0 takes a free port. Bound
    to this machine unless `host` says otherwise, when a warning says that anyone who can reach
    it may use it. `options` go to create_app. Prints the address to stderr once listening."""
    import torch
    import uvicorn

    local = is_loopback(host)
    if not local:
        print(
            f"convkit serve: warning: listening on {host}, not only on this machine: anyone "
            "who can reach it can see these runs and use their models (there is no login)",
            file=sys.stderr,
        )
    hosts = tuple(dict.fromkeys((*LOCAL_HOSTS, host.strip("[]")))) if local else None
    app = create_app(paths, allowed_hosts=hosts, **options)
    # COMPUTE_THREADS requests compute at once: together they use the cores, each with a share
    # (one image on a small CNN gains nothing from more threads; on a busy machine it loses).
    torch.set_num_threads(max(1, _cores() // COMPUTE_THREADS))
    sock = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"convkit serve: http://{shown}:{sock.getsockname()[1]}/ (Ctrl-C stops it)",
          file=sys.stderr, flush=True)  # fmt: skip
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), so the port is known before the server starts."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); try --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
