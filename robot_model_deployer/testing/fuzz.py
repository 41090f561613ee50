"""Mutations of valid bundle archives, for fuzzing what reads them before and after trust.

Each mutator takes the archive split into its members and a random source
and returns new archive bytes with one kind of defect: header fields, pax
records, member types and order, sizes, truncation, trailing data, the JSON
and YAML metadata, gzip framing, hostile names. ``mutate`` stacks one to
three of them. The test suite drives these from hypothesis (a short run);
``bench/bench_hostile.py --fuzz N`` from a seeded ``random.Random`` (a long one).
"""
from __future__ import annotations

import gzip
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.extract import inspect_bundle
from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, SIGNATURE_NAME
from robot_model_deployer.bundle.signing import TrustStore
from robot_model_deployer.bundle.verify import verify_bundle

BLOCK = 512
_FIELDS = {"name": (0, 100), "mode": (100, 108), "uid": (108, 116), "gid": (116, 124), "size": (124, 136),
           "mtime": (136, 148), "checksum": (148, 156), "type": (156, 157), "linkname": (157, 257),
           "magic": (257, 263), "version": (263, 265), "uname": (265, 297), "prefix": (345, 500)}
_TYPES = b"0\x00125673gxLKSDMNVZ"
_NAMES = ["../escape", "/etc/passwd", "a/../../b", "./model.onnx", "model.onnx/", "x" * 300, "d/" * 200 + "f",
          "caf\udce9", "\x1b[2Jterm", "\u202egnp.onnx", "files.json", "signature.json", "manifest.yaml/x",
          "labels.txt/inner", "", "a\\b", "a//b", "\x00hidden", "model.onnx\x00.txt"]
_PAX_RECORDS = [b"path=../../evil", b"size=99999999999", b"size=-1", b"size=1e3", b"GNU.sparse.map=0,1",
                b"GNU.sparse.major=1", b"linkpath=/etc/shadow", b"hdrcharset=BINARY", b"mtime=1.5",
                b"uid=0", b"path=" + b"p" * 5000, b"comment=hi", b"path=", b"=novalue", b"path=a\x00b"]
_JSON_SNIPPETS = [b'"format":1,"format":2,', b"[" * 50_000, b'{"a":' * 5000, b"1" * 5000, b"\xff\xfe",
                  b'"size":99999999999999999999', b'"size":-1', b"NaN", b'"\\ud800"', b"{}" * 1000]
_YAML_SNIPPETS = [b"a: &x [1]\nb: *x\n", b"x: !!python/object/apply:os.system [ls]\n", b"[" * 5000,
                  b"name: a\nname: b\n", b"<<: {a: 1}\n", b"v: " + b"9" * 10_000 + b"\n", b"\t\x00\x1b",
                  b"version: 2024-01-01\n", b"---\n---\n", b"a: '" + b"x" * 100_000 + b"'\n"]


@dataclass(frozen=True)
class Member:
    """One archive member: its ustar header block, the pax data before it (if any) and its data."""

    header: bytes
    data: bytes
    pax: bytes | None = None

    @property
    def name(self) -> str:
        return _field(self.header, "name").rstrip(b"\x00").decode("utf-8", "replace")


