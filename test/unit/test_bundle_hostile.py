"""Hostile and broken bundles: each is refused with a clear reason and leaves the robot as it was.

For every case the store already serves a committed version. After the
refusal: nothing outside ``staging/`` changed (only the history in
``state.json`` grew by one ``rejected`` event naming the reason), the slots
and stage are as before, staging is empty, and the active model still loads
and answers.
"""
from __future__ import annotations

import gzip
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from bundle_helpers import (Keys, Member, bundle_files, file_list_bytes, make_keys, regular, signature_bytes,
                            signed_tar, special, standard_members, write_tar)
from robot_model_deployer.bundle.errors import (BundleError, BundleFormatError, IntegrityError,
                                                LimitExceededError, ModelCheckError, SignatureError,
                                                UnsafeArchiveError, VersionConflictError)
from robot_model_deployer.bundle.extract import ExtractionLimits
from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, SIGNATURE_NAME
from robot_model_deployer.bundle.manifest import MANIFEST_NAME
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.store.model_store import STAGING_DIR, STATE_NAME, ModelStore
from robot_model_deployer.store.state import EventKind
from robot_model_deployer.testing.models import classifier_manifest, solid_image

NEXT = "2.0.0"  # newer than the active 1.0.0, so only the planted defect is wrong


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture()
def store(tmp_path: Path, keys: Keys) -> ModelStore:
    store = ModelStore.open(tmp_path / "store")
    installed = store.ingest(signed_tar(tmp_path / "v1.tar", keys.private, "1.0.0"), trust=keys.trust,
                             model_check=check_model)
    store.set_candidate(installed.ref)
    store.commit_candidate()
    return store


def _files(**changes: bytes) -> dict[str, bytes]:
    files = bundle_files(NEXT)
    files.update(changes)
    return files


def _manifest(**changes: object) -> bytes:
    body = classifier_manifest(version=NEXT)
    body.update(changes)
    return yaml.safe_dump(body, sort_keys=False).encode("utf-8")


# ---- builders: each returns the path of a bundle with one defect -----------------


def bad_signature(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private)
    raw = bytearray(members[1].data or b"")
    signature_at = raw.index(b'"signature": "') + len(b'"signature": "')
    raw[signature_at] = ord("B") if raw[signature_at] != ord("B") else ord("C")
    members[1] = regular(SIGNATURE_NAME, bytes(raw))
    return write_tar(tmp / "bad-signature.tar", members)


def signature_from_other_bundle(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private)
    other = file_list_bytes(bundle_files("9.9.9"))
    members[1] = regular(SIGNATURE_NAME, signature_bytes(other, keys.private))
    return write_tar(tmp / "copied-signature.tar", members)


def unknown_key(tmp: Path, keys: Keys) -> Path:
    return write_tar(tmp / "stranger.tar", standard_members(_files(), keys.stranger))


def unsigned(tmp: Path, keys: Keys) -> Path:
    return write_tar(tmp / "unsigned.tar", standard_members(_files(), None))


def tampered_file(tmp: Path, keys: Keys) -> Path:
    listed = _files()
    model = bytearray(listed["model.onnx"])
    model[-1] ^= 0xFF
    return write_tar(tmp / "tampered.tar", standard_members(_files(**{"model.onnx": bytes(model)}), keys.private,
                                                            listed=listed))


def resized_file(tmp: Path, keys: Keys) -> Path:
    listed = _files()
    files = _files(**{"labels.txt": b"red\ngreen\nblue\nmauve\n"})
    return write_tar(tmp / "resized.tar", standard_members(files, keys.private, listed=listed))


def extra_unlisted_file(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private) + [regular("payload.sh", b"#!/bin/sh\nrm -rf /\n")]
    return write_tar(tmp / "extra.tar", members)


def missing_file(tmp: Path, keys: Keys) -> Path:
    members = [m for m in standard_members(_files(), keys.private) if m.info.name != "labels.txt"]
    return write_tar(tmp / "missing.tar", members)


