"""Shared fixtures: fake datasets in the real formats, isolation from the network and the user's
cache, and the real datasets for end-to-end tests (skipped where absent, required under CI)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from convkit.data.catalog import MNIST, DatasetSpec, FileSpec, Source

REPO = Path(__file__).resolve().parents[1]
# Read before any fixture touches the environment: where the real datasets are.
_REAL_ROOTS = [Path(p) for p in os.environ.get("CONVKIT_DATA", "").split(os.pathsep) if p.strip()]
_REAL_ROOTS.append(REPO.parent / "shared" / "data")


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """No test reads the user's cache or CONVKIT_DATA, and none downloads unless it says so."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("CONVKIT_DATA", raising=False)
    monkeypatch.setenv("CONVKIT_OFFLINE", "1")
    # Each test has its own cache folder, so a tensor cache would only cost a write each time;
    # tests of the cache turn it on themselves.
    monkeypatch.setenv("CONVKIT_TENSOR_CACHE", "0")


def _real_root(name: str, probe: str) -> Path:
    for root in _REAL_ROOTS:
        if (root / name / probe).is_file():
            return root
    where = ", ".join(str(r) for r in _REAL_ROOTS)
    msg = (
        f"real {name} not found (looked in {where}); set CONVKIT_DATA to the folder holding {name}/"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"under CI the real datasets are required: {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def real_data() -> Path:
    """A data root holding the real MNIST files."""
    return _real_root("mnist", "train-images-idx3-ubyte.gz")


# ---- fake IDX files -----------------------------------------------------------------------------


def idx_bytes(array: np.ndarray, code: int = 0x08, magic: int | None = None) -> bytes:
    """Serialize `array` as IDX: two zero bytes, dtype code, ndim, big-endian dims, data."""
    header = (magic if magic is not None else (code << 8) | array.ndim).to_bytes(4, "big")
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + dims + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path: Path, data: bytes, gz: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def fake_mnist_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def file_spec(path: Path) -> FileSpec:
    data = path.read_bytes()
    return FileSpec(
        path.name, len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()
    )


def make_fake_mnist(root: Path, n_train: int = 60, n_test: int = 20, **spec_changes) -> DatasetSpec:
    """Write four small MNIST-format files under root/<folder>/; return a spec that declares them."""
    folder = spec_changes.get("folder", "fake-mnist")
    files = []
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = fake_mnist_arrays(n, seed)
        files.append(write(root / folder / f"{prefix}-images-idx3-ubyte.gz", idx_bytes(images)))
        files.append(write(root / folder / f"{prefix}-labels-idx1-ubyte.gz", idx_bytes(labels)))
    changes = dict(
        name="fake-mnist",
        sources=(Source(folder, "idx", tuple(file_spec(f) for f in files)),),
        train_size=n_train,
        test_size=n_test,
        mirrors=("http://127.0.0.1:9/",),
    )
    changes.update({k: v for k, v in spec_changes.items() if k != "folder"})
    return dataclasses.replace(MNIST, **changes)


@pytest.fixture(scope="session")
def real_cifar() -> Path:
    """A data root holding the real CIFAR-10 binary version."""
    return _real_root("cifar-10", "cifar-10-batches-bin/test_batch.bin")


# ---- fake CIFAR-10 files ------------------------------------------------------------------------

CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def cifar_arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 3, 32, 32) uint8 and labels, distinct per seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(
        0, 10, n, dtype=np.uint8
    )


def cifar_bin_bytes(images: np.ndarray, labels: np.ndarray) -> bytes:
    """The official binary layout: per record 1 label byte, then the R, G and B planes."""
    return np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1).tobytes()


def make_fake_cifar_bin(root: Path, n: int = 4, meta: str | None = None) -> Path:
    folder = root / "cifar-10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(CIFAR_BATCHES):
        (folder / f"{name}.bin").write_bytes(cifar_bin_bytes(*cifar_arrays(n, i)))
    from convkit.data.catalog import CIFAR10

    (folder / "batches.meta.txt").write_text(
        meta if meta is not None else "\n".join(CIFAR10.classes) + "\n\n"
    )
    return folder


def fake_cifar_spec(folder: Path, n: int = 4, kind: str = "bin", **changes) -> DatasetSpec:
    """CIFAR10's spec with sizes and checksums of the fake files in `folder`."""
    from convkit.data.catalog import CIFAR10

    source = CIFAR10.sources[0 if kind == "bin" else 1]
    suffix = ".bin" if kind == "bin" else ""
    files = tuple(file_spec(folder / f"{b}{suffix}") for b in CIFAR_BATCHES)
    if kind == "py":
        files += (file_spec(folder / "batches.meta"),)
    source = dataclasses.replace(source, files=files, **changes)
    return dataclasses.replace(
        CIFAR10, name="fake-cifar", sources=(source,), train_size=5 * n, test_size=n
    )


# ---- tiny in-memory datasets for the runner -----------------------------------------------------


def tiny_dataset(n_train: int = 240, n_test: int = 60, seed: int = 0, classes: int = 4):
    """A learnable MNIST-shaped Dataset made in memory: class k is a bright bar in row band k,
    plus noise. Trains to high accuracy in a few tiny epochs; no files, no network."""
    import torch

    from convkit.data.arrays import Dataset, Split

    def split(n: int, s: int) -> Split:
        g = torch.Generator().manual_seed(s)
        labels = torch.randint(0, classes, (n,), generator=g)
        images = torch.randint(0, 60, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
        for k in range(classes):
            rows = slice(3 + 6 * k, 6 + 6 * k)
            images[labels == k, :, rows, 4:24] = 230
        return Split(images, labels)

    spec = dataclasses.replace(
        MNIST,
        name="tiny",
        classes=tuple(f"bar{k}" for k in range(classes)),
        train_size=n_train,
        test_size=n_test,
    )
    return Dataset(spec, split(n_train, seed), split(n_test, seed + 1), {})
