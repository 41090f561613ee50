"""validation.expected written for a bundle: from ground truth the author has, or the model's own FP32 outputs.

The file format is the one optimize/gate and the shadow node read
(validation/labelled.py, load_expected_outputs); every file written here is
read back with that reader before this returns, so the two cannot drift.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.filelist import FILE_LIST_NAME, SIGNATURE_NAME, write_file_list
from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.bundle.strict_yaml import load_strict_yaml
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.validation.labelled import load_bundle_image, load_expected_outputs

MAX_TRUTH_BYTES = 16 << 20
EXPECTED_DIR = "expected"
"""Where label and mask PNGs of expected outputs go, relative to the bundle root (beside validation.expected)."""


def entry_of(task: Task, prediction: Prediction, root: Path, stem: str) -> dict[str, Any]:
    """One image's expected output in the validation.expected format; label and mask PNGs go under
    ``root``/EXPECTED_DIR, named after ``stem``.

    Classification: the top class. Boxes: [x1, y1, x2, y2, class_id] in image
    pixels, plus one mask PNG per box (instance segmentation) or the
    keypoints (pose). Segmentation: a class-id PNG at the image's size.
    """
    if task is Task.CLASSIFICATION:
        return {"class_id": int(prediction.class_ids[0])}
    if task is Task.SEGMENTATION:
        return {"label_image": _write_png(root, f"{stem}.png", prediction.label_image)}
    entry: dict[str, Any] = {"boxes": [[round(float(v), 2) for v in box] + [int(c)]
                                       for box, c in zip(prediction.boxes, prediction.class_ids)]}
    if task is Task.INSTANCE_SEGMENTATION:
        entry["masks"] = [_write_png(root, f"{stem}-{i}.png", mask.astype(np.uint8) * 255)
                          for i, mask in enumerate(prediction.masks)]
    elif task is Task.POSE:
        entry["keypoints"] = [[[round(float(v), 3) for v in point] for point in person]
                              for person in prediction.keypoints]
    return entry


def _write_png(root: Path, name: str, pixels: np.ndarray) -> str:
    relative = f"{EXPECTED_DIR}/{name}"
    (root / EXPECTED_DIR).mkdir(exist_ok=True)
    wide = pixels.dtype == np.uint16 and int(pixels.max(initial=0)) > 255
    Image.fromarray(pixels.astype(np.uint16 if wide else np.uint8)).save(root / relative)
    return relative


def fp32_entries(bundle: BundleDir) -> dict[str, dict[str, Any]]:
    """The bundle model's own answers on its validation images, by bundle path (PNGs written into the bundle)."""
    engine = InferenceEngine.from_bundle(bundle, warmup_runs=1)
    task = bundle.manifest.task
    return {image: entry_of(task, engine.infer(load_bundle_image(bundle.path(image)), PixelFormat.RGB8),
                            bundle.root, f"{index:04d}")
            for index, image in enumerate(bundle.manifest.validation.images)}


def read_truth(path: Path) -> dict[str, Any]:
    """A ground-truth file: a mapping from image path to its entry (the validation.expected format), YAML or JSON."""
    if path.stat().st_size > MAX_TRUTH_BYTES:
        raise BundleError(f"{path} is larger than {MAX_TRUTH_BYTES} bytes; split it or keep fewer images")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else load_strict_yaml(text, path.name)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path} cannot be read: {one_line(str(exc), 200)}") from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise BundleError(f"{path} must map image paths to expected outputs (docs/bundle-format.md)")
    return data


def write_expected(bundle: BundleDir, entries: Mapping[str, Any]) -> Path:
    """Write ``entries`` as the bundle's validation.expected and check it reads back for its validation images."""
    manifest = bundle.manifest
    if not manifest.validation.expected:
        raise BundleError("the manifest names no validation.expected file; set validation.expected: expected.yaml")
    path = bundle.path(manifest.validation.expected)
    missing = [image for image in manifest.validation.images if image not in entries]
    if missing:
        raise BundleError(f"no expected output for validation image {missing[0]} (and {len(missing) - 1} more); "
                          "give every validation image an entry")
    chosen = {image: entries[image] for image in manifest.validation.images}
    path.write_text(json.dumps(chosen, indent=1) + "\n" if path.suffix.lower() == ".json" else
                    "".join(f"{json.dumps(k)}: {json.dumps(v)}\n" for k, v in chosen.items()), encoding="utf-8")
    try:
        load_expected_outputs(path, manifest.validation.images, manifest.task)
    except ValueError as exc:
        raise BundleError(f"expected outputs for {bundle.root}: {exc}") from None
    return path


def recompute_expected(root: Path, truth: Path | None = None) -> tuple[Path, int, bool]:
    """``rmd bundle expected``: rewrite validation.expected (from ``truth``, else FP32, replacing the PNGs
    under EXPECTED_DIR) and files.json.

    Returns the file, the image count and whether a signature had to go
    (it signed the old files.json).
    """
    bundle = load_bundle_dir(root)
    if truth is None:
        shutil.rmtree(root / EXPECTED_DIR, ignore_errors=True)  # the PNGs of the outputs being replaced
    entries = read_truth(truth) if truth is not None else fp32_entries(bundle)
    path = write_expected(bundle, entries)
    signature = root / SIGNATURE_NAME
    had_signature = signature.exists()
    if had_signature:
        signature.unlink()
    if (root / FILE_LIST_NAME).exists():
        write_file_list(root)
    return path, len(bundle.manifest.validation.images), had_signature
