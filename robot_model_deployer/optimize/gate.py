"""The accuracy gate: a variant is used only if it still says what FP32 says.

Classification: top-1 agreement with FP32 over the bundle's validation
images. Detection: matched-box F1 at IoU 0.5 against FP32 and the mean
score drift of the matched boxes. Thresholds come from the manifest's
``acceptance`` section (its defaults when absent). When the bundle ships
expected outputs, the variant must also not do worse against them than
FP32 does, by more than the same tolerance.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.bundle.strict_yaml import load_strict_yaml
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.metrics import detection_agreement, top1_agreement

IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class GateResult:
    """What the gate measured and decided; ``reason`` says why a variant was refused."""

    passed: bool
    top1_agreement: float | None = None
    detection_f1: float | None = None
    score_drift: float | None = None
    expected_agreement: float | None = None
    reason: str = ""


def check_variant(task: Task, candidates: Sequence[Prediction], references: Sequence[Prediction],
                  acceptance: AcceptanceSpec, expected: Sequence[Prediction] | None = None) -> GateResult:
    """Compare a variant's predictions with FP32's on the same images."""
    if not references:
        return GateResult(False, reason="no validation images: add validation.images to the bundle manifest")
    if any(not p.is_finite() for p in candidates):
        return GateResult(False, reason="variant produced NaN or infinite outputs")
    if task is Task.CLASSIFICATION:
        agreement = top1_agreement(candidates, references)
        expected_score = _expected_gap(candidates, references, expected, top1_agreement)
        reasons = []
        if agreement < acceptance.min_top1_agreement:
            reasons.append(f"top-1 agreement with FP32 {agreement:.3f} < {acceptance.min_top1_agreement:.3f}")
        tolerance = 1.0 - acceptance.min_top1_agreement
        if expected_score is not None and expected_score[0] < expected_score[1] - tolerance:
            reasons.append(f"top-1 vs expected outputs {expected_score[0]:.3f}, FP32 gets {expected_score[1]:.3f}")
        return GateResult(not reasons, top1_agreement=agreement,
                          expected_agreement=expected_score[0] if expected_score else None, reason="; ".join(reasons))
    match = detection_agreement(candidates, references, IOU_THRESHOLD)
    expected_score = _expected_gap(candidates, references, expected,
                                   lambda c, r: detection_agreement(c, r, IOU_THRESHOLD).f1)
    reasons = []
    if match.f1 < acceptance.min_detection_f1:
        reasons.append(f"box F1 vs FP32 at IoU {IOU_THRESHOLD} {match.f1:.3f} < {acceptance.min_detection_f1:.3f}")
    if match.mean_score_drift > acceptance.max_score_drift:
        reasons.append(f"mean score drift {match.mean_score_drift:.3f} > {acceptance.max_score_drift:.3f}")
    tolerance = 1.0 - acceptance.min_detection_f1
    if expected_score is not None and expected_score[0] < expected_score[1] - tolerance:
        reasons.append(f"box F1 vs expected outputs {expected_score[0]:.3f}, FP32 gets {expected_score[1]:.3f}")
    return GateResult(not reasons, detection_f1=match.f1, score_drift=match.mean_score_drift,
                      expected_agreement=expected_score[0] if expected_score else None, reason="; ".join(reasons))


def _expected_gap(candidates: Sequence[Prediction], references: Sequence[Prediction],
                  expected: Sequence[Prediction] | None, measure) -> tuple[float, float] | None:
    if not expected:
        return None
    return float(measure(candidates, expected)), float(measure(references, expected))


class ExpectedOutputsError(ValueError):
    """The bundle's validation.expected file does not match its validation images."""


def load_expected_outputs(path: str | Path, images: Sequence[str], task: Task) -> list[Prediction]:
    """Expected outputs, one per validation image, from YAML or JSON.

    Format: a mapping from image path (as listed in validation.images) to
    ``{class_id: N}`` for classification or ``{boxes: [[x1, y1, x2, y2,
    class_id], ...]}`` in image pixels for detection.
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
        rows = np.asarray(entry.get("boxes", []), dtype=np.float32).reshape(-1, 5) if entry.get("boxes") else \
            np.zeros((0, 5), np.float32)
        predictions.append(Prediction(rows[:, 4].astype(np.int32), np.ones(len(rows), np.float32), (),
                                      boxes=rows[:, :4].copy()))
    return predictions
