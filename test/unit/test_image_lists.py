"""Folders and globs in calibration.images / validation.images: resolved against the bundle's own file list only."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from robot_model_deployer.bundle.errors import BundleError, BundleFormatError
from robot_model_deployer.bundle.extract import inspect_bundle
from robot_model_deployer.bundle.image_lists import MAX_IMAGES, ImageListError, resolve_images
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import MANIFEST_NAME, ManifestError, manifest_from_dict
from robot_model_deployer.testing.models import classifier_manifest, colour_classifier, write_bundle
from robot_model_deployer.validation.labelled import read_labelled_set

from bundle_helpers import bundle_files, standard_members, write_tar

LISTED = ["calibration/a.png", "calibration/b.JPG", "calibration/notes.txt", "calibration/sub/c.png",
          "validation/v1.png", "validation/v2.png", "validation/v10.png", "validation/x.npy", "model.onnx"]


def test_folder_names_its_images_at_any_depth_sorted() -> None:
    assert resolve_images(["calibration"], LISTED, "calibration.images") == (
        "calibration/a.png", "calibration/b.JPG", "calibration/sub/c.png")


def test_glob_matches_within_one_path_part() -> None:
    assert resolve_images(["calibration/*.png"], LISTED, "f") == ("calibration/a.png",)
    assert resolve_images(["*/*.png"], LISTED, "f") == (
        "calibration/a.png", "validation/v1.png", "validation/v10.png", "validation/v2.png")
    assert resolve_images(["validation/v?.png"], LISTED, "f") == ("validation/v1.png", "validation/v2.png")
    assert resolve_images(["calibration/*/*"], LISTED, "f") == ("calibration/sub/c.png",)


def test_files_stay_in_entry_order_and_repeats_are_dropped() -> None:
    assert resolve_images(["validation/v2.png", "validation", "model.onnx"], LISTED, "f") == (
        "validation/v2.png", "validation/v1.png", "validation/v10.png", "validation/x.npy", "model.onnx")


def test_a_glob_that_matches_nothing_is_refused() -> None:
    with pytest.raises(ImageListError) as info:
        resolve_images(["validation/*.jpg"], LISTED, "f")
    assert str(info.value) == "f: 'validation/*.jpg' matches no file the bundle lists; add the images or fix the glob"


@pytest.mark.parametrize("entry", ["pictures", "calibration/notes", "valid"])  # "valid": a part, not a prefix
def test_a_name_that_is_no_folder_of_images_stays_a_file_for_the_missing_file_check(entry: str) -> None:
    assert resolve_images([entry], LISTED, "f") == (entry,)


def test_more_than_the_bound_is_refused() -> None:
    many = [f"images/{i:05d}.png" for i in range(MAX_IMAGES + 1)]
    with pytest.raises(ImageListError, match=f"names more than {MAX_IMAGES} images"):
        resolve_images(["images"], many, "validation.images")
    assert len(resolve_images(["images"], many[:MAX_IMAGES], "f")) == MAX_IMAGES


@pytest.mark.timeout(10)
def test_a_pattern_built_to_backtrack_still_answers_in_linear_passes() -> None:
    names = ["a" * 250 + str(i) for i in range(200)]
    assert resolve_images(["*a" * 60 + "*a?"], names, "f") == tuple(sorted(n for n in names if len(n) == 251))


@pytest.mark.parametrize("entry", ["../*", "/etc/*", "validation/../../x", "a\\*.png"])
def test_patterns_outside_the_bundle_are_refused_by_the_manifest(entry: str) -> None:
    data = {**classifier_manifest(), "validation": {"images": [entry]}}
    with pytest.raises(ManifestError, match="must be a relative path inside the bundle"):
        manifest_from_dict(data)


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def folder_bundle_files(validation: list[str]) -> dict[str, bytes]:
    manifest = {**classifier_manifest(), "calibration": {"images": ["calibration"]},
                "validation": {"images": validation, "expected": "expected.yaml"}}
    files = bundle_files(manifest=manifest)
    files.update({"calibration/red.png": png((255, 0, 0)), "calibration/blue.png": png((0, 0, 255)),
                  "validation/green.png": png((0, 255, 0)), "validation/red.png": png((255, 0, 0)),
                  "expected.yaml": b"validation/green.png: {class_id: 1}\nvalidation/red.png: {class_id: 0}\n"})
    return files


def test_an_archive_resolves_its_lists_against_files_json(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "b.tar", standard_members(folder_bundle_files(["validation/*.png"]), None))
    manifest = inspect_bundle(bundle=tar).manifest
    assert manifest.calibration.images == ("calibration/blue.png", "calibration/red.png")
    assert manifest.validation.images == ("validation/green.png", "validation/red.png")


def test_an_archive_glob_never_reaches_a_file_files_json_does_not_list(tmp_path: Path) -> None:
    files = folder_bundle_files(["validation/*.jpg"])
    files["validation/hidden.jpg"] = png((1, 2, 3))  # in the archive, not in files.json
    listed = {k: v for k, v in files.items() if k != "validation/hidden.jpg"}
    tar = write_tar(tmp_path / "b.tar", standard_members(files, None, listed=listed))
    with pytest.raises(BundleFormatError) as info:
        inspect_bundle(bundle=tar)
    assert "validation.images: 'validation/*.jpg' matches no file the bundle lists" in str(info.value)


def test_a_bundle_directory_resolves_folders_and_the_labelled_set_uses_them(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    files = folder_bundle_files(["validation"])
    write_bundle(root, colour_classifier(), yaml.safe_load(files.pop(MANIFEST_NAME)),
                 extra_files={k: v for k, v in files.items() if k not in ("model.onnx", "labels.txt")})
    bundle = load_bundle_dir(root)
    assert bundle.manifest.validation.images == ("validation/green.png", "validation/red.png")
    labelled = read_labelled_set(bundle)
    assert [int(p.class_ids[0]) for p in labelled.expected] == [1, 0]


def test_a_bundle_directory_folder_with_a_symlink_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "bundle"
    files = folder_bundle_files(["validation"])
    write_bundle(root, colour_classifier(), yaml.safe_load(files.pop(MANIFEST_NAME)),
                 extra_files={k: v for k, v in files.items() if k not in ("model.onnx", "labels.txt")})
    (tmp_path / "outside.png").write_bytes(png((9, 9, 9)))
    os.symlink(tmp_path / "outside.png", root / "validation" / "zz.png")
    with pytest.raises(BundleError, match="is a symlink; bundles hold regular files only"):
        load_bundle_dir(root)
