"""The file manifest (``files.json``): the sha256 and size of every bundle file.

The signature covers these exact bytes, so the encoding is canonical (sorted
keys, no spaces, ASCII, one trailing newline) and a parser refuses any other
encoding of the same content: one list, one byte string, one signature.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Callable, Iterator

from robot_model_deployer.bundle.errors import BundleFormatError, IntegrityError, UnsafeArchiveError
from robot_model_deployer.bundle.manifest import MANIFEST_NAME
from robot_model_deployer.bundle.text import one_line, shown

FILE_LIST_NAME = "files.json"
SIGNATURE_NAME = "signature.json"
_METADATA_NAMES = frozenset({FILE_LIST_NAME, SIGNATURE_NAME, MANIFEST_NAME})
FILE_LIST_FORMAT = 1
MAX_FILE_LIST_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 1024
MAX_JSON_DEPTH = 8
# A string to its closing quote, or to the end if unterminated: possessive, so one pass over the data.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"?')
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")


@dataclass(frozen=True)
class FileEntry:
    """One bundle file as its author packed it."""

    path: str
    size: int
    sha256: str

    def check_digest(self, sha256: str, size: int) -> None:
        """Refuse bytes whose hash or length differ from this entry (IntegrityError naming the file)."""
        if size != self.size or sha256 != self.sha256:
            raise IntegrityError(f"{self.path} does not match {FILE_LIST_NAME} (sha256 {sha256[:12]}..., {size} "
                                 f"bytes; expected {self.sha256[:12]}..., {self.size} bytes): the file was altered "
                                 "or damaged; get a fresh copy of the bundle")


@dataclass(frozen=True)
class FileList:
    """Every file of a bundle except ``files.json`` and ``signature.json`` themselves."""

    files: tuple[FileEntry, ...]

    @property
    def total_size(self) -> int:
        return sum(entry.size for entry in self.files)

    def get(self, path: str) -> FileEntry | None:
        return self.by_path().get(path)

    def by_path(self) -> dict[str, FileEntry]:
        return {entry.path: entry for entry in self.files}

    def to_bytes(self) -> bytes:
        """The canonical encoding that gets signed."""
        body = {"format": FILE_LIST_FORMAT,
                "files": [{"path": e.path, "sha256": e.sha256, "size": e.size} for e in self.files]}
        return (json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")


def check_bundle_path(path: str) -> str:
    """Return ``path`` if it is a plain relative POSIX path; raise UnsafeArchiveError otherwise.

    Printable characters only (no controls, bidi overrides or lone
    surrogates), each part at most 255 bytes of UTF-8 (what file systems
    take), the whole at most MAX_PATH_BYTES, and nothing under a metadata name.
    """
    if not path or "\\" in path or not path.isprintable():
        raise UnsafeArchiveError(f"member name {shown(path)} is not a plain relative path of printable characters; "
                                 "rename the file")
    if len(path.encode("utf-8")) > MAX_PATH_BYTES:
        raise UnsafeArchiveError(f"member name {shown(path)} is longer than {MAX_PATH_BYTES} bytes; rename the file")
    parts = path.split("/")
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        raise UnsafeArchiveError(f"member name {shown(path)} has a part longer than {MAX_NAME_BYTES} bytes; "
                                 "rename the file")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise UnsafeArchiveError(f"member {shown(path)} has an absolute path; a bundle may only hold relative paths")
    if any(part in ("..", ".") for part in parts) or pure.as_posix() != path:
        raise UnsafeArchiveError(f"member {shown(path)} contains '..', '.' or empty path parts "
                                 "(path traversal); a bundle may only hold plain relative paths")
    if len(parts) > 1 and parts[0] in _METADATA_NAMES:
        raise UnsafeArchiveError(f"member {shown(path)} lies under the metadata name {parts[0]}; rename it")
    return path


def load_metadata_json(data: bytes, source: str, limit: int) -> Any:
    """Decode a bundle metadata file (files.json, signature.json): at most ``limit`` bytes of ASCII JSON.

    Read before any signature is checked, so nesting is bounded before the
    decoder recurses, and a key given twice is refused rather than resolved.
    """
    if len(data) > limit:
        raise BundleFormatError(f"{source} is larger than {limit} bytes")
    if _json_depth(data) > MAX_JSON_DEPTH:
        raise BundleFormatError(f"{source} nests deeper than {MAX_JSON_DEPTH} levels; it is not a bundle file")
    try:
        return json.loads(data.decode("ascii"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleFormatError(f"{source} is not ASCII JSON: {one_line(str(exc), 200)}") from None


def _json_depth(data: bytes) -> int:
    """How deep ``[`` and ``{`` nest outside strings (linear; no recursion)."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b'""', data).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        deepest = max(deepest, depth)
        if deepest > MAX_JSON_DEPTH:
            break
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        repeated = next(key for index, (key, _) in enumerate(pairs) if key in dict(pairs[:index]))
        raise ValueError(f"the key {shown(repeated)} appears twice in one object")
    return body


def parse_file_list(data: bytes, source: str = FILE_LIST_NAME) -> FileList:
    """Parse canonical ``files.json`` bytes; raises BundleFormatError naming the problem."""
    body = load_metadata_json(data, source, MAX_FILE_LIST_BYTES)
    if not isinstance(body, dict) or set(body) != {"format", "files"}:
        raise BundleFormatError(f"{source} must be an object with exactly the keys 'format' and 'files'")
    if body["format"] != FILE_LIST_FORMAT:
        raise BundleFormatError(f"{source} has format {body['format']!r}; this robot reads format "
                                f"{FILE_LIST_FORMAT}; rebuild the bundle with a matching rmd")
    if not isinstance(body["files"], list):
        raise BundleFormatError(f"{source}: 'files' must be a list")
    entries = []
    for item in body["files"]:
        if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
            raise BundleFormatError(f"{source}: every entry needs exactly 'path', 'sha256' and 'size', got {item!r}")
        path, digest, size = item["path"], item["sha256"], item["size"]
        if not isinstance(path, str) or not isinstance(digest, str) or not _SHA256_RE.match(digest) \
                or isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BundleFormatError(f"{source}: bad entry {item!r} (path string, lowercase hex sha256, size >= 0)")
        entries.append(FileEntry(check_bundle_path(path), size, digest))
    file_list = FileList(tuple(entries))
    paths = [e.path for e in entries]
    if paths != sorted(set(paths)):
        raise BundleFormatError(f"{source}: paths must be unique and sorted")
    if FILE_LIST_NAME in paths or SIGNATURE_NAME in paths:
        raise BundleFormatError(f"{source} must not list {FILE_LIST_NAME} or {SIGNATURE_NAME}")
    listed = set(paths)
    for path in paths:
        parent = PurePosixPath(path).parent
        while parent.name:
            if parent.as_posix() in listed:
                raise UnsafeArchiveError(f"{source} lists {shown(parent.as_posix())} both as a file and as the "
                                         f"directory of {shown(path)}; rename one of them")
            parent = parent.parent
    if file_list.to_bytes() != data:
        raise BundleFormatError(f"{source} is not in canonical form; rebuild the bundle with rmd bundle create")
    return file_list


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, as files.json records it (also identifies served models)."""
    with open(path, "rb") as stream:
        return hash_stream(stream)[0]


def hash_stream(stream: BinaryIO, on_chunk: Callable[[bytes], None] | None = None,
                limit: int | None = None) -> tuple[str, int]:
    """sha256 and length of a stream, passing each chunk on; stops after ``limit`` + 1 bytes."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            return digest.hexdigest(), size
        digest.update(chunk)
        size += len(chunk)
        if on_chunk is not None:
            on_chunk(chunk)
        if limit is not None and size > limit:
            return digest.hexdigest(), size


def walk_bundle_dir(root: Path) -> Iterator[str]:
    """Relative paths of the regular files under ``root`` (metadata files excluded), sorted.

    Symlinks and special files are refused rather than followed: what gets
    hashed is exactly what gets packed.
    """
    found = []
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = Path(directory) / name
            mode = full.lstat().st_mode
            relative = full.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                raise UnsafeArchiveError(f"{relative} in {root} is a symlink; bundles hold regular files only")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise UnsafeArchiveError(f"{relative} in {root} is not a regular file")
            if relative not in (FILE_LIST_NAME, SIGNATURE_NAME):
                found.append(check_bundle_path(relative))
    yield from sorted(found)


def build_file_list(root: Path) -> FileList:
    """Hash every file under ``root`` into a FileList."""
    entries = []
    for relative in walk_bundle_dir(root):
        with open(root / relative, "rb") as stream:
            digest, size = hash_stream(stream)
        entries.append(FileEntry(relative, size, digest))
    return FileList(tuple(entries))


def write_file_list(root: Path) -> FileList:
    """Write ``files.json`` into an unpacked bundle directory (for ingesting a directory)."""
    file_list = build_file_list(root)
    (root / FILE_LIST_NAME).write_bytes(file_list.to_bytes())
    return file_list
