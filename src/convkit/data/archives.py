"""Unpacking a verified archive, refusing any member that would land outside the target folder."""

from __future__ import annotations

import lzma
import shutil
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from convkit.errors import DataError
from convkit.fileio import atomic_path

# Bounds on what one archive may unpack to. The archives convkit knows hold 8 or 9 members and
# unpack to at most 178 MB (CIFAR-10's python version); these leave room for much larger
# datasets while a crafted archive (a small .tar.gz of zeros declaring terabytes, or millions of
# empty members) is refused before anything is written.
MAX_MEMBERS = 100_000
MAX_UNPACKED = 16 << 30  # bytes

# What tarfile and its decompressors raise on malformed input. A chain of thousands of GNU
# long-name or pax headers makes tarfile recurse once per header (RecursionError); a name with
# a NUL byte or bad pax text is a ValueError.
_TAR_ERRORS = (
    tarfile.TarError,
    EOFError,
    OSError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
    RecursionError,
)


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
    if "\0" in name:
        raise DataError(f"{archive}: refusing member {name!r}: a NUL byte in its name")
    target = (dest / name).resolve()
    if target != dest.resolve() and dest.resolve() not in target.parents:
        raise DataError(f"{archive}: refusing member {name!r}: it would land outside {dest}")
    if member.isfile() and target == dest.resolve():
        raise DataError(f"{archive}: refusing member {name!r}: a file named as the folder {dest}")


def _read_mode(archive: Path) -> str:
    """Plain tar or gzip only (the datasets' archives are .tar.gz): tarfile's "r:*" would also
    try xz/lzma, whose 13-byte header can ask the decoder for a 4 GiB dictionary."""
    with open(archive, "rb") as f:
        return "r:gz" if f.read(2) == b"\x1f\x8b" else "r:"


def safe_extract(
    archive: Path,
    dest: Path,
    *,
    max_members: int = MAX_MEMBERS,
    max_bytes: int = MAX_UNPACKED,
) -> list[Path]:
    """Extract every member of a tar archive into `dest`; each file appears whole or not at all.

    All members are checked before anything is written: absolute paths, `..` escapes, links and
    device files are refused with an error naming the member, and so is an archive of more than
    `max_members` members or `max_bytes` bytes unpacked.
    """
    dest.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        with tarfile.open(archive, _read_mode(archive)) as tar:
            members, total = [], 0
            for m in tar:  # headers only: stops at the first member over a limit
                _check_member(m, dest, archive.name)
                members.append(m)
                total += m.size if m.isfile() else 0
                if len(members) > max_members or total > max_bytes:
                    raise DataError(
                        f"{archive.name}: refusing to unpack more than {max_members:,} members "
                        f"or {max_bytes:,} bytes (found {len(members):,} members declaring "
                        f"{total:,} bytes by {m.name!r}); if the archive is genuine, call "
                        f"safe_extract with larger max_members / max_bytes"
                    )
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
    except _TAR_ERRORS as exc:
        raise DataError(
            f"{archive.name}: cannot unpack into {dest}: {type(exc).__name__}: {exc}"
        ) from None
    return written
