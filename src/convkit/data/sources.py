"""Where dataset files come from: search folders in order, verify checksums, unpack, download.

Resolution order for every file: `--data-dir`, then each folder of `CONVKIT_DATA` (separated like
PATH), then the user cache folder. Within a data root a dataset's files live in its source's
sub-folder (`<root>/mnist/train-images-idx3-ubyte.gz`). A file that fails its size or checksum is
never used. A dataset may have several sources (CIFAR-10: binary or python version); the first
complete one is used. Failing that, a verified archive found in a root is unpacked; failing that,
missing files (or the first source's archive) are downloaded, unless offline, into `--data-dir`
when given, else the cache.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from convkit.data.archives import safe_extract
from convkit.data.catalog import DatasetSpec, FileSpec, Source
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
    if spec.size is not None and size != spec.size:
        return f"size {size:,} bytes, expected {spec.size:,}"
    md5, sha = file_digests(path)
    if spec.sha256 is not None and sha != spec.sha256:
        return f"sha256 {sha}, expected {spec.sha256}"
    if md5 != spec.md5:
        return f"md5 {md5}, expected {spec.md5}"
    return None


@dataclass
class SourceResult:
    """What was found of one source of a dataset."""

    source: Source
    paths: dict[str, Path] = field(default_factory=dict)  # file name -> verified path
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # (path, why refused)
    searched: list[tuple[Path, str]] = field(default_factory=list)  # (folder, where from)

    @property
    def missing(self) -> list[FileSpec]:
        return [f for f in self.source.files if f.name not in self.paths]


@dataclass
class Resolution:
    """Where each file of a dataset was found, and what was looked at and refused on the way."""

    spec: DatasetSpec
    results: list[SourceResult]

    @property
    def found(self) -> SourceResult | None:
        return next((r for r in self.results if not r.missing), None)

    @property
    def primary(self) -> SourceResult:
        return self.found or self.results[0]

    @property
    def paths(self) -> dict[str, Path]:
        return self.primary.paths

    @property
    def missing(self) -> list[FileSpec]:
        return self.primary.missing

    @property
    def searched(self) -> list[tuple[Path, str]]:
        return self.primary.searched

    @property
    def rejected(self) -> list[tuple[Path, str]]:
        return [r for res in self.results for r in res.rejected]


def source_folders(source: Source, roots: list[tuple[Path, str]]) -> list[tuple[Path, str]]:
    """The folders searched for `source`'s files, in order, each with where it came from."""
    return [(root / source.folder, origin) for root, origin in roots]


def locate_source(source: Source, roots: list[tuple[Path, str]]) -> SourceResult:
    res = SourceResult(source, searched=source_folders(source, roots))
    for f in source.files:
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


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None = None) -> Resolution:
    """Find a verified copy of every file of each source of `spec`, without unpacking or fetching."""
    roots = search_roots(data_dir)
    results = []
    for source in spec.sources:
        results.append(locate_source(source, roots))
        if not results[-1].missing:
            break
    return Resolution(spec, results)


def download_file(
    spec: FileSpec, mirrors: tuple[str, ...], dest_dir: Path, log: Log = _stderr
) -> tuple[Path | None, list[str]]:
    """Fetch `spec` from the first mirror that serves the right bytes; returns (path, failures)."""
    failures: list[str] = []
    dest = dest_dir / spec.name
    for mirror in mirrors:
        url = mirror + spec.name
        size = f"{spec.size:,} bytes" if spec.size else "size unknown"
        log(f"downloading {url} ({size})")
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


def _writable(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK)


def _unpack(source: Source, archive: Path, root: Path, fallback: Path, log: Log) -> None:
    """Unpack `archive` beside itself (root/archive_folder), or under `fallback` if read-only."""
    base = root if _writable(root / source.archive_folder) else fallback
    dest = base / source.archive_folder
    log(f"unpacking {archive} into {dest}")
    safe_extract(archive, dest)


def resolve(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    log: Log = _stderr,
) -> tuple[Source, dict[str, Path]]:
    """The source used and the verified path of each of its files; unpacks or downloads if needed."""
    roots = search_roots(data_dir)
    target = Path(data_dir).expanduser() if data_dir else cache_dir()  # where new files go
    res = locate(spec, data_dir)
    if res.found:
        return res.found.source, res.found.paths

    # A verified archive already on disk: unpack it, then look again.
    archive_rejected: list[tuple[Path, str]] = []
    for source in spec.sources:
        if source.archive is None:
            continue
        for root, _ in roots:
            candidate = root / source.archive_folder / source.archive.name
            if not candidate.is_file():
                continue
            problem = verify_file(candidate, source.archive)
            if problem is not None:
                archive_rejected.append((candidate, problem))
                continue
            _unpack(source, candidate, root, target, log)
            found = locate_source(source, roots)
            if not found.missing:
                return source, found.paths

    failures: list[str] = []
    tried = download and not offline()
    if tried:
        for source in spec.sources:
            if source.archive is not None:
                path, errs = download_file(
                    source.archive, spec.mirrors, target / source.archive_folder, log
                )
                failures += errs
                if path is not None:
                    _unpack(source, path, target, target, log)
            else:
                missing = locate_source(source, roots).missing
                for f in missing:
                    _, errs = download_file(f, spec.mirrors, target / source.folder, log)
                    failures += errs
            found = locate_source(source, roots)
            if not found.missing:
                return source, found.paths
        res = locate(spec, data_dir)
    res.results[0].rejected += archive_rejected
    raise DataError(missing_message(res, failures, tried_download=tried))


def missing_message(res: Resolution, failures: list[str], *, tried_download: bool) -> str:
    spec, first = res.spec, res.results[0]
    names = ", ".join(f.name for f in first.missing)
    lines = [
        f"{spec.name}: {len(first.missing)} of {len(first.source.files)} files not found: {names}"
    ]
    for other in spec.sources[1:]:
        lines.append(f"  (or the {len(other.files)} files of {other.folder}/: none complete)")
    lines.append("Searched, in order:")
    lines += [f"  {folder}  ({origin})" for folder, origin in first.searched]
    if res.rejected:
        lines.append("Refused (failed verification, never used):")
        lines += [f"  {path}: {why}" for path, why in res.rejected]
    if failures:
        lines.append("Download failed:")
        lines += [f"  {f}" for f in failures]
    elif not tried_download:
        lines.append("Downloads are off (offline: CONVKIT_OFFLINE is set or --no-download given).")
    home = first.searched[0][0]
    if first.source.archive is not None:
        where = home.parent if first.source.archive_folder else home
        how = (
            f"download {first.source.archive.name} from {spec.mirrors[0]} into {where}/ "
            f"(it is verified and unpacked on first use), or put the unpacked files in {home}/"
        )
    else:
        how = (
            f"download {names} from {spec.mirrors[0]} (or {spec.homepage}) into {home} or any "
            f"folder listed above"
        )
    lines.append(f"To place the files by hand: {how}; then run `convkit data check {spec.name}`.")
    return "\n".join(lines)
