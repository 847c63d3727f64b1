"""Property tests: every parser of outside input, given ANY bytes, returns a valid result or raises
convkit's own error (ConvkitError: DataError, ConfigError), within a time and a memory bound.

Each test mixes raw bytes (st.binary) with files that start valid (made by the real writers:
gzip, tarfile, pickle, torch.save, safetensors, Pillow) and are then mutated: bytes flipped or
set, 32-bit header fields set to edge values, the file cut short or spliced. Raw bytes alone
never get past a magic number.

* examples per test: CONVKIT_FUZZ_EXAMPLES (default 300: the file runs in well under a minute
  on 2 cores); `make fuzz` runs a long campaign of 20,000.
* time: each parse must finish within FUZZ_DEADLINE_MS (the best of three runs when over).
* memory: the process's peak RSS may grow by at most MAX_RSS_GROWTH_MB over each test, and the
  parsers that take a size limit are given a small one, checked against their result.
* no example database (database=None); Hypothesis's caches go to .hypothesis/, which git ignores.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import json
import math
import os
import pickle
import resource
import shutil
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save as safetensors_bytes

from convkit.data.archives import safe_extract
from convkit.data.cifar import RECORD, meta_names_bin, meta_names_py, read_cifar_bin, read_cifar_py
from convkit.data.idx import parse_idx, read_bytes
from convkit.data.images import load_image
from convkit.errors import ConvkitError
from convkit.models.weights import read_state_dict
from convkit.train import checkpoint
from convkit.train.config import TrainConfig, read_config_file

EXAMPLES = int(os.environ.get("CONVKIT_FUZZ_EXAMPLES", "300"))
FUZZ_DEADLINE_MS = 500  # per example; the slowest parser (Pillow, torch.load) takes ~10 ms
MAX_RSS_GROWTH_MB = 300  # the inputs are KBs: parsing them takes MBs; a bomb takes GBs
ADDRESS_HEADROOM_GB = 4
GZ_LIMIT = 64 << 10  # read_bytes's max_size here: bombs are cheap to make at this size
IMAGE_PIXELS = 1_000_000  # load_image's max_pixels here: a 1 MP decode takes ~10 ms

settings.register_profile(
    "convkit-fuzz",
    max_examples=EXAMPLES,
    deadline=None,  # parses() bounds the time of each call, see there
    database=None,
    # the autouse fixtures (memory bound, isolation) run once per test, on purpose
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
fuzz = settings.get_profile("convkit-fuzz")  # applied per test: loading it would change all


@pytest.fixture(autouse=True)
def _memory_bound():
    """Peak RSS may grow by MAX_RSS_GROWTH_MB over a test. As a safety net for the machine, the
    address space may grow by ADDRESS_HEADROOM_GB at most meanwhile (Linux), so a memory bomb
    that slipped in fails with MemoryError instead of bringing down CI."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    limits = resource.getrlimit(resource.RLIMIT_AS)
    statm = Path("/proc/self/statm")
    if statm.exists():
        in_use = int(statm.read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = in_use + (ADDRESS_HEADROOM_GB << 30)
        if limits[0] == resource.RLIM_INFINITY or cap < limits[0]:
            resource.setrlimit(resource.RLIMIT_AS, (cap, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale - before) / 2**20
    assert grown < MAX_RSS_GROWTH_MB, f"peak memory grew by {grown:.0f} MB"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def parses(call, name: str):
    """call()'s result, or None when it raised convkit's error (which must name the file);
    any other exception propagates and fails the test. A call over the deadline is timed twice
    more, and fails only if every run is over: a parser that is slow on an input is slow each
    time, while a shared CI machine stalls now and then (hypothesis's own deadline, which
    fails on one stall, is off)."""
    start = time.perf_counter()
    try:
        result = call()
        event("parsed")
    except ConvkitError as err:
        assert name in str(err), f"the error does not name {name}: {err}"
        event(f"refused: {type(err).__name__}")
        result = None
    times = [time.perf_counter() - start]
    while min(times) > FUZZ_DEADLINE_MS / 1000 and len(times) < 3:
        start = time.perf_counter()
        with contextlib.suppress(Exception):
            call()
        times.append(time.perf_counter() - start)
    assert min(times) <= FUZZ_DEADLINE_MS / 1000, f"too slow: {times} s"
    return result


# ---- mutations ----------------------------------------------------------------------------------

EDGE32 = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 1]


@st.composite
def mutated(draw, valid: st.SearchStrategy[bytes], max_edits: int = 4) -> bytes:
    """A file from `valid`, then up to `max_edits` edits, half of them in its first 64 bytes
    (where headers are)."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(0, max_edits))):
        n = len(data)
        pos = draw(st.integers(0, min(n, 64)) | st.integers(0, n))
        kind = draw(st.sampled_from(["flip", "byte", "u32", "cut", "insert", "delete"]))
        if kind == "flip" and pos < n:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and pos < n:
            data[pos] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]) | st.integers(0, 255))
        elif kind == "u32":
            value = draw(st.sampled_from(EDGE32) | st.integers(0, 2**32 - 1))
            data[pos : pos + 4] = value.to_bytes(4, draw(st.sampled_from(["big", "little"])))
        elif kind == "cut":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
    return bytes(data)


def seeded_bytes(n: int, seed: int) -> bytes:
    """n pseudo-random bytes: a large payload without spending hypothesis's data on it."""
    return np.random.default_rng(seed).bytes(n)


SEEDS = st.integers(0, 2**32 - 1)

# ---- IDX ----------------------------------------------------------------------------------------

IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@st.composite
def idx_files(draw) -> bytes:
    """IDX files whose header fields take edge values too: dimensions of 0 beside 2^31 ones,
    dozens of dimensions. Data follows when the declared size is small."""
    code = draw(st.sampled_from(sorted(IDX_DTYPES)))
    huge = st.sampled_from([2**31, 2**32 - 1])
    dims = draw(
        st.lists(st.integers(0, 6) | st.sampled_from(EDGE32) | huge, min_size=1, max_size=4)
        | st.integers(30, 80).flatmap(
            lambda n: st.lists(st.sampled_from([0, 1, 2]), min_size=n, max_size=n)
        )
    )
    size = math.prod(dims) * np.dtype(IDX_DTYPES[code]).itemsize
    if size > 1 << 16:
        size = draw(st.integers(0, 64))
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + seeded_bytes(size, draw(SEEDS))


def check_idx(array: np.ndarray, data: bytes) -> None:
    ndim = data[3]
    assert isinstance(array, np.ndarray) and array.ndim == ndim
    assert array.dtype == np.dtype(IDX_DTYPES[data[2]])
    assert array.nbytes == len(data) - 4 - 4 * ndim  # the data, no more, no less


@fuzz
@given(st.binary(max_size=64) | mutated(idx_files()))
def test_parse_idx(data):
    array = parses(lambda: parse_idx(data, "fuzz-idx"), "fuzz-idx")
    if array is not None:
        check_idx(array, data)


GZ = (
    mutated(idx_files().map(lambda b: gzip.compress(b, mtime=0)))
    | st.binary(max_size=64).map(lambda b: b"\x1f\x8b" + b)
    | st.lists(idx_files(), min_size=2, max_size=3).map(
        lambda files: b"".join(gzip.compress(f, mtime=0) for f in files)  # multi-member
    )
    # bombs: zeros that inflate past GZ_LIMIT (up to 6x) from a few hundred bytes
    | mutated(st.integers(0, 6 * GZ_LIMIT).map(lambda n: gzip.compress(bytes(n), 9)), 1)
)


@fuzz
@given(GZ)
def test_read_bytes_gz(workdir, data):
    path = workdir / "fuzz-idx3-ubyte.gz"
    path.write_bytes(data)
    out = parses(lambda: read_bytes(path, max_size=GZ_LIMIT), path.name)
    if out is not None:
        assert isinstance(out, bytearray) and len(out) <= GZ_LIMIT


# ---- CIFAR binary -------------------------------------------------------------------------------


@st.composite
def cifar_bin_files(draw) -> bytes:
    n = draw(st.integers(0, 3))
    labels = draw(st.lists(st.integers(0, 12), min_size=n, max_size=n))
    pixels = seeded_bytes(n * (RECORD - 1), draw(SEEDS))
    return b"".join(
        bytes([label]) + pixels[i * (RECORD - 1) : (i + 1) * (RECORD - 1)]
        for i, label in enumerate(labels)
    )


@fuzz
@given(st.binary(max_size=64) | mutated(cifar_bin_files()))
def test_read_cifar_bin(workdir, data):
    path = workdir / "data_batch_1.bin"
    path.write_bytes(data)
    got = parses(lambda: read_cifar_bin(path), path.name)
    if got is not None:
        images, labels = got
        assert images.shape == (len(data) // RECORD, 3, 32, 32) and images.dtype == np.uint8
        assert labels.shape == (len(images),) and labels.dtype == np.uint8
        assert labels.max(initial=0) < 10
    names = parses(lambda: meta_names_bin(path), path.name)
    assert names is None or all(isinstance(n, str) and n for n in names)


# ---- CIFAR python (pickles) ---------------------------------------------------------------------

KEYS = st.sampled_from(
    [b"data", b"labels", "data", "labels", b"label_names", b"filenames", b"\xff\xfe", 7, None]
) | st.binary(max_size=6)
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.binary(max_size=12)
    | st.text(max_size=12)
)


@st.composite
def arrays(draw) -> np.ndarray:
    dtype = draw(st.sampled_from(["u1", "i8", "f4", "O", "U3", ">u2"]))
    rows = draw(st.integers(0, 3))
    shape = draw(st.sampled_from([(rows, RECORD - 1), (rows,), (rows, 2, 2), ()]))
    a = np.frombuffer(seeded_bytes(math.prod(shape) * 8, draw(SEEDS)), np.uint8)
    return a[: math.prod(shape)].reshape(shape).astype(dtype)


VALUES = st.recursive(
    LEAVES | arrays(),
    lambda kids: (
        st.lists(kids, max_size=4) | st.tuples(kids, kids) | st.dictionaries(KEYS, kids, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def cifar_pickles(draw) -> bytes:
    n = draw(st.integers(0, 3))
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"data": np.frombuffer(seeded_bytes(n * (RECORD - 1), draw(SEEDS)), np.uint8).reshape(
            n, RECORD - 1
        ),
        b"labels": draw(st.lists(st.integers(-1, 11), min_size=n, max_size=n)),
        b"label_names": [b"airplane", b"automobile"],
    }
    for key in draw(st.lists(st.sampled_from(list(batch)), max_size=2)):
        if draw(st.booleans()):
            batch.pop(key, None)
        else:
            batch[key] = draw(VALUES)
    obj = batch if draw(st.integers(0, 9)) else draw(VALUES)
    return pickle.dumps(obj, protocol=draw(st.integers(0, 5)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # protocol 0's "\\q" escapes
@fuzz
@given(
    st.binary(max_size=64)
    | st.binary(max_size=64).map(lambda b: b"\x80\x02" + b)
    | mutated(cifar_pickles())
)
def test_cifar_pickles(workdir, data):
    path = workdir / "data_batch_1"
    path.write_bytes(data)
    got = parses(lambda: read_cifar_py(path), path.name)
    if got is not None:
        images, labels = got
        assert images.ndim == 4 and images.shape[1:] == (3, 32, 32) and images.dtype == np.uint8
        assert labels.shape == (len(images),) and labels.dtype == np.uint8
        assert labels.max(initial=0) < 10
    names = parses(lambda: meta_names_py(path), path.name)
    assert names is None or (isinstance(names, list) and all(isinstance(n, str) for n in names))


# ---- archives -----------------------------------------------------------------------------------

NAMES = st.sampled_from(
    ["a", "a/b.bin", "d", "d/", "d/e", "..", "../x", "a/../../x", "/tmp/convkit-fuzz-escape"]
    + ["", ".", "./a", "a//b", "C:x", "\\x", "x/" * 60 + "deep", "é.bin", "a/..", "-"]
) | st.text(max_size=20)
TYPES = st.sampled_from(
    [tarfile.REGTYPE] * 4
    + [tarfile.DIRTYPE] * 2
    + [tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE]
    + [tarfile.FIFOTYPE, tarfile.GNUTYPE_SPARSE]
)


@st.composite
def tar_files(draw) -> bytes:
    buf = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
    mode = "w" + draw(st.sampled_from(["", ":gz", ":bz2", ":xz"]))
    with tarfile.open(fileobj=buf, mode=mode, format=fmt) as tar:
        for _ in range(draw(st.integers(0, 4))):
            info = tarfile.TarInfo(draw(NAMES))
            info.type = draw(TYPES)
            info.linkname = draw(NAMES) if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            data = draw(st.binary(max_size=40)) if info.isreg() else b""
            info.size = len(data)
            try:
                tar.addfile(info, io.BytesIO(data))
            except (ValueError, UnicodeError):  # a name this format cannot hold: leave it out
                pass
    return buf.getvalue()


def files_under(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.exists() else set()


@fuzz
@given(st.binary(max_size=64) | mutated(tar_files(), max_edits=2))
def test_safe_extract(workdir, data):
    sandbox = workdir / "archive"
    shutil.rmtree(sandbox, ignore_errors=True)
    dest = sandbox / "inside" / "dest"
    dest.mkdir(parents=True)
    archive = workdir / "fuzz.tar.gz"
    archive.write_bytes(data)
    before = set(workdir.parent.iterdir())
    written = parses(lambda: safe_extract(archive, dest), archive.name)
    # whatever happened, nothing landed outside dest
    assert files_under(sandbox) - files_under(dest) == {sandbox / "inside", dest}
    assert set(workdir.parent.iterdir()) == before
    assert not Path("/tmp/convkit-fuzz-escape").exists()
    for path in written or []:
        assert path.is_file() and dest.resolve() in path.resolve().parents


# ---- checkpoints (convkit.train.checkpoint.load) ------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3)
    ),
    max_leaves=6,
)
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8, torch.bool]


@st.composite
def tensors(draw) -> dict[str, torch.Tensor]:
    out = {}
    for key in draw(st.lists(st.text(min_size=1, max_size=8), max_size=3, unique=True)):
        shape = draw(st.lists(st.integers(0, 3), max_size=3))
        values = torch.from_numpy(
            np.frombuffer(seeded_bytes(8 * math.prod(shape), draw(SEEDS)), np.int8).copy()
        )
        out[key] = values[: math.prod(shape)].reshape(shape).to(draw(st.sampled_from(DTYPES)))
    return out


@st.composite
def checkpoints(draw) -> bytes:
    if draw(st.booleans()):  # written by convkit itself, with its checksum
        model = torch.nn.Linear(draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        names = st.text(min_size=1, max_size=6).filter(lambda k: k not in ("path", "model"))
        meta = draw(st.dictionaries(names, JSON, max_size=3))
        with tempfile.TemporaryDirectory() as tmp:  # strategies cannot take tmp_path
            checkpoint.save_weights(Path(tmp) / "c.safetensors", model, **meta)
            return (Path(tmp) / "c.safetensors").read_bytes()
    # written by hand: metadata strings that may not be JSON at all, no checksum
    meta = {"format": checkpoint.FORMAT} if draw(st.integers(0, 4)) else {}
    meta.update(
        draw(
            st.dictionaries(
                st.text(min_size=1, max_size=6),
                st.text(max_size=12)
                | JSON.map(json.dumps)
                | st.integers(1, 3000).map(lambda n: "[" * n)
                | st.integers(1, 6000).map(lambda n: "1" * n),
                max_size=3,
            )
        )
    )
    return safetensors_bytes(draw(tensors()), metadata=meta)


@settings(fuzz, report_multiple_bugs=False)
@given(st.binary(max_size=64) | mutated(checkpoints(), max_edits=2))
def test_checkpoint_load(workdir, data):
    path = workdir / "best.safetensors"
    path.write_bytes(data)
    got = parses(lambda: checkpoint.load(path), path.name)
    if got is not None:
        tensors_, meta = got
        assert all(isinstance(k, str) and torch.is_tensor(v) for k, v in tensors_.items())
        assert isinstance(meta, dict)


# ---- config files -------------------------------------------------------------------------------

SETTING_NAMES = [f.name for f in dataclasses.fields(TrainConfig)]
SETTING_VALUES = (
    st.integers(-(2**64), 2**64)
    | st.floats()
    | st.booleans()
    | st.text(max_size=12)
    | st.sampled_from(["adam", "sgd", "cosine", "best", "last", "auto", "bf16", "off"])
    | st.lists(st.integers(), max_size=3)
)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, str):
        return json.dumps(v)  # JSON's escapes are TOML basic-string escapes
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return str(v)


@st.composite
def config_files(draw) -> tuple[str, bytes]:
    values = draw(
        st.dictionaries(st.sampled_from(SETTING_NAMES) | st.text(max_size=8), SETTING_VALUES)
    )
    suffix = draw(st.sampled_from([".toml", ".json", ".cfg"]))
    if suffix == ".json":
        text = json.dumps(values)  # NaN and Infinity as JSON's extensions
    else:
        text = "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in values.items())
    return suffix, draw(mutated(st.just(text.encode("utf-8", "surrogatepass")), max_edits=2))


@fuzz
@given(
    st.tuples(st.sampled_from([".toml", ".json"]), st.binary(max_size=64))
    | st.tuples(st.sampled_from([".toml", ".json"]), st.text(max_size=64).map(str.encode))
    | config_files()
)
def test_config_files(workdir, suffix_data):
    suffix, data = suffix_data
    path = workdir / f"train{suffix}"
    path.write_bytes(data)
    values = parses(lambda: read_config_file(path), path.name)
    if values is not None:
        assert isinstance(values, dict)
        cfg = parses(lambda: TrainConfig.from_dict(values, str(path)), "")
        assert cfg is None or isinstance(cfg, TrainConfig)


# ---- weight files (convkit.models.weights.read_state_dict) --------------------------------------


@st.composite
def pth_files(draw) -> bytes:
    state: object = draw(tensors())
    if draw(st.booleans()):
        state = {f"module.{k}": v for k, v in state.items()}
    if draw(st.booleans()):
        state = {draw(st.sampled_from(["state_dict", "model", "net", "other"])): state}
    if not draw(st.integers(0, 4)):
        state = draw(st.sampled_from([[1, 2], {1: torch.zeros(1)}, {"a": 1}, "text", None]))
    buf = io.BytesIO()
    legacy = draw(st.booleans())
    torch.save(state, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def check_state(state) -> None:
    assert isinstance(state, dict)
    assert all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items())


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch: "Detected pickle protocol 6"
@fuzz
@given(
    st.binary(max_size=64)
    | st.binary(max_size=64).map(lambda b: b"PK\x03\x04" + b)
    | mutated(pth_files())
)
def test_read_state_dict_pth(workdir, data):
    path = workdir / "weights.pth"
    path.write_bytes(data)
    state = parses(lambda: read_state_dict(path), path.name)
    if state is not None:
        check_state(state)


@fuzz
@given(st.binary(max_size=64) | mutated(tensors().map(safetensors_bytes)))
def test_read_state_dict_safetensors(workdir, data):
    path = workdir / "weights.safetensors"
    path.write_bytes(data)
    state = parses(lambda: read_state_dict(path), path.name)
    if state is not None:
        check_state(state)


# ---- user images (convkit.data.images.load_image) -----------------------------------------------

SAVABLE = {  # format: modes Pillow writes it in
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "GIF": ["L", "P"],
    "BMP": ["1", "L", "P", "RGB"],
    "TIFF": ["1", "L", "RGB", "RGBA", "CMYK", "I;16", "I", "F"],
    "WEBP": ["RGB", "RGBA"],
    "PPM": ["L", "RGB"],
    "ICO": ["RGBA"],
}


@st.composite
def image_files(draw) -> bytes:
    fmt = draw(st.sampled_from(sorted(SAVABLE)))
    mode = draw(st.sampled_from(SAVABLE[fmt]))
    size = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    rng = np.random.default_rng(draw(SEEDS))
    im = Image.new("RGB", size)
    im.putdata([tuple(p) for p in rng.integers(0, 256, (size[0] * size[1], 3)).tolist()])
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, size[::-1]).astype(np.uint16))
    elif mode == "I":
        im = Image.fromarray(rng.integers(-(2**20), 2**20, size[::-1]).astype(np.int32))
    elif mode == "F":
        im = Image.fromarray(rng.normal(size=size[::-1]).astype(np.float32))
    else:
        im = im.convert(mode)
    kwargs = {}
    if fmt in ("JPEG", "PNG", "TIFF", "WEBP") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(0, 9))  # orientation, 1..8 valid
        kwargs["exif"] = exif
    if fmt == "GIF" and draw(st.booleans()):
        kwargs.update(save_all=True, append_images=[im.transpose(Image.Transpose.ROTATE_180)])
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow: "Corrupt EXIF data", and more
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # over 89 MP: refused
@fuzz
@given(
    st.binary(max_size=64) | mutated(image_files()),
    st.sampled_from([(1, 28, 28), (3, 32, 32)]),
    st.booleans(),
)
def test_load_image(workdir, data, shape, digit_frame):
    path = workdir / "upload.img"
    path.write_bytes(data)
    got = parses(
        lambda: load_image(path, shape, digit_frame=digit_frame, max_pixels=IMAGE_PIXELS),
        path.name,
    )
    if got is not None:
        assert got["converted"].shape == shape and got["converted"].dtype == np.uint8
        original = got["original"]
        assert original.ndim == 3 and original.shape[2] == 3 and original.dtype == np.uint8
        assert 0 < original.shape[0] * original.shape[1] <= IMAGE_PIXELS
        assert isinstance(got["conversion"], str)


