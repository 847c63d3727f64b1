"""`convkit predict` throughput on image files, beside the floor: decoding the same files alone.

    python benchmarks/predict_throughput.py RUN [--count 10000] [--work /tmp/predict-files]

Writes `count` test images of the run's dataset as PNG files (once), then times, in this one
process: (1) decoding and converting every file with load_image alone, one thread and with the
predictor's thread pool; (2) the whole prediction (decode, convert, batch, model, top-5), as
`convkit predict` does it, with the run (PyTorch) and, if given, an exported .onnx file.
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--onnx", help="an exported .onnx file of the run, timed as well")
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--work", default="/tmp/predict-files")
    args = parser.parse_args()

    from PIL import Image

    from convkit.data.images import load_image
    from convkit.runs import Run, load_data
    from convkit.use.predict import find_images, open_predictor, predict_files

    run = Run(args.run)
    cfg = run.config()
    folder = Path(args.work) / f"{cfg.dataset}-{args.count}"
    if not folder.is_dir():
        test = load_data(cfg)[0].test
        folder.mkdir(parents=True)
        for i in range(min(args.count, len(test))):
            image = test.images[i].numpy()
            array = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
            Image.fromarray(array).save(folder / f"{i:05d}.png")
    files, _ = find_images([str(folder)])
    predictor = open_predictor(args.run)
    shape, options = predictor.image_shape, predictor.options

    rows = []
    t0 = time.perf_counter()
    for f in files:
        load_image(f, shape, **options)
    rows.append(("decode + convert only, 1 thread", time.perf_counter() - t0))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda f: load_image(f, shape, **options), files))
    rows.append(("decode + convert only, 4 threads", time.perf_counter() - t0))
    for name, target in (
        ("predict with the run (PyTorch)", args.run),
        ("predict, .onnx", args.onnx),
    ):
        if target:
            p = open_predictor(target)
            t0 = time.perf_counter()
            done = sum(1 for _ in predict_files(p, files))
            rows.append((name, time.perf_counter() - t0))
            assert done == len(files)
    print(f"{len(files):,} PNG files of {cfg.dataset}, {shape}; {os.cpu_count()} CPUs")
    for name, seconds in rows:
        print(f"{name:<48} {seconds:7.2f} s {len(files) / seconds:10,.0f} images/s")


if __name__ == "__main__":
    main()
