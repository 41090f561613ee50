"""Reading bundle archives (and unpacked bundle directories) without trusting them.

A bundle travels as one tar file, in the member order bundle/pack.py writes:
``files.json`` first, then ``signature.json`` if signed, then
``manifest.yaml``, then the rest; gzip is accepted on read. So the
signature and the manifest are checked before any model byte is read, and
every later member is checked against ``files.json`` while it streams.

Archives are read by bundle/tar_stream.py, never by ``tarfile``: before
the signature is checked only about the size of ``files.json`` and
``signature.json`` plus their headers may be read, and after it only what
``files.json`` declares plus tar overhead, so an archive that inflates beyond
its claims is stopped as soon as it does.
"""
from __future__ import annotations

import functools
import io
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from robot_model_deployer.bundle.errors import (BundleFormatError, IntegrityError, LimitExceededError,
                                                bundle_error_from)
from robot_model_deployer.bundle.filelist import (FILE_LIST_NAME, MAX_FILE_LIST_BYTES, SIGNATURE_NAME, FileList,
                                                  check_bundle_path, hash_stream, parse_file_list, walk_bundle_dir)
from robot_model_deployer.bundle.image_lists import resolve_manifest_images
from robot_model_deployer.bundle.loader import MAX_MANIFEST_BYTES
from robot_model_deployer.bundle.manifest import MANIFEST_NAME, Manifest, ManifestError, parse_manifest
from robot_model_deployer.bundle.safe_io import copy_checked, open_regular_file, read_regular_file, write_new_file
from robot_model_deployer.bundle.signing import MAX_SIGNATURE_BYTES, Signature, parse_signature
from robot_model_deployer.bundle.tar_stream import BLOCK, MAX_PAX_BYTES, TarMember, TarStream, TruncatedArchiveError
from robot_model_deployer.bundle.text import shown

GIB = 1 << 30
ProgressCallback = Callable[[str, float], None]
"""Called with what is being done (e.g. a file name) and the fraction done, 0..1."""

# Per member: its header, a pax header with its records, and padding; per archive: the end
# blocks, which tar writers pad to a record of 20 blocks.
_MEMBER_OVERHEAD = 3 * BLOCK + MAX_PAX_BYTES
_ARCHIVE_OVERHEAD = 2 * 20 * BLOCK
# Before the signature is checked: files.json, signature.json and the manifest's header.
_PRE_TRUST_BUDGET = MAX_FILE_LIST_BYTES + MAX_SIGNATURE_BYTES + 3 * _MEMBER_OVERHEAD


@dataclass(frozen=True)
class ExtractionLimits:
    """What a robot agrees to unpack; checked against the declarations and the actual bytes."""

    max_total_bytes: int = 2 * GIB
    max_files: int = 1000
    max_file_bytes: int = 1 * GIB

    def __post_init__(self) -> None:
        for name in ("max_total_bytes", "max_files", "max_file_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExtractionLimits.{name} must be >= 1, got {getattr(self, name)}")

    def check(self, file_list: FileList) -> None:
        """Refuse a file list that declares more than the limits allow."""
        count = len(file_list.files)
        if count > self.max_files:
            raise LimitExceededError(f"bundle has {count} files, more than the limit of {self.max_files}; "
                                     "pack fewer files (e.g. fewer calibration images)")
        for entry in file_list.files:
            if entry.size > self.max_file_bytes:
                raise LimitExceededError(f"{entry.path} is {entry.size} bytes, more than the per-file limit of "
                                         f"{self.max_file_bytes}")
        if file_list.total_size > self.max_total_bytes:
            raise LimitExceededError(f"bundle holds {file_list.total_size} bytes, more than the limit of "
                                     f"{self.max_total_bytes}")


@dataclass(frozen=True)
class BundleHeader:
    """The first members of a bundle: what the signature covers and the signature itself."""

    file_list: FileList
    file_list_bytes: bytes
    signature: Signature | None


