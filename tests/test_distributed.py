"""torchrun with 2 CPU processes (gloo): the same numbers as one process at the same global batch,
one writer and one progress bar, and a checkpoint that resumes on a different number of processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from convkit.cli import main

# LeNet-5 has no dropout, and fp32 with a constant rate keeps the runs comparable number for
# number: the two processes see the halves of the one process's batches.
SETTINGS = [
    "mnist-mlp",
    "--model",
    "lenet5",
    "--precision",
    "fp32",
    "--schedule",
    "constant",
    "--limit",
    "2000",
    "--batch-size",
    "64",
    "--quiet",
]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def close(a: list[dict], b: list[dict], keys=("loss", "accuracy", "val_loss", "val_accuracy")):
    assert [m["epoch"] for m in a] == [m["epoch"] for m in b]
    for ma, mb in zip(a, b, strict=True):
        for k in keys:
            assert ma[k] == pytest.approx(mb[k], rel=1e-4, abs=1e-6), (ma["epoch"], k)


def test_two_processes_match_one_and_resume_on_one(tmp_path, real_data, capsys):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "CONVKIT_DATA": str(real_data), "OMP_NUM_THREADS": "1"}
    ddp = tmp_path / "ddp"
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "convkit", "train"]
    done = subprocess.run(
        [*cmd, *SETTINGS, "--epochs", "1", "--out", str(ddp), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # Only rank 0 reports: one JSON object on stdout, saying 2 processes trained.
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["engine"]["world_size"] == 2 and result["engine"]["backend"] == "gloo"
    assert sorted(p.name for p in ddp.iterdir()) == sorted(
        [
            "config.json",
            "metrics.jsonl",
            "model.safetensors",
            "last.safetensors",
            "result.json",
            "curves.png",
        ]
    )

    # One process, same global batch, same seed: the same first epoch.
    one = tmp_path / "one"
    assert (
        main(["train", *SETTINGS, "--epochs", "2", "--out", str(one), "--data-dir", str(real_data)])
        == 0
    )
    close(metrics(ddp), metrics(one)[:1])

    # The 2-process checkpoint resumes in one process and continues as the one-process run did.
    assert (
        main(
            [
                "train",
                "--resume",
                str(ddp),
                "--epochs",
                "2",
                "--data-dir",
                str(real_data),
                "--quiet",
            ]
        )
        == 0
    )
    close(metrics(ddp), metrics(one))
    capsys.readouterr()


def test_each_process_gets_its_half_of_every_global_batch():
    import torch

    from convkit.data import Batches, Split

    split = Split(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10))
    with pytest.raises(ValueError, match="multiple of 2"):
        Batches(split, 5, shard=(0, 2))
    g = [torch.Generator().manual_seed(3) for _ in range(3)]
    whole = [y.tolist() for _, y in Batches(split, 4, shuffle=True, generator=g[0])]
    halves = [
        [y.tolist() for _, y in Batches(split, 4, shuffle=True, generator=g[r + 1], shard=(r, 2))]
        for r in (0, 1)
    ]
    assert [len(y) for y in halves[0]] == [2, 2, 1]  # batches of 4, 4, 2: the last splits 1 + 1
    for b, batch in enumerate(whole):
        assert halves[0][b] + halves[1][b] == batch


def test_the_run_folder_is_named_only_after_the_engine_joined_the_process_group(
    tmp_path, monkeypatch
):
    """Defect: under torchrun without --out, naming the run folder started a gloo group before
    the engine chose its backend, so on GPUs the group was gloo while result.json said nccl.
    Here the engine is made to want NCCL (as on a GPU); the first group started must be that."""
    import torch.distributed as dist
    from conftest import tiny_dataset

    from convkit.train import TrainConfig, engine, train

    started: list[str] = []

    class Stop(Exception):
        pass

    def record(backend=None, *args, **kwargs):
        started.append(backend)
        raise Stop  # one process cannot really join a group of two; what it asked is enough

    monkeypatch.setattr(dist, "init_process_group", record)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(engine, "backend_for", lambda device: "nccl")
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.from_dict({"model": "mnist-mlp", "epochs": 1, "precision": "fp32"})
    with pytest.raises(Stop):
        train(cfg, data=tiny_dataset())
    assert started == ["nccl"]
    assert not (tmp_path / "runs").exists(), "no folder before the process group exists"
