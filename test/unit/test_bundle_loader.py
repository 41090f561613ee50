"""Opening an extracted bundle directory: what is accepted and why others are refused."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.loader import MAX_MANIFEST_BYTES, BundleDir, load_bundle_dir
from robot_model_deployer.testing.models import (
    COLOUR_LABELS, classifier_manifest, colour_classifier, write_bundle,
)

MODEL_BYTES = colour_classifier(size=8).SerializeToString()


def make_bundle(root: Path, **changes) -> Path:
    manifest = classifier_manifest(size=8)
    manifest.update(changes)
    return write_bundle(root, MODEL_BYTES, manifest)


def test_good_bundle_loads_with_manifest_and_labels(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    bundle = load_bundle_dir(str(root))
    assert isinstance(bundle, BundleDir)
    assert bundle.root == root
    assert bundle.manifest.name == "colour_classifier"
    assert bundle.labels == COLOUR_LABELS
    assert bundle.model_path == root / "model.onnx"
    assert bundle.model_path.read_bytes() == MODEL_BYTES
    assert bundle.path("labels.txt") == root / "labels.txt"


def test_labels_are_stripped_and_blank_lines_dropped(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "labels.txt").write_text("  red \n\n green\r\nblue\n\n", encoding="utf-8")
    assert load_bundle_dir(root).labels == ("red", "green", "blue")


def test_bundle_without_labels_has_no_labels(tmp_path: Path) -> None:
    manifest = classifier_manifest(size=8)
    del manifest["labels"]
    root = write_bundle(tmp_path / "b", MODEL_BYTES, manifest)
    assert load_bundle_dir(root).labels == ()


def test_referenced_files_in_subdirectories_are_found(tmp_path: Path) -> None:
    manifest = classifier_manifest(size=8)
    manifest["validation"] = {"images": ["val/a.png"], "expected": "val/expected.yaml"}
    root = write_bundle(tmp_path / "b", MODEL_BYTES, manifest,
                        extra_files={"val/a.png": b"png", "val/expected.yaml": b"[]"})
    assert load_bundle_dir(root).manifest.validation.images == ("val/a.png",)


def test_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"bundle path .*nowhere does not exist"):
        load_bundle_dir(tmp_path / "nowhere")


def test_file_instead_of_directory_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar"
    archive.write_bytes(b"not a directory")
    with pytest.raises(BundleError, match=r"bundle.tar is not a bundle directory \(expected a directory with "
                                          r"manifest.yaml\)"):
        load_bundle_dir(archive)


def test_directory_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(MODEL_BYTES)
    with pytest.raises(BundleError, match="is not a bundle: it has no manifest.yaml"):
        load_bundle_dir(tmp_path)


def test_manifest_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").mkdir()
    with pytest.raises(BundleError, match="it has no manifest.yaml"):
        load_bundle_dir(tmp_path)


def test_invalid_manifest_becomes_bundle_error_naming_the_field(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", task="semantic")
    with pytest.raises(BundleError, match=r"manifest.yaml: task must be one of") as info:
        load_bundle_dir(root)
    assert str(root) in str(info.value)


@pytest.mark.parametrize("missing", ["model.onnx", "labels.txt"])
def test_missing_referenced_file_is_named(tmp_path: Path, missing: str) -> None:
    root = make_bundle(tmp_path / "b")
    (root / missing).unlink()
    with pytest.raises(BundleError, match=f"^{missing} named in manifest.yaml is missing from the bundle$"):
        load_bundle_dir(root)


def test_missing_validation_image_is_named(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", validation={"images": ["val/gone.png"]})
    with pytest.raises(BundleError, match="val/gone.png named in manifest.yaml is missing"):
        load_bundle_dir(root)


def test_referenced_directory_is_not_a_file(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b", calibration={"images": ["calib"]})
    (root / "calib").mkdir()
    with pytest.raises(BundleError, match="calib named in manifest.yaml is missing"):
        load_bundle_dir(root)


def test_symlink_pointing_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(MODEL_BYTES)
    root = make_bundle(tmp_path / "b")
    (root / "model.onnx").unlink()
    (root / "model.onnx").symlink_to(outside)
    with pytest.raises(BundleError, match="model.onnx named in manifest.yaml points outside the bundle"):
        load_bundle_dir(root)


@pytest.mark.parametrize("content", ["", "\n\n", "   \n\t\n"])
def test_empty_labels_file_is_refused(tmp_path: Path, content: str) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "labels.txt").write_text(content, encoding="utf-8")
    with pytest.raises(BundleError, match="labels file labels.txt is empty"):
        load_bundle_dir(root)


def test_manifest_larger_than_limit_is_refused_before_parsing(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    text = yaml.safe_dump(classifier_manifest(size=8)) + "#" * MAX_MANIFEST_BYTES + "\n"
    (root / "manifest.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(BundleError, match=f"manifest.yaml is larger than {MAX_MANIFEST_BYTES} bytes"):
        load_bundle_dir(root)


def test_manifest_at_the_limit_is_read(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    text = yaml.safe_dump(classifier_manifest(size=8))
    text += "#" * (MAX_MANIFEST_BYTES - len(text.encode()) - 1) + "\n"
    assert len(text.encode()) == MAX_MANIFEST_BYTES
    (root / "manifest.yaml").write_text(text, encoding="utf-8")
    assert load_bundle_dir(root).manifest.name == "colour_classifier"


def test_non_utf8_manifest_is_refused(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    path = root / "manifest.yaml"
    path.write_bytes(path.read_bytes() + "description: caf\xe9\n".encode("latin-1"))
    with pytest.raises(BundleError, match="manifest.yaml is not UTF-8 text"):
        load_bundle_dir(root)


def test_non_utf8_labels_are_refused_as_bundle_error(tmp_path: Path) -> None:
    root = make_bundle(tmp_path / "b")
    (root / "labels.txt").write_bytes("rouge\nvert\nbleu\xe9\n".encode("latin-1"))
    with pytest.raises(BundleError, match="labels.txt: the labels file is not UTF-8 text"):
        load_bundle_dir(root)
