"""`convkit serve` under load: 32 clients predicting uploaded drawings with Grad-CAM and feature
maps (`?explain=1`, what the page asks for) for a fixed time; then a burst of malformed and
oversized requests; then a check that the server still answers, and answers the same.

    python benchmarks/serve_load.py RUN [--clients 32] [--seconds 30] [--json FILE]

RUN is a run folder (train one: `convkit train mnist-cnn --epochs 1 --limit 5000 --out
/tmp/serve-run`). The server runs as `convkit.serve.serve` in its own process, on a free port of
127.0.0.1, so the RSS reported is the server's alone; the clients are threads of this process,
each with a keep-alive connection, and share the machine's cores with the server (on a 2-core
machine they cost it a good part of one). Only loopback traffic; every loop is bounded in time
and in count, and the server is stopped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
from PIL import Image, ImageDraw

from convkit.train.provenance import cpu_name

MAX_REQUESTS_PER_CLIENT = 100_000  # a bound besides the time
BURST_REPEATS = 10  # each bad request of the burst, this many times


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def start_server(run: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """`serve([run], port=0)` in a child process; returns it, its URL once it listens, and
    the lines it writes to stderr (the address, then anything it logs)."""
    code = "import sys; from convkit.serve import serve; serve([sys.argv[1]], port=0)"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(run)], stderr=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    found = threading.Event()

    def read_stderr() -> None:  # keeps the pipe drained for the server's whole life
        for line in proc.stderr:
            lines.append(line)
            if "http://" in line:
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    if not found.wait(120):
        proc.kill()
        raise SystemExit(f"the server did not start:\n{''.join(lines)}")
    return proc, re.search(r"http://\S+/", "".join(lines))[0], lines


def drawings(count: int = 8) -> list[bytes]:
    """Digit-like strokes on a white 280x280 canvas, as the page sends them (PNG)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        im = Image.new("L", (280, 280), 255)
        points = [tuple(int(v) for v in rng.integers(50, 230, 2)) for _ in range(4)]
        ImageDraw.Draw(im).line(points, fill=0, width=18, joint="curve")
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def client_loop(url: str, images: list[bytes], deadline: float, out: dict) -> None:
    """Predict with explanations until the deadline; record latencies and failures."""
    with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
        for i in range(MAX_REQUESTS_PER_CLIENT):
            if time.monotonic() >= deadline:
                break
            files = {"image": ("drawing.png", images[i % len(images)], "image/png")}
            started = time.perf_counter()
            try:
                r = c.post(f"{out['predict']}?explain=1", files=files)
                ok = r.status_code == 200 and r.json()["gradcam_png"].startswith("data:")
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                ok, r = False, exc
            out["latency" if ok else "errors"].append(
                time.perf_counter() - started if ok else repr(r)[:200]
            )


