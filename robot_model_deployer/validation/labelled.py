"""A bundle's labelled validation set: its images and the outputs its author says are right.

Both gates read it. The optimize stage checks that a model's own FP32 output
reaches the accuracy its bundle states; the shadow node scores the candidate
and the live model on the candidate's labelled set and on the live version's,
so a new version can neither be worse on its own ground truth nor forget
what the old one knew. It lives below both (validation/), so the shadow node
reads it without importing the optimizer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from robot_model_deployer.bundle.loader import BundleDir
from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.bundle.strict_yaml import load_strict_yaml
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.expected_dense import DENSE_EXPECTED, ExpectedDenseError
from robot_model_deployer.validation.metrics import labelled_score
from robot_model_deployer.validation.shadow_report import LabelledComparison, LabelledSource

Infer = Callable[[np.ndarray], Prediction]


class ExpectedOutputsError(ValueError):
    """The bundle's validation.expected file does not match its validation images."""


@dataclass(frozen=True)
class LabelledSet:
    """Validation images (HxWx3 RGB uint8) with one expected output each."""

    task: Task
    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    expected: tuple[Prediction, ...]

    def score(self, infer: Infer) -> "LabelledRun":
        """Run a model on every image; its score against the expected outputs."""
        predictions = [infer(image) for image in self.images]
        broken = [name for name, p in zip(self.names, predictions) if not p.is_finite()]
        score = labelled_score(self.task, predictions, list(self.expected)) if not broken else 0.0
        return LabelledRun(score, tuple(broken))


@dataclass(frozen=True)
class LabelledRun:
    """One model on one labelled set: its score (0 when any output was NaN/Inf) and the images it broke on."""

    score: float
    non_finite: tuple[str, ...] = ()


def compare_on_labelled(source: LabelledSource, bundle: BundleDir, candidate: Infer,
                        live: Infer | None) -> LabelledComparison:
    """Score the candidate and the live model on ``bundle``'s labelled set (the promotion gate's ground truth).

    Every failure is a verdict input, never raised: a set that does not read,
    a model that raises, a candidate that outputs NaN/Inf, or no live model
    to compare with.
    """
    images = len(bundle.manifest.validation.images)
    nan = float("nan")
    if live is None:
        return LabelledComparison(source, images, nan, nan, "no live model is loaded beside the candidate to "
                                                            "compare with (set reference_model_dir)")
    try:
        labelled = read_labelled_set(bundle)
        if labelled is None:
            return LabelledComparison(source, 0, nan, nan, "the bundle has no validation.expected")
        candidate_run = labelled.score(candidate)
        live_run = labelled.score(live)
    except Exception as exc:  # a model or a file failing here is the candidate's verdict, not a crash
        return LabelledComparison(source, images, nan, nan, f"{type(exc).__name__}: {one_line(str(exc), 300)}")
    if candidate_run.non_finite:
        return LabelledComparison(source, images, candidate_run.score, live_run.score,
                                  f"the candidate output NaN or Inf on {len(candidate_run.non_finite)} of them "
                                  f"(first: {candidate_run.non_finite[0]})")
    return LabelledComparison(source, images, candidate_run.score, live_run.score)


def has_labelled_set(bundle: BundleDir) -> bool:
    """Whether the bundle ships ground truth (validation.expected for its validation.images)."""
    return bool(bundle.manifest.validation.expected and bundle.manifest.validation.images)


def read_labelled_set(bundle: BundleDir) -> LabelledSet | None:
    """The bundle's labelled set, or None when it ships no validation.expected.

    Raises ExpectedOutputsError (a ValueError) or OSError when the files do
    not read.
    """
    validation = bundle.manifest.validation
    if not has_labelled_set(bundle):
        return None
    expected = load_expected_outputs(bundle.path(validation.expected), validation.images, bundle.manifest.task)
    images = tuple(load_bundle_image(bundle.path(name)) for name in validation.images)
    return LabelledSet(bundle.manifest.task, tuple(validation.images), images, tuple(expected))


def load_bundle_image(path: str | Path) -> np.ndarray:
    """A bundle's calibration/validation image as HxWx3 RGB uint8 (PNG/JPEG, or .npy uint8)."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        array = np.load(path, allow_pickle=False)
        if array.dtype != np.uint8 or array.ndim not in (2, 3):
            raise ValueError(f"{path.name} must hold an HxW or HxWx3 uint8 image, got {array.dtype} {array.shape}")
        return np.repeat(array[:, :, None], 3, axis=2) if array.ndim == 2 else array[:, :, :3]
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def load_expected_outputs(path: str | Path, images: Sequence[str], task: Task) -> list[Prediction]:
    """Expected outputs, one per validation image, from YAML or JSON.

    Format: a mapping from image path (as listed in validation.images) to
    ``{class_id: N}`` for classification or ``{boxes: [[x1, y1, x2, y2,
    class_id], ...]}`` in image pixels for detection; segmentation, instance
    segmentation and pose entries are in validation.expected_dense.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else load_strict_yaml(text, path.name)
    except (ValueError, RecursionError) as exc:  # StrictYamlError and JSONDecodeError are ValueErrors
        raise ExpectedOutputsError(f"{path.name} cannot be read: {one_line(str(exc), 200)}") from None
    if not isinstance(data, dict):
        raise ExpectedOutputsError(f"{path.name} must map each validation image to its expected output")
    predictions = []
    for image in images:
        entry = data.get(image)
        if not isinstance(entry, dict):
            raise ExpectedOutputsError(f"{path.name} has no entry for validation image {image}")
        if task is Task.CLASSIFICATION:
            if not isinstance(entry.get("class_id"), int):
                raise ExpectedOutputsError(f"{path.name}: {image} needs an integer class_id")
            predictions.append(Prediction(np.array([entry["class_id"]], np.int32), np.ones(1, np.float32), ()))
            continue
        if task in DENSE_EXPECTED:
            try:
                predictions.append(DENSE_EXPECTED[task](entry, path.parent, f"{path.name}: {image}"))
            except ExpectedDenseError as exc:
                raise ExpectedOutputsError(str(exc)) from None
            continue
        rows = np.asarray(entry.get("boxes", []), dtype=np.float32).reshape(-1, 5) if entry.get("boxes") else \
            np.zeros((0, 5), np.float32)
        predictions.append(Prediction(rows[:, 4].astype(np.int32), np.ones(len(rows), np.float32), (),
                                      boxes=rows[:, :4].copy()))
    return predictions