class BundleReader(ABC):
    """One pass over a bundle, in format order: header, then manifest, then the other files."""

    header: BundleHeader

    def __init__(self, source: Path, limits: ExtractionLimits) -> None:
        self.source = source
        self.limits = limits
        self._manifest_bytes: bytes | None = None

    @abstractmethod
    def read_manifest(self) -> Manifest:
        """Read and hash-check ``manifest.yaml`` and check it only names listed files."""

    @abstractmethod
    def extract(self, dest: Path | None, progress: ProgressCallback | None = None) -> None:
        """Check every remaining file against ``files.json``, writing it under ``dest`` if given.

        ``dest`` must be an empty directory. Files are fsynced so a caller can
        rename ``dest`` into place and have complete files after a crash.
        """

    def close(self) -> None:
        """Release the source; safe to call twice."""

    def __enter__(self) -> "BundleReader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _parse_header(self, file_list_bytes: bytes, signature_bytes: bytes | None) -> BundleHeader:
        file_list = parse_file_list(file_list_bytes, f"{self.source}: {FILE_LIST_NAME}")
        self.limits.check(file_list)
        signature = None if signature_bytes is None else parse_signature(signature_bytes,
                                                                          f"{self.source}: {SIGNATURE_NAME}")
        return BundleHeader(file_list, file_list_bytes, signature)

    def _parse_manifest(self, data: bytes) -> Manifest:
        entry = self.header.file_list.get(MANIFEST_NAME)
        if entry is None:
            raise IntegrityError(f"{FILE_LIST_NAME} does not list {MANIFEST_NAME}; rebuild the bundle with "
                                 "rmd bundle create")
        entry.check_digest(*hash_stream(io.BytesIO(data)))
        try:
            manifest = parse_manifest(data.decode("utf-8"), f"{self.source}: {MANIFEST_NAME}")
        except UnicodeDecodeError:
            raise BundleFormatError(f"{self.source}: {MANIFEST_NAME} is not UTF-8 text") from None
        except ManifestError as exc:
            raise BundleFormatError(str(exc)) from None
        listed = self.header.file_list.by_path()
        manifest = resolve_manifest_images(manifest, listed,
                                           lambda problem: BundleFormatError(f"{self.source}: {MANIFEST_NAME}: "
                                                                             f"{problem}"))
        for relative in manifest.referenced_files():
            if relative not in listed:
                raise IntegrityError(f"{MANIFEST_NAME} names {relative}, which {FILE_LIST_NAME} does not list; "
                                     "the file is missing from the bundle")
        self._manifest_bytes = data
        return manifest

    def _progress(self, callback: ProgressCallback | None) -> ProgressTracker:
        tracker = ProgressTracker(self.header.file_list.total_size, callback)
        tracker.done = len(self._manifest_bytes or b"")  # read before extract() starts
        return tracker

    def _write_metadata(self, dest: Path) -> None:
        if self._manifest_bytes is None:
            raise RuntimeError("read_manifest() must come before extract()")
        dest.mkdir(parents=True, exist_ok=True)
        write_new_file(dest / FILE_LIST_NAME, self.header.file_list_bytes)
        if self.header.signature is not None:
            write_new_file(dest / SIGNATURE_NAME, self.header.signature.to_bytes())
        write_new_file(dest / MANIFEST_NAME, self._manifest_bytes)


def open_bundle(source: Path, limits: ExtractionLimits = ExtractionLimits()) -> BundleReader:
    """Open a bundle tar file (plain or gzip) or an unpacked bundle directory and read its header."""
    if source.is_dir():
        return _DirectoryReader(source, limits)
    if not source.exists():
        raise BundleFormatError(f"bundle {source} does not exist")
    if not source.is_file():
        raise BundleFormatError(f"bundle {source} is not a regular file or a bundle directory")
    return _TarReader(source, limits)


class _TarReader(BundleReader):
    def __init__(self, source: Path, limits: ExtractionLimits) -> None:
        super().__init__(source, limits)
        self._file = open_regular_file(source, follow_links=True)
        try:
            self._tar = TarStream(self._file, str(source), _PRE_TRUST_BUDGET)
            self.header = self._read_header()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._file.close()

    def _next(self) -> TarMember | None:
        member = self._tar.next()
        if member is not None:
            check_bundle_path(member.name)
        return member

    def _read_header(self) -> BundleHeader:
        first = self._next()
        if first is None:
            raise BundleFormatError(f"{self.source} is an empty archive, not a bundle")
        if first.name != FILE_LIST_NAME:
            raise BundleFormatError(f"{self.source}: first member is {shown(first.name)}, expected "
                                    f"{FILE_LIST_NAME}; pack bundles with rmd bundle create")
        file_list_bytes = self._tar.read_all(MAX_FILE_LIST_BYTES)
        member = self._next()
        signature_bytes = None
        if member is not None and member.name == SIGNATURE_NAME:
            signature_bytes = self._tar.read_all(MAX_SIGNATURE_BYTES)
            member = self._next()
        self._pending = member
        header = self._parse_header(file_list_bytes, signature_bytes)
        # From now on the stream may only hold what files.json declares.
        self._tar.budget = (self._tar.consumed + header.file_list.total_size
                            + (len(header.file_list.files) + 2) * _MEMBER_OVERHEAD + _ARCHIVE_OVERHEAD)
        return header

    def read_manifest(self) -> Manifest:
        member = self._pending
        if member is None or member.name != MANIFEST_NAME:
            found = "the end of the archive" if member is None else shown(member.name)
            raise BundleFormatError(f"{self.source}: expected {MANIFEST_NAME} after {FILE_LIST_NAME}, found "
                                    f"{found}; pack bundles with rmd bundle create")
        return self._parse_manifest(self._tar.read_all(MAX_MANIFEST_BYTES))

    def extract(self, dest: Path | None, progress: ProgressCallback | None = None) -> None:
        if dest is not None:
            self._write_metadata(dest)
        listed = self.header.file_list.by_path()
        seen = {MANIFEST_NAME}
        tracker = self._progress(progress)
        while (member := self._next_or_missing(seen)) is not None:
            entry = listed.get(member.name)
            if member.name in seen:
                raise IntegrityError(f"{shown(member.name)} appears twice in the archive; a later copy could "
                                     "replace a checked one, so the bundle is refused")
            if entry is None:
                raise IntegrityError(f"{shown(member.name)} is in the archive but not listed in "
                                     f"{FILE_LIST_NAME} (an extra, unsigned file); rebuild the bundle with "
                                     "rmd bundle create")
            if member.size != entry.size:
                raise IntegrityError(f"{shown(member.name)} is {member.size} bytes in the archive but "
                                     f"{FILE_LIST_NAME} says {entry.size}; the bundle was altered")
            seen.add(member.name)
            copy_checked(self._tar, dest, entry, functools.partial(tracker.advance, member.name))
        self._check_missing(seen)

    def _next_or_missing(self, seen: set[str]) -> TarMember | None:
        """The next member; an archive cut short names the files it lacks, if it lacks any."""
        try:
            return self._next()
        except TruncatedArchiveError:
            self._check_missing(seen)
            raise

    def _check_missing(self, seen: set[str]) -> None:
        missing = sorted(set(self.header.file_list.by_path()) - seen)
        if missing:
            raise IntegrityError(f"{FILE_LIST_NAME} lists {', '.join(shown(m) for m in missing[:5])} but the "
                                 "archive does not contain it (truncated or incomplete bundle)")


