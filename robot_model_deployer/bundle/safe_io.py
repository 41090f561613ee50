"""What an untrusted bundle may put on disk, and how its bytes get there.

Files are created new (never through a link, never over another file),
hashed while written, read-only and fsynced. Files are opened for reading
without blocking (a FIFO named like a bundle file would hang an open), must
be regular files, and small ones are size-checked before a byte is read.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable

from robot_model_deployer.bundle.errors import LimitExceededError, UnsafeArchiveError
from robot_model_deployer.bundle.filelist import FileEntry, check_bundle_path, hash_stream

# Unpacked bundle files are read-only: an installed version is immutable.
_FILE_MODE = 0o444


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


def open_regular_file(path: Path, *, follow_links: bool = False) -> BinaryIO:
    """Open ``path`` for reading without blocking on it; it must be a regular file (and no link, by default)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        link = "" if follow_links else " (it must not be a symlink)"
        raise UnsafeArchiveError(f"{path} cannot be opened as a regular file{link}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise UnsafeArchiveError(f"{path} is not a regular file (a directory, FIFO, socket or device)")
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_regular_file(path: Path, limit: int, *, follow_links: bool = False) -> bytes:
    """Read a small regular file of at most ``limit`` bytes (larger ones are refused unread)."""
    with open_regular_file(path, follow_links=follow_links) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > limit:
            raise LimitExceededError(f"{path} is {size} bytes, larger than the {limit} allowed")
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise LimitExceededError(f"{path} is larger than {limit} bytes")
    return data
