"""Lifecycle perception node: serves one model on the camera topic.

configure  = load the bundle in ``model_dir`` (its fastest optimized variant
             in ``artifacts_dir`` when set) and warm the model up
activate   = publish an InferenceResult for every image on ``results``, or
             an InferenceError on ``inference_errors`` when the frame fails;
             segmentation, instance segmentation and pose models also
             publish their task's topic (nodes.task_outputs: ``segmentation``,
             ``instances``, ``keypoints``), and vision_msgs where installed
             (nodes/vision_publishers.py)
deactivate = stop publishing (the model stays loaded: a warm standby)
cleanup    = release the model

The image subscription exists from configure on, so a standby node is
already matched with the camera; it keeps the last frame it heard, and on
activation answers that frame at once when it is under
``catch_up_max_age_s`` old (a rollback then serves without waiting for the camera's next frame;
that frame may also get the other node's answer, as frames do while both
nodes are active during a hand-over). A model that fails to load makes configure return
FAILURE: the node stays unconfigured and says why in its log.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.deploy.serving import open_serving_engine
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError
from robot_model_deployer.msg import InferenceError, InferenceResult
from robot_model_deployer.nodes.conversions import (UnsupportedImageError, prediction_to_result,
                                                    serialized_header_stamp_ns)
from robot_model_deployer.nodes.image_cdr import read_image
from robot_model_deployer.nodes.model_lifecycle import ModelLifecycleNode
from robot_model_deployer.nodes.parameters import ParameterSpec, declare_parameters
from robot_model_deployer.nodes.runner import run_node
from robot_model_deployer.nodes.task_outputs import TaskOutputs
from robot_model_deployer.nodes.vision_publishers import VisionPublishers, vision_msgs_usable

IMAGE_QOS_CHOICES = ("sensor_data", "reliable")
# Reliable: an error is one message per failed frame, and probation must hear every one.
ERRORS_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

PARAMETERS = (
    ParameterSpec("model_dir", "", "Installed bundle directory loaded on configure (set by the manager)."),
    ParameterSpec("artifacts_dir", "",
                  "Optimized variants of that bundle for this robot ('' serves the model as shipped; set by the manager)."),
    ParameterSpec("image_qos", "sensor_data",
                  "QoS of the image subscription: sensor_data (best effort, matches any camera) or reliable.",
                  choices=IMAGE_QOS_CHOICES),
    ParameterSpec("providers", ["CPUExecutionProvider"],
                  "ONNX Runtime execution providers to try, in order of preference."),
    ParameterSpec("warmup_runs", 3, "Inference runs on a blank frame during configure.", minimum=1, maximum=100),
    ParameterSpec("intra_op_threads", 0,
                  "CPU threads of one inference, ONNX Runtime or OpenVINO (0: the runtime decides).",
                  minimum=0, maximum=256),
    ParameterSpec("inference_spinning", False,
                  "Let ONNX Runtime's threads spin between frames: about 1 ms less per frame when the node has the "
                  "CPU to itself, about one core burnt at 30 Hz that the camera, the shadow and DDS then lack.",
                  read_only=True),
    ParameterSpec("catch_up_max_age_s", 0.1,
                  "On activation, answer the last frame heard while inactive if it is younger than this (seconds; "
                  "0: wait for the next frame). A rollback then serves without waiting for the camera.",
                  minimum=0.0, maximum=10.0, read_only=True),
    ParameterSpec("publish_vision_msgs", True,
                  "Also publish vision_msgs results: Detection2DArray on detections (detectors) or Classification "
                  "on classification (classifiers). Needs vision_msgs; without it the node says so once.",
                  read_only=True),
    ParameterSpec("publish_label_info", True,
                  "Publish vision_msgs/LabelInfo (class map, score threshold) on label_info, transient local, "
                  "while active. Needs vision_msgs.", read_only=True),
)


class PerceptionNode(ModelLifecycleNode):
    """Runs the configured model on every image while active."""

    def __init__(self, node_name: str = "perception", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._settings = declare_parameters(self, PARAMETERS)
        self._engine: InferenceEngine | None = None
        self._publisher = None
        self._error_publisher = None
        self._task_outputs: TaskOutputs | None = None
        self._subscription = None
        self._vision: VisionPublishers | None = None
        wants_vision = self._settings["publish_vision_msgs"] or self._settings["publish_label_info"]
        self._vision_msgs = wants_vision and vision_msgs_usable(self)
        self._serving = threading.Event()
        self._errors = 0
        # (frame, time.monotonic()) heard while not serving; cleared by the first frame served after it
        self._latest: tuple[bytes, float] | None = None
        self._catch_up = None

    # Lifecycle transitions -------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model_dir = self.get_parameter("model_dir").value
        if not model_dir:
            self.get_logger().error("cannot configure: parameter model_dir is empty (the manager sets it)")
            return TransitionCallbackReturn.FAILURE
        try:
            self._engine, served = open_serving_engine(
                model_dir, self.get_parameter("artifacts_dir").value,
                providers=self.get_parameter("providers").value, threads=self.get_parameter("intra_op_threads").value,
                spinning=self._settings["inference_spinning"], warmup_runs=self.get_parameter("warmup_runs").value)
        except (BundleError, ModelLoadError) as exc:
            self.get_logger().error(f"cannot configure with {model_dir}: {exc}")
            return TransitionCallbackReturn.FAILURE
        manifest = self._engine.manifest
        self.get_logger().info(f"loaded {manifest.name} {manifest.version} ({manifest.task.value}), {served}, "
                               f"on {self._engine.providers[0]}")
        self._errors = 0  # counted per loaded model, as InferenceError.errors says
        self._publisher = self.create_lifecycle_publisher(InferenceResult, "results", 10)
        self._error_publisher = self.create_lifecycle_publisher(InferenceError, "inference_errors", ERRORS_QOS)
        if self._vision_msgs:
            self._vision = VisionPublishers(self, manifest, self._engine.labels,
                                            results=self._settings["publish_vision_msgs"],
                                            label_info=self._settings["publish_label_info"])
        self._task_outputs = TaskOutputs(self, manifest, self._engine.labels)
        # Raw: the frame is read in place (nodes/image_cdr.py), not copied into Python objects by rclpy.
        self._subscription = self.create_subscription(Image, "image", self._on_image, self._image_qos(), raw=True)
        self._catch_up = self.create_guard_condition(self._on_catch_up)
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)
        if self._vision is not None:
            self._vision.activate()
        self._serving.set()
        if self._latest is not None and time.monotonic() - self._latest[1] < self._settings["catch_up_max_age_s"]:
            self._catch_up.trigger()  # answered once this transition's reply is out
        self.get_logger().info("active: publishing results")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._serving.clear()
        if self._vision is not None:
            self._vision.deactivate()
        self.get_logger().info("inactive: model kept warm, not publishing")
        return super().on_deactivate(state)

    # Frames -----------------------------------------------------------------

    def _on_image(self, data: bytes) -> None:
        if not self._serving.is_set():
            self._latest = (data, time.monotonic())
            return
        self._latest = None  # a newer frame is answered: the catch-up has nothing left to do
        self._serve(data)

    def _on_catch_up(self) -> None:
        latest, self._latest = self._latest, None
        if latest is not None and self._serving.is_set():
            self._serve(latest[0])

    def _serve(self, data: bytes) -> None:
        engine = self._engine
        if engine is None:
            return
        try:
            image = read_image(data)
        except UnsupportedImageError as exc:
            self._report_error(_stamp_only_header(data), engine, str(exc))
            return
        try:
            prediction = engine.infer(image.pixels, image.pixel_format)
        except Exception as exc:  # A model can fail on one frame; the node keeps serving the next.
            self._report_error(image.header, engine, f"inference failed: {type(exc).__name__}: {exc}")
            return
        manifest = engine.manifest
        self._publisher.publish(prediction_to_result(
            prediction, image.header, manifest.name, str(manifest.version), manifest.task.value, self.get_name()))
        if self._vision is not None:
            self._vision.publish(prediction, image.header)
        self._task_outputs.publish(prediction, image.header)

    def _report_error(self, header: Header, engine: InferenceEngine, text: str) -> None:
        """Log (throttled) and publish the failure, so that probation counts it against the model."""
        self._errors += 1
        text = one_line(text)
        self.get_logger().error(f"{text} (frame skipped, {self._errors} errors so far)",
                                throttle_duration_sec=5.0)
        manifest = engine.manifest
        self._error_publisher.publish(InferenceError(
            header=header, model_name=manifest.name, model_version=str(manifest.version),
            node_name=self.get_name(), reason=text, errors=min(self._errors, 2**32 - 1)))

    # Helpers ----------------------------------------------------------------

    def _image_qos(self) -> QoSProfile:
        if self._settings["image_qos"] == "sensor_data":
            return qos_profile_sensor_data
        return QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

    def _release(self) -> None:
        self._serving.clear()
        self._latest = None
        if self._catch_up is not None:
            self.destroy_guard_condition(self._catch_up)
            self._catch_up = None
        if self._subscription is not None:
            self.destroy_subscription(self._subscription)
            self._subscription = None
        for publisher in (self._publisher, self._error_publisher):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._publisher = self._error_publisher = None
        if self._vision is not None:
            self._vision.release()
            self._vision = None
        if self._task_outputs is not None:
            self._task_outputs.release()
            self._task_outputs = None
        self._engine = None


def _stamp_only_header(data: bytes) -> Header:
    """The stamp of a frame that could not be read, when even that much is there (else zero)."""
    header = Header()
    try:
        header.stamp.sec, header.stamp.nanosec = divmod(serialized_header_stamp_ns(data), 1_000_000_000)
    except ValueError:
        pass
    return header


def main(args: list[str] | None = None) -> None:
    run_node(PerceptionNode, args, parameters=PARAMETERS)