def split_archive(archive: bytes) -> list[Member]:
    """The members of an archive as ``rmd bundle create`` writes it; ValueError where a header is garbled."""
    members: list[Member] = []
    offset, pax = 0, None
    while offset + BLOCK <= len(archive) and archive[offset:offset + BLOCK] != bytes(BLOCK):
        header = archive[offset:offset + BLOCK]
        size = int(_field(header, "size").strip(b"\x00 ") or b"0", 8)
        data = archive[offset + BLOCK:offset + BLOCK + size]
        offset += BLOCK + -(-size // BLOCK) * BLOCK
        if header[156:157] == b"x":
            pax = data
            continue
        members.append(Member(header, data, pax))
        pax = None
    return members


def join_archive(members: list[Member], tail: bytes = bytes(2 * BLOCK)) -> bytes:
    """Members back to archive bytes; headers are written as given (fix checksums first if wanted)."""
    out = bytearray()
    for member in members:
        if member.pax is not None:
            pax_header = _with_checksum(_set(_set(member.header, "type", b"x"), "size", _octal(len(member.pax), 12)))
            out += pax_header + _padded(member.pax)
        out += member.header + _padded(member.data)
    return bytes(out + tail)


def resized(member: Member, data: bytes, fix: bool = True) -> Member:
    """``member`` holding ``data``, its size field (and checksum, if ``fix``) updated."""
    header = _set(member.header, "size", _octal(len(data), 12))
    return replace(member, header=_with_checksum(header) if fix else header, data=data)


Mutator = Callable[[list[Member], random.Random], bytes]


def flip_bytes(members: list[Member], rng: random.Random) -> bytes:
    raw = bytearray(join_archive(members))
    span = len(raw) if rng.random() < 0.3 else min(len(raw), 4 * BLOCK)
    for _ in range(rng.randint(1, 8)):
        raw[rng.randrange(span)] ^= rng.randint(1, 255)
    return bytes(raw)


def header_field(members: list[Member], rng: random.Random) -> bytes:
    index = rng.randrange(len(members))
    field = rng.choice(list(_FIELDS))
    start, end = _FIELDS[field]
    width = end - start
    value = rng.choice([bytes(width), b"\xff" * width, b"7" * width, b"9" * width, b" " * width,
                        _octal(rng.randrange(1 << 33), width), b"\x80" + bytes(width - 1),
                        bytes(rng.randrange(256) for _ in range(width)), b"ustar  \x00"[:width]])
    header = _set(members[index].header, field, value)
    if field != "checksum" and rng.random() < 0.8:
        header = _with_checksum(header)
    members[index] = replace(members[index], header=header)
    return join_archive(members)


def size_lie(members: list[Member], rng: random.Random) -> bytes:
    index = rng.randrange(len(members))
    size = len(members[index].data)
    claim = rng.choice([size + 1, max(size - 1, 0), size + BLOCK, 0, 2 << 30, (8 << 30) - 1, 1 << 20])
    members[index] = replace(members[index], header=_with_checksum(_set(members[index].header, "size",
                                                                         _octal(claim, 12))))
    return join_archive(members)


def pax_records(members: list[Member], rng: random.Random) -> bytes:
    index = rng.randrange(len(members))
    records = [_pax_record(rng.choice(_PAX_RECORDS)) for _ in range(rng.randint(1, 4))]
    body = b"".join(records)
    if rng.random() < 0.2:
        body = _pax_record(b"mtime=1") * rng.choice([1000, 100_000])
    if rng.random() < 0.2:
        body = body.replace(b" ", b"0 ", 1) if rng.random() < 0.5 else b"999 " + body
    members[index] = replace(members[index], pax=body)
    return join_archive(members)


def member_type(members: list[Member], rng: random.Random) -> bytes:
    index = rng.randrange(len(members))
    kind = bytes([rng.choice(_TYPES)])
    header = _set(members[index].header, "type", kind)
    if kind in b"12" and rng.random() < 0.7:
        header = _set(header, "linkname", rng.choice([b"/etc/passwd", b"../../x", b"model.onnx"]))
    members[index] = replace(members[index], header=_with_checksum(header))
    return join_archive(members)


def member_order(members: list[Member], rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    i, j = rng.randrange(len(members)), rng.randrange(len(members))
    if choice == 0:
        members[i], members[j] = members[j], members[i]
    elif choice == 1:
        members.insert(j, members[i])
    elif choice == 2 and len(members) > 1:
        members.pop(i)
    else:
        members.append(members.pop(i))
    return join_archive(members)


def truncate(members: list[Member], rng: random.Random) -> bytes:
    raw = join_archive(members)
    return raw[:rng.randrange(len(raw))]


def trailing_data(members: list[Member], rng: random.Random) -> bytes:
    raw = join_archive(members)
    return raw + rng.choice([b"x", b"x" * BLOCK, bytes(BLOCK * rng.randint(1, 40)), raw, b"\x00" * 7,
                             gzip.compress(b"more")])


def metadata_json(members: list[Member], rng: random.Random) -> bytes:
    index = next((i for i, m in enumerate(members) if m.name in ("files.json", "signature.json")), 0)
    data = bytearray(members[index].data)
    snippet = rng.choice(_JSON_SNIPPETS)
    at = rng.randrange(len(data) + 1)
    mutated = bytes(data[:at]) + snippet + bytes(data[at + (len(snippet) if rng.random() < 0.5 else 0):])
    members[index] = resized(members[index], mutated, fix=rng.random() < 0.9)
    return join_archive(members)


def manifest_yaml(members: list[Member], rng: random.Random) -> bytes:
    index = next((i for i, m in enumerate(members) if m.name == "manifest.yaml"), 0)
    snippet = rng.choice(_YAML_SNIPPETS)
    data = members[index].data
    mutated = snippet + data if rng.random() < 0.5 else data + b"\n" + snippet
    members[index] = resized(members[index], mutated)
    return join_archive(members)


def gzip_framing(members: list[Member], rng: random.Random) -> bytes:
    packed = bytearray(gzip.compress(join_archive(members), compresslevel=1))
    choice = rng.randrange(6)
    if choice == 0:
        return bytes(packed) + gzip.compress(b"second member")
    if choice == 1:
        return bytes(packed) + b"\x00" * rng.randint(1, 600)
    if choice == 2:
        packed[-8 + rng.randrange(8)] ^= 0xFF  # CRC32 or ISIZE
        return bytes(packed)
    if choice == 3:
        return bytes(packed[:rng.randrange(len(packed))])
    if choice == 4:
        return b"\x1f\x8b\x08\x08" + bytes(6) + b"n" * rng.choice([10, 1 << 16, 3 << 20]) + b"\x00" + bytes(packed[10:])
    bomb = gzip.compress(join_archive(members[:1]) + bytes(64 << 20), compresslevel=9)
    return bomb


def hostile_name(members: list[Member], rng: random.Random) -> bytes:
    index = rng.randrange(len(members))
    name = rng.choice(_NAMES).encode("utf-8", "surrogateescape")
    if len(name) <= 100 and rng.random() < 0.6:
        header = _set(members[index].header, "name", name.ljust(100, b"\x00"))
        members[index] = replace(members[index], header=_with_checksum(header))
    else:
        members[index] = replace(members[index], pax=_pax_record(b"path=" + name))
    return join_archive(members)


MUTATORS: tuple[Mutator, ...] = (flip_bytes, header_field, size_lie, pax_records, member_type, member_order,
                                 truncate, trailing_data, metadata_json, manifest_yaml, gzip_framing, hostile_name)


def mutate(archive: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One to three stacked mutations of ``archive``; returns the bytes and the mutators' names."""
    data, names = archive, []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        mutator = rng.choice(MUTATORS)
        try:
            members = split_archive(data)
        except ValueError:  # an earlier mutation left nothing this simple splitter can follow
            break
        if not members:
            break
        data = mutator(members, rng)
        names.append(mutator.__name__)
        if mutator in (gzip_framing, truncate):
            break
    return data, "+".join(names)


def ustar_header(name: bytes, kind: bytes, size: int) -> bytes:
    """A POSIX ustar header block with a correct checksum, for building hostile archives by hand."""
    header = bytes(BLOCK)
    for field, value in (("name", name), ("mode", _octal(0o644, 8)), ("uid", _octal(0, 8)), ("gid", _octal(0, 8)),
                         ("size", _octal(size, 12)), ("mtime", _octal(0, 12)), ("type", kind),
                         ("magic", b"ustar\x00"), ("version", b"00")):
        header = _set(header, field, value)
    return _with_checksum(header)


def pax_record(body: bytes) -> bytes:
    """One pax record ``LEN keyword=value\\n`` for ``body`` = ``keyword=value``."""
    return _pax_record(body)


def _field(header: bytes, name: str) -> bytes:
    start, end = _FIELDS[name]
    return header[start:end]


def _set(header: bytes, name: str, value: bytes) -> bytes:
    start, end = _FIELDS[name]
    value = value[:end - start].ljust(end - start, b"\x00")
    return header[:start] + value + header[end:]


def _with_checksum(header: bytes) -> bytes:
    blank = _set(header, "checksum", b" " * 8)
    return _set(blank, "checksum", b"%06o\x00 " % sum(blank))


def _octal(value: int, width: int) -> bytes:
    digits = b"%o" % value
    return digits[-(width - 1):].rjust(width - 1, b"0") + b"\x00"


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def _pax_record(body: bytes) -> bytes:
    length = len(body) + 3
    while len(b"%d %s\n" % (length, body)) != length:
        length += 1
    return b"%d %s\n" % (length, body)



ALLOWED = frozenset({"refused", "accepted intact"})
"""The only outcomes a mutated bundle may have: a BundleError, or acceptance of exactly the signed files."""


@dataclass(frozen=True)
class FuzzTarget:
    """What a mutated archive is fed to; ``original`` is the good bundle's files, for the acceptance check."""

    trust: TrustStore
    original: dict[str, bytes]
    scratch: Path


def verify_outcome(data: bytes, target: FuzzTarget) -> str:
    """Feed ``data`` to ``verify_bundle`` as ``rmd bundle verify`` does; the outcome's name."""
    path = target.scratch / "case.tar"
    path.write_bytes(data)
    unpacked: dict[str, bytes] = {}

    def read_files(root: Path) -> None:  # the model check hook sees exactly what would be installed
        unpacked.update((p.relative_to(root).as_posix(), p.read_bytes()) for p in root.rglob("*") if p.is_file())

    try:
        verify_bundle(bundle=path, trust=target.trust, model_check=read_files)
    except BundleError:
        return "refused"
    except Exception as exc:  # what the fuzzer hunts for
        return type(exc).__name__
    for metadata in (FILE_LIST_NAME, SIGNATURE_NAME):
        unpacked.pop(metadata, None)
    return "accepted intact" if unpacked == target.original else "ACCEPTED CHANGED FILES"


def inspect_outcome(data: bytes, target: FuzzTarget) -> str:
    """Feed ``data`` to ``inspect_bundle`` (no trust: all of it is read unsigned); the outcome's name."""
    path = target.scratch / "case.tar"
    path.write_bytes(data)
    try:
        inspect_bundle(bundle=path)
    except BundleError:
        return "refused"
    except Exception as exc:  # what the fuzzer hunts for
        return type(exc).__name__
    return "accepted intact"
