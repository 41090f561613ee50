"""Raw detector outputs to boxes, one decoder per DetectionFormat, and the one NMS.

Every decoder returns candidates as x1, y1, x2, y2 in model-input pixels;
the engine maps them back through the letterbox (or stretch, or crop) to
image pixels. Layouts whose model already chose its boxes (end2end, DETRs,
TF SSD) are not suppressed again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from robot_model_deployer.bundle.manifest import DetectionFormat, DetectionSpec
from robot_model_deployer.inference.postprocess import OutputSpecError, label_for

NEEDS_NMS = frozenset({DetectionFormat.YOLO, DetectionFormat.YOLOX, DetectionFormat.YOLOV8,
                       DetectionFormat.BOXES_SCORES})
"""Layouts that give one candidate per anchor, so overlapping boxes of one object."""

# The outputs each multi-tensor layout reads, in decoder order: (role, manifest field, name fragments).
_ROLES: dict[DetectionFormat, tuple[tuple[str, str, tuple[str, ...]], ...]] = {
    DetectionFormat.BOXES_SCORES: (("boxes", "boxes_output", ()), ("scores", "scores_output", ())),
    DetectionFormat.RTDETR: (("boxes", "boxes_output", ("box",)), ("scores", "scores_output", ("score",)),
                             ("labels", "classes_output", ("label", "class"))),
    DetectionFormat.TF_SSD: (("boxes", "boxes_output", ("box",)), ("scores", "scores_output", ("score",)),
                             ("classes", "classes_output", ("class", "label")), ("count", "", ("num",))),
}


@dataclass(frozen=True)
class Candidates:
    """Decoded detections before threshold and NMS, in model-input pixels.

    ``index``: each candidate's position on the layout's candidate axis, so a
    caller can pick per-candidate extras (mask coefficients, keypoints) of the
    boxes that survive.
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    index: np.ndarray


def output_order(spec: DetectionSpec, names: Sequence[str]) -> list[str]:
    """The model's output names in the order the decoder of ``spec.format`` reads them.

    Multi-tensor layouts find each output by its manifest field or by its name
    (``boxes``, ``scores``, ``labels`` / ``detection_classes``, ``num_detections``).
    """
    roles = _ROLES.get(spec.format)
    if roles is None:
        wanted = [spec.boxes_output] if spec.boxes_output else []
    else:
        wanted = []
        for role, field, fragments in roles:
            explicit = getattr(spec, field) if field else ""
            found = explicit if explicit in names else _by_fragment(names, fragments, wanted)
            if explicit and explicit not in names:
                raise OutputSpecError(f"model has no output named '{explicit}' (detection.{field}); it has "
                                      f"{', '.join(names)}")
            if found is None and role != "count":
                fields = ", ".join(f"detection.{f}" for _, f, _ in roles if f)
                raise OutputSpecError(
                    f"detection format {spec.format.value} reads outputs {', '.join(r for r, _, _ in roles)} "
                    f"but cannot tell which of the model's outputs ({', '.join(names)}) is {role}: "
                    f"name them in {fields}")
            if found is not None:
                wanted.append(found)
    for name in wanted:
        if name not in names:
            raise OutputSpecError(f"model has no output named '{name}' (it has {', '.join(names)})")
    return wanted + [n for n in names if n not in wanted]


def _by_fragment(names: Sequence[str], fragments: Sequence[str], taken: Sequence[str]) -> str | None:
    if not fragments:
        return None
    matches = [n for n in names if n not in taken and any(f in n.lower() for f in fragments)]
    return matches[0] if len(matches) == 1 else None


def decode_detections(outputs: Sequence[np.ndarray], spec: DetectionSpec,
                      input_width: int, input_height: int) -> Candidates:
    """Raw outputs (in ``output_order``) to candidates in input pixels, before threshold and NMS."""
    return _DECODERS[spec.format](outputs, spec, input_width, input_height)


def _single(outputs: Sequence[np.ndarray], spec: DetectionSpec, layout: str, min_last: int) -> np.ndarray:
    raw = np.asarray(outputs[0], dtype=np.float32)
    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[2] < min_last:
        raise OutputSpecError(f"detection format {spec.format.value} needs an output of shape {layout}, "
                              f"got {list(raw.shape)}")
    return raw[0]