# ---- regressions: inputs these tests found, each pinned by a plain test ------------------------


@pytest.mark.parametrize(
    "suffix,data,message",
    [
        # found by test_config_files: read_text raised UnicodeDecodeError
        (".toml", b"\x80", r"not toml text: byte 0x80 at offset 0 is not UTF-8"),
        # RecursionError from json and tomllib
        # Python 3.11's decoder recurses (RecursionError); 3.12's stops with a parse error.
        (".json", b"[" * 3000, r"not valid json: (nested too deeply|Expecting value)"),
        (".toml", b"a = " + b"[" * 3000, r"not valid toml: nested too deeply"),
        # ValueError (not a decode error) for integers of more than 4,300 digits
        (".toml", b"epochs = " + b"1" * 5000, r"not valid toml: Exceeds the limit \(4300 digits\)"),
        (".json", b'{"epochs": ' + b"1" * 5000 + b"}", r"not valid json: Exceeds the limit"),
    ],
)
def test_config_file_regressions(tmp_path, suffix, data, message):
    path = tmp_path / f"c{suffix}"
    path.write_bytes(data)
    with pytest.raises(ConvkitError, match=r"c" + suffix.replace(".", r"\.") + ": " + message):
        read_config_file(path)


def test_config_file_size_is_bounded(tmp_path):
    (tmp_path / "big.toml").write_bytes(b"# " + b"x" * 2000 + b"\n")
    with pytest.raises(ConvkitError, match=r"big.toml: more than 1,000 bytes, too large"):
        read_config_file(tmp_path / "big.toml", max_bytes=1000)
    with pytest.raises(ConvkitError, match=r"/dev/zero: more than 1,048,576 bytes"):
        read_config_file("/dev/zero")  # never read whole


