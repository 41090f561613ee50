"""The strict tar reader: what rmd and common tar writers produce reads back; every other dialect is refused."""
from __future__ import annotations

import gzip
import io
import tarfile
import time

import pytest

from robot_model_deployer.bundle.errors import BundleFormatError, LimitExceededError, UnsafeArchiveError
from robot_model_deployer.bundle.tar_stream import BLOCK, MAX_PAX_BYTES, TarStream

BUDGET = 1 << 20


def _tar(members: list[tuple[str, bytes]], fmt: int = tarfile.PAX_FORMAT, **extra: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.pax_headers = dict(extra)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _read(data: bytes, budget: int = BUDGET) -> list[tuple[str, bytes]]:
    stream = TarStream(io.BytesIO(data), "test.tar", budget)
    found = []
    while (member := stream.next()) is not None:
        found.append((member.name, stream.read_all(1 << 20)))
    return found


def _header(name: bytes = b"a.txt", kind: bytes = b"0", size: int = 0, magic: bytes = b"ustar\x0000",
            linkname: bytes = b"") -> bytearray:
    block = bytearray(BLOCK)
    block[0:len(name)] = name
    block[100:108] = b"0000644\x00"
    block[108:116] = block[116:124] = b"0000000\x00"
    block[124:136] = f"{size:011o}\x00".encode()
    block[136:148] = b"00000000000\x00"
    block[156:157] = kind
    block[157:157 + len(linkname)] = linkname
    block[257:265] = magic
    _fix_checksum(block)
    return block


def _fix_checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    block[148:156] = f"{sum(block):06o}\x00 ".encode()


def _archive(*blocks: bytes, end: bytes = bytes(2 * BLOCK)) -> bytes:
    return b"".join(blocks) + end


def test_reads_back_what_tarfile_writes_in_pax_and_ustar_formats_including_long_and_non_ascii_names():
    long_name = "calibration/" + "x" * 150 + ".png"
    members = [("files.json", b"{}\n"), (long_name, b"\x89PNG" * 300), ("labels/étiquettes.txt", b"chat\n"),
               ("empty", b"")]
    assert _read(_tar(members)) == members
    ustar = [("files.json", b"{}\n"), ("d" * 60 + "/" + "y" * 80 + ".bin", b"1" * 700)]
    assert _read(_tar(ustar, fmt=tarfile.USTAR_FORMAT)) == ustar


def test_reads_a_single_gzip_member():
    members = [("files.json", b"{}\n"), ("model.onnx", bytes(range(256)) * 40)]
    assert _read(gzip.compress(_tar(members))) == members


@pytest.mark.parametrize("kind, what", [(b"2", "a symlink"), (b"1", "a hard link"), (b"5", "a directory entry"),
                                        (b"6", "a FIFO"), (b"3", "a device node"),
                                        (b"L", "a GNU long-name header"), (b"K", "a GNU long-link header"),
                                        (b"S", "a GNU sparse file"), (b"g", "a global pax header"),
                                        (b"Z", "tar type b'Z'")])
def test_refuses_every_member_type_but_regular_files_by_name(kind, what):
    with pytest.raises(UnsafeArchiveError, match=what):
        _read(_archive(_header(kind=kind)))


def test_refuses_a_gnu_format_archive():
    with pytest.raises(UnsafeArchiveError, match="GNU tar"):
        _read(_archive(_header(magic=b"ustar  \x00")))


def test_refuses_a_regular_file_that_names_a_link_target():
    with pytest.raises(UnsafeArchiveError, match="link target"):
        _read(_archive(_header(linkname=b"/etc/passwd")))


def test_a_bad_header_checksum_is_an_error_not_the_end_of_the_archive():
    first = _header(name=b"files.json", size=3)
    second = _header(name=b"model.onnx")
    second[0:1] = b"M"  # checksum now wrong
    data = _archive(first, b"{}\n".ljust(BLOCK, b"\x00"), second)
    with pytest.raises(BundleFormatError, match="checksum"):
        _read(data)


@pytest.mark.parametrize("tail, match", [
    (b"x" * BLOCK, "after the end-of-archive"),
    (b"\x00" * 100, "stray bytes"),
])
def test_only_zero_blocks_may_follow_the_last_member(tail, match):
    with pytest.raises(BundleFormatError, match=match):
        _read(_tar([("a", b"1")]) + tail)


def test_refuses_two_concatenated_archives():
    one = _tar([("a", b"1")])
    with pytest.raises(BundleFormatError, match="after the end-of-archive"):
        _read(one + _tar([("b", b"2")]))


def test_refuses_a_truncated_archive_at_every_cut():
    data = _tar([("files.json", b"{}\n"), ("model.onnx", b"m" * 3000)])
    for cut in range(0, 3 * BLOCK + 3000, 97):
        with pytest.raises(BundleFormatError):
            _read(data[:cut])


def test_one_zero_block_is_not_a_complete_end_marker():
    with pytest.raises(BundleFormatError, match="end marker is incomplete"):
        _read(_archive(_header(name=b"a"), end=bytes(BLOCK)))


def test_refuses_hidden_bytes_in_padding():
    data = bytearray(_tar([("a", b"1")]))
    data[BLOCK + 1] = 0x41
    with pytest.raises(BundleFormatError, match="padding"):
        _read(bytes(data))


def test_a_large_pax_header_is_refused_without_being_read():
    header = _header(name=b"PaxHeader", kind=b"x", size=1 << 30)
    started = time.perf_counter()
    with pytest.raises(LimitExceededError, match=f"at most {MAX_PAX_BYTES}"):
        _read(_archive(header), budget=1 << 40)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("records, error, match", [
    ({"GNU.sparse.major": "1"}, UnsafeArchiveError, "GNU.sparse.major"),
    ({"linkpath": "/etc"}, UnsafeArchiveError, "linkpath"),
    ({"hdrcharset": "BINARY"}, UnsafeArchiveError, "hdrcharset"),
    ({"size": "12x"}, BundleFormatError, "not a size"),
    ({"size": "9" * 13}, BundleFormatError, "not a size"),
])
def test_pax_headers_hold_only_known_keywords_with_sane_values(records, error, match):
    with pytest.raises(error, match=match):
        _read(_tar([("a", b"1")], **records))


def _pax_member(body: bytes) -> bytes:
    header = _header(name=b"PaxHeader/a", kind=b"x", size=len(body))
    padded = body + bytes(-len(body) % BLOCK)
    return bytes(header) + padded + bytes(_header(name=b"a"))


@pytest.mark.parametrize("body", [
    b"10 path=ab\n",                      # length one too short
    b"12 path=a\n",                       # length too long for the data
    b"011 path=a\n",                      # leading zero
    b"x path=a\n",
    b"9 patha\n\n",                       # no '='
    b"10 path=a\n10 path=b\n",            # keyword twice
    b"12 path=a\x00b\n",                  # NUL in the value
    b"99999999 path=a\n",                 # absurd length
])
def test_malformed_pax_records_are_refused(body):
    with pytest.raises(BundleFormatError):
        _read(_archive(_pax_member(body)))


def test_a_pax_header_of_a_mebibyte_of_records_is_refused_quickly():
    body = b"".join(b"%d mtime=1\n" % len(b"xx mtime=1\n") for _ in range(100_000))
    started = time.perf_counter()
    with pytest.raises(LimitExceededError):
        _read(_archive(_pax_member(body)), budget=1 << 30)
    assert time.perf_counter() - started < 1.0


def test_two_pax_headers_in_a_row_are_refused():
    pax = _header(name=b"PaxHeader/a", kind=b"x", size=10)
    record = b"10 path=a\n".ljust(BLOCK, b"\x00")
    with pytest.raises(BundleFormatError, match="two pax headers"):
        _read(_archive(pax, record, pax, record, _header(name=b"a")))


def test_reading_stops_at_the_budget():
    data = _tar([("files.json", b"{}\n"), ("model.onnx", b"m" * 50_000)])
    with pytest.raises(LimitExceededError, match="files.json accounts for"):
        _read(data, budget=10 * BLOCK)


def test_a_gzip_bomb_stops_at_the_budget_without_inflating_it():
    bomb = gzip.compress(_tar([("files.json", b"{}\n"), ("big", bytes(200 << 20))]), compresslevel=9)
    started = time.perf_counter()
    with pytest.raises(LimitExceededError):
        _read(bomb, budget=4 << 20)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("mangle, match", [
    (lambda z: z + gzip.compress(b"more"), "follow the gzip stream"),
    (lambda z: z + b"\x00", "follow the gzip stream"),
    (lambda z: z[:-8] + bytes(8), "corrupt gzip"),      # CRC and length wrong
    (lambda z: z[:-4] + b"\x01\x00\x00\x00", "corrupt gzip"),
    (lambda z: z[:len(z) // 2], "ends early"),
])
def test_gzip_is_one_member_with_its_crc_and_length_checked_and_nothing_after_it(mangle, match):
    compressed = gzip.compress(_tar([("files.json", b"{}\n"), ("m", b"x" * 5000)]))
    with pytest.raises(BundleFormatError, match=match):
        _read(mangle(compressed))


def test_a_gzip_header_with_an_endless_name_field_stops_at_the_input_budget():
    header = b"\x1f\x8b\x08\x08" + bytes(6)  # FNAME set
    endless = header + b"a" * (8 << 20)
    with pytest.raises(LimitExceededError):
        _read(endless, budget=1 << 20)


def test_non_utf8_names_are_refused():
    with pytest.raises(BundleFormatError, match="UTF-8"):
        _read(_archive(_header(name=b"caf\xe9")))


def test_a_member_larger_than_the_callers_limit_is_refused_unread():
    stream = TarStream(io.BytesIO(_tar([("files.json", b"x" * 5000)])), "t.tar", BUDGET)
    assert stream.next() is not None
    with pytest.raises(LimitExceededError):
        stream.read_all(4096)
    assert stream.consumed == BLOCK


def test_zlib_errors_never_escape():
    broken = bytearray(gzip.compress(_tar([("a", b"1" * 4000)])))
    broken[20] ^= 0xFF
    with pytest.raises(BundleFormatError):
        _read(bytes(broken))
