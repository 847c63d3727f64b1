"""End to end on a real-MNIST subset: train, evaluate, resume, the run folder and the CLI's JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import convkit.train.runner as runner
from convkit.cli import main
from convkit.train.checkpoint import load

QUICK = ["--limit", "3000", "--epochs", "2", "--batch-size", "64"]

RESULT_KEYS = {
    "test_accuracy",
    "test_loss",
    "epochs",
    "train_seconds",
    "seconds",
    "params",
    "run_dir",
}


def run_cli(capsys, *argv) -> tuple[int, dict | None, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None), out, err


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def drop_timing(ms: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in ms]


def test_train_json_run_folder_and_evaluate(capsys, tmp_path, real_data):
    out_dir = tmp_path / "run"
    code, result, out, err = run_cli(
        capsys,
        "train",
        "mnist-mlp",
        *QUICK,
        "--data-dir",
        str(real_data),
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0
    assert len(out.strip().splitlines()) == 1, "with --json stdout holds only the JSON object"
    assert RESULT_KEYS <= result.keys()
    assert 0.8 < result["test_accuracy"] <= 1 and result["epochs"] == 2
    assert result["params"] == 669_706 and result["run_dir"] == str(out_dir)
    assert 0 < result["train_seconds"] < result["seconds"]
    assert "Epoch 2/2" in err and "Test accuracy:" in err and "\r" not in err  # not a terminal
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "config.json",
        "curves.png",
        "last.safetensors",
        "metrics.jsonl",
        "model.safetensors",
        "result.json",
    ]
    assert (out_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out_dir / "result.json").read_text())
    assert saved["test_accuracy"] == result["test_accuracy"]
    assert saved["versions"]["torch"] and saved["machine"]["cpu_count"] and "commit" in saved["git"]
    assert len(metrics(out_dir)) == 2
    weights, meta = load(out_dir / "model.safetensors")
    assert meta["config"]["limit"] == 3000 and "dense_1.weight" in weights
    assert meta["epoch"] == result["best_epoch"]

    code, ev, out, _ = run_cli(
        capsys, "evaluate", str(out_dir), "--data-dir", str(real_data), "--json"
    )
    assert code == 0 and RESULT_KEYS <= ev.keys()
    assert ev["test_accuracy"] == result["test_accuracy"]
    assert ev["test_loss"] == pytest.approx(result["test_loss"], rel=1e-6)
    assert len(out.strip().splitlines()) == 1

    code, _, out, _ = run_cli(capsys, "evaluate", str(out_dir), "--data-dir", str(real_data))
    assert f"Test accuracy: {100 * result['test_accuracy']:.4f}%" in out

    # the same weights measured with other views; the run folder keeps its own setting
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}
    code, flip, _, _ = run_cli(
        capsys, "evaluate", str(out_dir), "--tta", "flip", "--data-dir", str(real_data), "--json"
    )
    assert code == 0 and ev["tta"] == "none" and flip["tta"] == "flip"
    assert flip["test_loss"] != pytest.approx(ev["test_loss"], rel=1e-3)  # mirrored digits count
    assert 0.5 < flip["test_accuracy"] <= 1
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    code, _, out, _ = run_cli(
        capsys, "evaluate", str(out_dir), "--tta", "flip", "--data-dir", str(real_data)
    )
    assert "test set (test-time augmentation: flip)" in out
    assert f"Test accuracy: {100 * flip['test_accuracy']:.4f}%" in out
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", str(out_dir), "--tta", "sideways"])
    assert exited.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "schedule",
    [
        ["--schedule", "cosine"],  # stepped per batch
        ["--schedule", "plateau"],  # stepped per epoch on the val loss
        [
            "--schedule",
            "step",
            "--augment",
            "crop-flip",
            "--normalize",
            "standardize",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
        ],  # augmentation draws from its own generator
    ],
    ids=["cosine", "plateau", "step-augment"],
)
def test_same_seed_same_metrics_and_interrupted_run_resumes_exactly(
    capsys, tmp_path, real_data, monkeypatch, schedule
):
    common = [
        "train",
        "mnist-mlp",
        *QUICK,
        "--epochs",
        "3",
        *schedule,
        "--data-dir",
        str(real_data),
        "--json",
    ]
    code, full, *_ = run_cli(capsys, *common, "--out", str(tmp_path / "full"))
    assert code == 0

    # Interrupt the second run during its second epoch, as Ctrl-C would.
    real_epoch, calls = runner.train_one_epoch, []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(runner, "train_one_epoch", interrupt_second)
    code, _, _, err = run_cli(capsys, *common, "--out", str(tmp_path / "cut"))
    assert code == 130 and "--resume" in err
    assert len(metrics(tmp_path / "cut")) == 1 and not (tmp_path / "cut" / "result.json").exists()
    monkeypatch.setattr(runner, "train_one_epoch", real_epoch)

    code, resumed, _, err = run_cli(
        capsys, "train", "--resume", str(tmp_path / "cut"), "--data-dir", str(real_data), "--json"
    )
    assert code == 0 and "Resuming" in err and "after epoch 1 of 3" in err
    assert drop_timing(metrics(tmp_path / "cut")) == drop_timing(metrics(tmp_path / "full"))
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert resumed["test_loss"] == full["test_loss"]


def test_resume_can_extend_a_finished_run(capsys, tmp_path, real_data):
    out_dir = tmp_path / "run"
    base = ["--data-dir", str(real_data), "--json"]
    assert (
        run_cli(
            capsys, "train", "mnist-mlp", *QUICK, "--epochs", "1", "--out", str(out_dir), *base
        )[0]
        == 0
    )
    code, result, *_ = run_cli(capsys, "train", "--resume", str(out_dir), "--epochs", "2", *base)
    assert code == 0 and result["epochs"] == 2
    assert [m["epoch"] for m in metrics(out_dir)] == [1, 2]
    assert json.loads((out_dir / "config.json").read_text())["epochs"] == 2


def test_training_into_an_existing_run_is_refused(capsys, tmp_path, real_data):
    out_dir = tmp_path / "run"
    args = [
        "train",
        "mnist-mlp",
        *QUICK,
        "--epochs",
        "1",
        "--data-dir",
        str(real_data),
        "--out",
        str(out_dir),
        "--quiet",
    ]
    assert run_cli(capsys, *args)[0] == 0
    code, _, _, err = run_cli(capsys, *args)
    assert code == 2 and "already holds a run; resume it with --resume" in err


def test_bad_run_folders_and_settings(capsys, tmp_path):
    code, _, _, err = run_cli(capsys, "evaluate", str(tmp_path))
    assert code == 2 and f"{tmp_path} is not a run folder with weights" in err
    code, _, _, err = run_cli(capsys, "train", "--resume", str(tmp_path))
    assert code == 2 and "is not a resumable run folder" in err
    code, _, _, err = run_cli(capsys, "train", "mnist-mlp", "--lr", "-1")
    assert code == 2 and "expected lr > 0, received lr=-1.0" in err
    code, _, _, err = run_cli(capsys, "train", "no-such-recipe")
    assert code == 2 and "unknown recipe 'no-such-recipe'" in err


def test_missing_data_is_one_clear_message(capsys, tmp_path):
    code, _, _, err = run_cli(
        capsys,
        "train",
        "mnist-mlp",
        "--data-dir",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2
    assert "mnist: 4 of 4 files not found" in err and "To place the files by hand" in err
    assert "Traceback" not in err


def test_help_shows_the_recipe_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "mnist-mlp", "--help"])
    out = capsys.readouterr().out
    assert "--batch-size" in out and "(default: 128)" in out and "--val-split" in out


def test_console_script_and_module_entry_points():
    script = Path(sys.executable).parent / "convkit"  # installed by pip into the venv
    for cmd in ([str(script)], [sys.executable, "-m", "convkit"]):
        proc = subprocess.run(
            [*cmd, "models", "--json"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        assert "mnist-mlp" in [m["name"] for m in json.loads(proc.stdout)]


def test_cifar_resnet_recipe_end_to_end(capsys, tmp_path, real_cifar):
    out_dir = tmp_path / "run"
    code, result, _, err = run_cli(
        capsys,
        "train",
        "resnet20",
        "--limit",
        "600",
        "--epochs",
        "2",
        "--data-dir",
        str(real_cifar),
        "--out",
        str(out_dir),
        "--json",
    )
    assert code == 0 and result["params"] == 269_722 and result["epochs"] == 2
    assert result["config"]["augment"] == "crop-flip" and result["config"]["keep"] == "last"
    _, meta = load(out_dir / "model.safetensors")
    assert len(meta["normalization"]["mean"]) == 3 and meta["epoch"] == 2
    # evaluate rebuilds the same preprocessing from the run folder
    code, ev, _, _ = run_cli(
        capsys, "evaluate", str(out_dir), "--data-dir", str(real_cifar), "--json"
    )
    assert code == 0 and ev["test_accuracy"] == result["test_accuracy"]


def test_the_command_line_starts_without_torch_or_matplotlib():
    """Building the parser (`convkit --help`, any command's --help) imports neither torch nor
    matplotlib: a second of start-up that only the commands doing the work should pay."""
    code = (
        "import sys\n"
        "from convkit.cli import build_parser\n"
        "for argv in (['--help'], ['train', '--help'], ['inspect', '--help'], ['predict', '--help']):\n"
        "    try:\n"
        "        build_parser().parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = sorted(m for m in ('torch', 'matplotlib', 'numpy', 'PIL') if m in sys.modules)\n"
        "print('heavy:', ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "heavy: "


def test_the_parsers_copies_of_names_and_limits_agree_with_their_modules():
    from convkit import cli
    from convkit.data.images import MAX_PIXELS
    from convkit.inspect.report import SECTIONS
    from convkit.inspect.robustness import SAMPLE

    assert cli.INSPECT_SECTIONS == SECTIONS
    assert cli.MAX_PIXELS == MAX_PIXELS
    assert cli.SAMPLE == SAMPLE
    import inspect

    from convkit.api import Run

    assert inspect.signature(Run.robustness).parameters["sample"].default == SAMPLE


def test_training_and_resuming_never_import_torch_dynamo(tmp_path):
    """torch.optim imports torch._dynamo (1 s) on first use; convkit's optimizers and schedules
    do not, so neither training (with a schedule) nor a resume pays for it."""
    tests = Path(__file__).parent
    code = (
        "import sys\n"
        f"sys.path.insert(0, {str(tests)!r})\n"
        "from conftest import tiny_dataset\n"
        "from convkit.train import TrainConfig, resume, train\n"
        "from convkit.train.progress import Progress\n"
        "cfg = TrainConfig.from_dict({'model': 'mnist-fast', 'epochs': 1, 'schedule': 'linear',\n"
        "                             'val_split': 0.0, 'keep': 'last'})\n"
        f"out = {str(tmp_path / 'run')!r}\n"
        "train(cfg, data=tiny_dataset(), out=out, progress=Progress(enabled=False))\n"
        "resume(out, {'epochs': 2}, data=tiny_dataset(), progress=Progress(enabled=False))\n"
        "print('dynamo:', 'torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "dynamo: False"


def test_the_fast_recipes_say_what_they_measured(capsys):
    assert main(["recipes", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in ("mnist-fast", "cifar10-quick", "cifar10-fast"):
        assert rows[name]["settings"]["val_split"] == 0.0  # a fixed schedule holds nothing out
        assert "seeds 0-" in rows[name]["measured"] and "GFLOP/s" in rows[name]["measured"]
        assert "No validation split" in rows[name]["description"]
