"""Do a segmentation or pose model's outputs fit the layout its manifest declares?

Run on the outputs of a real inference (the engine's warm-up, so at ingest,
in ``rmd bundle verify`` and on the robot's configure alike). A model read
with the wrong layout would serve garbage that looks like output, so a
mismatch is refused with what the outputs look like and the manifest field
that most likely needs to change.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from robot_model_deployer.bundle.dense_specs import SegmentationFormat
from robot_model_deployer.bundle.manifest import Manifest, Task
from robot_model_deployer.inference.postprocess import OutputSpecError


class LayoutMismatch(OutputSpecError):
    """The outputs contradict the declared layout; the message names the manifest section and the likely fix."""


def check_dense_layout(manifest: Manifest, outputs: Sequence[np.ndarray], labels: Sequence[str]) -> None:
    """Raise LayoutMismatch when ``outputs`` (one image's, in the engine's order) do not fit ``manifest``."""
    shapes = [list(np.shape(o)) for o in outputs]
    for shape, output in zip(shapes, outputs):
        values = np.asarray(output)
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise LayoutMismatch(f"output {shape} holds NaN or Inf: fix the model (try it with onnxruntime on a "
                                 "workstation) before deploying it")
    check = {Task.SEGMENTATION: _semantic, Task.INSTANCE_SEGMENTATION: _instances, Task.POSE: _pose}[manifest.task]
    check(manifest, outputs, shapes, labels)


def _semantic(manifest: Manifest, outputs: Sequence[np.ndarray], shapes: list[list[int]],
              labels: Sequence[str]) -> None:
    output, shape = np.asarray(outputs[0]), shapes[0]
    spec = manifest.input
    if len(shape) == 3 and shape[0] == 1 and _far_from_input_aspect(shape[1], shape[2], spec.width, spec.height):
        raise LayoutMismatch(f"output {shape} does not look like a [1, H, W] label map of a {spec.width}x"
                             f"{spec.height} input but like a detector's [1, 4+C, N]: set task: detection")
    if manifest.segmentation.format is SegmentationFormat.LOGITS:
        if len(shape) == 3 or (len(shape) == 4 and shape[1] == 1):
            raise LayoutMismatch(f"output {shape} looks like class ids [1, H, W], not logits [1, C, H, W]: set "
                                 "segmentation.format: class_ids")
        if len(shape) != 4 or shape[0] != 1:
            raise LayoutMismatch(f"output {shape} is not [1, C, H, W] logits: check segmentation.output_name "
                                 "names the segmentation output, or set task to what the model does")
        if np.issubdtype(output.dtype, np.integer):
            raise LayoutMismatch(f"output {shape} holds integers ({output.dtype}), not logits: set "
                                 "segmentation.format: class_ids")
        if _far_from_input_aspect(shape[2], shape[3], spec.width, spec.height):
            raise LayoutMismatch(f"output {shape} is not [1, C, H, W] over the {spec.width}x{spec.height} input "
                                 "(its H:W differs): check the input section and segmentation.output_name")
        if labels and shape[1] != len(labels):
            raise LayoutMismatch(f"output {shape} scores {shape[1]} classes but the labels file {manifest.labels} "
                                 f"lists {len(labels)}: fix the labels file (one line per class, background too)")
        return
    if len(shape) == 4 and shape[1] > 1:
        raise LayoutMismatch(f"output {shape} looks like logits [1, C, H, W], not class ids: set "
                             "segmentation.format: logits")
    if len(shape) not in (3, 4) or shape[0] != 1:
        raise LayoutMismatch(f"output {shape} is not a [1, H, W] class-id map: check segmentation.output_name")
    if labels and output.size and int(np.max(output)) >= len(labels):
        raise LayoutMismatch(f"output holds class id {int(np.max(output))} but the labels file {manifest.labels} "
                             f"lists {len(labels)} classes: fix the labels file")


def _far_from_input_aspect(height: int, width: int, input_width: int, input_height: int) -> bool:
    """An output grid whose H:W is more than 2x off the input's is no per-pixel map of it."""
    if height < 1 or width < 1:
        return True
    ratio = (height / width) / (input_height / input_width)
    return not 0.5 <= ratio <= 2.0


