"""Agreement measures for masks and keypoints, and the types of the per-task measure table.

Every measure is a Tally per image (a matched amount over a total), summed
over images: pooled box F1 is 2 TP over candidate + reference boxes, and the
mask and keypoint measures follow the same shape with each match weighted by
how well it matches (mask IoU, OKS). So one unmatched object costs as much as
a wrong one, both models empty agree, and a shadow run keeps two numbers per
model pair, whatever the task. validation.metrics.TASK_MEASURES says which
measure judges which task.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Callable, Sequence

import numpy as np

from robot_model_deployer.inference.detection import box_iou
from robot_model_deployer.inference.postprocess import Prediction

# Objects of one class overlapping at least this much (box IoU, mask IoU) are the same object.
MATCH_THRESHOLD = 0.5
# COCO's per-keypoint OKS constants (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles).
COCO_SIGMAS = (0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062,
               0.107, 0.107, 0.087, 0.087, 0.089, 0.089)
# For other keypoint sets: about COCO's mean.
DEFAULT_SIGMA = 0.05
# A keypoint with a visibility score above this is judged.
VISIBLE = 0.5
# Samples: a frame whose mask IoU or OKS is below this counts as a disagreement.
FRAME_FLOOR = 0.75


class GateMeasure(str, Enum):
    TOP1 = "top1_agreement"
    BOX_F1 = "box_f1"
    MASK_IOU = "mask_iou"
    KEYPOINT_OKS = "keypoint_oks"


@dataclass(frozen=True)
class Tally:
    """A matched amount over a total, summed over images; ``value`` is 1.0 when nothing was there to match."""

    matched: float = 0.0
    total: float = 0.0

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.matched + other.matched, self.total + other.total)

    @property
    def value(self) -> float:
        return self.matched / self.total if self.total else 1.0


@dataclass(frozen=True)
class TaskMeasure:
    """How one task is judged: the measure, its words, the acceptance field of its gate threshold.

    ``boxes``: the task's outputs are boxes (precision, recall and boxes per
    frame are reported). ``distribution``: what the shadow's score
    distribution check compares (the mean of the first score, or of every
    box score when ``boxes``).
    """

    measure: GateMeasure
    name: str
    threshold_field: str
    tally: Callable[[Prediction, Prediction], Tally]
    boxes: bool
    distribution: str

    def threshold(self, acceptance: object) -> float:
        return float(getattr(acceptance, self.threshold_field))

    def total(self, candidates: Sequence[Prediction], references: Sequence[Prediction]) -> Tally:
        if len(candidates) != len(references):
            raise ValueError(f"cannot compare {len(candidates)} predictions with {len(references)}")
        return sum((self.tally(c, r) for c, r in zip(candidates, references)), Tally())

    def score(self, candidates: Sequence[Prediction], references: Sequence[Prediction]) -> float:
        return self.total(candidates, references).value

    def disagreement(self, candidate: Prediction, reference: Prediction) -> str:
        """Why the two differ on one image ('' when they agree well enough to show no sample)."""
        value = self.tally(candidate, reference).value
        if value >= FRAME_FLOOR:
            return ""
        return f"{self.name} {value:.3f} against the other model (below {FRAME_FLOOR:g})"


def semantic_tally(candidate: Prediction, reference: Prediction) -> Tally:
    """Mean IoU over the classes either label image has (one image counts 1); different sizes count 0."""
    a, b = candidate.label_image, reference.label_image
    if a.shape != b.shape:
        return Tally(0.0, 1.0)
    if not a.size:
        return Tally(1.0, 1.0)
    classes = int(max(a.max(), b.max())) + 1
    pairs = np.bincount(a.reshape(-1).astype(np.int64) * classes + b.reshape(-1), minlength=classes * classes)
    confusion = pairs.reshape(classes, classes)
    inter = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - inter
    present = union > 0
    return Tally(float((inter[present] / union[present]).mean()), 1.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of one size (two empty masks: 1.0)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def instance_tally(candidate: Prediction, reference: Prediction) -> Tally:
    """2 x the mask IoU of each same-class match (mask IoU >= MATCH_THRESHOLD) over all masks of both."""
    def similarity(i: int, j: int) -> float:
        # Boxes that do not touch cannot have overlapping masks: skip the full-image comparison.
        if candidate.masks[i].shape != reference.masks[j].shape or \
                not box_iou(candidate.boxes[i], reference.boxes[j:j + 1])[0] > 0:
            return 0.0
        return mask_iou(candidate.masks[i], reference.masks[j])
    matches = _greedy_matches(candidate, reference, similarity)
    return Tally(2.0 * sum(matches), float(len(candidate.scores) + len(reference.scores)))


def pose_tally(candidate: Prediction, reference: Prediction) -> Tally:
    """2 x the OKS of each same-class box match (box IoU >= MATCH_THRESHOLD) over all objects of both."""
    def similarity(i: int, j: int) -> float:
        overlap = float(box_iou(candidate.boxes[i], reference.boxes[j:j + 1])[0])
        return overlap if overlap >= MATCH_THRESHOLD else 0.0
    total = float(len(candidate.scores) + len(reference.scores))
    pairs = _greedy_pairs(candidate, reference, similarity)
    return Tally(2.0 * sum(keypoint_similarity(candidate.keypoints[i], reference.keypoints[j],
                                               reference.boxes[j]) for i, j in pairs), total)


def keypoint_similarity(candidate: np.ndarray, reference: np.ndarray, reference_box: np.ndarray) -> float:
    """COCO-style OKS of one object's (K, 3) keypoints, scaled by the reference box's area.

    Judged on the keypoints the reference sees (visibility > VISIBLE); when it
    sees none, 1.0 if the candidate sees none either, else 0.0.
    """
    if candidate.shape != reference.shape:
        return 0.0
    visible = reference[:, 2] > VISIBLE
    if not visible.any():
        return float(not (candidate[:, 2] > VISIBLE).any())
    sigmas = np.asarray(COCO_SIGMAS if len(reference) == len(COCO_SIGMAS) else (DEFAULT_SIGMA,) * len(reference))
    area = max(float((reference_box[2] - reference_box[0]) * (reference_box[3] - reference_box[1])), 1.0)
    distance = ((candidate[:, :2] - reference[:, :2]) ** 2).sum(axis=1)
    error = distance / (2.0 * area * (2.0 * sigmas) ** 2)
    return float(np.exp(-error[visible]).mean())


def _greedy_matches(candidate: Prediction, reference: Prediction, similarity: Callable[[int, int], float]) -> list[float]:
    return [similarity(i, j) for i, j in _greedy_pairs(candidate, reference, similarity)]


def _greedy_pairs(candidate: Prediction, reference: Prediction,
                  similarity: Callable[[int, int], float]) -> list[tuple[int, int]]:
    """One-to-one same-class pairs, best candidate score first, each to its most similar free reference."""
    used = np.zeros(len(reference.scores), dtype=bool)
    pairs = []
    for i in np.argsort(-candidate.scores, kind="stable"):
        best, best_value = -1, -math.inf
        for j in np.flatnonzero((reference.class_ids == candidate.class_ids[i]) & ~used):
            value = similarity(int(i), int(j))
            if value > best_value:
                best, best_value = int(j), value
        if best >= 0 and best_value >= MATCH_THRESHOLD:
            used[best] = True
            pairs.append((int(i), best))
    return pairs