@pytest.mark.parametrize(
    "value",
    [
        "1" * 4301,  # ValueError: Exceeds the limit (4300 digits) for integer string conversion
        "[" * 100_000,  # RecursionError: maximum recursion depth exceeded while decoding
    ],
    ids=["4301-digit-int", "deep-array"],
)
def test_checkpoint_metadata_that_is_not_json(tmp_path, value):
    # found by test_checkpoint_load: a safetensors file of convkit's format, without the
    # sha256 entry (files from before the checksum still load), one metadata value as above
    path = tmp_path / "best.safetensors"
    metadata = {"format": checkpoint.FORMAT, "epoch": value}
    path.write_bytes(safetensors_bytes({"w": torch.zeros(1)}, metadata=metadata))
    with pytest.raises(ConvkitError, match=r"best.safetensors"):
        checkpoint.load(path)


def test_an_lzma_header_asking_for_a_4_gib_dictionary_is_not_decompressed(tmp_path):
    # found by the 20,000-example campaign: tarfile's "r:*" tried the bytes as an .lzma stream
    # whose header (properties 0x00, dictionary 0xFFFFFFFF) made the decoder ask for 4 GiB
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"\x00\xff\xff\xff\xff" + bytes(2000))
    with pytest.raises(ConvkitError, match=r"a.tar: cannot unpack"):
        safe_extract(archive, tmp_path / "out")