def path_traversal(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private) + [regular("../../escaped.txt", b"owned")]
    return write_tar(tmp / "traversal.tar", members)


def nested_traversal(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private) + [regular("calib/../../escaped.txt", b"owned")]
    return write_tar(tmp / "nested-traversal.tar", members)


def control_character_name(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private) + [regular("model.onnx\n; rm -rf ~", b"x")]
    return write_tar(tmp / "control.tar", members)


def absolute_path(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private) + [regular("/tmp/rmd-absolute.txt", b"owned")]
    return write_tar(tmp / "absolute.tar", members)


def _replace(members: list[Member], name: str, replacement: Member) -> list[Member]:
    return [replacement if m.info.name == name else m for m in members]


def symlink_escape(tmp: Path, keys: Keys) -> Path:
    members = _replace(standard_members(_files(), keys.private), "labels.txt",
                       special("labels.txt", tarfile.SYMTYPE, "/etc/passwd"))
    return write_tar(tmp / "symlink.tar", members)


def hardlink_escape(tmp: Path, keys: Keys) -> Path:
    members = _replace(standard_members(_files(), keys.private), "labels.txt",
                       special("labels.txt", tarfile.LNKTYPE, "/etc/passwd"))
    return write_tar(tmp / "hardlink.tar", members)


def device_node(tmp: Path, keys: Keys) -> Path:
    members = _replace(standard_members(_files(), keys.private), "labels.txt",
                       special("labels.txt", tarfile.CHRTYPE))
    return write_tar(tmp / "device.tar", members)


def fifo_member(tmp: Path, keys: Keys) -> Path:
    members = _replace(standard_members(_files(), keys.private), "labels.txt",
                       special("labels.txt", tarfile.FIFOTYPE))
    return write_tar(tmp / "fifo.tar", members)


def contiguous_file_member(tmp: Path, keys: Keys) -> Path:
    """Tar type '7' counts as a regular file to tarfile; the format admits only '0'."""
    members = standard_members(_files(), keys.private)
    for member in members:
        if member.info.name == "labels.txt":
            member.info.type = tarfile.CONTTYPE
    return write_tar(tmp / "contiguous.tar", members)


def directory_member(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private) + [special("calib", tarfile.DIRTYPE)]
    return write_tar(tmp / "directory.tar", members)


def good_next(tmp: Path, keys: Keys) -> Path:
    return signed_tar(tmp / "good.tar", keys.private, NEXT)


def decompression_bomb(tmp: Path, keys: Keys) -> Path:
    """Valid signed header, then a pax header claiming 64 MiB of zeros: gzip makes it ~64 KiB."""
    path = tmp / "bomb.tar.gz"
    bomb = tarfile.TarInfo("pax")
    bomb.type = tarfile.XHDTYPE
    bomb.size = 64 << 20
    with gzip.open(path, "wb", compresslevel=1) as out:
        for member in standard_members(_files(), keys.private)[:3]:
            data = member.data or b""
            out.write(member.info.tobuf(tarfile.USTAR_FORMAT) + data + b"\0" * (-len(data) % 512))
        out.write(bomb.tobuf(tarfile.USTAR_FORMAT))
        zeros = bytes(1 << 20)
        for _ in range(64):
            out.write(zeros)
    assert path.stat().st_size < 1 << 20
    return path


def gzip_of_zeros(tmp: Path, keys: Keys) -> Path:
    path = tmp / "zeros.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        zeros = bytes(1 << 20)
        for _ in range(32):
            out.write(zeros)
    return path


def huge_pax_header_first(tmp: Path, keys: Keys) -> Path:
    """Before files.json is even read: a pax header bigger than any header needs."""
    members = standard_members(_files(), keys.private)
    members[0].info.pax_headers = {"comment": "x" * (4 << 20)}
    return write_tar(tmp / "pax.tar", members)