def _argmax_classes(class_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if class_scores.shape[1] == 0:
        zeros = np.zeros(class_scores.shape[0])
        return zeros.astype(np.int32), zeros.astype(np.float32)
    class_ids = class_scores.argmax(axis=1)
    return class_ids.astype(np.int32), class_scores[np.arange(len(class_ids)), class_ids]


def _centre_boxes(rows: np.ndarray) -> np.ndarray:
    centre, size = rows[:, :2], rows[:, 2:4]
    return np.concatenate([centre - size / 2, centre + size / 2], axis=1)


def _candidates(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> Candidates:
    return Candidates(boxes.astype(np.float32), scores.astype(np.float32), class_ids.astype(np.int32),
                      np.arange(boxes.shape[0], dtype=np.int64))


def _decode_yolo(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int, height: int) -> Candidates:
    rows = _single(outputs, spec, "[1, N, 5 + classes]", 5)
    if spec.format is DetectionFormat.YOLOX:
        rows = rows.copy()
        grid, strides = _yolox_grid(spec.strides, width, height)
        if grid.shape[0] != rows.shape[0]:
            raise OutputSpecError(
                f"yolox output has {rows.shape[0]} anchors but strides {list(spec.strides)} on a "
                f"{width}x{height} input give {grid.shape[0]}"
            )
        rows[:, :2] = (rows[:, :2] + grid) * strides
        rows[:, 2:4] = np.exp(np.minimum(rows[:, 2:4], 20.0)) * strides
    objectness = rows[:, 4]
    if rows.shape[1] > 5:
        class_ids, class_scores = _argmax_classes(rows[:, 5:])
        scores = objectness * class_scores
    else:
        class_ids, scores = np.zeros(rows.shape[0], dtype=np.int32), objectness
    return _candidates(_centre_boxes(rows), scores, class_ids)


def _decode_yolov8(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int, height: int) -> Candidates:
    raw = np.asarray(outputs[0], dtype=np.float32)
    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] < 5:
        raise OutputSpecError(f"detection format yolov8 needs an output of shape [1, 4 + classes, N], "
                              f"got {list(raw.shape)}")
    rows = raw[0].T
    class_ids, scores = _argmax_classes(rows[:, 4:])
    return _candidates(_centre_boxes(rows), scores, class_ids)


def _decode_end2end(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int, height: int) -> Candidates:
    rows = _single(outputs, spec, "[1, K, 6] (x1, y1, x2, y2, score, class)", 6)
    return _candidates(rows[:, :4], rows[:, 4], np.rint(rows[:, 5]))


def _decode_detr(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int, height: int) -> Candidates:
    rows = _single(outputs, spec, "[1, Q, 4 + classes]", 5)
    class_ids, scores = _argmax_classes(rows[:, 4:])
    boxes = _centre_boxes(rows) * np.array([width, height, width, height], dtype=np.float32)
    return _candidates(boxes, scores, class_ids)


def _per_query(outputs: Sequence[np.ndarray], spec: DetectionSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes [1, Q, 4], scores [1, Q] and classes [1, Q] of the same Q, or OutputSpecError."""
    boxes, scores, classes = (np.asarray(o) for o in outputs[:3])
    if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
        raise OutputSpecError(f"detection format {spec.format.value} needs boxes of shape [1, Q, 4], "
                              f"got {list(boxes.shape)}")
    queries = boxes.shape[1]
    for role, array in (("scores", scores), ("classes", classes)):
        if array.size != queries or array.shape[:1] != (1,):
            raise OutputSpecError(f"detection format {spec.format.value} needs {role} of shape [1, {queries}] "
                                  f"for its {queries} boxes, got {list(array.shape)}")
    return (boxes[0].astype(np.float32), scores.reshape(-1).astype(np.float32),
            np.rint(classes.reshape(-1).astype(np.float64)))


def _decode_rtdetr(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int, height: int) -> Candidates:
    if len(outputs) < 3:
        raise OutputSpecError("detection format rtdetr needs three outputs (labels, boxes, scores), "
                              f"the model has {len(outputs)}")
    # Boxes are in the pixels of orig_target_sizes, which the engine sets to the input size.
    boxes, scores, classes = _per_query(outputs, spec)
    return _candidates(boxes, scores, classes)


def _decode_tf_ssd(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int, height: int) -> Candidates:
    if len(outputs) < 3:
        raise OutputSpecError("detection format tf_ssd needs outputs detection_boxes, detection_scores and "
                              f"detection_classes (and num_detections), the model has {len(outputs)}")
    boxes, scores, classes = _per_query(outputs, spec)
    count = boxes.shape[0]
    if len(outputs) > 3 and np.asarray(outputs[3]).size == 1:
        count = int(np.clip(np.asarray(outputs[3]).reshape(-1)[0], 0, count))
    ymin, xmin, ymax, xmax = (boxes[:count, i] for i in range(4))
    xyxy = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=1)
    return _candidates(xyxy, scores[:count], classes[:count])


def _decode_boxes_scores(outputs: Sequence[np.ndarray], spec: DetectionSpec, width: int,
                         height: int) -> Candidates:
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
    class_ids, scores = _argmax_classes(class_scores.reshape(-1, classes))
    return _candidates(boxes, scores, class_ids)


_Decoder = Callable[[Sequence[np.ndarray], DetectionSpec, int, int], Candidates]
_DECODERS: dict[DetectionFormat, _Decoder] = {
    DetectionFormat.YOLO: _decode_yolo,
    DetectionFormat.YOLOX: _decode_yolo,
    DetectionFormat.YOLOV8: _decode_yolov8,
    DetectionFormat.END2END: _decode_end2end,
    DetectionFormat.DETR: _decode_detr,
    DetectionFormat.RTDETR: _decode_rtdetr,
    DetectionFormat.TF_SSD: _decode_tf_ssd,
    DetectionFormat.BOXES_SCORES: _decode_boxes_scores,
}


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


def select(candidates: Candidates, spec: DetectionSpec) -> Candidates:
    """The candidates that pass the score threshold, NMS (for layouts that need it) and max_detections."""
    mask = candidates.scores >= spec.score_threshold
    boxes, scores, class_ids = candidates.boxes[mask], candidates.scores[mask], candidates.class_ids[mask]
    index = candidates.index[mask]
    if boxes.shape[0] == 0:
        keep = np.zeros(0, dtype=np.int64)
    elif spec.format not in NEEDS_NMS:
        keep = np.argsort(-scores, kind="stable")[:spec.max_detections]
    elif spec.class_agnostic_nms:
        keep = non_max_suppression(boxes, scores, spec.iou_threshold, spec.max_detections)
    else:
        keep = _per_class_nms(boxes, scores, class_ids, spec.iou_threshold, spec.max_detections)
    return Candidates(boxes[keep], scores[keep], class_ids[keep], index[keep])


def detect(outputs: Sequence[np.ndarray], spec: DetectionSpec, labels: Sequence[str],
           input_width: int, input_height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Thresholded, NMS-filtered detections in model-input pixels."""
    kept = select(decode_detections(outputs, spec, input_width, input_height), spec)
    return kept.boxes, kept.scores, kept.class_ids, tuple(label_for(int(i), labels) for i in kept.class_ids)


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
