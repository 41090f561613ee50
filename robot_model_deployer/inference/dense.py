"""Raw outputs of segmentation and pose models to label images, masks and keypoints in image pixels.

Three layouts (bundle/dense_specs.py): semantic segmentation ([1, C, H, W]
logits or [1, H, W] class ids), YOLOv8-seg (detections [1, 4 + C + M, N] and
protos [1, M, H/4, W/4]) and YOLOv8-pose ([1, 4 + C + K * V, N]). Everything
the model says in model-input pixels is mapped back through the
pre-processing's ImageTransform, so a label image or a mask has the camera
image's size and keypoints its pixel coordinates.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from robot_model_deployer.bundle.dense_specs import SegmentationFormat
from robot_model_deployer.bundle.manifest import DetectionFormat, DetectionSpec, Manifest, Task
from robot_model_deployer.inference.detection import Candidates, select
from robot_model_deployer.inference.postprocess import OutputSpecError, Prediction, label_for
from robot_model_deployer.inference.preprocess import ImageTransform

DENSE_TASKS = frozenset({Task.SEGMENTATION, Task.INSTANCE_SEGMENTATION, Task.POSE})


def decode_dense(outputs: Sequence[np.ndarray], manifest: Manifest, labels: Sequence[str],
                 transform: ImageTransform, image_width: int, image_height: int) -> Prediction:
    """One image's Prediction for a segmentation, instance segmentation or pose model."""
    spec = manifest.input
    if manifest.task is Task.SEGMENTATION:
        label_input = semantic_labels(outputs[0], manifest.segmentation.format)
        label_image = sample_to_image(label_input, transform, spec.width, spec.height, image_width, image_height)
        return semantic_prediction(label_image, labels)
    rows = detection_rows(outputs[0], extra=_extra_values(manifest))
    classes = rows.shape[1] - 4 - _extra_values(manifest)
    boxes, scores, class_ids, extras = _select(rows, classes, manifest.detection)
    image_boxes = transform.boxes_to_image(boxes, image_width, image_height)
    # A box wholly in the letterbox padding (or cropped away) says nothing about the image.
    inside = (image_boxes[:, 2] > image_boxes[:, 0]) & (image_boxes[:, 3] > image_boxes[:, 1])
    scores, class_ids, extras, image_boxes = scores[inside], class_ids[inside], extras[inside], image_boxes[inside]
    names = tuple(label_for(int(i), labels) for i in class_ids)
    if manifest.task is Task.INSTANCE_SEGMENTATION:
        if len(outputs) < 2:
            raise OutputSpecError("instance segmentation needs a second output, the mask protos [1, M, H/4, W/4]")
        masks = instance_masks(extras, outputs[1], image_boxes, transform, spec.width, spec.height,
                               image_width, image_height, manifest.instances.mask_threshold)
        return Prediction(class_ids, scores, names, image_boxes, masks=masks)
    pose = manifest.pose
    keypoints = extras.reshape(len(scores), pose.keypoints, pose.values_per_keypoint)
    return Prediction(class_ids, scores, names, image_boxes,
                      keypoints=keypoints_to_image(keypoints, transform, image_width, image_height))


def semantic_labels(output: np.ndarray, layout: SegmentationFormat) -> np.ndarray:
    """The (H, W) class-id map of one image at the output's resolution."""
    raw = np.asarray(output)
    if layout is SegmentationFormat.LOGITS:
        if raw.ndim != 4 or raw.shape[0] != 1 or raw.shape[1] < 2:
            raise OutputSpecError(f"segmentation format logits needs an output of shape [1, C, H, W] with C >= 2, "
                                  f"got {list(raw.shape)}")
        return raw[0].argmax(axis=0).astype(np.uint16)
    if raw.ndim == 4 and raw.shape[1] == 1:
        raw = raw[:, 0]
    if raw.ndim != 3 or raw.shape[0] != 1:
        raise OutputSpecError(f"segmentation format class_ids needs an output of shape [1, H, W], "
                              f"got {list(raw.shape)}")
    return np.clip(raw[0], 0, np.iinfo(np.uint16).max).astype(np.uint16)


def semantic_prediction(label_image: np.ndarray, labels: Sequence[str]) -> Prediction:
    """A label image with one entry per class present, its share of the pixels as score (largest first)."""
    counts = np.bincount(label_image.reshape(-1), minlength=1)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    shares = (counts[order] / max(label_image.size, 1)).astype(np.float32)
    return Prediction(order.astype(np.int32), shares, tuple(label_for(int(i), labels) for i in order),
                      label_image=label_image)


def detection_rows(output: np.ndarray, extra: int) -> np.ndarray:
    """YOLOv8's [1, 4 + C + extra, N] output as (N, 4 + C + extra) rows."""
    raw = np.asarray(output, dtype=np.float32)
    if raw.ndim != 3 or raw.shape[0] != 1 or raw.shape[1] < 5 + extra:
        raise OutputSpecError(f"the output must be [1, 4 + classes + {extra}, N], got {list(raw.shape)}")
    return raw[0].T


def _extra_values(manifest: Manifest) -> int:
    if manifest.task is Task.INSTANCE_SEGMENTATION:
        return manifest.instances.mask_coefficients
    return manifest.pose.keypoints * manifest.pose.values_per_keypoint


