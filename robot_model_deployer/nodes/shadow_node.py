"""Shadow node: runs a candidate model beside the live one on live camera frames.

configure  = load the candidate in ``model_dir`` / ``artifacts_dir`` (set by the manager)
activate   = compare: run the candidate on camera frames, pair its results
             with the live node's ``results`` by image stamp, publish
             ``~/report`` (ShadowReport) every ``report_period`` seconds
deactivate = stop comparing; cleanup = release the candidate

It keeps off the live path's CPU: it runs in its own process, the candidate
runs on a worker thread with few ONNX Runtime threads on at most
``max_rate`` frames a second, and a frame that arrives while the worker is
busy is dropped (and counted), never queued. Frames arrive serialized and
only those the candidate runs on are deserialized, so dropping costs next
to nothing and does not disturb the candidate's latency measurement. Time is ROS time, so a simulation
clock (use_sim_time) drives the "T seconds" gate.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import onnxruntime as ort
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.loader import BundleError
from robot_model_deployer.deploy.serving import open_serving_engine
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError
from robot_model_deployer.msg import InferenceResult, ShadowReport
from robot_model_deployer.nodes.conversions import (image_to_array, result_to_prediction,
                                                    serialized_header_stamp_ns, stamp_ns, verdict_to_report_msg)
from robot_model_deployer.nodes.model_lifecycle import ModelLifecycleNode
from robot_model_deployer.nodes.parameters import ParameterSpec, declare_parameters
from robot_model_deployer.nodes.runner import run_node
from robot_model_deployer.validation.shadow import ShadowComparator

PARAMETERS = (
    ParameterSpec("model_dir", "", "Candidate bundle directory loaded on configure (set by the manager)."),
    ParameterSpec("artifacts_dir", "", "Optimized variants of the candidate ('' runs it as shipped; set by the manager)."),
    ParameterSpec("report_period", 0.5, "Seconds between ShadowReport messages.", minimum=0.05, maximum=60.0),
    ParameterSpec("providers", ["CPUExecutionProvider"], "ONNX Runtime execution providers for the candidate."),
    ParameterSpec("intra_op_threads", 1,
                  "ONNX Runtime threads for the candidate (few, so the live node keeps its CPU).",
                  minimum=0, maximum=256),
    ParameterSpec("max_rate", 10.0, "Most camera frames per second the candidate runs on (0: as many as it can).",
                  minimum=0.0, maximum=1000.0),
    ParameterSpec("nice_increment", 0,
                  "Added to this process's nice value at start. Above 0 the live node wins the CPU, but on a "
                  "busy computer the candidate then waits for it and its latency gate measures that wait.",
                  minimum=0, maximum=19, read_only=True),
)


class ShadowNode(ModelLifecycleNode):
    """Compares the candidate with the live model and reports a verdict."""

    def __init__(self, node_name: str = "shadow", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        settings = declare_parameters(self, PARAMETERS)
        os.nice(settings["nice_increment"])
        self._min_interval_ns = int(1e9 / settings["max_rate"]) if settings["max_rate"] > 0 else 0
        self._last_taken_ns = 0
        self._engine: InferenceEngine | None = None
        self._comparator: ShadowComparator | None = None
        self._lock = threading.Lock()
        self._frame: bytes | None = None
        self._frame_ready = threading.Condition(self._lock)
        self._busy = False
        self._comparing = False
        self._worker: threading.Thread | None = None
        self._subscriptions: list[Any] = []
        self._report_timer = None
        self._report_publisher = None
        self._group = MutuallyExclusiveCallbackGroup()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model_dir = self.get_parameter("model_dir").value
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.get_parameter("intra_op_threads").value
            self._engine, served = open_serving_engine(
                model_dir, self.get_parameter("artifacts_dir").value,
                providers=self.get_parameter("providers").value, session_options=options, warmup_runs=2)
        except (BundleError, ModelLoadError) as exc:
            self.get_logger().error(f"cannot configure with candidate {model_dir!r}: {exc}")
            return TransitionCallbackReturn.FAILURE
        manifest = self._engine.manifest
        self._comparator = ShadowComparator(manifest.task, manifest.acceptance)
        self._report_publisher = self.create_lifecycle_publisher(ShadowReport, "~/report", 10)
        self._subscriptions = [
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data,
                                     callback_group=self._group, raw=True),
            self.create_subscription(InferenceResult, "results", self._on_live_result, 50,
                                     callback_group=self._group),
        ]
        self._report_timer = self.create_timer(self.get_parameter("report_period").value, self._publish_report,
                                               callback_group=self._group)
        self._worker = threading.Thread(target=self._run_candidate, name="shadow-candidate", daemon=True)
        self._worker.start()
        self.get_logger().info(f"candidate {manifest.name} {manifest.version} loaded ({served})")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._comparing = True
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._comparing = False
        self._publish_report()
        return super().on_deactivate(state)

    # Traffic -------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _on_image(self, data: bytes) -> None:
        stamp = serialized_header_stamp_ns(data)
        with self._lock:
            if not self._comparing or self._comparator is None:
                return
            if self._busy or stamp - self._last_taken_ns < self._min_interval_ns:
                self._comparator.add_dropped_frames()
                return
            self._busy = True
            self._last_taken_ns = stamp
            self._frame = data
            self._frame_ready.notify()

    def _on_live_result(self, msg: InferenceResult) -> None:
        prediction = result_to_prediction(msg)
        with self._lock:
            if self._comparing and self._comparator is not None:
                self._comparator.add_live(stamp_ns(msg.header.stamp), prediction, self._now(), msg.inference_ms)

    def _run_candidate(self) -> None:
        # Warm up on this thread: the first runs on a new thread are slow (allocations, caches), and
        # they must not count against the candidate's latency.
        with self._lock:
            engine = self._engine
        if engine is not None:
            engine.warm_up(3)
        while True:
            with self._lock:
                while self._frame is None and self._engine is not None:
                    self._frame_ready.wait()
                engine, data, self._frame = self._engine, self._frame, None
            if engine is None:
                return
            msg = deserialize_message(data, Image)
            key = stamp_ns(msg.header.stamp)
            try:
                image, pixel_format = image_to_array(msg)
                prediction = engine.infer(image, pixel_format)
            except Exception:  # Any failure of the candidate is a verdict input, not a crash.
                with self._lock:
                    if self._comparator is not None:
                        self._comparator.add_candidate_error(key, self._now())
                    self._busy = False
                continue
            with self._lock:
                if self._comparator is not None:
                    self._comparator.add_candidate(key, prediction, self._now(), prediction.inference_ms)
                self._busy = False

    def _publish_report(self) -> None:
        with self._lock:
            if self._comparator is None or self._engine is None:
                return
            verdict = self._comparator.verdict(self._now())
            manifest = self._engine.manifest
        msg = verdict_to_report_msg(verdict, manifest.name, str(manifest.version))
        msg.stamp = self.get_clock().now().to_msg()
        self._report_publisher.publish(msg)

    def _release(self) -> None:
        with self._lock:
            self._comparing = False
            self._engine = None
            self._comparator = None
            self._frame = None
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None
        for subscription in self._subscriptions:
            self.destroy_subscription(subscription)
        self._subscriptions = []
        if self._report_timer is not None:
            self.destroy_timer(self._report_timer)
            self._report_timer = None
        if self._report_publisher is not None:
            self.destroy_lifecycle_publisher(self._report_publisher)
            self._report_publisher = None


def main(args: list[str] | None = None) -> None:
    run_node(ShadowNode, args, threads=2)
