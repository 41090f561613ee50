"""The per-task topics beside ``results``: what the perception node publishes and the shadow reads back.

One table (TASK_TOPICS) says which task has which extra topic and message:
segmentation a label ``sensor_msgs/Image`` on ``segmentation``,
instance_segmentation an InstanceMasks on ``instances``, pose a Keypoints on
``keypoints``. Classification and detection have none (``results`` carries
all they say). The perception node publishes through TaskOutputs; the shadow
node pairs each extra message with the live node's InferenceResult of the
same stamp (LiveJoin), because the full prediction is in the one and the
latency in the other.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

from sensor_msgs.msg import Image

from robot_model_deployer.bundle.manifest import Manifest, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.msg import InstanceMasks, Keypoints
from robot_model_deployer.nodes.dense_conversions import (instances_to_msg, keypoints_to_msg, label_image_to_msg,
                                                          msg_to_instances, msg_to_keypoints, semantic_from_label_msg)


@dataclass(frozen=True)
class TaskTopic:
    """A task's extra topic: its name, message type, and the conversions each way."""

    topic: str
    message: type
    to_msg: Callable[[Prediction, Any, Manifest, tuple[str, ...], str], Any]
    to_prediction: Callable[[Any], Prediction]


TASK_TOPICS: dict[Task, TaskTopic] = {
    Task.SEGMENTATION: TaskTopic(
        "segmentation", Image,
        lambda p, header, manifest, labels, node: label_image_to_msg(p.label_image, header, len(labels)),
        semantic_from_label_msg),
    Task.INSTANCE_SEGMENTATION: TaskTopic(
        "instances", InstanceMasks,
        lambda p, header, manifest, labels, node: instances_to_msg(p, header, manifest.name, str(manifest.version),
                                                                   node),
        msg_to_instances),
    Task.POSE: TaskTopic(
        "keypoints", Keypoints,
        lambda p, header, manifest, labels, node: keypoints_to_msg(p, header, manifest.name, str(manifest.version),
                                                                   node),
        msg_to_keypoints),
}


class TaskOutputs:
    """The perception node's publisher for its model's extra topic (none for classification and detection)."""

    def __init__(self, node: Any, manifest: Manifest, labels: tuple[str, ...], qos: int = 10) -> None:
        self._node = node
        self._manifest = manifest
        self._labels = labels
        self._topic = TASK_TOPICS.get(manifest.task)
        self._publisher = (node.create_lifecycle_publisher(self._topic.message, self._topic.topic, qos)
                           if self._topic is not None else None)

    def publish(self, prediction: Prediction, header) -> None:
        if self._publisher is not None:
            self._publisher.publish(self._topic.to_msg(prediction, header, self._manifest, self._labels,
                                                       self._node.get_name()))

    def release(self) -> None:
        if self._publisher is not None:
            self._node.destroy_lifecycle_publisher(self._publisher)
            self._publisher = None


class LiveJoin:
    """Pairs the live node's extra message and its InferenceResult by image stamp, whichever comes first.

    Holds at most ``limit`` unpaired entries per side (oldest dropped): a
    message whose partner never comes costs nothing after that.
    """

    def __init__(self, limit: int = 64) -> None:
        self._limit = limit
        self._latencies: OrderedDict[int, float] = OrderedDict()
        self._predictions: OrderedDict[int, Prediction] = OrderedDict()

    def add_latency(self, stamp_ns: int, latency_ms: float) -> tuple[Prediction, float] | None:
        prediction = self._predictions.pop(stamp_ns, None)
        if prediction is not None:
            return prediction, latency_ms
        self._hold(self._latencies, stamp_ns, latency_ms)
        return None

    def add_prediction(self, stamp_ns: int, prediction: Prediction) -> tuple[Prediction, float] | None:
        latency = self._latencies.pop(stamp_ns, None)
        if latency is not None:
            return prediction, latency
        self._hold(self._predictions, stamp_ns, prediction)
        return None

    def _hold(self, pending: OrderedDict, stamp_ns: int, value: Any) -> None:
        pending[stamp_ns] = value
        while len(pending) > self._limit:
            pending.popitem(last=False)
