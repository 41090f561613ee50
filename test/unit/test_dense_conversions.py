"""Label images, instance masks and keypoints to ROS messages and back (no rclpy.init), and the shadow's live join."""
from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.nodes.dense_conversions import (instances_to_msg, keypoints_to_msg, label_encoding,
                                                          label_image_to_msg, msg_to_instances, msg_to_keypoints,
                                                          msg_to_label_image, semantic_from_label_msg)
from robot_model_deployer.nodes.task_outputs import TASK_TOPICS, LiveJoin


def header(sec: int = 7) -> Header:
    h = Header(frame_id="camera")
    h.stamp.sec = sec
    return h


@pytest.mark.parametrize("classes, encoding, top", [(3, "mono8", 2), (255, "mono8", 254), (256, "mono16", 255),
                                                    (300, "mono16", 299), (0, "mono16", 1000)])
def test_label_image_round_trips_as_mono8_or_mono16(classes: int, encoding: str, top: int) -> None:
    labels = np.array([[0, 1, top], [top, 0, 1]], np.uint16)
    msg = label_image_to_msg(labels, header(), classes)
    assert (msg.encoding, msg.width, msg.height, msg.header.frame_id) == (encoding, 3, 2, "camera")
    assert msg.step == 3 * (1 if encoding == "mono8" else 2)
    assert (msg_to_label_image(msg) == labels).all()
    assert label_encoding(classes) == encoding


def test_mono16_honours_big_endian_and_step_padding() -> None:
    values = np.array([[258, 1]], ">u2")
    msg = Image(height=1, width=2, encoding="mono16", is_bigendian=1, step=6, data=values.tobytes() + b"\xee\xee")
    assert msg_to_label_image(msg).tolist() == [[258, 1]]


def test_label_image_of_another_encoding_is_refused() -> None:
    with pytest.raises(ValueError, match="mono8 or mono16"):
        msg_to_label_image(Image(height=1, width=1, encoding="rgb8", step=3, data=b"\0\0\0"))


def test_semantic_prediction_from_the_label_message() -> None:
    msg = label_image_to_msg(np.array([[2, 2, 2, 0]], np.uint16), header(), 3)
    prediction = semantic_from_label_msg(msg, ("sky", "road", "car"))
    assert prediction.labels == ("car", "sky") and prediction.scores.tolist() == [0.75, 0.25]


def instance_prediction() -> Prediction:
    masks = np.zeros((2, 6, 8), bool)
    masks[0, 1:3, 2:5] = True
    masks[1, 4:6, 6:8] = True
    return Prediction(np.array([1, 0], np.int32), np.array([0.9, 0.6], np.float32), ("b", "a"),
                      np.array([[1.5, 0.5, 5.0, 3.2], [6.0, 4.0, 8.0, 6.0]], np.float32), masks=masks)


def test_instance_masks_go_out_cut_to_their_boxes_and_come_back_whole() -> None:
    prediction = instance_prediction()
    msg = instances_to_msg(prediction, header(), "seg", "1.0.0", "perception_a")
    assert [(m.width, m.height, m.encoding) for m in msg.masks] == [(4, 4, "mono8"), (2, 2, "mono8")]
    assert (list(msg.mask_x), list(msg.mask_y)) == ([1, 6], [0, 4])
    assert (msg.image_width, msg.image_height) == (8, 6)
    back = msg_to_instances(msg)
    assert (back.masks == prediction.masks).all()
    assert back.labels == ("b", "a") and back.boxes.tolist() == prediction.boxes.tolist()


def test_inconsistent_instance_message_is_refused() -> None:
    msg = instances_to_msg(instance_prediction(), header(), "seg", "1.0.0", "perception_a")
    msg.mask_x = [1]
    with pytest.raises(ValueError, match="2 scores"):
        msg_to_instances(msg)


def test_keypoints_round_trip() -> None:
    keypoints = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    prediction = Prediction(np.zeros(2, np.int32), np.array([0.8, 0.7], np.float32), ("person", "person"),
                            np.array([[0, 0, 4, 4], [1, 1, 5, 5]], np.float32), keypoints=keypoints)
    msg = keypoints_to_msg(prediction, header(), "pose", "1.0.0", "perception_a")
    assert msg.keypoints_per_object == 3 and len(msg.keypoints) == 18
    assert (msg_to_keypoints(msg).keypoints == keypoints).all()
    msg.keypoints_per_object = 4
    with pytest.raises(ValueError, match="2 objects of 4 keypoints"):
        msg_to_keypoints(msg)


def test_every_dense_task_has_a_topic_and_the_others_none() -> None:
    assert set(TASK_TOPICS) == {Task.SEGMENTATION, Task.INSTANCE_SEGMENTATION, Task.POSE}
    assert {t.topic for t in TASK_TOPICS.values()} == {"segmentation", "instances", "keypoints"}


def test_live_join_pairs_by_stamp_in_either_order_and_forgets_the_oldest() -> None:
    join = LiveJoin(limit=2)
    first, second = instance_prediction(), instance_prediction()
    assert join.add_latency(1, 5.0) is None
    assert join.add_prediction(1, first) == (first, 5.0)
    assert join.add_prediction(2, second) is None
    assert join.add_latency(2, 6.0) == (second, 6.0)
    for stamp in (10, 11, 12):
        join.add_latency(stamp, 1.0)
    assert join.add_prediction(10, first) is None  # dropped: only the last two are held
    assert join.add_prediction(12, first) == (first, 1.0)