class _DirectoryReader(BundleReader):
    """An unpacked bundle directory, held to the same rules as an archive."""

    def __init__(self, source: Path, limits: ExtractionLimits) -> None:
        super().__init__(source, limits)
        file_list_path = source / FILE_LIST_NAME
        if not file_list_path.exists():
            raise BundleFormatError(f"{source} has no {FILE_LIST_NAME}; a bundle directory needs one (write it "
                                    "with robot_model_deployer.bundle.filelist.write_file_list)")
        file_list_bytes = read_regular_file(file_list_path, MAX_FILE_LIST_BYTES)
        signature_path = source / SIGNATURE_NAME
        signature_bytes = read_regular_file(signature_path, MAX_SIGNATURE_BYTES) if signature_path.exists() \
            or signature_path.is_symlink() else None
        self.header = self._parse_header(file_list_bytes, signature_bytes)

    def read_manifest(self) -> Manifest:
        path = self.source / MANIFEST_NAME
        if not path.exists():
            raise BundleFormatError(f"{self.source} is not a bundle: it has no {MANIFEST_NAME}")
        return self._parse_manifest(read_regular_file(path, MAX_MANIFEST_BYTES))

    def extract(self, dest: Path | None, progress: ProgressCallback | None = None) -> None:
        listed = self.header.file_list.by_path()
        present = set(walk_bundle_dir(self.source))
        extra = sorted(present - set(listed))
        if extra:
            raise IntegrityError(f"{extra[0]} is in {self.source} but not listed in {FILE_LIST_NAME} "
                                 "(an extra, unsigned file); remove it or rewrite the file list")
        missing = sorted(set(listed) - present)
        if missing:
            raise IntegrityError(f"{FILE_LIST_NAME} lists {', '.join(missing[:5])} but {self.source} does not "
                                 "contain it")
        if dest is not None:
            self._write_metadata(dest)
        tracker = self._progress(progress)
        for relative, entry in listed.items():
            if relative == MANIFEST_NAME:
                continue
            with open_regular_file(self.source / relative) as stream:
                copy_checked(stream, dest, entry, functools.partial(tracker.advance, relative))


class ProgressTracker:
    """Turns bytes copied into (file, fraction) calls to a ProgressCallback."""

    def __init__(self, total: int, callback: ProgressCallback | None) -> None:
        self._total = max(total, 1)
        self.done = 0
        self._callback = callback

    def advance(self, name: str, size: int) -> None:
        self.done += size
        if self._callback is not None:
            self._callback(name, min(self.done / self._total, 1.0))


@dataclass(frozen=True)
class BundleInfo:
    """What ``rmd bundle inspect`` shows; nothing here has been verified."""

    manifest: Manifest
    file_list: FileList
    signature_key_id: str | None


def inspect_bundle(*, bundle: Path, limits: ExtractionLimits = ExtractionLimits()) -> BundleInfo:
    """Read a whole bundle and check its framing and every file against files.json, but no signature.

    What ``rmd bundle inspect`` shows, so a damaged or padded archive is
    never shown as if it were whole; who signed it is not checked (that is
    ``verify``). Nothing is written; any failure is a BundleError.
    """
    try:
        with open_bundle(bundle, limits) as reader:
            manifest = reader.read_manifest()
            reader.extract(None)
            signature = reader.header.signature
            return BundleInfo(manifest, reader.header.file_list, None if signature is None else signature.key_id)
    except Exception as exc:  # the boundary: whatever failed, one BundleError says what
        raise bundle_error_from(exc, bundle) from None
