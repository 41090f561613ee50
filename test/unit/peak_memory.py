"""How much this process's peak resident memory grew during a block (Linux /proc)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest


@dataclass
class PeakGrowth:
    """Set when the block ends, however it ends."""

    mib: float = float("nan")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


@contextmanager
def peak_rss_growth() -> Iterator[PeakGrowth]:
    """Resets the peak (VmHWM) to the current RSS first, so earlier tests' peaks cannot hide growth."""
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
    except OSError as exc:
        pytest.skip(f"cannot reset this process's peak RSS through /proc/self/clear_refs ({exc})")
    before = _status_kib("VmRSS")
    growth = PeakGrowth()
    try:
        yield growth
    finally:
        growth.mib = (_status_kib("VmHWM") - before) / 1024
