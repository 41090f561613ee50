"""Writes that survive a power cut: temp file, fsync, rename, fsync the directory.

A rename is atomic on POSIX file systems, but only durable once the
directory holding it is fsynced; skipping either step can leave an empty
or missing file after a crash.
"""
from __future__ import annotations

import os
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(root: Path) -> None:
    """fsync every directory under ``root`` (files are fsynced as they are written)."""
    for directory, _, _ in os.walk(root, topdown=False):
        fsync_dir(Path(directory))


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new bytes, never a mix."""
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