def bomb_png() -> bytes:
    """A valid PNG header declaring 100000 x 100000 pixels (10 billion), with no real data."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def bad_requests(predict: str, image: bytes) -> list[tuple[str, int, dict]]:
    """(what, the status the contract gives, httpx request arguments)."""
    big = b"\0" * (11 * 2**20)

    def chunked():  # an 11 MB file without a Content-Length
        yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(11):
            yield b"\0" * 2**20

    post = dict(method="POST", url=predict)
    multipart = {"content-type": "multipart/form-data; boundary=x"}
    json_type = {"content-type": "application/json"}
    two = {"image": ("a.png", image, "image/png"), "b": ("b.png", image, "image/png")}
    return [
        ("11 MB upload", 413, dict(post, files={"image": ("a.png", big)})),
        ("11 MB chunked", 413, dict(post, content=chunked(), headers=multipart)),
        ("two files", 400, dict(post, files=two)),
        ("bomb", 413, dict(post, files={"image": ("b.png", bomb_png())})),
        ("not an image", 415, dict(post, files={"image": ("t.png", b"text")})),
        ("malformed JSON", 400, dict(post, content=b"{", headers=json_type)),
        ("unknown run", 404, dict(method="GET", url="api/runs/r999/confusion.png")),
        ("unknown path", 404, dict(method="GET", url="api/nothing/here")),
    ]


def burst(url: str, predict: str, image: bytes) -> dict[str, str]:
    """Each bad request BURST_REPEATS times, from 8 threads at once: how many got the status the
    contract gives, with a JSON error, by kind."""
    from concurrent.futures import ThreadPoolExecutor

    def send(k: int) -> tuple[str, bool]:
        what, status, request = bad_requests(predict, image)[k]  # fresh bodies each time
        with httpx.Client(base_url=url, timeout=60, trust_env=False) as c:
            try:
                r = c.request(**request)
                return what, r.status_code == status and "error" in r.json()
            except (httpx.HTTPError, ValueError):
                return what, False

    kinds = len(bad_requests(predict, image))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, [k for k in range(kinds) for _ in range(BURST_REPEATS)]))
    names = dict.fromkeys(what for what, _ in answers)
    return {w: f"{sum(ok for what, ok in answers if what == w)}/{BURST_REPEATS}" for w in names}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q)) if values else float("nan")


def load(url: str, predict: str, clients: int, seconds: float) -> dict:
    images = drawings()
    out: dict = {"predict": predict, "latency": [], "errors": []}
    deadline = time.monotonic() + seconds
    threads = [
        threading.Thread(target=client_loop, args=(url, images, deadline, out))
        for _ in range(clients)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    elapsed = time.perf_counter() - started
    ms = [1000 * v for v in out["latency"]]
    return {
        "requests": len(ms),
        "seconds": round(elapsed, 1),
        "requests_per_second": round(len(ms) / elapsed, 1),
        "p50_ms": round(percentile(ms, 50), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "errors": len(out["errors"]),
        "first_errors": out["errors"][:3],
    }


def same_answer(a: dict, b: dict) -> bool:
    """The same classes, probabilities (to 1e-6), model input and Grad-CAM."""
    close = all(
        x["class"] == y["class"] and abs(x["probability"] - y["probability"]) < 1e-6
        for x, y in zip(a["top"], b["top"], strict=True)
    )
    return close and a["input_png"] == b["input_png"] and a["gradcam_png"] == b["gradcam_png"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run folder")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    proc, url, log = start_server(args.run)
    try:
        with httpx.Client(base_url=url, timeout=120, trust_env=False) as c:
            run_id = c.get("api/runs").json()["runs"][0]["id"]
            predict = f"api/runs/{run_id}/predict"
            probe = drawings(1)[0]
            files = {"image": ("probe.png", probe, "image/png")}
            reference = c.post(f"{predict}?explain=1", files=files).json()
            figures = {"rss_mb_before": round(rss_mb(proc.pid), 1)}
            figures["load"] = load(url, predict, args.clients, args.seconds)
            figures["rss_mb_after_load"] = round(rss_mb(proc.pid), 1)
            figures["burst"] = burst(url, predict, probe)
            figures["rss_mb_after_burst"] = round(rss_mb(proc.pid), 1)
            again = c.post(f"{predict}?explain=1", files=files)
            figures["answers_after"] = again.status_code == 200 and same_answer(
                reference, again.json()
            )
            figures["lists_runs_after"] = c.get("api/runs").status_code == 200
    finally:
        proc.terminate()
        proc.wait(30)
    figures["server_log"] = [line.rstrip() for line in log[1:]][:20]  # errors it logged
    report(figures, args)
    burst_ok = all(v == f"{BURST_REPEATS}/{BURST_REPEATS}" for v in figures["burst"].values())
    return 0 if figures["load"]["errors"] == 0 and figures["answers_after"] and burst_ok else 1


def report(figures: dict, args: argparse.Namespace) -> None:
    figures["machine"] = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
    }
    figures["clients"], figures["run"] = args.clients, str(args.run)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
