"""Raw model outputs to top-k classes, and what every task's answer is made of (boxes: inference/detection.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from robot_model_deployer.bundle.manifest import ClassificationSpec


@dataclass(frozen=True)
class Prediction:
    """What a model said about one image.

    Classification: top-k entries, best first, ``boxes`` empty.
    Detection: one entry per box, ``boxes`` is (N, 4) x1, y1, x2, y2 in
    image pixels.
    """

    class_ids: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    inference_ms: float = 0.0

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.scores).all() and np.isfinite(self.boxes).all())


class OutputSpecError(ValueError):
    """Model outputs do not have the layout the manifest promises.

    ``section``: the manifest section a user fixes (``detection``, ``classification`` or ``labels``).
    """

    def __init__(self, message: str, section: str = "detection") -> None:
        super().__init__(message)
        self.section = section


def label_for(class_id: int, labels: Sequence[str]) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def classify(scores: np.ndarray, spec: ClassificationSpec, labels: Sequence[str]) -> Prediction:
    """Top-k of one image's class scores ([1, C], or any shape with a single axis longer than 1).

    More axes are refused, not flattened: a sequence (a CTC text recogniser's [1, T, C]) or a
    detector's grid is no classifier, and flattened it would pass as one with T * C classes.
    """
    array = np.asarray(scores, dtype=np.float32)
    if array.size == 0:
        raise OutputSpecError("classification output is empty", "classification")
    long_axes = [n for n in array.shape if n != 1]
    if len(long_axes) > 1:
        raise OutputSpecError(
            f"classification output has shape {list(array.shape)}: a classifier gives one score per class "
            f"([1, C]), this has {len(long_axes)} axes longer than 1 (a sequence such as a CTC text recogniser's, "
            f"or a detector's output); check task and classification.output_name", "classification")
    flat = array.reshape(-1)
    if spec.softmax:
        shifted = np.exp(flat - flat.max())
        flat = shifted / shifted.sum()
    k = min(spec.top_k, flat.size)
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top], kind="stable")]
    return Prediction(
        class_ids=top.astype(np.int32),
        scores=flat[top].astype(np.float32),
        labels=tuple(label_for(int(i), labels) for i in top),
    )
