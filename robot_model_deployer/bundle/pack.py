"""Writing bundle archives: pack a bundle directory, sign a bundle, write the tar in format order.

The member order is part of the format (bundle/extract.py reads it in one
pass): ``files.json``, then ``signature.json`` if signed, then
``manifest.yaml``, then the other files as ``files.json`` lists them.
Archives are plain tar (ONNX weights barely compress) and reproducible.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.extract import ExtractionLimits, ProgressCallback, ProgressTracker, open_bundle
from robot_model_deployer.bundle.filelist import (FILE_LIST_NAME, SIGNATURE_NAME, FileList, build_file_list,
                                                  parse_file_list)
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import MANIFEST_NAME
from robot_model_deployer.bundle.signing import Signature, load_private_key, sign_file_list


def create_bundle(*, source: Path, output: Path, progress: ProgressCallback | None = None) -> FileList:
    """Check the bundle directory ``source`` and pack it as an unsigned bundle tar at ``output``."""
    load_bundle_dir(source)
    if output.resolve().is_relative_to(source.resolve()):
        raise BundleError(f"output {output} is inside the bundle directory {source}; write it elsewhere")
    file_list = _build_checked_file_list(source)
    write_bundle_tar(output=output, root=source, file_list_bytes=file_list.to_bytes(), signature=None,
                     progress=progress)
    return file_list


def _build_checked_file_list(source: Path) -> FileList:
    file_list = build_file_list(source)
    ExtractionLimits().check(file_list)
    return file_list


def sign_bundle(*, bundle: Path, key: Path, limits: ExtractionLimits = ExtractionLimits()) -> Signature:
    """Add or replace the signature of a bundle tar, after checking every file against ``files.json``.

    The bundle is unpacked to a temporary directory next to it and repacked,
    so what gets signed is exactly what was checked.
    """
    private_key = load_private_key(key)
    with tempfile.TemporaryDirectory(prefix=".rmd-sign-", dir=bundle.parent) as scratch:
        root = Path(scratch)
        with open_bundle(bundle, limits) as reader:
            if reader.source.is_dir():
                raise BundleError(f"{bundle} is a directory; sign a bundle tar made by rmd bundle create")
            reader.read_manifest()
            reader.extract(root)
            file_list_bytes = reader.header.file_list_bytes
        signature = sign_file_list(file_list_bytes, private_key)
        write_bundle_tar(output=bundle, root=root, file_list_bytes=file_list_bytes, signature=signature)
    return signature


def write_bundle_tar(*, output: Path, root: Path, file_list_bytes: bytes, signature: Signature | None,
                     progress: ProgressCallback | None = None) -> None:
    """Pack ``root`` in format order; each file is re-hashed as packed so a change mid-way is caught.

    Written to a temporary name and renamed, so ``output`` is never half a bundle.
    """
    file_list = parse_file_list(file_list_bytes)
    ordered = [MANIFEST_NAME] + [e.path for e in file_list.files if e.path != MANIFEST_NAME]
    listed = file_list.by_path()
    tracker = ProgressTracker(file_list.total_size, progress)
    temporary = output.with_name(output.name + ".partial")
    try:
        with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
            _add_bytes(tar, FILE_LIST_NAME, file_list_bytes)
            if signature is not None:
                _add_bytes(tar, SIGNATURE_NAME, signature.to_bytes())
            for relative in ordered:
                entry = listed[relative]
                with open(root / relative, "rb") as stream:
                    hashing = _HashingReader(stream, lambda n, name=relative: tracker.advance(name, n))
                    tar.addfile(_member_info(relative, entry.size), hashing)
                    entry.check_digest(hashing.hexdigest(), hashing.size)
        os.replace(temporary, output)
    finally:
        temporary.unlink(missing_ok=True)


class _HashingReader(io.RawIOBase):
    def __init__(self, stream: BinaryIO, on_read: Callable[[int], None]) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self._on_read = on_read
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        self.size += len(data)
        self._on_read(len(data))
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def _member_info(name: str, size: int) -> tarfile.TarInfo:
    """A reproducible header: no owner, no timestamp, mode 0644."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    tar.addfile(_member_info(name, len(data)), io.BytesIO(data))
