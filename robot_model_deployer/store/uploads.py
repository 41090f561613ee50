"""Bundle uploads in chunks: staging, quotas, hashes and resume, with no ROS in sight.

Layout under the store's ``staging/uploads/`` (kept when the store wipes
the rest of staging, so an upload survives a manager restart)::

    <upload id>/upload.json     what was declared: name, size, sha256
    <upload id>/data.part       the bytes so far (its size is the offset)
    <upload id>/bundle.tar      the whole file, once its size and sha256 match

A refused chunk writes nothing; a whole file whose sha256 does not match
is dropped. A finished upload is only a file: the deploy flow verifies it
like any bundle path.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.store.durable import fsync_dir, write_atomic

MAX_CHUNK_BYTES = 1 << 20
RECORD_NAME = "upload.json"
PART_NAME = "data.part"
FINISHED_NAME = "bundle.tar"
_ID = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_MIB = 1 << 20


class UploadError(ValueError):
    """A refused upload request; the message says what to do next. Nothing was changed."""


class TransferPace:
    """Holds a transfer to at most ``bytes_per_s`` (0: no limit): ``delay`` is how long to wait before answering.

    A token bucket one second deep: a burst of a second's worth passes at
    once, beyond it each chunk waits for its share of the rate.
    """

    def __init__(self, bytes_per_s: float) -> None:
        if bytes_per_s < 0:
            raise ValueError("upload pace: bytes_per_s must be 0 (no limit) or more")
        self.bytes_per_s = bytes_per_s
        self._credit = bytes_per_s
        self._last: float | None = None

    def delay(self, size: int, now: float) -> float:
        """Seconds to wait before answering a chunk of ``size`` bytes that arrived at ``now`` (monotonic)."""
        if self.bytes_per_s <= 0:
            return 0.0
        if self._last is not None:
            self._credit = min(self.bytes_per_s, self._credit + (now - self._last) * self.bytes_per_s)
        self._credit -= size
        wait = max(0.0, -self._credit / self.bytes_per_s)
        if wait:  # the answer goes out when the debt is paid
            self._credit = 0.0
        self._last = now + wait
        return wait


@dataclass(frozen=True)
class UploadLimits:
    """Quotas of the upload area (the manager's ``upload_*`` parameters)."""

    max_bytes: int = 2 << 30
    max_concurrent: int = 2
    free_space_margin: int = 256 << 20
    idle_seconds: float = 3600.0
    max_chunk: int = MAX_CHUNK_BYTES

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_concurrent <= 0 or self.free_space_margin < 0 or self.idle_seconds <= 0:
            raise ValueError("upload limits: max_bytes, max_concurrent and idle_seconds must be > 0, "
                             "free_space_margin >= 0")
        if not 0 < self.max_chunk <= MAX_CHUNK_BYTES:
            raise ValueError(f"upload limits: max_chunk must be 1..{MAX_CHUNK_BYTES}")


@dataclass(frozen=True)
class UploadInfo:
    """Where one upload stands. ``offset`` == ``size`` and ``complete``: deployable at ``path``."""

    upload_id: str
    name: str
    size: int
    sha256: str
    offset: int
    complete: bool
    path: Path


class UploadStore:
    """Every upload of one manager. Thread-safe; one process owns the directory (as with the model store)."""

    def __init__(self, root: Path, limits: UploadLimits = UploadLimits(), *,
                 clock: Callable[[], float] = time.time,
                 free_bytes: Callable[[Path], int] = lambda p: shutil.disk_usage(p).free) -> None:
        self.root = Path(root)
        self.limits = limits
        self._clock = clock
        self._free_bytes = free_bytes
        self._lock = threading.Lock()
        self._hashers: dict[str, tuple[int, "hashlib._Hash"]] = {}  # running sha256 of each upload's prefix
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():  # an upload whose record never got written is debris of a crash
            if not (entry / RECORD_NAME).is_file():
                _remove(entry)

    # ---- requests -------------------------------------------------------------------

    def begin(self, name: str, size: int, sha256: str) -> UploadInfo:
        """Start an upload, or resume the one of the same file (same size and sha256)."""
        sha256 = sha256.strip().lower()
        if not _SHA256.match(sha256):
            raise UploadError(f"declared sha256 {one_line(sha256, 80)!r} is not 64 hex digits: declare the "
                              "sha256 of the whole file")
        if size <= 0:
            raise UploadError("declared size is 0: a bundle file is never empty; check the file")
        if size > self.limits.max_bytes:
            raise UploadError(f"the file is {size / _MIB:.1f} MiB, over this robot's upload limit of "
                              f"{self.limits.max_bytes / _MIB:.0f} MiB (manager parameter upload_max_mb): make "
                              "the bundle smaller or raise the limit")
        name = one_line(os.path.basename(name.replace("\\", "/")), 200) or "bundle.tar"
        with self._lock:
            self._expire()
            uploads = self._all()
            for info in uploads:
                if info.size == size and info.sha256 == sha256:
                    self._touch(info)
                    return info
            partial = [info for info in uploads if not info.complete]
            if len(partial) >= self.limits.max_concurrent:
                raise UploadError(f"{len(partial)} uploads are already in progress, the most this robot takes "
                                  f"(manager parameter upload_max_concurrent): finish or cancel one, or wait "
                                  f"until it expires ({self.limits.idle_seconds:g} s idle)")
            reserved = sum(info.size - info.offset for info in partial)
            free = self._free_bytes(self.root) - reserved
            if free - size < self.limits.free_space_margin:
                raise UploadError(f"not enough free disk for {size / _MIB:.1f} MiB: {max(free, 0) / _MIB:.0f} MiB "
                                  f"free for uploads and {self.limits.free_space_margin / _MIB:.0f} MiB must stay "
                                  "free (manager parameter upload_free_space_mb): free space on the robot first")
            upload_id = uuid.uuid4().hex
            directory = self.root / upload_id
            directory.mkdir()
            (directory / PART_NAME).touch()
            write_atomic(directory / RECORD_NAME, json.dumps({"name": name, "size": size,
                                                              "sha256": sha256}).encode())
            self._hashers[upload_id] = (0, hashlib.sha256())
            return UploadInfo(upload_id, name, size, sha256, 0, False, directory / PART_NAME)

    def write(self, upload_id: str, offset: int, data: bytes, sha256: str) -> UploadInfo:
        """Append one chunk at the upload's end; the last one checks the whole file's size and sha256."""
        if not data:
            raise UploadError("empty chunk: send the bytes from the upload's offset")
        if len(data) > self.limits.max_chunk:
            raise UploadError(f"chunk of {len(data)} bytes is over the {self.limits.max_chunk} bytes the robot "
                              "takes at once: send smaller chunks")
        if hashlib.sha256(data).hexdigest() != sha256.strip().lower():
            raise UploadError(f"chunk at offset {offset}: its bytes do not match its sha256 (damaged on the way): "
                              "send it again")
        with self._lock:
            info = self._find(upload_id)
            if info.complete:
                raise UploadError(f"upload {upload_id} is already complete: deploy it by its id")
            if offset != info.offset:
                raise UploadError(f"chunk at offset {offset}, but upload {upload_id} ends at {info.offset}"
                                  f" ({'a gap' if offset > info.offset else 'an overlap'}): send from offset "
                                  f"{info.offset}")
            if offset + len(data) > info.size:
                raise UploadError(f"chunk at offset {offset} of {len(data)} bytes overflows the declared size "
                                  f"{info.size}: the declaration or the chunk is wrong; start again")
            hasher = self._hasher(info)
            with open(info.path, "r+b") as part:
                part.seek(offset)
                part.write(data)
            hasher.update(data)
            end = offset + len(data)
            self._hashers[upload_id] = (end, hasher)
            if end < info.size:
                return UploadInfo(upload_id, info.name, info.size, info.sha256, end, False, info.path)
            return self._finish(info, hasher.hexdigest())

    def info(self, upload_id: str) -> UploadInfo:
        with self._lock:
            return self._find(upload_id)

    def deployable(self, upload_id: str) -> Path:
        """The finished file of an upload, to deploy (and verify) like any bundle path."""
        with self._lock:
            info = self._find(upload_id)
            if not info.complete:
                raise UploadError(f"upload {upload_id} has {info.offset} of {info.size} bytes: finish it first "
                                  "(rmd robot push resumes it)")
            self._touch(info)
            return info.path

    def drop(self, upload_id: str) -> UploadInfo:
        with self._lock:
            info = self._find(upload_id)
            self._drop(upload_id)
            return info

    def expire(self) -> list[str]:
        """Drop uploads idle for longer than ``idle_seconds``; returns their ids."""
        with self._lock:
            return self._expire()

    # ---- inside the lock ------------------------------------------------------------

    def _find(self, upload_id: str) -> UploadInfo:
        info = self._read(upload_id) if _ID.match(upload_id) else None
        if info is None:
            raise UploadError(f"unknown upload id {one_line(upload_id, 80)!r}: it expired (idle over "
                              f"{self.limits.idle_seconds:g} s), was cancelled, or never existed; push the "
                              "bundle again")
        return info

    def _read(self, upload_id: str) -> UploadInfo | None:
        directory = self.root / upload_id
        try:
            record = json.loads((directory / RECORD_NAME).read_text())
            name, size, sha256 = str(record["name"]), int(record["size"]), str(record["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        finished = directory / FINISHED_NAME
        if finished.is_file():
            return UploadInfo(upload_id, name, size, sha256, size, True, finished)
        part = directory / PART_NAME
        try:
            offset = part.stat().st_size
        except OSError:
            return None
        return UploadInfo(upload_id, name, size, sha256, offset, False, part)

    def _all(self) -> list[UploadInfo]:
        found = (self._read(entry.name) for entry in self.root.iterdir() if _ID.match(entry.name))
        return [info for info in found if info is not None]

    def _hasher(self, info: UploadInfo) -> "hashlib._Hash":
        """The running sha256 of the bytes so far; after a restart, read once from disk."""
        known = self._hashers.get(info.upload_id)
        if known is not None and known[0] == info.offset:
            return known[1]
        hasher = hashlib.sha256()
        with open(info.path, "rb") as part:
            while block := part.read(_MIB):
                hasher.update(block)
        return hasher

    def _finish(self, info: UploadInfo, sha256: str) -> UploadInfo:
        if sha256 != info.sha256:
            self._drop(info.upload_id)
            raise UploadError(f"the whole file's sha256 {sha256} is not the declared {info.sha256}: the upload "
                              "was dropped; check the file and push it again")
        finished = info.path.with_name(FINISHED_NAME)
        with open(info.path, "rb") as part:
            os.fsync(part.fileno())
        os.replace(info.path, finished)
        fsync_dir(finished.parent)
        self._hashers.pop(info.upload_id, None)
        return UploadInfo(info.upload_id, info.name, info.size, info.sha256, info.size, True, finished)

    def _touch(self, info: UploadInfo) -> None:
        now = self._clock()
        os.utime(info.path, (now, now))

    def _expire(self) -> list[str]:
        now, expired = self._clock(), []
        for info in self._all():
            try:
                idle = now - info.path.stat().st_mtime
            except OSError:
                continue
            if idle > self.limits.idle_seconds:
                self._drop(info.upload_id)
                expired.append(info.upload_id)
        return expired

    def _drop(self, upload_id: str) -> None:
        self._hashers.pop(upload_id, None)
        _remove(self.root / upload_id)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
