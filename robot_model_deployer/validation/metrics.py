"""How closely two models agree: the measures every gate uses.

The optimization gate compares a quantized variant with FP32, the shadow
gate compares a candidate with the live model; both ask the same questions
of pairs of Predictions for the same images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.detection import box_iou
from robot_model_deployer.inference.postprocess import Prediction

# Boxes of the same class overlapping this much are the same object, in every gate.
IOU_THRESHOLD = 0.5


@dataclass(frozen=True)
class DetectionMatch:
    """Greedy one-to-one matching of candidate boxes to reference boxes."""

    true_positives: int
    candidate_boxes: int
    reference_boxes: int
    mean_score_drift: float

    @property
    def precision(self) -> float:
        return self.true_positives / self.candidate_boxes if self.candidate_boxes else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.reference_boxes if self.reference_boxes else 1.0

    @property
    def f1(self) -> float:
        if not self.candidate_boxes and not self.reference_boxes:
            return 1.0
        denominator = self.candidate_boxes + self.reference_boxes
        return 2.0 * self.true_positives / denominator


def top1_agrees(candidate: Prediction, reference: Prediction) -> bool:
    """Same best class (both empty also agree)."""
    if not len(candidate.class_ids) or not len(reference.class_ids):
        return len(candidate.class_ids) == len(reference.class_ids)
    return int(candidate.class_ids[0]) == int(reference.class_ids[0])


def top1_agreement(candidates: Sequence[Prediction], references: Sequence[Prediction]) -> float:
    """Share of images whose best class is the same in both lists."""
    _check_pairs(candidates, references)
    if not candidates:
        return 1.0
    return sum(top1_agrees(c, r) for c, r in zip(candidates, references)) / len(candidates)


def match_detections(candidate: Prediction, reference: Prediction, iou_threshold: float = 0.5) -> DetectionMatch:
    """Match boxes of the same class at IoU >= threshold, best reference score first."""
    used = np.zeros(len(reference.scores), dtype=bool)
    drifts: list[float] = []
    for index in np.argsort(-candidate.scores, kind="stable"):
        same_class = (reference.class_ids == candidate.class_ids[index]) & ~used
        if not same_class.any():
            continue
        ious = np.where(same_class, box_iou(candidate.boxes[index], reference.boxes), -1.0)
        best = int(np.argmax(ious))
        if ious[best] >= iou_threshold:
            used[best] = True
            drifts.append(abs(float(candidate.scores[index]) - float(reference.scores[best])))
    return DetectionMatch(
        true_positives=len(drifts),
        candidate_boxes=len(candidate.scores),
        reference_boxes=len(reference.scores),
        mean_score_drift=float(np.mean(drifts)) if drifts else 0.0,
    )


def detection_agreement(candidates: Sequence[Prediction], references: Sequence[Prediction],
                        iou_threshold: float = 0.5) -> DetectionMatch:
    """Matched-box counts pooled over all images (micro-averaged F1)."""
    _check_pairs(candidates, references)
    matches = [match_detections(c, r, iou_threshold) for c, r in zip(candidates, references)]
    matched = sum(m.true_positives for m in matches)
    drift_total = sum(m.mean_score_drift * m.true_positives for m in matches)
    return DetectionMatch(
        true_positives=matched,
        candidate_boxes=sum(m.candidate_boxes for m in matches),
        reference_boxes=sum(m.reference_boxes for m in matches),
        mean_score_drift=drift_total / matched if matched else 0.0,
    )


def labelled_score(task: Task, predictions: Sequence[Prediction], expected: Sequence[Prediction]) -> float:
    """How right a model is against ground truth: top-1 accuracy, or pooled box F1 at IOU_THRESHOLD."""
    if task is Task.CLASSIFICATION:
        return top1_agreement(predictions, expected)
    return detection_agreement(predictions, expected, IOU_THRESHOLD).f1


def frame_disagreement(task: Task, candidate: Prediction, reference: Prediction,
                       iou_threshold: float = IOU_THRESHOLD) -> str:
    """Why two models disagree on one image ('' when they agree): a different top-1 class, or unmatched boxes."""
    if task is Task.CLASSIFICATION:
        if top1_agrees(candidate, reference):
            return ""
        return f"top-1 {_top1_name(candidate)} vs {_top1_name(reference)}"
    match = match_detections(candidate, reference, iou_threshold)
    if match.true_positives == match.candidate_boxes == match.reference_boxes:
        return ""
    return (f"{match.true_positives} of {match.candidate_boxes} boxes match the other model's "
            f"{match.reference_boxes} at IoU {iou_threshold:g}")


def _top1_name(prediction: Prediction) -> str:
    if not len(prediction.class_ids):
        return "nothing"
    label = prediction.labels[0] if prediction.labels else ""
    return f"{label} ({int(prediction.class_ids[0])})" if label else f"class {int(prediction.class_ids[0])}"


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values; 0.0 for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def _check_pairs(candidates: Sequence[Prediction], references: Sequence[Prediction]) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"cannot compare {len(candidates)} predictions with {len(references)}")
