"""Bundle format v1 as an author sees it: keys, packing, signing, inspecting, verifying."""
from __future__ import annotations

import hashlib
import json
import stat
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from bundle_helpers import Keys, make_keys
from robot_model_deployer.bundle.errors import (BundleError, BundleFormatError, IntegrityError, SignatureError,
                                                UnsafeArchiveError)
from robot_model_deployer.bundle.extract import ExtractionLimits, inspect_bundle
from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, SIGNATURE_NAME, parse_file_list
from robot_model_deployer.bundle.pack import create_bundle, sign_bundle
from robot_model_deployer.bundle.signing import (KeyFileError, TrustStore, generate_keypair, load_public_key,
                                                 parse_signature)
from robot_model_deployer.bundle.verify import verify_bundle
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "src", colour_classifier(), classifier_manifest(version="1.2.0"),
                        extra_files={"calibration/red.png": b"\x89PNG fake"})


def test_generated_keys_are_private_and_named_by_key_id(tmp_path: Path) -> None:
    pair = generate_keypair(out_dir=tmp_path, name="robot-fleet")
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    raw = load_public_key(pair.public_key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert pair.key_id == hashlib.sha256(raw).hexdigest()[:16]
    with pytest.raises(KeyFileError, match="already exists"):
        generate_keypair(out_dir=tmp_path, name="robot-fleet")


def test_trust_store_refuses_a_broken_key_file(tmp_path: Path) -> None:
    (tmp_path / "broken.pub").write_text("-----BEGIN PUBLIC KEY-----\nnope\n", encoding="utf-8")
    with pytest.raises(KeyFileError, match="broken.pub is not a PEM public key"):
        TrustStore.load(tmp_path)
    with pytest.raises(KeyFileError, match="not a directory"):
        TrustStore.load(tmp_path / "missing")


def test_create_packs_in_format_order_and_reproducibly(source: Path, tmp_path: Path) -> None:
    first = tmp_path / "a.tar"
    file_list = create_bundle(source=source, output=first)
    with tarfile.open(first) as tar:
        names = tar.getnames()
        assert all(m.isreg() and m.mtime == 0 and m.uname == "" for m in tar.getmembers())
    assert names == [FILE_LIST_NAME, "manifest.yaml", "calibration/red.png", "labels.txt", "model.onnx"]
    assert [e.path for e in file_list.files] == sorted(names[1:])
    second = tmp_path / "b.tar"
    create_bundle(source=source, output=second)
    assert first.read_bytes() == second.read_bytes()


def test_create_refuses_a_symlink_and_an_output_inside_the_bundle(source: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="inside the bundle directory"):
        create_bundle(source=source, output=source / "me.tar")
    (source / "link.txt").symlink_to("/etc/hostname")
    with pytest.raises(UnsafeArchiveError, match="link.txt .* is a symlink"):
        create_bundle(source=source, output=tmp_path / "b.tar")
    assert not (tmp_path / "b.tar").exists()


def test_create_refuses_a_bundle_with_a_bad_manifest(source: Path, tmp_path: Path) -> None:
    (source / "manifest.yaml").write_text("schema_version: 1\nname: x\n", encoding="utf-8")
    with pytest.raises(BundleError, match="version is required"):
        create_bundle(source=source, output=tmp_path / "b.tar")


def test_sign_adds_then_replaces_the_signature(source: Path, tmp_path: Path, keys: Keys) -> None:
    bundle = tmp_path / "b.tar"
    create_bundle(source=source, output=bundle)
    other = generate_keypair(out_dir=tmp_path / "other", name="other")
    sign_bundle(bundle=bundle, key=other.private_key)
    signature = sign_bundle(bundle=bundle, key=keys.private_path)
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        stored = parse_signature(tar.extractfile(SIGNATURE_NAME).read())  # type: ignore[union-attr]
    assert names[:3] == [FILE_LIST_NAME, SIGNATURE_NAME, "manifest.yaml"] and names.count(SIGNATURE_NAME) == 1
    assert stored == signature and inspect_bundle(bundle=bundle).signature_key_id == signature.key_id
    assert verify_bundle(bundle=bundle, trust=keys.trust, model_check=check_model).key_id == signature.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.tar", "other", "src"]  # no scratch left


def test_sign_refuses_a_tampered_bundle(source: Path, tmp_path: Path, keys: Keys) -> None:
    bundle = tmp_path / "b.tar"
    create_bundle(source=source, output=bundle)
    data = bytearray(bundle.read_bytes())
    at = data.index(b"red\ngreen\nblue")
    data[at:at + 3] = b"RED"
    bundle.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="labels.txt does not match"):
        sign_bundle(bundle=bundle, key=keys.private_path)
    assert SIGNATURE_NAME not in tarfile.open(bundle).getnames()


def test_inspect_needs_no_trust_and_reads_no_model(source: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "b.tar"
    create_bundle(source=source, output=bundle)
    info = inspect_bundle(bundle=bundle)
    assert (info.manifest.name, str(info.manifest.version), info.signature_key_id) == \
        ("colour_classifier", "1.2.0", None)
    assert info.file_list.get("model.onnx") is not None


def test_verify_needs_a_trusted_signature(source: Path, tmp_path: Path, keys: Keys) -> None:
    bundle = tmp_path / "b.tar"
    create_bundle(source=source, output=bundle)
    with pytest.raises(SignatureError, match="not signed"):
        verify_bundle(bundle=bundle, trust=keys.trust, model_check=check_model)
    verified = verify_bundle(bundle=bundle, trust=None, model_check=check_model, allow_unsigned=True)
    assert not verified.signed and "NOT SIGNED" in verified.warnings[0]


def test_file_list_is_canonical_and_strict() -> None:
    good = (json.dumps({"files": [{"path": "a", "sha256": "0" * 64, "size": 1}], "format": 1},
                       separators=(",", ":"), sort_keys=True) + "\n").encode()
    assert parse_file_list(good).files[0].path == "a"
    for bad, reason in [
        (good.replace(b'"format":1', b'"format":2'), "format 2"),
        (good.replace(b'"size":1', b'"size":-1'), "bad entry"),
        (good.replace(b'"path":"a"', b'"path":"../a"'), "path traversal"),
        (good.replace(b"\n", b""), "canonical"),
        (b"\xff", "not ASCII JSON"),
    ]:
        with pytest.raises(BundleError, match=reason):
            parse_file_list(bad)


def test_signature_file_is_strict() -> None:
    with pytest.raises(BundleFormatError, match="64 bytes"):
        parse_signature(json.dumps({"format": 1, "algorithm": "ed25519", "key_id": "0" * 16,
                                    "signed_file": FILE_LIST_NAME, "signature": "AAAA"}).encode())
    with pytest.raises(BundleFormatError, match="rsa"):
        parse_signature(json.dumps({"format": 1, "algorithm": "rsa", "key_id": "0" * 16,
                                    "signed_file": FILE_LIST_NAME, "signature": "AAAA"}).encode())


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_files must be >= 1"):
        ExtractionLimits(max_files=0)
