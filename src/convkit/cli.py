"""The command line: `convkit <verb>`. Thin front ends over the Python API."""

from __future__ import annotations

import time

_STARTED = time.perf_counter()  # before the heavy imports: `seconds` counts the whole command

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from convkit.errors import ConvkitError  # noqa: E402


def _shape(text: str) -> tuple[int, int, int]:
    try:
        dims = tuple(int(p) for p in text.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise argparse.ArgumentTypeError(
            f"expected C,H,W as three positive integers, received {text!r}"
        )
    return dims  # type: ignore[return-value]


def _emit_json(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def _print_table(table: list, as_json: bool) -> None:
    """A listing of convkit.api (the rows are what --json prints; its lines the text)."""
    if as_json:
        _emit_json(list(table))
        return
    for line in table.lines():
        print(line)


# ---- data ---------------------------------------------------------------------------------------


def cmd_data(args: argparse.Namespace) -> int:
    from convkit.data import get_dataset_spec, list_datasets, load_dataset, locate

    if args.action == "list":
        from convkit.api import datasets

        _print_table(datasets(args.data_dir), args.json)
        return 0
    if args.action == "pack":
        return _pack(args)
    if args.action == "check" and args.name and Path(args.name).is_dir():
        from convkit.data.shards import is_shards

        return _check_shards(args) if is_shards(args.name) else _check_folder(args)
    if args.action == "check":
        names = [args.name] if args.name else list_datasets()
        ok = True
        report = []
        for name in names:
            spec = get_dataset_spec(name)
            res = locate(spec, args.data_dir)
            files = [
                {
                    "file": f.name,
                    "path": str(res.paths.get(f.name) or ""),
                    "ok": f.name in res.paths,
                }
                for f in res.primary.source.files
            ]
            rejected = [{"path": str(p), "problem": why} for p, why in res.rejected]
            report.append(
                {
                    "name": name,
                    "ok": not res.missing,
                    "files": files,
                    "rejected": rejected,
                    "searched": [str(folder) for folder, _ in res.searched],
                }
            )
            # A named dataset must be complete; checking all, a dataset never downloaded is fine,
            # but a corrupt file anywhere is a failure.
            ok &= not res.missing if args.name else not res.rejected
            if not args.json:
                print(f"{name}: {'ok' if not res.missing else 'INCOMPLETE'}")
                for f in files:
                    print(
                        f"  {'ok     ' if f['ok'] else 'missing'} {f['file']}  {f['path']}".rstrip()
                    )
                for r in rejected:
                    print(f"  refused {r['path']}: {r['problem']}")
                if res.missing:
                    print(f"  searched: {', '.join(report[-1]['searched'])}")
                    print(f"  fix: `convkit data download {name}`, or place the files by hand")
        if args.json:
            _emit_json(report)
        return 0 if ok else 1
    # download
    data = load_dataset(args.name, args.data_dir)
    print(f"{args.name}: verified, {len(data.train):,} train and {len(data.test):,} test images")
    for path in data.files.values():
        print(f"  {path}")
    return 0


def _check_folder(args: argparse.Namespace) -> int:
    """`convkit data check PATH`: an image folder's classes, counts and unreadable files."""
    from convkit.data.folders import check_folder, format_table
    from convkit.models import model_info

    c, h, w = model_info(args.model).input_shape
    shape = (c, args.image_size, args.image_size) if args.image_size else (c, h, w)
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    report = check_folder(args.name, shape, fit=args.fit, log=log)
    if args.json:
        _emit_json(report.to_dict())
    else:
        print(format_table(report))
        print(f"Train on it: convkit train {args.model} --data {args.name}")
    return 1 if report.errors else 0


def _check_shards(args: argparse.Namespace) -> int:
    """`convkit data check OUT` on packed shards: every shard's size and SHA-256 against the
    index (what a copy to another machine may have broken)."""
    from convkit.data.shards import verify

    report = verify(args.name)
    if args.json:
        _emit_json(report)
    else:
        shape = "x".join(map(str, report["image_shape"]))
        print(f"{args.name}: packed shards of {', '.join(report['classes'])}, {shape} "
              f"({report['fit']})")  # fmt: skip
        for name, split in report["splits"].items():
            print(f"  {name}: {split['images']:,} images in {split['shards']} shards, "
                  f"{split['ok']} verified")  # fmt: skip
        for problem in report["problems"]:
            print(f"  {problem}")
    return 1 if report["problems"] else 0


def _pack(args: argparse.Namespace) -> int:
    """`convkit data pack FOLDER OUT`: the folder's converted images as tar shards, for the
    recipe's input, fit and validation split (train's options give them, as train would)."""
    from convkit.api import train_config
    from convkit.data.folders import load_folder
    from convkit.data.shards import pack
    from convkit.models import model_info

    settings = {"data": args.folder, "image_size": args.image_size, "fit": args.fit,
                "seed": args.seed, "val_split": args.val_split}  # fmt: skip
    cfg = train_config(args.recipe, settings={k: v for k, v in settings.items() if v is not None})
    c, h, w = model_info(cfg.model).input_shape
    shape = (c, cfg.image_size, cfg.image_size) if cfg.image_size else (c, h, w)
    found = load_folder(
        args.folder, shape, val_split=cfg.val_split, seed=cfg.seed, fit=cfg.fit, log=print
    )
    index = pack(
        found, args.out, fit=cfg.fit, val_split=cfg.val_split, shard_images=args.shard_images,
        log=print,
    )  # fmt: skip
    total = sum(s["bytes"] for shards in index["splits"].values() for s in shards)
    options = "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v in settings.items()
        if k != "data" and v is not None
    )
    print(
        f"Packed {args.folder} as {'x'.join(map(str, shape))} ({cfg.fit}) into {args.out}: "
        f"{total / 1e6:,.1f} MB. Train on it: convkit train {args.recipe} --data {args.out}"
        f"{options}; under torchrun each process reads only its own shards"
    )
    return 0


# ---- models and summary -------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from convkit.api import models

    _print_table(models(args.pattern), args.json)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from convkit.api import summary

    s = summary(args.model, input_shape=args.input_shape, num_classes=args.num_classes)
    if args.json:
        _emit_json(s.to_dict())
    else:
        print(s)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from convkit.api import explain

    arithmetic = explain(
        args.model, input_shape=args.input_shape, num_classes=args.num_classes,
        filters=args.filters, kernel=args.kernel, stride=args.stride, dilation=args.dilation,
        padding=args.padding,
    )  # fmt: skip
    if args.json:
        _emit_json(arithmetic.to_dict())
    else:
        print(arithmetic)
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from convkit.fileio import atomic_path
    from convkit.models import create_model
    from convkit.models.weights import compare, read_state_dict

    model = create_model(args.model, num_classes=args.num_classes, in_channels=args.in_channels)
    state = read_state_dict(args.file)
    report = compare(model, state)
    if args.json:
        _emit_json({"model": args.model, "file": args.file, **report.to_dict()})
    else:
        print(f"{args.file} -> {args.model}: {'fits' if report.ok else 'does not fit'}")
        for line in report.lines():
            print(f"  {line}")
    if not report.ok:
        return 1
    if args.save:
        from safetensors.torch import save_file

        model.load_state_dict(state)
        with atomic_path(args.save) as tmp:
            save_file(
                {k: v.contiguous() for k, v in model.state_dict().items()},
                str(tmp),
                metadata={"model": args.model},
            )
        if not args.json:
            print(f"  saved as {args.save}")
    return 0


# ---- train and evaluate -------------------------------------------------------------------------


_METAVARS = {int: "N", float: "X", str: "NAME"}


def _add_setting_flags(p: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    from convkit.train import TrainConfig

    group = p.add_argument_group(
        "settings (defaults < recipe < --config file < these flags; shown: the recipe's values)"
    )
    for f in dataclasses.fields(TrainConfig):
        if f.name == "recipe":
            continue
        kind = type(f.default)
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:  # --freeze / --no-freeze
            group.add_argument(
                flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                help=f"{f.metadata['help']} (default: {defaults.get(f.name, f.default)})",
            )  # fmt: skip
            continue
        group.add_argument(
            flag,
            dest=f.name,
            type=kind,
            default=None,
            choices=f.metadata.get("choices"),
            metavar=None if f.metadata.get("choices") else _METAVARS[kind],
            help=f"{f.metadata['help']} (default: {defaults.get(f.name, f.default)})",
        )


def cmd_recipes(args: argparse.Namespace) -> int:
    from convkit.api import recipes

    _print_table(recipes(), args.json)
    return 0


def _choices(setting: str) -> tuple[str, ...]:
    """The values a TrainConfig setting takes, for another command's flag of the same name."""
    from convkit.train import TrainConfig

    return next(f for f in dataclasses.fields(TrainConfig) if f.name == setting).metadata["choices"]


def cmd_train(args: argparse.Namespace) -> int:
    from convkit.api import draw_curves, train_config
    from convkit.train import TrainConfig, resume, train
    from convkit.train.engine import keep_freed_memory
    from convkit.train.progress import Progress

    keep_freed_memory()  # this process exists to train: reuse memory, never re-fault it

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name != "recipe" and getattr(args, f.name, None) is not None
    }
    # With --json, stdout carries only the JSON object; the human-readable lines go to stderr.
    progress = Progress(sys.stderr if args.json else sys.stdout, enabled=not args.quiet)
    source = dict(data_dir=args.data_dir, download=not args.no_download, progress=progress)
    try:
        if args.resume:
            if args.recipe or args.config:
                raise ConvkitError(
                    "--resume continues a run with its saved config; give no "
                    "RECIPE or --config with it"
                )
            result = resume(args.resume, overrides, started=_STARTED, **source)
        else:
            cfg = train_config(args.recipe, config=args.config, settings=overrides)
            result = train(cfg, out=args.out, started=_STARTED, **source)
    except KeyboardInterrupt:
        print(
            "\nInterrupted. Every finished epoch is saved: continue with "
            "`convkit train --resume RUN_DIR`.",
            file=sys.stderr,
        )
        return 130
    if result is None:
        return 0  # under torchrun, rank 0 reports for all processes
    if args.json:
        _emit_json(result)
    else:
        print(
            f"Run folder: {result['run_dir']} (train {result['train_seconds']:.1f}s, "
            f"total {result['seconds']:.1f}s)",
            flush=True,
        )
    draw_curves(result)  # after the result: matplotlib takes a second to load and draw
    if not args.json:
        print(f"See what it learned: convkit inspect {result['run_dir']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from convkit.train import evaluate_run
    from convkit.train.engine import keep_freed_memory

    keep_freed_memory()
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    result = evaluate_run(
        args.run,
        data_dir=args.data_dir,
        download=not args.no_download,
        started=_STARTED,
        tta=args.tta,
        log=log,
    )
    if args.json:
        _emit_json(result)
    else:
        from convkit.api import Evaluation

        print(Evaluation(result))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from convkit.inspect.report import SECTIONS, write_report
    from convkit.inspect.run import load_run

    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        raise ConvkitError(f"unknown section {unknown[0]!r}; sections: {', '.join(SECTIONS)}")
    sections = tuple(dict.fromkeys(args.sections)) or SECTIONS
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    lr = load_run(args.run, data_dir=args.data_dir, download=not args.no_download)
    out = Path(args.out) if args.out else lr.run.root / "inspect"
    log(f"Inspecting {lr.run.root} ({lr.cfg.model} on {lr.cfg.dataset}) into {out}")
    page = write_report(
        lr,
        out,
        sections,
        image_files=args.image,
        indices=args.index,
        layer=args.layer,
        target=args.target,
        limit=args.limit,
        log=log,
    )
    if args.json:
        _emit_json({"report": str(page), "folder": str(out), "sections": list(sections)})
    else:
        print(f"Report: {page}")
    return 0


# ---- robustness and compare --------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, received {text!r}"
        ) from None


def _sample(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of test images >= 1 or all, received {text!r}"
        )
    return value


def cmd_robustness(args: argparse.Namespace) -> int:
    from convkit.inspect.robustness import run_robustness, summary_rows

    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    if args.limit is not None and args.limit < 1:
        raise ConvkitError(f"expected --limit >= 1, received {args.limit}")
    report = run_robustness(
        args.run, out=args.out, only=_csv(args.only) if args.only else None,
        max_shift=args.max_shift,
        corruptions=None if args.corruptions is None else _csv(args.corruptions),
        angles=args.angles, scales=args.scales, baseline=args.baseline, images=args.images,
        seed=args.seed, sample=args.sample, limit=args.limit, data_dir=args.data_dir,
        download=not args.no_download, log=log,
    )  # fmt: skip
    if args.json:
        _emit_json(report)
        return 0
    rows = summary_rows(report)
    width = max(len(w) for w, _ in rows)
    for what, figure in rows:
        print(f"{what:<{width}}  {figure}")
    folder = Path(report["pictures"][0]).parent if report["pictures"] else None
    print(f"{report['images_scored']:,} images scored in {report['seconds']:.1f} s; saved in "
          f"{Path(report['run']) / 'robustness.json'}"
          + (f"; pictures in {folder}" if folder else ""))  # fmt: skip
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from convkit.inspect.compare import compare_runs

    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    table = compare_runs(args.runs)
    out = Path(args.out) if args.out else None
    if out is not None:
        from convkit.inspect import draw

        with_results = [(r["label"], r["robustness"]) for r in table if r["robustness"]]
        try:
            out.mkdir(parents=True, exist_ok=True)
            if with_results:
                path = draw.robustness_curves_figure(with_results, out / "compare.png")
                log(f"Picture: {path}")
            else:
                log("No run has robustness results to draw: run `convkit robustness RUN` first")
        except OSError as exc:
            raise ConvkitError(f"cannot write into {out}: {exc.strerror or exc}") from None
    if args.json:
        _emit_json([{k: v for k, v in r.items() if k != "robustness"} for r in table])
        return 0
    from convkit.inspect.compare import format_table

    print(format_table(table))
    return 0


# ---- use: predict and export -------------------------------------------------------------------


def cmd_predict(args: argparse.Namespace) -> int:
    from convkit.use.predict import Failure, find_images, open_predictor, predict_files

    if args.batch_size < 1:
        raise ConvkitError(f"expected --batch-size >= 1, received {args.batch_size}")
    predictor = open_predictor(args.run)
    files, failures = find_images(args.paths)
    for f in failures:
        print(f"convkit: {f.message}", file=sys.stderr)
    if not files:
        raise ConvkitError("no image files to predict; give files, folders or glob patterns")
    live = len(files) > 100 and sys.stderr.isatty()
    done = [0]

    def progress(n: int) -> None:
        done[0] += n
        if live:
            print(f"\r{done[0]:,}/{len(files):,} images", end="", file=sys.stderr, flush=True)

    rows, failed = [], len(failures)
    for item in predict_files(
        predictor, files, top_k=args.top_k, batch_size=args.batch_size,
        max_pixels=args.max_pixels, progress=progress,
    ):  # fmt: skip
        if isinstance(item, Failure):
            failed += 1
            print(f"{chr(13) if live else ''}convkit: {item.message}", file=sys.stderr)
        elif args.json:
            _emit_json(item.to_dict())
        elif args.csv:
            rows.append(item)
        else:
            top = "  ".join(f"{c} {p:.1%}" for c, p in item.top)
            print(f"{item.file}\t{top}", flush=True)
    if live:
        print(file=sys.stderr)
    if args.csv:
        _write_predictions_csv(args.csv, rows, args.top_k)
        print(f"{len(rows):,} predictions written to {args.csv}", file=sys.stderr)
    if failed:
        print(f"convkit: {failed:,} of {len(files) + len(failures):,} inputs could not be "
              "predicted (named above)", file=sys.stderr)  # fmt: skip
    return 1 if failed else 0


def _write_predictions_csv(path: str, rows: list, top_k: int) -> None:
    import csv

    from convkit.fileio import atomic_path

    k = max([len(r.top) for r in rows], default=top_k)
    header = ["file"] + [f"{w}_{i}" for i in range(1, k + 1) for w in ("class", "probability")]
    try:
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow([*header, "conversion"])
            for r in rows:
                out.writerow(
                    [r.file, *[v for c, p in r.top for v in (c, f"{p:.6f}")], r.conversion]
                )
    except OSError as exc:
        raise ConvkitError(f"cannot write --csv {path}: {exc.strerror or exc}") from None


def cmd_export(args: argparse.Namespace) -> int:
    from convkit.use.export import ATOL, export_onnx

    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    report = export_onnx(
        args.run, args.out, opset=args.opset, data_dir=args.data_dir,
        download=not args.no_download, atol=args.atol if args.atol is not None else ATOL, log=log,
    )  # fmt: skip
    if args.json:
        _emit_json(report.to_dict())
        return 0
    print(f"Predict with it: convkit predict {report.path} IMAGES...")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from convkit.serve import serve
    except ImportError as exc:
        raise ConvkitError(
            f"convkit serve needs the serve extra ({exc.name} is not installed): "
            "pip install 'convkit[serve]'"
        ) from None
    try:
        serve(args.paths or None, host=args.host, port=args.port, data_dir=args.data_dir)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # an address that does not resolve, or cannot be bound
        raise ConvkitError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
    return 0


# ---- parser -------------------------------------------------------------------------------------

# convkit.inspect.report's section names, written out so that building the parser imports
# neither torch nor matplotlib (a test checks that the two lists agree).
INSPECT_SECTIONS = (
    "curves",
    "confusion",
    "mistakes",
    "filters",
    "features",
    "patches",
    "attention",
    "robustness",
)
MAX_PIXELS = 50_000_000  # convkit.data.images.MAX_PIXELS, likewise
SAMPLE = 5_000  # convkit.inspect.robustness.SAMPLE, likewise


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convkit", description="Train, understand and use image classifiers."
    )
    from convkit import __version__

    parser.add_argument("--version", action="version", version=f"convkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_dir_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            help="folder searched first for datasets (then $CONVKIT_DATA, "
            "then the user cache); downloads go here when given",
        )

    p = sub.add_parser("data", help="list, check and download datasets")
    p.set_defaults(func=cmd_data)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("list", help="declared datasets and where their files are")
    a.add_argument("--json", action="store_true")
    data_dir_flag(a)
    a = actions.add_parser(
        "check",
        help="verify the files of one or all datasets, or report on an image folder",
        description="Verify a registered dataset's files (or all), or, given a folder of class "
        "folders, report its classes and counts and the files that cannot be read.",
    )
    a.add_argument("name", nargs="?", help="dataset name, or the path of an image folder")
    a.add_argument("--model", default="cifar10-cnn",
                   help="image folder: convert as this model's input (default cifar10-cnn)")  # fmt: skip
    a.add_argument("--image-size", type=int, default=0, metavar="N",
                   help="image folder: resize to N x N (default: the model's input)")  # fmt: skip
    a.add_argument("--fit", default="auto", choices=_choices("fit"),
                   help="image folder: how images of other shapes meet the input (as train's "
                        "--fit; default auto)")  # fmt: skip
    a.add_argument("--json", action="store_true")
    data_dir_flag(a)
    a = actions.add_parser(
        "pack",
        help="write an image folder's converted images as tar shards (for torchrun)",
        description="Convert FOLDER once for a model's input and write OUT: WebDataset-style "
        "tar shards of train, val (the training images' holdout, or val/) and test, and "
        "shards.json. `convkit train --data OUT` reads them; under torchrun, process r of w "
        "reads shards r, r+w, ... only.",
    )
    a.add_argument("folder", help="the image folder (one folder per class, or train/ test/)")
    a.add_argument("out", help="a new folder for the shards")
    a.add_argument("--recipe", default="cifar10-cnn",
                   help="convert for this recipe, as `convkit train RECIPE --data FOLDER` "
                        "would: its model's input, fit and validation split (default "
                        "cifar10-cnn)")  # fmt: skip
    a.add_argument("--image-size", type=int, default=None, metavar="N",
                   help="resize to N x N (default: the model's input)")  # fmt: skip
    a.add_argument("--fit", default=None, choices=_choices("fit"),
                   help="how images of other shapes meet the input (as train's --fit)")  # fmt: skip
    a.add_argument("--val-split", type=float, default=None, metavar="F",
                   help="share of the training images packed as val (default: the recipe's; "
                        "a val/ folder is packed instead)")  # fmt: skip
    a.add_argument("--seed", type=int, default=None,
                   help="the seed of the folder's split and order (as train's --seed)")  # fmt: skip
    a.add_argument("--shard-images", type=int, default=0, metavar="N",
                   help="images per shard (default: about 256 MB a shard); at least one "
                        "training shard per process")  # fmt: skip
    a = actions.add_parser("download", help="fetch a dataset from its mirrors (verified)")
    a.add_argument("name")
    data_dir_flag(a)

    p = sub.add_parser("models", help="registered models with their parameter counts")
    p.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'mnist-*'")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="layer-by-layer output shapes and parameters of a model")
    p.add_argument("model")
    p.add_argument(
        "--input-shape", type=_shape, metavar="C,H,W", help="input size (default: the model's)"
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser(
        "explain",
        help="conv arithmetic: shapes, padding, receptive fields, MACs per layer",
        description="Conv arithmetic of a registered MODEL, or of one layer: `convkit explain conv "
        "--input-shape 3,32,32 --filters 16 --kernel 2 --padding same` (or `explain pool`).",
    )
    p.add_argument("model", help="registered model, or `conv` / `pool` for a single layer")
    p.add_argument(
        "--input-shape", type=_shape, metavar="C,H,W", help="input size (default: the model's)"
    )
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--filters", type=int, default=16, help="conv: output channels (default 16)")
    p.add_argument("--kernel", type=int, default=3, help="conv/pool: window size (default 3)")
    p.add_argument("--stride", type=int, default=1, help="conv/pool: step in pixels (default 1)")
    p.add_argument("--dilation", type=int, default=1, help="conv: dilation (default 1)")
    p.add_argument("--padding", default="valid", help="same, valid or pixels (default valid)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser(
        "weights",
        help="check (and convert) a .pth or .safetensors state dict against a model",
        description="Load FILE (a .pth read with weights_only=True, or .safetensors) into MODEL "
        "and report missing, unexpected and mis-shaped keys; exit 1 when it does not fit.",
    )
    p.add_argument("model")
    p.add_argument("file")
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--in-channels", type=int, default=None)
    p.add_argument(
        "--save", metavar="OUT.safetensors", help="write the loaded weights as safetensors"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("recipes", help="the training recipes and what they reach")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_recipes)

    defaults: dict[str, Any] = {}
    if recipe:
        from convkit.train import RECIPES

        if recipe in RECIPES:
            defaults = RECIPES[recipe].config().to_dict()
    p = sub.add_parser(
        "train",
        help="train a recipe into a run folder",
        description="Train RECIPE into a run folder; every setting can be overridden.",
    )
    p.add_argument("recipe", nargs="?", help="recipe name (see `convkit recipes`)")
    p.add_argument("--config", help="TOML or JSON file of settings, applied over the recipe")
    p.add_argument("--out", help="run folder (default: runs/<recipe>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON result object on stdout (progress goes to stderr)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-download", action="store_true", help="never download missing data")
    data_dir_flag(p)
    _add_setting_flags(p, defaults)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "inspect",
        help="pictures of what a trained run learned, in a report folder with index.html",
        description="Write a report folder (default RUN/inspect) whose index.html shows, with "
        "captions: training curves, the confusion matrix, the most confident mistakes, the "
        "first layer's filters, feature maps, the patches each filter responds to most, and "
        "Grad-CAM / saliency. Name sections to make only those.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument(
        "sections", nargs="*", metavar="SECTION",
        help=f"any of: {', '.join(INSPECT_SECTIONS)} (default: all)",
    )  # fmt: skip
    p.add_argument(
        "--image", action="append", default=[], metavar="FILE",
        help="an image file of any size or mode, for feature maps and Grad-CAM (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--index", action="append", type=int, default=[], metavar="N",
        help="a test-set image by index (repeatable; default: 0 when no --image)",
    )  # fmt: skip
    p.add_argument("--layer", help="layer for 'patches' (default: the last convolution)")
    p.add_argument("--class", dest="target", metavar="NAME",
                   help="class for Grad-CAM and saliency (default: the predicted one)")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N test images (default: all)")  # fmt: skip
    p.add_argument("--out", help="report folder (default: RUN/inspect)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-download", action="store_true")
    data_dir_flag(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser(
        "predict",
        help="the top classes of image files, with a run or an exported .onnx file",
        description="Predict image files (any format Pillow reads, any size or mode, converted "
        "as the run's dataset stores images). PATH is a file, a folder (searched recursively "
        "for image files) or a glob pattern. A file that cannot be read is named with the "
        "reason on stderr; the others are still predicted, and the exit status is 1.",
    )
    p.add_argument("run", metavar="RUN", help="run folder, or a .onnx file from `convkit export`")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or globs")
    p.add_argument("--top-k", type=int, default=5, metavar="K", help="classes shown (default 5)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    out.add_argument("--csv", metavar="FILE", help="write the predictions to a CSV file")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="images per forward pass (default 256)")  # fmt: skip
    p.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                   help=f"refuse images larger than this, before decoding (default {MAX_PIXELS:,}"
                   "; decompression bombs)")  # fmt: skip
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "export",
        help="a run's model as one ONNX file, preprocessing included, checked before it is kept",
        description="Write the run's kept model as one self-contained ONNX file: input uint8 "
        "images (N, C, H, W) as the dataset stores them, output class probabilities; the "
        "scaling and normalisation are in the graph, and the classes in its metadata. The file "
        "is checked with onnxruntime against PyTorch on the run's test images; a disagreement "
        "beyond tolerance is an error and leaves no file. Needs: pip install 'convkit[export]'.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="the only format: onnx")
    p.add_argument("--out", metavar="FILE", help="where to write it (default: RUN/model.onnx)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--atol", type=float, default=None, metavar="X",
                   help="largest probability difference accepted (default 1e-4)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-download", action="store_true")
    data_dir_flag(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "serve",
        help="a local web page: draw a digit or upload a photo and watch the network see it",
        description="Serve a local web page over the runs found in RUN_OR_FOLDER (default: "
        "runs/): pick a run, draw a digit or upload an image, and see the top classes, "
        "Grad-CAM, the feature maps, the filters and the patches they respond to; a run still "
        "training updates after each epoch. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument(
        "paths", nargs="*", metavar="RUN_OR_FOLDER", help="run folders or folders of runs"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    data_dir_flag(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "robustness",
        help="the run's model on moved, turned, resized and corrupted copies of its test set",
        description="Score the run's kept model on transformed copies of its test set, made "
        "from a seed: every shift (dx, dy) up to --max-shift pixels (the grid, its mean, the "
        "accuracy per distance and the shift consistency), rotations, scales and common "
        "corruptions at 5 severities (MNIST-C's constants for grey images, CIFAR-10-C's for "
        "colour), with mCE against --baseline. Saves RUN/robustness.json and pictures.",
    )
    p.add_argument("run", help="run folder")
    p.add_argument("--max-shift", type=int, default=None, metavar="K",
                   help="largest shift in pixels (default 4 for 28x28 and 32x32)")  # fmt: skip
    p.add_argument("--only", metavar="TESTS",
                   help="comma-separated: shift, rotate, scale, corrupt (default: all)")  # fmt: skip
    p.add_argument("--corruptions", metavar="NAMES",
                   help="comma-separated corruption names, or none (default: the table's)")  # fmt: skip
    p.add_argument("--angles", type=_floats, metavar="A,B,...",
                   help="rotation angles in degrees, as --angles=-30,0,30 (default -45 to 45 in steps of 5)")  # fmt: skip
    p.add_argument("--scales", type=_floats, metavar="S,T,...",
                   help="scale factors (default 0.6 to 1.4 in steps of 0.1)")  # fmt: skip
    p.add_argument("--baseline", metavar="RUN",
                   help="a run of the same dataset: report mCE and relative mCE against it")  # fmt: skip
    p.add_argument("--images", metavar="FOLDER",
                   help="also score a folder of class folders (e.g. other writers' digits)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random transforms and the sample (default 0)")  # fmt: skip
    p.add_argument("--sample", type=_sample, default=SAMPLE, metavar="N|all",
                   help=f"make the transformed copies from N test images drawn at random "
                   f"(default {SAMPLE:,}; the clean accuracy is always on the whole test set); "
                   "all: from every test image, so the grid's centre is the test accuracy")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N test images (default: all)")  # fmt: skip
    p.add_argument("--out", help="picture folder (default: RUN/robustness)")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.add_argument("--no-download", action="store_true")
    data_dir_flag(p)
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser(
        "compare",
        help="runs side by side: model, parameters, accuracy, time, robustness",
        description="One table of runs (model, parameters, dataset, test accuracy, training "
        "time and, where `convkit robustness` has been run, shift mean, consistency and mCE); "
        "with --out, a picture of accuracy against shift distance, one line per run.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--out", help="folder for compare.png")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("evaluate", help="rebuild a run's model and measure it on the test set")
    p.add_argument("run", help="run folder")
    p.add_argument(
        "--tta",
        choices=_choices("tta"),
        help="test-time augmentation for this measurement (default: the run's own); the run "
        "folder is left as it is",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-download", action="store_true")
    data_dir_flag(p)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # An image folder's first decode may use processes: this program's entry point is guarded
    # (a worker process that re-imports it does not run a command). See data.folders._pool.
    os.environ.setdefault("CONVKIT_DECODE", "processes")
    # Two-stage parsing: `convkit train RECIPE --help` shows that recipe's values as defaults.
    recipe = (
        next((a for a in argv[1:] if not a.startswith("-")), None)
        if argv[:1] == ["train"]
        else None
    )
    parser = build_parser(recipe)
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "inspect" and not any(e.startswith("-") for e in extra):
        args.sections += extra  # section names given after options: `inspect RUN --limit 9 filters`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = args.func(args)
    except ConvkitError as exc:
        print(f"convkit: error: {exc}", file=sys.stderr)
        code = 2
    except BrokenPipeError:
        code = 0
    if "torch" in sys.modules:  # only a command that loaded torch can be in a process group
        from convkit.train.engine import exit_if_distributed

        exit_if_distributed(code)  # under torchrun only: see there why
    return code


if __name__ == "__main__":
    raise SystemExit(main())
