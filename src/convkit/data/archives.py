"""Unpacking a verified archive, refusing any member that would land outside the target folder."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path, PurePosixPath

from convkit.errors import DataError
from convkit.fileio import atomic_path


def _check_member(member: tarfile.TarInfo, dest: Path, archive: str) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("\\") or (len(name) > 1 and name[1] == ":"):
        raise DataError(f"{archive}: refusing member {name!r}: absolute path outside {dest}")
    if not (member.isfile() or member.isdir()):
        kind = "a link" if member.issym() or member.islnk() else "not a regular file or folder"
        raise DataError(
            f"{archive}: refusing member {name!r}: {kind} (only regular files and "
            f"folders are extracted)"
        )
    target = (dest / name).resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
        raise DataError(f"{archive}: refusing member {name!r}: it would land outside {dest}")


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract every member of a tar archive into `dest`; each file appears whole or not at all.

    All members are checked before anything is written: absolute paths, `..` escapes, links and
    device files are refused with an error naming the member.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                _check_member(m, dest, archive.name)
            for m in members:
                target = dest / m.name
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                source = tar.extractfile(m)
                assert source is not None  # a regular file always has data
                with source, atomic_path(target) as tmp, open(tmp, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                written.append(target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{archive.name}: cannot unpack into {dest}: {exc}") from None
    return written
