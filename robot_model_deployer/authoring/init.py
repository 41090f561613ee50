"""``rmd bundle init``: a bundle directory from a model file and a folder of images.

The model's export is recognised (authoring/recognise.py) and its manifest
drafted; the images are split into calibration and validation sets (every
other image, so both cover the folder; with ground truth, the labelled
images validate); validation.expected comes from the truth file or else
from the model's own FP32 outputs; files.json is written last. The output
directory must not exist yet, so nothing of the author's is overwritten.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from robot_model_deployer.authoring.expected import fp32_entries, read_truth, write_expected
from robot_model_deployer.authoring.manifest_text import BundleLayout, render_manifest
from robot_model_deployer.authoring.recognise import Draft, recognise
from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.extract import ExtractionLimits
from robot_model_deployer.bundle.filelist import check_bundle_path, write_file_list
from robot_model_deployer.bundle.image_lists import IMAGE_SUFFIXES
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import MANIFEST_NAME, is_model_name, parse_manifest
from robot_model_deployer.inference.model_survey import survey_model

MAX_SCANNED = 100_000
MODEL_FILE, LABELS_FILE, EXPECTED_FILE = "model.onnx", "labels.txt", "expected.yaml"
CALIBRATION_DIR, VALIDATION_DIR = "calibration", "validation"


@dataclass(frozen=True)
class InitResult:
    root: Path
    draft: Draft
    calibration: int
    validation: int
    expected_from_truth: bool
    choices: tuple[str, ...]
    """The input and layout fields that are conventions, not read from the model (thresholds always are)."""


def init_bundle(*, model: Path, images: Path, out: Path, labels: Path | None = None, truth: Path | None = None,
                name: str | None = None, version: str = "0.1.0", calibration: int = 32,
                validation: int = 100) -> InitResult:
    """Write a bundle directory at ``out`` (which must not exist); raises BundleError (or ValueError) saying why not."""
    if calibration < 1 or validation < 1:
        raise ValueError("--calibration and --validation must each be at least 1")
    if out.exists():
        raise BundleError(f"{out} already exists; give -o a new directory (init never overwrites files)")
    if not model.is_file():
        raise BundleError(f"model {model} is not a file")
    draft = recognise(survey_model(model))
    found = scan_images(images)
    truth_entries = _truth_by_image(read_truth(truth), found, truth) if truth is not None else None
    calibration_set, validation_set = split_images(found, calibration, validation,
                                                   None if truth_entries is None else set(truth_entries))
    label_lines = _labels(labels, draft)
    name = name or _model_name(model)
    layout = BundleLayout(name=name, version=version, model=MODEL_FILE, labels=LABELS_FILE if label_lines else "",
                          calibration=CALIBRATION_DIR, validation=VALIDATION_DIR, expected=EXPECTED_FILE,
                          expected_note="ground truth from " + truth.name if truth is not None else
                          "this model's own FP32 outputs, not ground truth (rmd bundle expected --truth FILE)")
    text = render_manifest(draft, layout)
    parse_manifest(text, f"{out / MANIFEST_NAME}")  # a robot's reader: refuse here, not on the robot
    staging = out.with_name(f".{out.name}.init-{os.getpid()}")
    try:
        staging.mkdir(parents=True)
        shutil.copyfile(model, staging / MODEL_FILE)
        if label_lines:
            (staging / LABELS_FILE).write_text("\n".join(label_lines) + "\n", encoding="utf-8")
        copied = {kind: _copy_images(images, chosen, staging / kind)
                  for kind, chosen in ((CALIBRATION_DIR, calibration_set), (VALIDATION_DIR, validation_set))}
        (staging / MANIFEST_NAME).write_text(text, encoding="utf-8")
        (staging / EXPECTED_FILE).write_text("{}\n", encoding="utf-8")
        bundle = load_bundle_dir(staging)
        if truth_entries is not None:
            entries = {f"{VALIDATION_DIR}/{rel}": truth_entries[rel] for rel in validation_set}
        else:
            entries = fp32_entries(bundle)
        write_expected(bundle, entries)
        ExtractionLimits().check(write_file_list(staging))
        os.rename(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    choices = tuple(f"{section}.{key}" for section, fields in draft.sections.items()
                    for key, value in fields.items() if value.choice)
    return InitResult(out, draft, len(copied[CALIBRATION_DIR]), len(copied[VALIDATION_DIR]), truth is not None,
                      choices)


def scan_images(folder: Path) -> list[str]:
    """Image files under ``folder`` (IMAGE_SUFFIXES, hidden entries skipped), as sorted relative POSIX paths."""
    if not folder.is_dir():
        raise BundleError(f"--images {folder} is not a folder")
    found, seen = [], 0
    for directory, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        seen += len(dirnames) + len(filenames)
        if seen > MAX_SCANNED:
            raise BundleError(f"--images {folder} holds more than {MAX_SCANNED} entries; point it at a folder of "
                              "the images to ship")
        for filename in filenames:
            if not filename.startswith(".") and filename.lower().endswith(IMAGE_SUFFIXES):
                found.append((Path(directory) / filename).relative_to(folder).as_posix())
    if not found:
        raise BundleError(f"--images {folder} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(found)


def split_images(found: list[str], calibration: int, validation: int,
                 labelled: set[str] | None) -> tuple[list[str], list[str]]:
    """Calibration and validation images; disjoint whenever the folder has two or more.

    Without ground truth, images alternate (validation first) so both sets
    cover the whole folder; with it, the labelled images validate and the
    others calibrate (alternating among the labelled ones when there are no
    others). Each set is then thinned evenly to its count.
    """
    if labelled is not None:
        validate = [f for f in found if f in labelled]
        calibrate = [f for f in found if f not in labelled]
        if not validate:
            raise BundleError("the truth file names none of the images in --images")
        if not calibrate:
            validate, calibrate = validate[0::2], validate[1::2] or validate[:1]
    elif len(found) == 1:
        validate = calibrate = found
    else:
        validate, calibrate = found[0::2], found[1::2]
    return _thin(calibrate, calibration), _thin(validate, validation)


def _thin(items: list[str], count: int) -> list[str]:
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _truth_by_image(data: dict, found: list[str], path: Path) -> dict:
    present = set(found)
    unknown = [key for key in data if key not in present]
    if unknown:
        raise BundleError(f"{path} names {unknown[0]}, which is not an image under --images (keys are paths "
                          "relative to that folder)")
    return data


def _copy_images(source: Path, chosen: list[str], target: Path) -> list[str]:
    for relative in chosen:
        try:
            check_bundle_path(f"{target.name}/{relative}")
        except BundleError as exc:
            raise BundleError(f"image {relative}: {exc}; rename it") from None
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / relative, destination)
    return chosen


def _labels(labels: Path | None, draft: Draft) -> tuple[str, ...]:
    if labels is None:
        return draft.labels
    try:
        text = labels.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"--labels {labels} is not UTF-8 text; save it as UTF-8") from None
    lines = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not lines:
        raise BundleError(f"--labels {labels} is empty")
    if draft.labels and len(draft.labels) != len(lines):
        raise BundleError(f"--labels {labels} lists {len(lines)} classes but the model's metadata names "
                          f"{len(draft.labels)}; give the labels the model was trained with")
    draft.labels_note = f"from {labels.name}"
    return lines


def _model_name(model: Path) -> str:
    name = re.sub(r"[^a-z0-9_.-]+", "-", model.stem.lower()).strip("-._")[:64] or "model"
    if not is_model_name(name):
        raise BundleError(f"cannot make a model name from {model.name}; pass --name")
    return name
