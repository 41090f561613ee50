"""A Draft as manifest.yaml text: every value with where it came from, every choice marked for the author.

init parses the text back with the robot's own manifest reader before it
writes it, so it never writes a manifest a robot would refuse.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from robot_model_deployer.authoring.recognise import Draft, Value
from robot_model_deployer.bundle.manifest import (SCHEMA_VERSION, AcceptanceSpec, ClassificationSpec, DetectionSpec,
                                                  Task)

CHOICE = "CHOICE"


@dataclass(frozen=True)
class BundleLayout:
    """The files init lays out, as the manifest names them."""

    name: str
    version: str
    model: str
    labels: str
    calibration: str
    validation: str
    expected: str
    expected_note: str


def _scalar(value: Any) -> str:
    # JSON scalars and flow lists are YAML; strings quoted, so a label or path never turns into another type.
    return json.dumps(value, ensure_ascii=False)


def _line(key: str, value: Value, indent: str = "") -> list[str]:
    lines = []
    if value.choice:
        lines.append(f"{indent}# {CHOICE}: not in the model file; {value.note or 'the usual convention'}. Check it.")
    comment = f"  # {value.note}" if value.note and not value.choice else ""
    return lines + [f"{indent}{key}: {_scalar(value.value)}{comment}"]


def _post_choices(task: Task) -> dict[str, dict[str, Value]]:
    """Settings no model file holds, written out with the defaults so the author sees they exist."""
    if task is Task.CLASSIFICATION:
        return {"classification": {"top_k": Value(ClassificationSpec.top_k, "how many classes a result lists",
                                                  choice=True)}}
    if task in (Task.DETECTION, Task.INSTANCE_SEGMENTATION, Task.POSE):
        return {"detection": {
            "score_threshold": Value(DetectionSpec.score_threshold, "boxes below this score are dropped", choice=True),
            "iou_threshold": Value(DetectionSpec.iou_threshold, "NMS overlap, where the layout needs NMS", choice=True),
            "max_detections": Value(DetectionSpec.max_detections, choice=True)}}
    return {}


def render_manifest(draft: Draft, layout: BundleLayout) -> str:
    """The manifest.yaml text for ``draft`` laid out as ``layout``."""
    lines = [f"# Written by rmd bundle init from {layout.model}: {draft.export}.",
             f"# Lines marked {CHOICE} are conventions the model file cannot prove: check each before you ship.",
             "# Every field: docs/bundle-format.md and the annotated examples in docs/manifests/.",
             f"schema_version: {SCHEMA_VERSION}",
             f"name: {_scalar(layout.name)}",
             f"version: {_scalar(layout.version)}",
             f"task: {_scalar(draft.task.value)}",
             f"model: {_scalar(layout.model)}"]
    if layout.labels:
        lines += [f"labels: {_scalar(layout.labels)}  # {draft.labels_note or 'one class name per line'}"]
    sections = {name: dict(fields) for name, fields in draft.sections.items()}
    for name, fields in _post_choices(draft.task).items():
        sections.setdefault(name, {}).update({k: v for k, v in fields.items() if k not in sections.get(name, {})})
    for name, fields in sections.items():
        lines.append(f"{name}:")
        for key, value in fields.items():
            lines += _line(key, value, "  ")
    lines += ["calibration:",
              f"  images: [{_scalar(layout.calibration)}]  # a folder: every image under it",
              "validation:",
              f"  images: [{_scalar(layout.validation)}]",
              f"  expected: {_scalar(layout.expected)}  # {layout.expected_note}",
              "acceptance:",
              f"  # {CHOICE}: the accuracy the FP32 model must reach on validation.expected (0: none stated).",
              f"  min_accuracy: {_scalar(AcceptanceSpec.min_accuracy)}"]
    return "\n".join(lines) + "\n"

