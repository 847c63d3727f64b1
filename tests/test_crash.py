"""Reliability of a real `convkit train` process: power cuts (SIGKILL at random moments and in
the middle of checkpoint writes) and a full disk. Nothing may leave a run that cannot be resumed
or evaluated, and a resumed run must end bit for bit where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from convkit.runs import Run
from convkit.train.checkpoint import load, read_metadata

pytestmark = pytest.mark.realdata
RECIPE = ["mnist-mlp", "--limit", "4000", "--epochs", "30", "--batch-size", "64"]
TIMING = ("seconds", "images_per_second")


def convkit(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "convkit", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def committed_epoch(run_dir: Path) -> int:
    run = Run(run_dir)
    return read_metadata(run_dir / "last.safetensors")["epoch"] if run.has_state else 0


def history(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in Run(run_dir).history()]


def check_recoverable(run_dir: Path) -> str:
    """The folder after a kill: absent, or a run that resumes (and evaluates once it has weights)."""
    if not run_dir.exists():
        return "no folder yet"
    run = Run.open(run_dir)
    run.config()
    run.history()
    if run.has_state:
        load(run_dir / "last.safetensors")  # checksum verified
    if run.has_weights:
        run.kept_model()
    return f"resumable after epoch {committed_epoch(run_dir)}"


# Kills at exact points, in the middle of a write (the file cut to half, then SIGKILL before its
# rename), between kills at random moments: during start-up, or at a random time within two
# epochs after the process printed its first epoch; the result's write last, as it comes last.
PLAN = [
    ("write", "config.json:1"),
    ("write", "model.safetensors:1"),  # from scratch: epoch 1 always improves on nothing
    ("startup", None),
    ("write", "last.safetensors:1"),
    ("training", None),
    ("startup", None),
    ("write", "metrics.jsonl:2"),
    ("training", None),
    ("write", "last.safetensors:3"),
    ("training", None),
    ("training", None),
    ("startup", None),
    ("write", "result.json:1"),
]


def kill_at_random(proc: subprocess.Popen, kind: str, epoch_seconds: float, rng) -> str:
    """SIGKILL `proc` at a random moment of its start-up, or of its training; says when."""
    if kind == "startup":
        delay = rng.uniform(0.2, 2.0)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        return f"{delay:.1f} s after start"
    for line in proc.stdout:  # the first finished epoch (printed once it is committed)
        if line.startswith("Epoch"):
            break
    delay = rng.uniform(0, 2 * epoch_seconds)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    return f"{delay:.2f} s after its first epoch"


def test_power_cuts_at_random_moments_leave_a_run_that_resumes_bit_for_bit(tmp_path, real_data):
    data = ["--data-dir", str(real_data)]
    code, _, err = finish(convkit("train", *RECIPE, *data, "--out", str(tmp_path / "full")))
    assert code == 0, err
    result = json.loads((tmp_path / "full" / "result.json").read_text())
    epoch_seconds = result["train_seconds"] / result["epochs"]

    run_dir, rng = tmp_path / "cut", random.Random(0)
    kills, log = 0, []
    for attempt in range(60):
        kind, spec = PLAN[attempt] if attempt < len(PLAN) else ("none", None)
        args = ["train", "--resume", str(run_dir)] if (run_dir / "config.json").exists() else [
            "train", *RECIPE, "--out", str(run_dir)
        ]  # fmt: skip
        before = committed_epoch(run_dir) if run_dir.exists() else 0
        env = {"CONVKIT_KILL_WRITING": spec} if kind == "write" else {}
        proc = convkit(*args, *data, env=env)
        where = f"in the write of {spec}"
        if kind in ("startup", "training"):
            where = kill_at_random(proc, kind, epoch_seconds, rng)
        code, out, err = finish(proc)
        if code == 0:
            break
        assert code == -signal.SIGKILL, f"attempt {attempt} failed on its own:\n{err}"
        kills += 1
        state = check_recoverable(run_dir)
        log.append(f"kill {kills} ({where}; had resumed after epoch {before}): {state}")
    print("\n".join(log))
    assert code == 0 and kills >= 10, log

    assert history(run_dir) == history(tmp_path / "full")
    for name in ("model.safetensors", "last.safetensors"):
        a, b = load(run_dir / name)[0], load(tmp_path / "full" / name)[0]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    cut, full = (json.loads((d / "result.json").read_text()) for d in (run_dir, tmp_path / "full"))
    assert (cut["test_accuracy"], cut["test_loss"]) == (full["test_accuracy"], full["test_loss"])
    assert not list(run_dir.glob(".*.tmp")), "a resume clears what killed writes left"


# ---- a full disk --------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 24 MB tmpfs mounted for the test (needs root, as CI has)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        msg = f"cannot mount a tmpfs here (root needed): {done.stderr.decode().strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
                f.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_stops_with_one_clear_error_and_the_last_checkpoint_resumes(
    small_disk, real_data
):
    data = ["--data-dir", str(real_data)]
    run_dir = small_disk / "run"
    code, _, err = finish(convkit("train", *RECIPE, "--epochs", "1", *data, "--out", str(run_dir)))
    assert code == 0, err
    filler = fill(small_disk)

    code, _, err = finish(convkit("train", "--resume", str(run_dir), "--epochs", "3", *data))
    assert code == 2 and "Traceback" not in err
    assert f"cannot write {run_dir}/" in err and "No space left on device" in err
    assert f"the filesystem holding {run_dir} is full" in err
    assert f"convkit train --resume {run_dir}" in err
    assert not list(run_dir.glob(".*.tmp")), "a failed write leaves no temporary file"
    assert committed_epoch(run_dir) == 1

    # A new run on the full disk: refused, and no folder is left behind.
    code, _, err = finish(convkit("train", *RECIPE, *data, "--out", str(small_disk / "new")))
    assert code == 2 and f"cannot write {small_disk / 'new'}" in err and "Traceback" not in err
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "run"]

    # The last good checkpoint evaluates and, with space again, resumes to the end.
    code, out, err = finish(convkit("evaluate", str(run_dir), *data))
    assert code == 0 and "Test accuracy" in out, err
    filler.unlink()
    code, out, err = finish(convkit("train", "--resume", str(run_dir), "--epochs", "3", *data))
    assert code == 0 and "after epoch 1 of 3" in out, err
    assert [m["epoch"] for m in Run(run_dir).history()] == [1, 2, 3]
