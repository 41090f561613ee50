"""A progress line on stderr for long copies, so a big bundle does not look like a hang."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from robot_model_deployer.bundle.extract import ProgressCallback

PROGRESS_MIN_BYTES = 32 << 20


class StderrProgress:
    """Prints ``label name NN%``: rewritten in place on a terminal, one line per 10% otherwise."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._tty = stream.isatty()
        self._bucket = -1

    def __call__(self, name: str, fraction: float) -> None:
        percent = min(100, int(fraction * 100))
        bucket = percent // (1 if self._tty else 10)
        if bucket == self._bucket:
            return
        self._bucket = bucket
        prefix = "\r" if self._tty else ""
        end = "\n" if percent == 100 or not self._tty else ""
        self._stream.write(f"{prefix}{self._label} {name} {percent:3d}%{end}")
        self._stream.flush()


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of all files under a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(path) for f in files)


def progress_for(path: Path, label: str, stream: TextIO | None = None) -> ProgressCallback | None:
    """A progress printer when the bundle is big or stderr is a terminal, else None."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty() or size_on_disk(path) >= PROGRESS_MIN_BYTES:
        return StderrProgress(label, stream)
    return None
