"""Raw model outputs to top-k classes or boxes, as the bundle's output spec says."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from robot_model_deployer.bundle.manifest import ClassificationSpec, DetectionFormat, DetectionSpec


@dataclass(frozen=True)
class Prediction:
    """What a model said about one image.

    Classification: top-k entries, best first, ``boxes`` empty.
    Detection: one entry per box, ``boxes`` is (N, 4) x1, y1, x2, y2 in
    image pixels. Instance segmentation adds ``masks``, (N, H, W) bool in
    image pixels; pose adds ``keypoints``, (N, K, 3) x, y in image pixels and
    a visibility score. Semantic segmentation: ``label_image`` (H, W) uint16
    class ids in image pixels, and one entry per class present (its share of
    the pixels as score, no boxes).
    """

    class_ids: np.ndarray
    scores: np.ndarray
    labels: tuple[str, ...]
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    inference_ms: float = 0.0
    masks: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), bool))
    label_image: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.uint16))
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.scores).all() and np.isfinite(self.boxes).all()
                    and np.isfinite(self.keypoints).all())


class OutputSpecError(ValueError):
    """Model outputs do not have the layout the manifest promises."""


def label_for(class_id: int, labels: Sequence[str]) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def classify(scores: np.ndarray, spec: ClassificationSpec, labels: Sequence[str]) -> Prediction:
    """Top-k of one image's class scores (any shape with a single non-1 axis)."""
    flat = np.asarray(scores, dtype=np.float32).reshape(-1)
    if flat.size == 0:
        raise OutputSpecError("classification output is empty")
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


def decode_detections(outputs: Sequence[np.ndarray], spec: DetectionSpec,
                      input_width: int, input_height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw outputs to (boxes xyxy in input pixels, scores, class ids), before NMS."""
    if spec.format is DetectionFormat.BOXES_SCORES:
        if len(outputs) < 2:
            raise OutputSpecError("detection format boxes_scores needs two outputs (boxes, scores)")
        boxes = np.asarray(outputs[0], dtype=np.float32).reshape(-1, 4)
        class_scores = np.asarray(outputs[1], dtype=np.float32)
        classes = class_scores.shape[-1] if class_scores.ndim else 0
        if classes == 0 or class_scores.size != boxes.shape[0] * classes:
            raise OutputSpecError(
                f"detection format boxes_scores needs scores of shape [1, N, classes] for its {boxes.shape[0]} "
                f"boxes, got {list(class_scores.shape)}"
            )
        class_scores = class_scores.reshape(-1, classes)
        class_ids = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(class_ids)), class_ids]
        return boxes, scores, class_ids.astype(np.int32)
    raw = np.asarray(outputs[0], dtype=np.float32)
    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[2] < 5:
        raise OutputSpecError(
            f"detection format {spec.format.value} needs an output of shape [1, N, 5 + classes], got {list(raw.shape)}"
        )
    rows = raw[0]
    if spec.format is DetectionFormat.YOLOX:
        rows = rows.copy()
        grid, strides = _yolox_grid(spec.strides, input_width, input_height)
        if grid.shape[0] != rows.shape[0]:
            raise OutputSpecError(
                f"yolox output has {rows.shape[0]} anchors but strides {list(spec.strides)} on a "
                f"{input_width}x{input_height} input give {grid.shape[0]}"
            )
        rows[:, :2] = (rows[:, :2] + grid) * strides
        rows[:, 2:4] = np.exp(np.minimum(rows[:, 2:4], 20.0)) * strides
    centre, size = rows[:, :2], rows[:, 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    objectness = rows[:, 4]
    if rows.shape[1] > 5:
        class_ids = rows[:, 5:].argmax(axis=1)
        scores = objectness * rows[np.arange(rows.shape[0]), 5 + class_ids]
    else:
        class_ids = np.zeros(rows.shape[0], dtype=np.int64)
        scores = objectness
    return boxes, scores, class_ids.astype(np.int32)


def _yolox_grid(strides: Sequence[int], width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    grids, expanded = [], []
    for stride in strides:
        h, w = height // stride, width // stride
        ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        grids.append(np.stack([xs, ys], axis=-1).reshape(-1, 2))
        expanded.append(np.full((h * w, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(expanded).astype(np.float32)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size and len(keep) < limit:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        overlap = box_iou(boxes[best], boxes[rest], areas[best], areas[rest])
        order = rest[overlap <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def box_iou(box: np.ndarray, others: np.ndarray, area: float | None = None,
            other_areas: np.ndarray | None = None) -> np.ndarray:
    """IoU of one xyxy box against many."""
    if area is None:
        area = max(box[2] - box[0], 0) * max(box[3] - box[1], 0)
    if other_areas is None:
        other_areas = np.maximum(others[:, 2] - others[:, 0], 0) * np.maximum(others[:, 3] - others[:, 1], 0)
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = area + other_areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def detect(outputs: Sequence[np.ndarray], spec: DetectionSpec, labels: Sequence[str],
           input_width: int, input_height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Thresholded, NMS-filtered detections in model-input pixels."""
    boxes, scores, class_ids = decode_detections(outputs, spec, input_width, input_height)
    mask = scores >= spec.score_threshold
    boxes, scores, class_ids = boxes[mask], scores[mask], class_ids[mask]
    if boxes.shape[0]:
        if spec.class_agnostic_nms:
            keep = non_max_suppression(boxes, scores, spec.iou_threshold, spec.max_detections)
        else:
            keep = _per_class_nms(boxes, scores, class_ids, spec.iou_threshold, spec.max_detections)
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    return (boxes.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int32),
            tuple(label_for(int(i), labels) for i in class_ids))


def _per_class_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray,
                   iou_threshold: float, limit: int) -> np.ndarray:
    """NMS within each class, merged best score first (ties by index, as one greedy pass would order them).

    Run class by class rather than offsetting boxes by class: boxes may extend
    past the input by any amount, so no fixed offset keeps classes apart.
    """
    kept = [members[non_max_suppression(boxes[members], scores[members], iou_threshold, limit)]
            for members in (np.flatnonzero(class_ids == c) for c in np.unique(class_ids))]
    keep = np.concatenate(kept)
    return keep[np.lexsort((keep, -scores[keep]))][:limit]
