"""Expected outputs (validation.expected entries) of segmentation, instance segmentation and pose bundles.

Per validation image:

- segmentation: ``{label_image: labels/0001.png}``, a mono8 or 16-bit PNG of
  class ids at the image's size;
- instance_segmentation: ``{boxes: [[x1, y1, x2, y2, class_id], ...], masks:
  [masks/0001-0.png, ...]}``, one PNG per box (non-zero inside) at the
  image's size;
- pose: ``{boxes: [[x1, y1, x2, y2, class_id], ...], keypoints: [[[x, y, v],
  ...], ...]}``, K keypoints per box, v 0 (not visible) to 1.

PNG paths are relative to the folder of the expected-outputs file (the
bundle root when it lies there) and must stay inside it.
"""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
from PIL import Image

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.dense import semantic_prediction
from robot_model_deployer.inference.postprocess import Prediction


class ExpectedDenseError(ValueError):
    """An expected segmentation or pose entry is malformed (its message names the image)."""


def _png(root: Path, name: Any, where: str) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise ExpectedDenseError(f"{where}: needs a PNG path, got {name!r}")
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ExpectedDenseError(f"{where}: {name} must be a path inside the bundle")
    try:
        with Image.open(root / relative) as image:
            return np.asarray(image)
    except OSError as exc:
        raise ExpectedDenseError(f"{where}: {name} does not read as a PNG ({exc})") from None


def _boxes(entry: dict, where: str) -> np.ndarray:
    rows = entry.get("boxes") or []
    try:
        return np.asarray(rows, dtype=np.float32).reshape(-1, 5)
    except ValueError:
        raise ExpectedDenseError(f"{where}: boxes must be [[x1, y1, x2, y2, class_id], ...]") from None


def _segmentation(entry: dict, root: Path, where: str) -> Prediction:
    pixels = _png(root, entry.get("label_image"), where)
    if pixels.ndim != 2:
        raise ExpectedDenseError(f"{where}: label_image must be a one-channel PNG of class ids, got {pixels.shape}")
    return semantic_prediction(pixels.astype(np.uint16), ())


def _instances(entry: dict, root: Path, where: str) -> Prediction:
    rows = _boxes(entry, where)
    names = entry.get("masks") or []
    if not isinstance(names, list) or len(names) != len(rows):
        raise ExpectedDenseError(f"{where}: needs one mask PNG per box ({len(rows)} boxes)")
    masks = [_png(root, name, where) for name in names]
    shapes = {m.shape[:2] for m in masks}
    if len(shapes) > 1:
        raise ExpectedDenseError(f"{where}: the mask PNGs have different sizes {sorted(shapes)}")
    stack = np.stack([(m if m.ndim == 2 else m[..., 0]) > 0 for m in masks]) if masks else np.zeros((0, 0, 0), bool)
    return Prediction(rows[:, 4].astype(np.int32), np.ones(len(rows), np.float32), (), rows[:, :4].copy(), masks=stack)


def _pose(entry: dict, root: Path, where: str) -> Prediction:
    rows = _boxes(entry, where)
    try:
        keypoints = np.asarray(entry.get("keypoints") or [], dtype=np.float32)
        keypoints = keypoints.reshape(len(rows), -1, 3) if len(rows) else np.zeros((0, 0, 3), np.float32)
    except ValueError:
        raise ExpectedDenseError(f"{where}: keypoints must be one [[x, y, v], ...] list per box") from None
    return Prediction(rows[:, 4].astype(np.int32), np.ones(len(rows), np.float32), (), rows[:, :4].copy(),
                      keypoints=keypoints)


DENSE_EXPECTED: dict[Task, Callable[[dict, Path, str], Prediction]] = {
    Task.SEGMENTATION: _segmentation, Task.INSTANCE_SEGMENTATION: _instances, Task.POSE: _pose}
