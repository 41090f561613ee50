"""What an untrusted bundle may put on disk, and how its bytes get there.

Tar members are admitted only as regular files with plain relative names;
files are created new (never through a link, never over another file),
hashed while written, read-only and fsynced; small metadata files are read
only if they are regular files within a size limit.
"""
from __future__ import annotations

import os
import stat
import tarfile
from pathlib import Path
from typing import BinaryIO, Callable

from robot_model_deployer.bundle.errors import LimitExceededError, UnsafeArchiveError
from robot_model_deployer.bundle.filelist import FileEntry, check_bundle_path, hash_stream

_FILTER_ROOT = "/rmd-extraction-root"
# Unpacked bundle files are read-only: an installed version is immutable.
_FILE_MODE = 0o444


def check_tar_member(member: tarfile.TarInfo) -> None:
    """Admit regular files with plain relative names; everything else is refused by kind."""
    name = member.name
    if member.issym():
        raise UnsafeArchiveError(f"{name!r} is a symlink (to {member.linkname!r}); bundles hold regular files only")
    if member.islnk():
        raise UnsafeArchiveError(f"{name!r} is a hard link (to {member.linkname!r}); bundles hold regular "
                                 "files only")
    if member.ischr() or member.isblk():
        raise UnsafeArchiveError(f"{name!r} is a device node; bundles hold regular files only")
    if member.isfifo():
        raise UnsafeArchiveError(f"{name!r} is a FIFO; bundles hold regular files only")
    if member.isdir():
        raise UnsafeArchiveError(f"{name!r} is a directory entry; bundles hold regular files only "
                                 "(directories are implied by file paths)")
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
        raise UnsafeArchiveError(f"{name!r} has tar type {member.type!r}; bundles hold regular files only")
    check_bundle_path(name)
    data_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.10.12 / 3.11.4
    if data_filter is not None:
        try:
            # The standard library's own policy as a second line behind the checks above.
            data_filter(member, _FILTER_ROOT)
        except tarfile.FilterError as exc:
            raise UnsafeArchiveError(f"{name!r} is refused by tarfile's data filter: {exc}") from None


def copy_checked(stream: BinaryIO, dest: Path | None, entry: FileEntry, on_chunk: Callable[[int], None]) -> None:
    """Stream one file to ``dest/entry.path`` (or nowhere), hashing as it goes; ``on_chunk`` gets each length."""
    if dest is None:
        digest, actual = hash_stream(stream, lambda chunk: on_chunk(len(chunk)), limit=entry.size)
        entry.check_digest(digest, actual)
        return
    target = dest / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
    with os.fdopen(descriptor, "wb") as out:
        def write(chunk: bytes) -> None:
            out.write(chunk)
            on_chunk(len(chunk))
        digest, actual = hash_stream(stream, write, limit=entry.size)
        entry.check_digest(digest, actual)
        out.flush()
        os.fsync(out.fileno())


def write_new_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a file that must not exist yet (never through a link), read-only and fsynced."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, _FILE_MODE)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def read_regular_file(path: Path, limit: int) -> bytes:
    """Read a small file that must be a regular file, not a link, of at most ``limit`` bytes."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise UnsafeArchiveError(f"{path} cannot be opened as a regular file ({exc.strerror}); "
                                 "bundle files must not be symlinks") from None
    with os.fdopen(descriptor, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise UnsafeArchiveError(f"{path} is not a regular file")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise LimitExceededError(f"{path} is larger than {limit} bytes")
    return data
