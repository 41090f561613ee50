"""The perception node's vision_msgs publishers, beside its InferenceResult.

Topics (relative, so they follow the node's namespace and remaps):
``detections`` (vision_msgs/Detection2DArray) for a detector,
``classification`` (vision_msgs/Classification) for a classifier, and
``label_info`` (vision_msgs/LabelInfo, transient local: a late subscriber
still gets it), as the vision_msgs README asks of a vision pipeline.

LabelInfo exists only while the node is active: the manager keeps a second
perception node warm on the same topics, and a latched message from the
standby would tell late subscribers the wrong classes.
"""
from __future__ import annotations

from typing import Any, Sequence

from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.type_support import check_for_type_support
from std_msgs.msg import Header

from robot_model_deployer.bundle.manifest import Manifest, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.nodes.vision_conversions import (
    label_info, prediction_to_vision_msg, results_message_type, score_threshold, vision_msgs_missing,
)

RESULTS_TOPICS = {Task.DETECTION: "detections", Task.CLASSIFICATION: "classification"}
LABEL_INFO_TOPIC = "label_info"
LABEL_INFO_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)
RESULTS_DEPTH = 10  # as InferenceResult's


def vision_msgs_usable(node: LifecycleNode) -> bool:
    """True when vision_msgs imports and has type support here; else says so in one log line."""
    problem = vision_msgs_missing()
    if problem is None:
        from vision_msgs.msg import Classification, Detection2DArray, LabelInfo
        try:
            for message_type in (Classification, Detection2DArray, LabelInfo):
                check_for_type_support(message_type)
        except Exception as exc:  # a broken install: say what failed, serve without it
            problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        node.get_logger().info(
            f"vision_msgs is not usable ({problem}): publishing InferenceResult only; install "
            "ros-$ROS_DISTRO-vision-msgs for detections, classification and label_info")
        return False
    return True


class VisionPublishers:
    """Publishes one frame's vision_msgs results while active, and LabelInfo latched from activation on."""

    def __init__(self, node: LifecycleNode, manifest: Manifest, labels: Sequence[str], *, results: bool,
                 label_info: bool) -> None:
        self._node = node
        self._task = manifest.task
        self._labels = tuple(labels)
        self._threshold = score_threshold(manifest)
        self._label_info_wanted = label_info
        self._label_info = None
        message_type = results_message_type(manifest.task) if results else None
        self._results = None if message_type is None else node.create_lifecycle_publisher(
            message_type, RESULTS_TOPICS[manifest.task], RESULTS_DEPTH)

    def publish(self, prediction: Prediction, header: Any) -> None:
        if self._results is not None:
            self._results.publish(prediction_to_vision_msg(prediction, header, self._task))

    def activate(self) -> None:
        """Latch this model's LabelInfo (a late subscriber gets it from DDS)."""
        if not self._label_info_wanted or self._label_info is not None:
            return
        stamp = self._node.get_clock().now().to_msg()
        try:
            message = label_info(self._labels, self._threshold, Header(stamp=stamp))
        except ValueError as exc:
            self._node.get_logger().error(f"not publishing {LABEL_INFO_TOPIC}: {exc}")
            return
        self._label_info = self._node.create_publisher(type(message), LABEL_INFO_TOPIC, LABEL_INFO_QOS)
        self._label_info.publish(message)

    def deactivate(self) -> None:
        """Withdraw LabelInfo: its writer goes, so late subscribers no longer get it."""
        if self._label_info is not None:
            self._node.destroy_publisher(self._label_info)
            self._label_info = None

    def release(self) -> None:
        self.deactivate()
        if self._results is not None:
            self._node.destroy_lifecycle_publisher(self._results)
            self._results = None