def truncated_archive(tmp: Path, keys: Keys) -> Path:
    path = signed_tar(tmp / "full.tar", keys.private, NEXT)
    with tarfile.open(path) as tar:
        model = tar.getmember("model.onnx")
    cut = tmp / "truncated.tar"
    cut.write_bytes(path.read_bytes()[: model.offset_data + model.size // 2])
    return cut


def cut_between_members(tmp: Path, keys: Keys) -> Path:
    path = signed_tar(tmp / "full.tar", keys.private, NEXT)
    with tarfile.open(path) as tar:
        model = tar.getmember("model.onnx")
    cut = tmp / "cut.tar"
    cut.write_bytes(path.read_bytes()[: model.offset])
    return cut


def not_an_archive(tmp: Path, keys: Keys) -> Path:
    path = tmp / "notes.tar"
    path.write_bytes(b"These are my holiday photos, not a model bundle.\n" * 40)
    return path


def empty_file(tmp: Path, keys: Keys) -> Path:
    path = tmp / "empty.tar"
    path.write_bytes(b"")
    return path


def malformed_manifest(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: b"name: [unclosed\nversion: 2.0.0\n"})
    return write_tar(tmp / "bad-yaml.tar", standard_members(files, keys.private))


def manifest_bad_field(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: _manifest(task="semantic")})
    return write_tar(tmp / "bad-field.tar", standard_members(files, keys.private))


def unknown_schema(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: _manifest(schema_version=2)})
    return write_tar(tmp / "schema2.tar", standard_members(files, keys.private))


def huge_manifest(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: _manifest() + b"#" + b"x" * (2 << 20) + b"\n"})
    return write_tar(tmp / "huge-manifest.tar", standard_members(files, keys.private))


def downgrade(tmp: Path, keys: Keys) -> Path:
    return signed_tar(tmp / "old.tar", keys.private, "0.9.0")


def replay(tmp: Path, keys: Keys) -> Path:
    return signed_tar(tmp / "again.tar", keys.private, "1.0.0")


def replay_other_build(tmp: Path, keys: Keys) -> Path:
    return signed_tar(tmp / "again-build.tar", keys.private, "1.0.0+rebuilt")


def not_onnx(tmp: Path, keys: Keys) -> Path:
    return write_tar(tmp / "not-onnx.tar", standard_members(_files(**{"model.onnx": b"\x89PNG not a model"}),
                                                           keys.private))


def inputs_contradict(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: _manifest(input={**classifier_manifest()["input"], "width": 64})})
    return write_tar(tmp / "wrong-input.tar", standard_members(files, keys.private))


def wrong_input_dtype(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: _manifest(input={**classifier_manifest()["input"], "dtype": "uint8", "scale": None})})
    return write_tar(tmp / "wrong-dtype.tar", standard_members(files, keys.private))


def duplicate_member(tmp: Path, keys: Keys) -> Path:
    files = _files()
    evil = bytearray(files["model.onnx"])
    evil[-1] ^= 0xFF
    members = standard_members(files, keys.private) + [regular("model.onnx", bytes(evil))]
    return write_tar(tmp / "duplicate.tar", members)


def manifest_names_unlisted(tmp: Path, keys: Keys) -> Path:
    files = _files(**{MANIFEST_NAME: _manifest(labels="classes.txt")})
    return write_tar(tmp / "unlisted-ref.tar", standard_members(files, keys.private))


def file_list_not_first(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private)
    return write_tar(tmp / "order.tar", [members[2], members[0], members[1]] + members[3:])


def non_canonical_file_list(tmp: Path, keys: Keys) -> Path:
    members = standard_members(_files(), keys.private)
    spaced = (members[0].data or b"").replace(b",", b", ")
    members[0] = regular(FILE_LIST_NAME, spaced)
    members[1] = regular(SIGNATURE_NAME, signature_bytes(spaced, keys.private))
    return write_tar(tmp / "non-canonical.tar", members)


def file_list_without_manifest(tmp: Path, keys: Keys) -> Path:
    files = _files()
    listed = {k: v for k, v in files.items() if k != MANIFEST_NAME}
    return write_tar(tmp / "no-manifest-entry.tar", standard_members(files, keys.private, listed=listed))


