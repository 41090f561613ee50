"""Predictions to vision_msgs, the messages ROS tools expect from detectors and classifiers.

vision_msgs is an optional run dependency: this module imports it only when
a conversion runs, so the node can start (and publish InferenceResult only)
where it is not installed. Conventions, from vision_msgs 4.x:

- ``ObjectHypothesis.class_id`` is the model's class index as a decimal
  string, the key of ``LabelInfo.class_map`` where its name is; the name is
  also in InferenceResult.labels.
- A Detection2D's box is its centre and size in pixels of the camera image
  (theta 0); its pose is left zero, as a 2D detector has none; ``id`` stays
  empty (no tracking). Each Detection2D carries the image's header too.
- Headers are the camera frame's, so that a time synchronizer pairs results
  with their images.
"""
from __future__ import annotations

from typing import Any, Sequence

from robot_model_deployer.bundle.manifest import Manifest, Task
from robot_model_deployer.inference.postprocess import Prediction

# LabelInfo keys classes by uint16; vision_msgs reserves the largest value for "unlabelled".
UNLABELED_CLASS_ID = 65535


def vision_msgs_missing() -> str | None:
    """Why vision_msgs cannot be used here (None when it can), for the node's one log line."""
    try:
        from vision_msgs.msg import Classification, Detection2DArray, LabelInfo  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def results_message_type(task: Task) -> type | None:
    """The vision_msgs type that carries one frame's results of ``task`` (None: no such type)."""
    from vision_msgs.msg import Classification, Detection2DArray
    return {Task.CLASSIFICATION: Classification, Task.DETECTION: Detection2DArray}.get(task)


def prediction_to_vision_msg(prediction: Prediction, header: Any, task: Task) -> Any:
    """The vision_msgs message for one frame's prediction (results_message_type(task) says which)."""
    if task is Task.CLASSIFICATION:
        return prediction_to_classification(prediction, header)
    if task is Task.DETECTION:
        return prediction_to_detections(prediction, header)
    raise ValueError(f"vision_msgs has no results message for task {task.value}")


def prediction_to_classification(prediction: Prediction, header: Any) -> Any:
    """A vision_msgs/Classification: the top-k hypotheses, best first."""
    from vision_msgs.msg import Classification
    return Classification(header=header, results=_hypotheses(prediction))


def prediction_to_detections(prediction: Prediction, header: Any) -> Any:
    """A vision_msgs/Detection2DArray: one Detection2D with one hypothesis per box."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose, Point2D, Pose2D
    boxes = prediction.boxes.astype(float).reshape(-1, 4).tolist()
    detections = []
    for hypothesis, (x1, y1, x2, y2) in zip(_hypotheses(prediction), boxes, strict=True):
        centre = Pose2D(position=Point2D(x=(x1 + x2) / 2.0, y=(y1 + y2) / 2.0))
        detections.append(Detection2D(
            header=header, results=[ObjectHypothesisWithPose(hypothesis=hypothesis)],
            bbox=BoundingBox2D(center=centre, size_x=x2 - x1, size_y=y2 - y1)))
    return Detection2DArray(header=header, detections=detections)


def label_info(labels: Sequence[str], threshold: float, header: Any) -> Any:
    """A vision_msgs/LabelInfo: class index to label name, and the score threshold the model applies."""
    from vision_msgs.msg import LabelInfo, VisionClass
    if len(labels) > UNLABELED_CLASS_ID:
        raise ValueError(f"{len(labels)} labels do not fit vision_msgs/LabelInfo, whose class ids are uint16 "
                         f"below {UNLABELED_CLASS_ID}: turn publish_label_info off for this model")
    class_map = [VisionClass(class_id=index, class_name=name) for index, name in enumerate(labels)]
    return LabelInfo(header=header, class_map=class_map, threshold=float(threshold))


def score_threshold(manifest: Manifest) -> float:
    """The confidence below which the model reports nothing (LabelInfo.threshold); 0 for top-k classifiers."""
    return float(manifest.detection.score_threshold) if manifest.task is Task.DETECTION else 0.0


def _hypotheses(prediction: Prediction) -> list[Any]:
    from vision_msgs.msg import ObjectHypothesis
    return [ObjectHypothesis(class_id=str(class_id), score=score)
            for class_id, score in zip(prediction.class_ids.tolist(), prediction.scores.astype(float).tolist(),
                                       strict=True)]
