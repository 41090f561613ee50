"""Segmentation and pose models whose outputs contradict the declared layout are refused at the model check.

Each refusal says what the outputs look like and names the manifest field to change.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from robot_model_deployer.bundle.errors import ModelCheckError
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.testing import dense_models
from robot_model_deployer.testing.models import COLOUR_LABELS, _model, write_bundle


def yolov8_detector_output(size: int = 64) -> onnx.ModelProto:
    """Any input to a constant [1, 84, 8400] output: what a YOLOv8 COCO detector's output looks like."""
    constant = np.full((1, 84, 8400), 0.01, np.float32)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
         helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
         helper.make_node("Add", ["detections", "nothing"], ["output0"])],
        "fake_yolov8", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 84, 8400])],
        [numpy_helper.from_array(constant, "detections"), numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    return _model(graph)


def refusal(tmp_path: Path, model: onnx.ModelProto, manifest: dict[str, Any],
            labels: tuple[str, ...] = COLOUR_LABELS) -> str:
    root = write_bundle(tmp_path / "bundle", model, manifest, labels)
    with pytest.raises(ModelCheckError) as info:
        check_model(root)
    return str(info.value)


def with_(manifest: dict[str, Any], section: str, **values: Any) -> dict[str, Any]:
    return {**manifest, section: {**manifest.get(section, {}), **values}}


@pytest.mark.parametrize("model, manifest, labels", [
    (dense_models.colour_segmenter(32), dense_models.segmenter_manifest(size=32), COLOUR_LABELS),
    (dense_models.colour_segmenter(32, class_ids=True), dense_models.segmenter_manifest(size=32, class_ids=True),
     COLOUR_LABELS),
    (dense_models.colour_instance_segmenter(64), dense_models.instance_manifest(size=64), COLOUR_LABELS),
    (dense_models.corner_pose_model(64), dense_models.pose_manifest(size=64), dense_models.POSE_LABELS),
])
def test_models_that_fit_their_layout_pass(tmp_path: Path, model, manifest, labels) -> None:
    check_model(write_bundle(tmp_path / "bundle", model, manifest, labels))


def test_class_ids_declared_as_logits(tmp_path: Path) -> None:
    message = refusal(tmp_path, dense_models.colour_segmenter(32, class_ids=True),
                      dense_models.segmenter_manifest(size=32))
    assert "output [1, 16, 16] looks like class ids [1, H, W], not logits [1, C, H, W]" in message
    assert "set segmentation.format: class_ids" in message


def test_logits_declared_as_class_ids(tmp_path: Path) -> None:
    message = refusal(tmp_path, dense_models.colour_segmenter(32),
                      dense_models.segmenter_manifest(size=32, class_ids=True))
    assert "output [1, 3, 16, 16] looks like logits" in message and "set segmentation.format: logits" in message


def test_segmenter_class_count_against_the_labels(tmp_path: Path) -> None:
    message = refusal(tmp_path, dense_models.colour_segmenter(32), dense_models.segmenter_manifest(size=32),
                      ("background", "red", "green", "blue"))
    assert "scores 3 classes but the labels file labels.txt lists 4" in message


def test_a_yolov8_detector_declared_as_segmentation(tmp_path: Path) -> None:
    message = refusal(tmp_path, yolov8_detector_output(64),
                      dense_models.segmenter_manifest(size=64, class_ids=True))
    assert "output [1, 84, 8400]" in message and "set task: detection" in message


def test_a_detector_declared_as_instance_segmentation(tmp_path: Path) -> None:
    manifest = with_(dense_models.instance_manifest(size=64), "instances", mask_coefficients=4)
    message = refusal(tmp_path, dense_models.corner_pose_model(64), manifest, dense_models.POSE_LABELS)
    assert "no mask protos" in message and "set task: detection (or pose)" in message


def test_mask_coefficient_count_is_read_from_the_protos(tmp_path: Path) -> None:
    manifest = with_(dense_models.instance_manifest(size=64), "instances", mask_coefficients=32)
    message = refusal(tmp_path, dense_models.colour_instance_segmenter(64), manifest)
    assert "set instances.mask_coefficients: 4" in message


def test_instance_class_count_against_the_labels(tmp_path: Path) -> None:
    message = refusal(tmp_path, dense_models.colour_instance_segmenter(64), dense_models.instance_manifest(size=64),
                      ("red", "green"))
    assert "gives 3 classes but the labels file labels.txt lists 2" in message


def test_wrong_keypoint_count_suggests_the_right_one(tmp_path: Path) -> None:
    manifest = with_(dense_models.pose_manifest(size=64), "pose", keypoints=17)
    message = refusal(tmp_path, dense_models.corner_pose_model(64), manifest, dense_models.POSE_LABELS)
    assert "too few for 4 box values, classes and 51 keypoint values" in message

    manifest = with_(dense_models.pose_manifest(size=64), "pose", keypoints=1)
    message = refusal(tmp_path / "one", dense_models.corner_pose_model(64), manifest, dense_models.POSE_LABELS)
    assert "leaves 6 keypoint values: set pose.keypoints: 2" in message


def test_a_seg_model_declared_as_pose(tmp_path: Path) -> None:
    message = refusal(tmp_path, dense_models.colour_instance_segmenter(64), dense_models.pose_manifest(size=64))
    assert "look like YOLOv8-seg" in message and "set task: instance_segmentation" in message


def test_class_ids_beyond_the_labels_on_a_validation_image_are_refused(tmp_path: Path) -> None:
    blue = np.zeros((32, 32, 3), np.uint8)
    blue[:, :, 2] = 255
    manifest = {**dense_models.segmenter_manifest(size=32, class_ids=True),
                "validation": {"images": ["validation/blue.png"]}}
    buffer = io.BytesIO()
    Image.fromarray(blue).save(buffer, format="PNG")
    root = write_bundle(tmp_path / "bundle", dense_models.colour_segmenter(32, class_ids=True), manifest,
                        ("red", "green"), extra_files={"validation/blue.png": buffer.getvalue()})
    with pytest.raises(ModelCheckError, match="on validation image validation/blue.png: output holds class id 2 but "
                                              "the labels file labels.txt lists 2 classes"):
        check_model(root)


def test_nan_outputs_are_refused_naming_the_model(tmp_path: Path) -> None:
    model = dense_models.colour_segmenter(32)
    # log(-1) on every pixel: NaN logits.
    graph = model.graph
    logits = graph.node[-1]
    logits.output[0] = "clean"
    graph.node.extend([helper.make_node("Sub", ["clean", "big"], ["negative"]),
                       helper.make_node("Log", ["negative"], ["logits"])])
    graph.initializer.append(numpy_helper.from_array(np.array(1e6, np.float32), "big"))
    message = refusal(tmp_path, _model(graph), dense_models.segmenter_manifest(size=32))
    assert "holds NaN or Inf: fix the model" in message