def labels_not_utf8(tmp: Path, keys: Keys) -> Path:
    files = _files(**{"labels.txt": b"r\xe9d\ngreen\nblue\n"})
    return write_tar(tmp / "latin1.tar", standard_members(files, keys.private))


def empty_labels(tmp: Path, keys: Keys) -> Path:
    return write_tar(tmp / "no-labels.tar", standard_members(_files(**{"labels.txt": b"\n\n"}), keys.private))


def label_count_mismatch(tmp: Path, keys: Keys) -> Path:
    files = _files(**{"labels.txt": b"red\ngreen\n"})
    return write_tar(tmp / "two-labels.tar", standard_members(files, keys.private))


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Keys], Path]
    error: type[BundleError]
    match: str
    limits: ExtractionLimits = field(default_factory=ExtractionLimits)
    trusted: bool = True


CASES = {
    "bad signature": Case(bad_signature, SignatureError, "does not match files.json"),
    "signature copied from another bundle": Case(signature_from_other_bundle, SignatureError, "altered after signing"),
    "unknown key": Case(unknown_key, SignatureError, "not in the trust store"),
    "unsigned": Case(unsigned, SignatureError, "is not signed"),
    "signed but no trust store": Case(good_next, SignatureError, "no trust store", trusted=False),
    "tampered file": Case(tampered_file, IntegrityError, "model.onnx does not match files.json"),
    "file size differs from files.json": Case(resized_file, IntegrityError, "labels.txt is 21 bytes in the archive but files.json says 15"),
    "extra unlisted file": Case(extra_unlisted_file, IntegrityError, "payload.sh is in the archive but not listed"),
    "missing file": Case(missing_file, IntegrityError, "lists labels.txt but the archive does not contain it"),
    "path traversal": Case(path_traversal, UnsafeArchiveError, "path traversal"),
    "nested path traversal": Case(nested_traversal, UnsafeArchiveError, "path traversal"),
    "absolute path": Case(absolute_path, UnsafeArchiveError, "absolute path"),
    "control character in a name": Case(control_character_name, UnsafeArchiveError, "printable characters"),
    "symlink escape": Case(symlink_escape, UnsafeArchiveError, "is a symlink \\(to '/etc/passwd'\\)"),
    "hardlink escape": Case(hardlink_escape, UnsafeArchiveError, "is a hard link \\(to '/etc/passwd'\\)"),
    "device node": Case(device_node, UnsafeArchiveError, "is a device node"),
    "fifo": Case(fifo_member, UnsafeArchiveError, "is a FIFO"),
    "directory entry": Case(directory_member, UnsafeArchiveError, "is a directory entry"),
    "unusual tar member type": Case(contiguous_file_member, UnsafeArchiveError, "has tar type b'7'"),
    "oversized file": Case(good_next, LimitExceededError, "is \\d+ bytes, more than the per-file limit of 200",
                           ExtractionLimits(max_file_bytes=200)),
    "too many files": Case(good_next, LimitExceededError, "bundle has 3 files, more than the limit of 2",
                           ExtractionLimits(max_files=2)),
    "too many bytes in total": Case(good_next, LimitExceededError, "more than the limit of 400",
                                    ExtractionLimits(max_total_bytes=400)),
    "decompression bomb": Case(decompression_bomb, LimitExceededError, "a pax header of 67108864 bytes"),
    "gzip of zeros": Case(gzip_of_zeros, BundleFormatError, "empty archive, not a bundle"),
    "huge pax header before files.json": Case(huge_pax_header_first, LimitExceededError,
                                              r"a pax header of \d+ bytes \(at most 4096"),
    "truncated inside a file": Case(truncated_archive, BundleFormatError, "truncated or corrupt"),
    "truncated between files": Case(cut_between_members, IntegrityError, "lists model.onnx but the archive does not"),
    "not an archive": Case(not_an_archive, BundleFormatError, "not a tar archive"),
    "empty file": Case(empty_file, BundleFormatError, "not a tar archive"),
    "malformed manifest": Case(malformed_manifest, BundleFormatError, "manifest.yaml is not valid YAML"),
    "manifest field with a bad value": Case(manifest_bad_field, BundleFormatError, "task must be one of"),
    "unknown schema version": Case(unknown_schema, BundleFormatError, "schema_version 2 is not supported"),
    "huge manifest": Case(huge_manifest, LimitExceededError, "manifest.yaml is \\d+ bytes; at most 1048576"),
    "downgrade": Case(downgrade, VersionConflictError, "0.9.0 is a downgrade"),
    "replay of the same version": Case(replay, VersionConflictError, "1.0.0 is already installed"),
    "replay with other build metadata": Case(replay_other_build, VersionConflictError,
                                             "replay of the same version"),
    "model is not ONNX": Case(not_onnx, ModelCheckError, "not a model ONNX Runtime can load"),
    "model inputs contradict manifest": Case(inputs_contradict, ModelCheckError, "axis 3 differs"),
    "model input dtype contradicts manifest": Case(wrong_input_dtype, ModelCheckError,
                                                   "input.dtype uint8"),
    "duplicate member": Case(duplicate_member, IntegrityError, "model.onnx appears twice"),
    "manifest names a file not in files.json": Case(manifest_names_unlisted, IntegrityError,
                                                    "names classes.txt, which files.json does not list"),
    "files.json not first": Case(file_list_not_first, BundleFormatError, "expected files.json"),
    "files.json not canonical": Case(non_canonical_file_list, BundleFormatError, "not in canonical form"),
    "files.json does not list the manifest": Case(file_list_without_manifest, IntegrityError,
                                                  "does not list manifest.yaml"),
    "labels not UTF-8": Case(labels_not_utf8, BundleFormatError, "labels file is not UTF-8"),
    "labels file empty": Case(empty_labels, BundleFormatError, "labels file labels.txt is empty"),
    "labels contradict model": Case(label_count_mismatch, ModelCheckError, "scores 3 classes"),
}


