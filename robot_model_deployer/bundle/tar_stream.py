"""A strict, bounded reader for the tar subset that ``rmd bundle create`` writes.

The standard library's ``tarfile`` reads every tar dialect, keeps each pax
keyword it meets in memory and, on Python 3.11.7, parses pax headers with a
quadratic regular expression (CVE-2024-6232). None of that may be reachable by
a file nobody has signed yet, so bundles are read here instead: POSIX ustar
regular files, optionally preceded by one small pax header with known
keywords; every header's checksum checked; only zero blocks after the last
member; and a byte budget the caller tightens as it learns what the archive
may hold. Gzip is accepted as exactly one member with its CRC and length
checked and nothing after it. Everything else is refused by name, in time
linear in the bytes read.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import BinaryIO

from robot_model_deployer.bundle.errors import BundleFormatError, LimitExceededError, UnsafeArchiveError
from robot_model_deployer.bundle.text import shown

BLOCK = 512
MAX_PAX_BYTES = 4096
"""A pax header of ours holds at most a long path; anything larger is refused unread."""
GZIP_MAGIC = b"\x1f\x8b"

_ZERO_BLOCK = bytes(BLOCK)
_READ_CHUNK = 1 << 20
_USTAR_MAGIC = b"ustar\x0000"
_GNU_MAGIC = b"ustar  \x00"
_REGULAR = (b"0", b"\x00")
_PAX = b"x"
# Keywords Python's and GNU/BSD tar's pax writers emit for a regular file; ``path`` and ``size``
# are used, the others describe ownership and times and are ignored. Any other keyword is refused.
_PAX_KEYWORDS = frozenset({"path", "size", "mtime", "atime", "ctime", "uid", "gid", "uname", "gname"})
_MAX_PAX_RECORD_DIGITS = 4
_MAX_SIZE_DIGITS = 12
# Tar writers end with two zero blocks padded to a record (20 blocks by default; some use larger records).
_MAX_END_BLOCKS = 128
_TYPE_NAMES = {
    b"1": "a hard link", b"2": "a symlink", b"3": "a device node", b"4": "a device node",
    b"5": "a directory entry", b"6": "a FIFO", b"g": "a global pax header",
    b"L": "a GNU long-name header", b"K": "a GNU long-link header", b"S": "a GNU sparse file",
    b"D": "a GNU directory dump", b"M": "a GNU multi-volume part", b"N": "a GNU old long name",
    b"V": "a GNU volume label",
}


class TruncatedArchiveError(BundleFormatError):
    """The file ends before the archive does (inside a member, or after one without the end marker)."""


@dataclass(frozen=True)
class TarMember:
    """One regular file in the archive: its name (unchecked: the caller's rules apply) and size."""

    name: str
    size: int


class _GzipSource:
    """Exactly one gzip member, inflated on demand; CRC, length and the end of the file checked."""

    def __init__(self, file: BinaryIO, source: str) -> None:
        self._file = file
        self._source = source
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper only
        self._tail = b""
        self.input_budget = 0
        self.input_read = 0

    def read(self, size: int) -> bytes:
        out = bytearray()
        while len(out) < size and not self._inflate.eof:
            data = self._tail or self._read_input()
            if not data:
                raise BundleFormatError(f"{self._source}: the gzip stream ends early (truncated); copy it again")
            try:
                out += self._inflate.decompress(data, size - len(out))
            except zlib.error as exc:
                raise BundleFormatError(f"{self._source}: corrupt gzip data ({exc}); copy it again") from None
            self._tail = self._inflate.unconsumed_tail
        if self._inflate.eof and (self._inflate.unused_data or self._tail or self._file.read(1)):
            raise BundleFormatError(f"{self._source}: bytes follow the gzip stream (a second member or hidden "
                                    "data); a bundle is one archive and nothing else")
        return bytes(out)

    def _read_input(self) -> bytes:
        allowed = min(_READ_CHUNK, self.input_budget - self.input_read)
        if allowed <= 0:
            raise LimitExceededError(f"{self._source}: the gzip stream is longer than its contents can be; "
                                     "refusing it")
        data = self._file.read(allowed)
        self.input_read += len(data)
        return data


class TarStream:
    """Reads a bundle archive member by member, never past ``budget`` (decompressed) bytes.

    ``budget`` starts small: only the signed metadata may be read before the
    signature is checked. The caller raises it once it knows what the archive
    declares. Names are returned as found; the caller checks them.
    """

    def __init__(self, file: BinaryIO, source: str, budget: int) -> None:
        self._source = source
        self._gzip: _GzipSource | None = None
        magic = file.read(2)
        file.seek(0)
        if magic == GZIP_MAGIC:
            self._gzip = _GzipSource(file, source)
        self._file = file
        self.consumed = 0
        self.budget = budget
        self._member: TarMember | None = None
        self._member_left = 0
        self._padding = 0
        self._ended = False

    @property
    def budget(self) -> int:
        return self._budget

    @budget.setter
    def budget(self, value: int) -> None:
        self._budget = value
        if self._gzip is not None:
            # Deflate's stored blocks add 5 bytes per 64 KiB; the gzip header and trailer a little more.
            self._gzip.input_budget = value + value // 1024 + (64 << 10)

    def next(self) -> TarMember | None:
        """The next member's header (skipping what is left of the current one); None at the end."""
        if self._ended:
            return None
        first = self.consumed == 0
        self._finish_member()
        pax: dict[str, str] | None = None
        while True:
            block = self._read_upto(BLOCK)
            if first and len(block) < BLOCK:
                raise BundleFormatError(f"{self._source} is not a tar archive (it is only {len(block)} bytes); a "
                                        "bundle is a .tar file made by rmd bundle create")
            if len(block) < BLOCK:
                raise self._truncated()
            if block == _ZERO_BLOCK:
                if pax is not None:
                    raise BundleFormatError(f"{self._source}: a pax header is followed by the end of the archive")
                if not first:  # an archive of no members is refused by the caller, whatever follows
                    self._check_end()
                self._ended = True
                return None
            try:
                kind, name, size = self._parse_header(block)
            except BundleFormatError as exc:
                if not first:
                    raise
                raise BundleFormatError(f"{self._source} is not a tar archive ({str(exc).partition(': ')[2]}); a "
                                        "bundle is a .tar file made by rmd bundle create") from None
            first = False
            if kind == _PAX:
                if pax is not None:
                    raise BundleFormatError(f"{self._source}: two pax headers in a row; pack bundles with "
                                            "rmd bundle create")
                if size > MAX_PAX_BYTES:
                    raise LimitExceededError(f"{self._source}: a pax header of {size} bytes (at most "
                                             f"{MAX_PAX_BYTES} are allowed)")
                pax = _parse_pax(self._take(size), self._source)
                self._take_padding(-size % BLOCK)
                continue
            if pax is not None:
                name = pax.get("path", name)
                if "size" in pax:
                    size = _pax_size(pax["size"], self._source)
            self._member_left = size
            self._padding = -size % BLOCK
            self._member = TarMember(name, size)
            return self._member

    def read_all(self, limit: int) -> bytes:
        """The whole data of the current member, which must be at most ``limit`` bytes."""
        if self._member_left > limit:
            name = shown(self._member.name) if self._member is not None else "a member"
            raise LimitExceededError(f"{name} is {self._member_left} bytes; at most {limit} are allowed")
        return b"".join(iter(self.read, b""))

    def read(self, size: int = _READ_CHUNK) -> bytes:
        """Up to ``size`` bytes (at most 1 MiB) more of the current member's data; b"" at its end."""
        count = min(self._member_left, size if 0 <= size <= _READ_CHUNK else _READ_CHUNK)
        data = self._take(count) if count else b""
        self._member_left -= count
        return data

    def _finish_member(self) -> None:
        while self.read():
            pass
        self._take_padding(self._padding)
        self._padding = 0

    def _take_padding(self, count: int) -> None:
        if self._take(count).strip(b"\x00"):
            raise BundleFormatError(f"{self._source}: non-zero bytes in a member's padding (hidden data)")

    def _check_end(self) -> None:
        """After the first zero block: at least one more, only zero blocks, then the end of the file."""
        zero_blocks = 1
        while True:
            block = self._read_upto(BLOCK)
            if not block:
                break
            if zero_blocks >= _MAX_END_BLOCKS:
                raise BundleFormatError(f"{self._source}: more zero blocks after the end of the archive than a tar "
                                        "writer pads with (hidden data?); a bundle is one archive and nothing else")
            if len(block) < BLOCK:
                raise BundleFormatError(f"{self._source}: {len(block)} stray bytes after the end of the archive")
            if block != _ZERO_BLOCK:
                raise BundleFormatError(f"{self._source}: data after the end-of-archive marker (a second "
                                        "archive or hidden data); a bundle is one archive and nothing else")
            zero_blocks += 1
        if zero_blocks < 2:
            raise BundleFormatError(f"{self._source}: the archive's end marker is incomplete (truncated)")

    def _take(self, size: int) -> bytes:
        data = self._read_upto(size)
        if len(data) < size:
            raise self._truncated()
        return data

    def _truncated(self) -> TruncatedArchiveError:
        return TruncatedArchiveError(f"{self._source} is not a complete bundle archive (truncated or corrupt: it "
                                     "ends in the middle of a tar member); copy it again")

    def _read_upto(self, size: int) -> bytes:
        if self.consumed + size > self._budget:
            raise LimitExceededError(f"{self._source} holds more than the {self._budget} bytes its "
                                     "files.json accounts for (a decompression bomb or hidden data); refusing it")
        pieces = []
        got = 0
        while got < size:
            piece = self._gzip.read(size - got) if self._gzip is not None else self._file.read(size - got)
            if not piece:
                break
            pieces.append(piece)
            got += len(piece)
        self.consumed += got
        return b"".join(pieces)

    def _parse_header(self, block: bytes) -> tuple[bytes, str, int]:
        stored = _octal(block[148:156], "checksum", self._source)
        unsigned = sum(block) - sum(block[148:156]) + 8 * 0x20
        signed = unsigned - 256 * sum(1 for byte in block if byte >= 0x80) + 256 * sum(
            1 for byte in block[148:156] if byte >= 0x80)
        if stored not in (unsigned, signed):
            raise BundleFormatError(f"{self._source}: a tar header's checksum does not match (corrupt or altered "
                                    "archive); copy it again")
        magic = block[257:265]
        if magic == _GNU_MAGIC:
            raise UnsafeArchiveError(f"{self._source} is a GNU tar archive; bundles are POSIX ustar/pax archives "
                                     "made by rmd bundle create")
        if magic != _USTAR_MAGIC:
            raise BundleFormatError(f"{self._source} is not a POSIX ustar/pax archive; a bundle is a .tar file "
                                    "made by rmd bundle create")
        kind = block[156:157]
        name = _text(block[345:500], "name prefix", self._source)
        base = _text(block[0:100], "name", self._source)
        name = f"{name}/{base}" if name else base
        if kind not in _REGULAR and kind != _PAX:
            link = _text(block[157:257], "link name", self._source)
            what = f"is {_TYPE_NAMES[kind]}" if kind in _TYPE_NAMES else f"has tar type {kind!r}"
            target = f" (to '{shown(link)}')" if link and kind in b"12" else ""
            raise UnsafeArchiveError(f"{self._source}: member {shown(name)} {what}{target}; bundles hold regular "
                                     "files only")
        if block[157:257].strip(b"\x00"):
            raise UnsafeArchiveError(f"{self._source}: member {shown(name)} names a link target; bundles hold "
                                     "regular files only")
        if block[124] & 0x80:
            raise BundleFormatError(f"{self._source}: member {shown(name)} has a base-256 size field; bundle "
                                    "files are smaller than 8 GiB")
        for start, end, what in ((100, 108, "mode"), (108, 116, "uid"), (116, 124, "gid"), (136, 148, "mtime")):
            _octal(block[start:end], what, self._source)
        return kind, name, _octal(block[124:136], "size", self._source)


def _octal(field: bytes, what: str, source: str) -> int:
    digits = field.rstrip(b" \x00").lstrip(b" ")
    if not digits:
        return 0
    if not all(0x30 <= byte <= 0x37 for byte in digits):
        raise BundleFormatError(f"{source}: a tar header's {what} field is not an octal number (corrupt archive)")
    return int(digits, 8)


def _text(field: bytes, what: str, source: str) -> str:
    value, _, rest = field.partition(b"\x00")
    if rest.strip(b"\x00"):
        raise BundleFormatError(f"{source}: a tar header's {what} field has bytes after its end (corrupt archive)")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleFormatError(f"{source}: a member {what} is not UTF-8") from None


def _parse_pax(data: bytes, source: str) -> dict[str, str]:
    """``LEN keyword=value\\n`` records, each length exact; known keywords once each."""
    records: dict[str, str] = {}
    position = 0
    while position < len(data):
        space = data.find(b" ", position, position + _MAX_PAX_RECORD_DIGITS + 1)
        digits = data[position:space]
        if space < 0 or not digits.isdigit() or digits.startswith(b"0"):
            raise BundleFormatError(f"{source}: a malformed pax record (corrupt archive)")
        end = position + int(digits)
        record = data[space + 1:end]
        if end > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise BundleFormatError(f"{source}: a malformed pax record (corrupt archive)")
        keyword_bytes, _, value_bytes = record[:-1].partition(b"=")
        try:
            keyword, value = keyword_bytes.decode("ascii"), value_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise BundleFormatError(f"{source}: a pax record that is not UTF-8 (corrupt archive)") from None
        if keyword not in _PAX_KEYWORDS:
            raise UnsafeArchiveError(f"{source}: pax keyword {shown(keyword)} is not one a bundle uses; pack "
                                     "bundles with rmd bundle create")
        if keyword in records:
            raise BundleFormatError(f"{source}: pax keyword {keyword} appears twice in one header")
        if "\x00" in value:
            raise BundleFormatError(f"{source}: pax {keyword} holds a NUL byte")
        records[keyword] = value
        position = end
    return records


def _pax_size(value: str, source: str) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_SIZE_DIGITS:
        raise BundleFormatError(f"{source}: pax size {shown(value)} is not a size in bytes")
    return int(value)
