"""Predictions to vision_msgs (Detection2DArray, Classification, LabelInfo), no rclpy.init.

Runs against whichever vision_msgs is on the path: the real package, or the
test stand-in scripts/test.sh builds (test/vision_msgs_standin; its type
hashes are checked against upstream in test_vision_msgs_interface.py).
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

from robot_model_deployer.bundle.manifest import Task, manifest_from_dict
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.nodes.vision_conversions import (
    UNLABELED_CLASS_ID, label_info, prediction_to_classification, prediction_to_detections, prediction_to_vision_msg,
    results_message_type, score_threshold, vision_msgs_missing,
)
from robot_model_deployer.testing.models import classifier_manifest, detector_manifest
from robot_model_deployer.testing.vision_msgs_env import environment_without_vision_msgs

needs_vision_msgs = pytest.mark.skipif(vision_msgs_missing() is not None,
                                reason="vision_msgs is not importable: scripts/test.sh builds a test stand-in")

HEADER = Header(stamp=Time(sec=12, nanosec=345), frame_id="front_camera")


def detections() -> Prediction:
    return Prediction(class_ids=np.array([2, 0], np.int32), scores=np.array([0.9, 0.4], np.float32),
                      labels=("blue", "red"),
                      boxes=np.array([[10, 20, 50, 80], [0.5, 1.5, 2.5, 5.5]], np.float32))


@needs_vision_msgs
def test_each_box_becomes_a_detection_with_its_centre_size_class_and_score() -> None:
    from vision_msgs.msg import Detection2DArray
    msg = prediction_to_detections(detections(), HEADER)
    assert isinstance(msg, Detection2DArray)
    assert msg.header == HEADER
    got = [(d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.center.theta, d.bbox.size_x, d.bbox.size_y)
           for d in msg.detections]
    assert got == [(30.0, 50.0, 0.0, 40.0, 60.0), (1.5, 3.5, 0.0, 2.0, 4.0)]
    hypotheses = [[(r.hypothesis.class_id, r.hypothesis.score) for r in d.results] for d in msg.detections]
    assert hypotheses == [[("2", pytest.approx(0.9))], [("0", pytest.approx(0.4))]]
    # Every detection carries the camera frame's header, no tracking id and no pose.
    assert all(d.header == HEADER and d.id == "" for d in msg.detections)
    assert all(d.results[0].pose.pose.position.x == 0.0 for d in msg.detections)


@needs_vision_msgs
def test_a_frame_without_boxes_is_an_empty_array_with_the_frame_header() -> None:
    empty = Prediction(np.zeros(0, np.int32), np.zeros(0, np.float32), ())
    msg = prediction_to_detections(empty, HEADER)
    assert msg.header == HEADER and list(msg.detections) == []


@needs_vision_msgs
def test_a_classification_keeps_the_top_k_order() -> None:
    from vision_msgs.msg import Classification
    top = Prediction(np.array([1, 0, 2], np.int32), np.array([0.7, 0.2, 0.1], np.float32), ("green", "red", "blue"))
    msg = prediction_to_classification(top, HEADER)
    assert isinstance(msg, Classification) and msg.header == HEADER
    assert [(r.class_id, round(r.score, 6)) for r in msg.results] == [("1", 0.7), ("0", 0.2), ("2", 0.1)]


@needs_vision_msgs
def test_the_task_picks_the_message() -> None:
    from vision_msgs.msg import Classification, Detection2DArray
    assert results_message_type(Task.DETECTION) is Detection2DArray
    assert results_message_type(Task.CLASSIFICATION) is Classification
    assert isinstance(prediction_to_vision_msg(detections(), HEADER, Task.DETECTION), Detection2DArray)


@needs_vision_msgs
def test_label_info_maps_each_class_index_to_its_label_with_the_threshold() -> None:
    msg = label_info(("red", "green", "blue"), 0.3, HEADER)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [(0, "red"), (1, "green"), (2, "blue")]
    assert msg.threshold == pytest.approx(0.3) and msg.header == HEADER


@needs_vision_msgs
def test_label_info_refuses_more_classes_than_its_uint16_ids_hold() -> None:
    with pytest.raises(ValueError, match="publish_label_info off"):
        label_info(tuple(str(i) for i in range(UNLABELED_CLASS_ID + 1)), 0.0, HEADER)
    assert len(label_info(tuple(str(i) for i in range(UNLABELED_CLASS_ID)), 0.0, HEADER).class_map) == 65535


def test_the_threshold_is_the_detectors_score_threshold_and_zero_for_a_classifier() -> None:
    assert score_threshold(manifest_from_dict(detector_manifest())) == pytest.approx(0.3)
    assert score_threshold(manifest_from_dict(classifier_manifest())) == 0.0


@needs_vision_msgs
def test_the_messages_survive_serialization_by_their_type_support() -> None:
    for msg in (prediction_to_detections(detections(), HEADER), label_info(("a", "b"), 0.5, HEADER)):
        assert deserialize_message(serialize_message(msg), type(msg)) == msg


def test_without_vision_msgs_the_module_imports_and_says_why() -> None:
    environment = environment_without_vision_msgs()
    if environment is None:
        pytest.skip("vision_msgs shares its prefix with ROS itself and cannot be left out")
    code = ("from robot_model_deployer.nodes.vision_conversions import vision_msgs_missing; "
            "print(vision_msgs_missing())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **environment))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ModuleNotFoundError: No module named 'vision_msgs'"