def _outside_staging(root: Path) -> dict[str, bytes]:
    snapshot = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if relative.split("/")[0] == STAGING_DIR or relative == STATE_NAME:
            continue
        snapshot[relative] = path.read_bytes() if path.is_file() else b"<dir>"
    return snapshot


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_hostile_bundle_is_refused_and_changes_nothing(case: Case, store: ModelStore, keys: Keys,
                                                       tmp_path: Path) -> None:
    bundle = case.build(tmp_path, keys)
    before_files = _outside_staging(store.root)
    before = store.state
    started = time.monotonic()

    with pytest.raises(case.error, match=case.match) as refused:
        store.ingest(bundle, trust=keys.trust if case.trusted else None, model_check=check_model, limits=case.limits)

    assert time.monotonic() - started < 5.0
    message = str(refused.value)
    assert "\n" not in message or case.error is BundleFormatError
    assert _outside_staging(store.root) == before_files
    assert list((store.root / STAGING_DIR).iterdir()) == []
    after = store.state
    assert (after.active, after.previous, after.candidate, after.stage, after.bad, after.newest) == \
        (before.active, before.previous, before.candidate, before.stage, before.bad, before.newest)
    last = after.history[-1]
    assert last.kind is EventKind.REJECTED and message in last.message
    # The robot keeps serving what it served.
    reopened = ModelStore.open(store.root)
    assert reopened.state.active == before.active
    engine = InferenceEngine.from_bundle(reopened.installed(reopened.state.active).bundle, warmup_runs=1)
    assert engine.infer(solid_image("green")).labels[0] == "green"


def test_no_file_is_created_outside_the_store(store: ModelStore, keys: Keys, tmp_path: Path) -> None:
    for build in (path_traversal, absolute_path, symlink_escape, hardlink_escape):
        with pytest.raises(UnsafeArchiveError):
            store.ingest(build(tmp_path, keys), trust=keys.trust, model_check=check_model)
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not Path("/tmp/rmd-absolute.txt").exists()