def _select(rows: np.ndarray, classes: int, spec: DetectionSpec) -> tuple[np.ndarray, ...]:
    """Thresholded, NMS-kept (boxes xyxy in input pixels, scores, class ids, extra values) of YOLOv8 rows."""
    class_scores = rows[:, 4:4 + classes]
    class_ids = class_scores.argmax(axis=1).astype(np.int32)
    scores = class_scores[np.arange(len(rows)), class_ids]
    centre, size = rows[:, :2], rows[:, 2:4]
    candidates = Candidates(np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32),
                            scores.astype(np.float32), class_ids, np.arange(len(rows), dtype=np.int64))
    # The rows are YOLOv8's whatever detection.format says: these tasks have one layout each.
    kept = select(candidates, dataclasses.replace(spec, format=DetectionFormat.YOLOV8))
    return kept.boxes, kept.scores, kept.class_ids, rows[kept.index, 4 + classes:]


def sample_to_image(grid: np.ndarray, transform: ImageTransform, input_width: int, input_height: int,
                    image_width: int, image_height: int) -> np.ndarray:
    """A per-pixel map over the model input (any resolution of it) sampled at the image's pixels (nearest).

    Image pixels that fall outside the model input (cropped away) get 0.
    """
    xs, x_inside = _grid_index(image_width, transform.scale_x, transform.offset_x, input_width, grid.shape[-1])
    ys, y_inside = _grid_index(image_height, transform.scale_y, transform.offset_y, input_height, grid.shape[-2])
    sampled = grid[..., ys[:, None], xs[None, :]]
    inside = y_inside[:, None] & x_inside[None, :]
    return np.where(inside, sampled, 0).astype(grid.dtype)


def _grid_index(size: int, scale: float, offset: float, input_size: int, grid_size: int) -> tuple[np.ndarray, ...]:
    centres = (np.arange(size, dtype=np.float64) + 0.5) * scale + offset
    inside = (centres >= 0) & (centres < input_size)
    index = np.floor(centres * grid_size / input_size).astype(np.int64)
    return np.clip(index, 0, grid_size - 1), inside


def instance_masks(coefficients: np.ndarray, protos: np.ndarray, image_boxes: np.ndarray, transform: ImageTransform,
                   input_width: int, input_height: int, image_width: int, image_height: int,
                   threshold: float) -> np.ndarray:
    """(N, H, W) bool masks in image pixels: sigmoid(coefficients . protos) > threshold, bilinear, inside each box.

    Bilinear sampling is a linear map along each axis, so each box's patch is
    two small matrix products (rows x protos x columns), never a full-image
    array per object.
    """
    protos = np.asarray(protos, dtype=np.float32)
    if protos.ndim != 4 or protos.shape[0] != 1 or protos.shape[1] != coefficients.shape[1]:
        raise OutputSpecError(f"mask protos must be [1, {coefficients.shape[1]}, H/4, W/4], got {list(protos.shape)}")
    channels, proto_h, proto_w = protos.shape[1:]
    masks = np.zeros((len(image_boxes), image_height, image_width), dtype=bool)
    if not len(image_boxes):
        return masks
    # As Ultralytics does: bilinear on the logits, thresholded at the threshold's logit (no sigmoid per pixel).
    logits = (coefficients.astype(np.float32) @ protos[0].reshape(channels, -1)).reshape(-1, proto_h, proto_w)
    cut = _logit(threshold)
    # Image pixel centres in proto coordinates, then each axis's bilinear weights.
    px = ((np.arange(image_width) + 0.5) * transform.scale_x + transform.offset_x) * proto_w / input_width - 0.5
    py = ((np.arange(image_height) + 0.5) * transform.scale_y + transform.offset_y) * proto_h / input_height - 0.5
    columns, rows = _bilinear_weights(px, proto_w), _bilinear_weights(py, proto_h)
    for index, (x1, y1, x2, y2) in enumerate(image_boxes):
        x0, y0 = max(int(np.floor(x1)), 0), max(int(np.floor(y1)), 0)
        x_end, y_end = min(int(np.ceil(x2)), image_width), min(int(np.ceil(y2)), image_height)
        if x_end <= x0 or y_end <= y0:
            continue
        patch = rows[y0:y_end] @ logits[index] @ columns[x0:x_end].T
        masks[index, y0:y_end, x0:x_end] = patch > cut
    return masks


def _logit(probability: float) -> float:
    if probability <= 0.0:
        return -np.inf
    if probability >= 1.0:
        return np.inf
    return float(np.log(probability / (1.0 - probability)))


def _bilinear_weights(coordinates: np.ndarray, size: int) -> np.ndarray:
    """(len(coordinates), size) weights that sample a grid axis of ``size`` at fractional coordinates (clamped)."""
    clamped = np.clip(coordinates, 0, size - 1)
    low = np.floor(clamped).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    fraction = (clamped - low).astype(np.float32)
    weights = np.zeros((len(coordinates), size), np.float32)
    positions = np.arange(len(coordinates))
    np.add.at(weights, (positions, low), 1 - fraction)
    np.add.at(weights, (positions, high), fraction)
    return weights


def keypoints_to_image(keypoints: np.ndarray, transform: ImageTransform, image_width: int,
                       image_height: int) -> np.ndarray:
    """(N, K, 2 or 3) keypoints in input pixels to (N, K, 3) in image pixels (visibility 1 when not given)."""
    out = np.ones(keypoints.shape[:2] + (3,), np.float32)
    out[..., 0] = np.clip((keypoints[..., 0] - transform.offset_x) / transform.scale_x, 0, image_width)
    out[..., 1] = np.clip((keypoints[..., 1] - transform.offset_y) / transform.scale_y, 0, image_height)
    if keypoints.shape[-1] > 2:
        out[..., 2] = keypoints[..., 2]
    return out
