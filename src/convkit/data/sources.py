"""Where dataset files come from: search folders in order, verify checksums, download from mirrors.

Resolution order for every file: `--data-dir`, then each folder of `CONVKIT_DATA` (separated like
PATH), then the user cache folder. Within a folder the files live in the dataset's sub-folder
(`<folder>/mnist/train-images-idx3-ubyte.gz`). A file that fails its size or checksum is never
used. Missing files are downloaded (unless offline) into `--data-dir` when given, else the cache.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from convkit.data.catalog import DatasetSpec, FileSpec
from convkit.errors import DataError
from convkit.fileio import atomic_path

Log = Callable[[str], None]
_CHUNK = 1 << 20


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """The user cache folder for datasets: $XDG_CACHE_HOME/convkit/datasets (~/.cache by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "convkit" / "datasets"


def search_roots(data_dir: str | os.PathLike | None = None) -> list[tuple[Path, str]]:
    """The data roots searched, in order, each with where it came from."""
    roots: list[tuple[Path, str]] = []
    if data_dir:
        roots.append((Path(data_dir).expanduser(), "--data-dir"))
    for part in os.environ.get("CONVKIT_DATA", "").split(os.pathsep):
        if part.strip():
            roots.append((Path(part.strip()).expanduser(), "CONVKIT_DATA"))
    roots.append((cache_dir(), "user cache"))
    return roots


def offline() -> bool:
    return os.environ.get("CONVKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def file_digests(path: Path) -> tuple[str, str]:
    """(md5, sha256) of a file, read once."""
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def verify_file(path: Path, spec: FileSpec) -> str | None:
    """None when `path` is exactly the published file, else what is wrong with it."""
    size = path.stat().st_size
    if size != spec.size:
        return f"size {size:,} bytes, expected {spec.size:,}"
    md5, sha = file_digests(path)
    if sha != spec.sha256:
        return f"sha256 {sha}, expected {spec.sha256}"
    if md5 != spec.md5:
        return f"md5 {md5}, expected {spec.md5}"
    return None


@dataclass
class Resolution:
    """Where each file of a dataset was found, and what was looked at and refused on the way."""

    spec: DatasetSpec
    paths: dict[str, Path] = field(default_factory=dict)  # file name -> verified path
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # (path, why refused)
    searched: list[tuple[Path, str]] = field(default_factory=list)  # (folder, where it came from)

    @property
    def missing(self) -> list[FileSpec]:
        return [f for f in self.spec.files if f.name not in self.paths]


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> Resolution:
    """Find a verified copy of every file of `spec` in the search roots, without downloading."""
    res = Resolution(spec)
    res.searched = [(root / spec.folder, origin) for root, origin in search_roots(data_dir)]
    for f in spec.files:
        for folder, _ in res.searched:
            candidate = folder / f.name
            if not candidate.is_file():
                continue
            problem = verify_file(candidate, f)
            if problem is None:
                res.paths[f.name] = candidate
                break
            res.rejected.append((candidate, problem))
    return res


def download_file(
    spec: FileSpec, mirrors: tuple[str, ...], dest_dir: Path, log: Log = _stderr
) -> tuple[Path | None, list[str]]:
    """Fetch `spec` from the first mirror that serves the right bytes; returns (path, failures)."""
    failures: list[str] = []
    dest = dest_dir / spec.name
    for mirror in mirrors:
        url = mirror + spec.name
        log(f"downloading {url} ({spec.size:,} bytes)")
        try:
            with atomic_path(dest) as tmp:
                with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                problem = verify_file(tmp, spec)
                if problem is not None:
                    # Refused: the temporary file is removed and the next mirror tried.
                    raise DataError(f"downloaded file does not match: {problem}")
            return dest, failures
        except (OSError, DataError) as exc:  # URLError and HTTPError are OSErrors
            failures.append(f"{url}: {exc}")
            log(f"  failed: {exc}")
    return None, failures


def resolve(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    log: Log = _stderr,
) -> dict[str, Path]:
    """Paths of every verified file of `spec`, downloading the missing ones unless offline."""
    res = locate(spec, data_dir)
    failures: list[str] = []
    if res.missing and download and not offline():
        dest_dir = (Path(data_dir).expanduser() if data_dir else cache_dir()) / spec.folder
        for f in res.missing:
            path, errs = download_file(f, spec.mirrors, dest_dir, log)
            failures += errs
            if path is not None:
                res.paths[f.name] = path
    if res.missing:
        raise DataError(missing_message(res, failures, tried_download=download and not offline()))
    return res.paths


def missing_message(res: Resolution, failures: list[str], *, tried_download: bool) -> str:
    spec = res.spec
    names = ", ".join(f.name for f in res.missing)
    lines = [f"{spec.name}: {len(res.missing)} of {len(spec.files)} files not found: {names}"]
    lines.append("Searched, in order:")
    lines += [f"  {folder}  ({origin})" for folder, origin in res.searched]
    if res.rejected:
        lines.append("Refused (failed verification, never used):")
        lines += [f"  {path}: {why}" for path, why in res.rejected]
    if failures:
        lines.append("Download failed:")
        lines += [f"  {f}" for f in failures]
    elif not tried_download:
        lines.append("Downloads are off (offline: CONVKIT_OFFLINE is set or --no-download given).")
    lines.append(
        f"To place the files by hand: download {names} from {spec.mirrors[0]} "
        f"(or {spec.homepage}) into {res.searched[0][0]} or any folder listed above, "
        f"then run `convkit data check {spec.name}`."
    )
    return "\n".join(lines)
