"""Manifest sections of the per-pixel and per-keypoint tasks: segmentation, instances, pose.

Kept beside manifest.py (which reads them as its ``segmentation``,
``instances`` and ``pose`` sections) so that the manifest stays one
readable schema; defaults are written here once.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from robot_model_deployer.bundle.fields import FieldReader


class SegmentationFormat(str, Enum):
    """How a semantic segmentation output is laid out.

    ``logits``: [1, C, H, W] class scores per pixel (DeepLabV3, torchvision
    and most exports); the label is the argmax over C. ``class_ids``: [1, H, W]
    (or [1, 1, H, W]) integer class ids, already argmaxed in the graph.
    """

    LOGITS = "logits"
    CLASS_IDS = "class_ids"


@dataclass(frozen=True)
class SegmentationSpec:
    """Turning a semantic segmentation output into a label image (task: segmentation)."""

    format: SegmentationFormat = SegmentationFormat.LOGITS
    output_name: str = ""


@dataclass(frozen=True)
class InstanceSpec:
    """YOLOv8-seg masks (task: instance_segmentation); boxes, thresholds and NMS come from ``detection``.

    The detections output is [1, 4 + C + ``mask_coefficients``, N]; the
    protos output [1, ``mask_coefficients``, H/4, W/4]. A mask is
    sigmoid(coefficients . protos) cut to its box and thresholded at
    ``mask_threshold`` (bilinear on the logits, as Ultralytics does).
    """

    mask_coefficients: int = 32
    mask_threshold: float = 0.5
    protos_output: str = ""


@dataclass(frozen=True)
class PoseSpec:
    """YOLOv8-pose keypoints (task: pose); boxes, thresholds and NMS come from ``detection``.

    The output is [1, 4 + C + ``keypoints`` * ``values_per_keypoint``, N]:
    x, y in input pixels and (with 3 values) a visibility score per keypoint.
    The gates compare keypoints by OKS with COCO's per-keypoint constants
    when there are 17, else one constant for all (validation.metrics).
    """

    keypoints: int = 17
    values_per_keypoint: int = 3


def segmentation_spec(r: FieldReader) -> SegmentationSpec:
    spec = SegmentationSpec(format=r.enum("format", SegmentationFormat), output_name=r.string("output_name"))
    r.reject_unknown()
    return spec


def instance_spec(r: FieldReader) -> InstanceSpec:
    spec = InstanceSpec(mask_coefficients=r.integer("mask_coefficients", minimum=1, maximum=256),
                        mask_threshold=r.number("mask_threshold", minimum=0.0, maximum=1.0),
                        protos_output=r.string("protos_output"))
    r.reject_unknown()
    return spec


def pose_spec(r: FieldReader) -> PoseSpec:
    spec = PoseSpec(keypoints=r.integer("keypoints", minimum=1, maximum=1000),
                    values_per_keypoint=r.integer("values_per_keypoint", minimum=2, maximum=3))
    r.reject_unknown()
    return spec