def _rows_and_classes(shape: list[int], extra: int, what: str, field: str) -> int:
    if len(shape) != 3 or shape[0] != 1:
        raise LayoutMismatch(f"output {shape} is not YOLOv8's [1, 4+C+{what}, N]: check the task and "
                             "detection section")
    if shape[1] > shape[2]:
        raise LayoutMismatch(f"output {shape} looks transposed ([1, N, 4+C+{what}]); export it as Ultralytics does, "
                             "[1, 4+C+extra, N]")
    classes = shape[1] - 4 - extra
    if classes < 1:
        raise LayoutMismatch(f"output {shape} has {shape[1]} values per candidate, too few for 4 box values, "
                             f"classes and {extra} {what}: check {field}")
    return classes


def _check_classes(manifest: Manifest, classes: int, shape: list[int], labels: Sequence[str], what: str) -> None:
    if labels and classes != len(labels):
        raise LayoutMismatch(f"output {shape} read as [1, 4+C+{what}, N] gives {classes} classes but the labels "
                             f"file {manifest.labels} lists {len(labels)}: fix the labels file, or {what} if the "
                             "class count is right")


def _check_scores(output: np.ndarray, classes: int, fix: str = "") -> None:
    scores = np.asarray(output)[0, 4:4 + classes]
    if scores.size and (float(scores.min()) < -1e-3 or float(scores.max()) > 1.0 + 1e-3):
        raise LayoutMismatch(f"class scores range {float(scores.min()):.3g}..{float(scores.max()):.3g}, outside "
                             "[0, 1]: " + (fix or "export the model with its sigmoid (Ultralytics exports do), or "
                                                  "check the task and detection section"))


def _instances(manifest: Manifest, outputs: Sequence[np.ndarray], shapes: list[list[int]],
               labels: Sequence[str]) -> None:
    coefficients = manifest.instances.mask_coefficients
    if len(shapes) < 2:
        raise LayoutMismatch(f"the model has one output {shapes[0]} and no mask protos [1, M, H/4, W/4]: it is "
                             "no YOLOv8-seg model; set task: detection (or pose)")
    protos = shapes[1]
    if len(protos) != 4 and len(shapes[0]) == 4:
        raise LayoutMismatch(f"outputs {shapes} come in the order protos, detections: set instances.protos_output "
                             "to the protos output's name")
    if len(protos) != 4 or protos[0] != 1:
        raise LayoutMismatch(f"second output {protos} is not mask protos [1, M, H/4, W/4]: set "
                             "instances.protos_output to the protos output's name")
    if protos[1] != coefficients:
        raise LayoutMismatch(f"mask protos {protos} have {protos[1]} channels but instances.mask_coefficients is "
                             f"{coefficients}: set instances.mask_coefficients: {protos[1]}")
    classes = _rows_and_classes(shapes[0], coefficients, "mask coefficients", "instances.mask_coefficients")
    _check_classes(manifest, classes, shapes[0], labels, "instances.mask_coefficients")
    _check_scores(outputs[0], classes)


def _pose(manifest: Manifest, outputs: Sequence[np.ndarray], shapes: list[list[int]], labels: Sequence[str]) -> None:
    pose = manifest.pose
    if len(shapes) > 1 and len(shapes[1]) == 4:
        raise LayoutMismatch(f"outputs {shapes} look like YOLOv8-seg (detections and mask protos): set "
                             "task: instance_segmentation")
    extra = pose.keypoints * pose.values_per_keypoint
    shape = shapes[0]
    values = "pose.keypoints x pose.values_per_keypoint"
    classes = _rows_and_classes(shape, extra, "keypoint values", values)
    if labels and classes != len(labels) and len(shape) == 3:
        spare = shape[1] - 4 - len(labels)
        if spare > 0 and spare % pose.values_per_keypoint == 0:
            raise LayoutMismatch(f"output {shape} with the {len(labels)} labels leaves {spare} keypoint values: set "
                                 f"pose.keypoints: {spare // pose.values_per_keypoint}")
    _check_classes(manifest, classes, shape, labels, values)
    # Keypoint values read as class scores leave [0, 1]: suggest the count that one class would leave.
    spare = shape[1] - 4 - max(len(labels), 1)
    fits = spare > 0 and spare % pose.values_per_keypoint == 0 and spare // pose.values_per_keypoint != pose.keypoints
    _check_scores(outputs[0], classes, f"{max(len(labels), 1)} class(es) leave {spare} keypoint values: set "
                                       f"pose.keypoints: {spare // pose.values_per_keypoint}" if fits else "")
