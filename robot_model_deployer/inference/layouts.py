"""Does a model's output fit the layout its manifest declares, and if not, which layout does it look like?

Run when a model is loaded (ingest, ``rmd bundle verify``, every node's
configure), on the shapes of one real run, so a detector read with the wrong
layout is refused with the fix ("set detection.format: yolov8") instead of
serving labels like '2031' with scores like 19478.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from robot_model_deployer.bundle.manifest import DetectionFormat, DetectionSpec, Task

Shape = tuple[int, ...]
ORIG_TARGET_SIZES = "orig_target_sizes"
_STRIDE_SETS = ((8, 16, 32), (8, 16, 32, 64))
_FEW_QUERIES = 1000  # DETR queries and end2end top-k are a few hundred; anchor grids are thousands


@dataclass(frozen=True)
class Mismatch:
    """Why the outputs do not fit, and the manifest section to fix."""

    message: str
    section: str


@dataclass(frozen=True)
class Guess:
    """A layout the outputs look like: its format (None: not one of ours) and how to say it."""

    task: Task
    format: DetectionFormat | None
    description: str

    def advice(self, declared: Task = Task.DETECTION) -> str:
        """What to tell the author of a manifest that declares task ``declared``."""
        if self.format is None:
            return f"it looks like {self.description}"
        task = "" if declared is self.task else f"set task: {self.task.value} and "
        return f"it looks like {self.description}: {task}set detection.format: {self.format.value}"


def anchor_counts(width: int, height: int, strides: Sequence[int] = ()) -> set[int]:
    """Candidate counts of anchor-grid heads (YOLOv8/YOLOX one per cell, YOLOv5 three) at this input size."""
    counts = set()
    for stride_set in (*_STRIDE_SETS, tuple(strides)):
        if stride_set:
            cells = sum(-(-width // s) * -(-height // s) for s in stride_set)
            counts.update({cells, 3 * cells})
    return counts


def guess_layout(inputs: Sequence[str], outputs: Sequence[tuple[str, Shape]], width: int, height: int,
                 classes: int | None) -> Guess | None:
    """The layout ``outputs`` most likely have (``classes``: the labels file's count, if any)."""
    shapes = [shape for _, shape in outputs]
    names = [name.lower() for name, _ in outputs]
    if ORIG_TARGET_SIZES in inputs and len(outputs) >= 3:
        return Guess(Task.DETECTION, DetectionFormat.RTDETR,
                     "an RT-DETR / D-FINE export (input orig_target_sizes, outputs labels, boxes, scores)")
    if len(outputs) >= 3 and any("detection_" in n or n.startswith("num_det") for n in names):
        return Guess(Task.DETECTION, DetectionFormat.TF_SSD,
                     "a TF Object Detection / SSD export (detection_boxes, detection_scores, detection_classes)")
    if len(shapes) >= 2 and len(shapes[0]) == 3 and shapes[0][2] == 4 and len(shapes[1]) == 3 \
            and shapes[1][1] == shapes[0][1]:
        return Guess(Task.DETECTION, DetectionFormat.BOXES_SCORES,
                     f"boxes {list(shapes[0])} and scores {list(shapes[1])} ([1, N, 4] and [1, N, C])")
    ranked = [s for s in shapes if len(s) == 3 and s[0] == 1]
    if not ranked:
        return None
    _, first, second = ranked[0]
    grids = anchor_counts(width, height)
    shape = list(ranked[0])
    if second == 6 and first not in grids and first <= _FEW_QUERIES:
        return Guess(Task.DETECTION, DetectionFormat.END2END,
                     f"an NMS-free end-to-end detector {shape} ([1, K, 6]: x1, y1, x2, y2, score, class)")
    if first < second and first >= 5:
        extra = first - 4 - classes if classes else 0
        if classes and extra == 32 and len(shapes) > 1:
            return Guess(Task.DETECTION, None, f"YOLOv8-seg {shape} ([1, 4 + C + 32, N], C={classes}) with "
                                               "mask prototypes: an instance segmentation model")
        if classes and extra > 0 and extra % 3 == 0:
            return Guess(Task.DETECTION, None, f"YOLOv8-pose {shape} ([1, 4 + C + K*3, N], C={classes}, "
                                               f"K={extra // 3}): a keypoint model")
        if second in grids or classes == first - 4:
            return Guess(Task.DETECTION, DetectionFormat.YOLOV8,
                         f"YOLOv8 {shape} ([1, 4 + C, N], C={first - 4})")
    if first > second >= 5:
        if classes == second - 5 or (classes is None and first in grids):
            return Guess(Task.DETECTION, DetectionFormat.YOLO,
                         f"YOLOv5-style {shape} ([1, N, 5 + C], C={second - 5})")
        if classes == second - 4 or (classes is None and first <= _FEW_QUERIES):
            return Guess(Task.DETECTION, DetectionFormat.DETR,
                         f"a DETR {shape} ([1, Q, 4 + C] normalized cx, cy, w, h; C={second - 4})")
    return None


def detection_mismatch(spec: DetectionSpec, inputs: Sequence[str], outputs: Sequence[tuple[str, Shape]],
                       width: int, height: int, classes: int | None, labels_file: str) -> Mismatch | None:
    """Why ``outputs`` (in the decoder's order) do not fit ``spec.format``, with the likely fix; None if they do."""
    fmt = spec.format
    problem, implied = _fit(fmt, outputs, anchor_counts(width, height, spec.strides))
    guess = guess_layout(inputs, outputs, width, height, classes)
    other = guess is not None and guess.format is not fmt
    if problem is None and fmt is not DetectionFormat.RTDETR and ORIG_TARGET_SIZES in inputs:
        problem = f"the model takes {ORIG_TARGET_SIZES}, which only detection.format rtdetr feeds"
    named = (DetectionFormat.RTDETR, DetectionFormat.TF_SSD)
    if problem is None and guess is not None and guess.format in named and guess.format is not fmt:
        # Both read boxes, scores and classes by name, but the boxes differ (pixels xyxy vs normalized yxyx).
        problem = (f"outputs {', '.join(name for name, _ in outputs)} read as detection.format {fmt.value} "
                   "would take the boxes in the wrong units")
    if problem is not None:
        advice = guess.advice() if other else "check detection.format (docs/bundle-format.md lists the layouts)"
        return Mismatch(f"{problem}; {advice}", "detection")
    if classes is not None and implied is not None and implied != classes:
        what = (f"output '{outputs[0][0]}' {list(outputs[0][1])} read as detection.format {fmt.value} holds "
                f"{implied} class scores but {labels_file} lists {classes} classes")
        if other:
            return Mismatch(f"{what}; {guess.advice()}", "detection")
        return Mismatch(f"{what}; fix the labels file (one class per line) or detection.format", "labels")
    return None


def _fit(fmt: DetectionFormat, outputs: Sequence[tuple[str, Shape]],
         grids: set[int]) -> tuple[str | None, int | None]:
    """(Why the first outputs do not fit ``fmt`` or None, the class count the layout implies or None).

    An axis whose length is an anchor-grid count at this input size (``grids``) is the candidate axis.
    """
    if not outputs:
        return "the model has no outputs", None
    name, shape = outputs[0]
    where = f"output '{name}' {list(shape)}"
    if fmt in (DetectionFormat.YOLO, DetectionFormat.YOLOX, DetectionFormat.DETR):
        base = 5 if fmt is not DetectionFormat.DETR else 4
        layout = "[1, N, 5 + C]" if base == 5 else "[1, Q, 4 + C]"
        if len(shape) != 3 or shape[0] != 1 or shape[2] <= base:
            return f"{where} does not fit detection.format {fmt.value} {layout}", None
        if shape[2] in grids and shape[1] not in grids:
            return (f"{where} does not fit detection.format {fmt.value} {layout}: its last axis ({shape[2]}) is "
                    "the candidate axis (one per anchor at this input size)"), None
        return None, shape[2] - base
    if fmt is DetectionFormat.YOLOV8:
        if len(shape) != 3 or shape[0] != 1 or shape[1] <= 4:
            return f"{where} does not fit detection.format yolov8 [1, 4 + C, N]", None
        if shape[1] in grids and shape[2] not in grids:
            return (f"{where} does not fit detection.format yolov8 [1, 4 + C, N]: its middle axis ({shape[1]}) "
                    "is the candidate axis (one per anchor at this input size)"), None
        return None, shape[1] - 4
    if fmt is DetectionFormat.END2END:
        if len(shape) != 3 or shape[0] != 1 or shape[2] != 6:
            return f"{where} does not fit detection.format end2end [1, K, 6] (x1, y1, x2, y2, score, class)", None
        return None, None
    if fmt is DetectionFormat.BOXES_SCORES:
        if len(outputs) < 2:
            return f"detection.format boxes_scores needs boxes [1, N, 4] and scores [1, N, C]; {where} is alone", None
        boxes, scores = shape, outputs[1][1]
        if len(boxes) != 3 or boxes[2] != 4 or len(scores) != 3 or scores[1] != boxes[1]:
            return (f"outputs {list(boxes)} and {list(scores)} do not fit detection.format boxes_scores "
                    "(boxes [1, N, 4], scores [1, N, C])"), None
        return None, scores[2]
    # rtdetr and tf_ssd: boxes [1, Q, 4], scores [1, Q], classes [1, Q] (output_order found them by name).
    if len(outputs) < 3:
        return f"detection.format {fmt.value} needs boxes, scores and class outputs; the model has {len(outputs)}", None
    boxes, scores, labels = (s for _, s in outputs[:3])
    queries = boxes[1] if len(boxes) == 3 else -1
    if len(boxes) != 3 or boxes[2] != 4 or any(_size(s) != queries for s in (scores, labels)):
        return (f"outputs boxes {list(boxes)}, scores {list(scores)}, classes {list(labels)} do not fit "
                f"detection.format {fmt.value} (boxes [1, Q, 4], scores [1, Q], classes [1, Q])"), None
    return None, None


def _size(shape: Shape) -> int:
    size = 1
    for n in shape:
        size *= n
    return size
