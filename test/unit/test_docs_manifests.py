"""The annotated manifests in docs/manifests/ read as a robot reads them, with the values they explain."""
from __future__ import annotations

from pathlib import Path

import pytest

from robot_model_deployer.bundle.manifest import (DetectionFormat, Interpolation, LetterboxAlign, Task, TensorType,
                                                  parse_manifest)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "manifests"


@pytest.mark.parametrize("name, task", [("classification.yaml", Task.CLASSIFICATION), ("detection.yaml", Task.DETECTION),
                                        ("detection-tf-ssd.yaml", Task.DETECTION),
                                        ("segmentation.yaml", Task.SEGMENTATION), ("pose.yaml", Task.POSE)])
def test_each_annotated_manifest_is_valid(name: str, task: Task) -> None:
    assert parse_manifest((DOCS / name).read_text(encoding="utf-8"), name).task is task


def test_the_examples_say_what_their_exporters_do() -> None:
    yolo = parse_manifest((DOCS / "detection.yaml").read_text()).input
    assert (yolo.letterbox_align, yolo.letterbox_fill, yolo.interpolation) == (LetterboxAlign.CENTER, 114,
                                                                               Interpolation.OPENCV_LINEAR)
    ssd = parse_manifest((DOCS / "detection-tf-ssd.yaml").read_text())
    assert ssd.input.dtype is TensorType.UINT8 and ssd.detection.format is DetectionFormat.TF_SSD
    assert parse_manifest((DOCS / "classification.yaml").read_text()).input.interpolation is Interpolation.PIL_BILINEAR


def test_every_manifest_in_the_folder_is_tested() -> None:
    assert {p.name for p in DOCS.glob("*.yaml")} == {"classification.yaml", "detection.yaml", "detection-tf-ssd.yaml",
                                                     "segmentation.yaml", "pose.yaml"}
