"""Identifying the model a perception node serves: the model file's SHA-256 (bundle.filelist.file_sha256)."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.filelist import CHUNK_BYTES, file_sha256
from robot_model_deployer.testing.models import (
    classifier_manifest, colour_classifier, colour_detector, detector_manifest, write_bundle,
)


def test_sha256_of_a_bundle_model_file_is_the_digest_of_its_bytes(tmp_path: Path) -> None:
    model_bytes = colour_classifier(size=16).SerializeToString()
    bundle = load_bundle_dir(write_bundle(tmp_path / "bundle", model_bytes, classifier_manifest(size=16)))
    digest = file_sha256(bundle.model_path)
    assert digest == hashlib.sha256(model_bytes).hexdigest()
    assert len(digest) == 64 and digest == digest.lower()


def test_sha256_depends_on_the_model_only_not_the_manifest(tmp_path: Path) -> None:
    model = colour_classifier(size=16)
    manifest = classifier_manifest(size=16)
    first = load_bundle_dir(write_bundle(tmp_path / "a", model, manifest))
    manifest = {**manifest, "description": "same model, other manifest", "version": "2.0.0"}
    second = load_bundle_dir(write_bundle(tmp_path / "b", model, manifest))
    assert file_sha256(first.model_path) == file_sha256(second.model_path)


def test_different_models_have_different_digests(tmp_path: Path) -> None:
    classifier = write_bundle(tmp_path / "c", colour_classifier(size=16), classifier_manifest(size=16))
    detector = write_bundle(tmp_path / "d", colour_detector(size=32), detector_manifest(size=32))
    assert file_sha256(classifier / "model.onnx") != file_sha256(detector / "model.onnx")


@pytest.mark.parametrize("size", [1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7])
def test_digest_is_right_across_read_chunk_boundaries(tmp_path: Path, size: int) -> None:
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_empty_file_has_the_empty_digest(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    assert file_sha256(path) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_accepts_a_string_path(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"abc")
    assert file_sha256(str(path)) == hashlib.sha256(b"abc").hexdigest()


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing.onnx")
