"""Shadow node: runs a candidate model beside the live one on live camera frames.

configure  = load the candidate in ``model_dir`` / ``artifacts_dir`` and the
             live model in ``reference_model_dir`` / ``reference_artifacts_dir``
             (all set by the manager)
activate   = compare: run the candidate on camera frames, pair its results
             with the live node's ``results`` by image stamp (for
             segmentation and pose tasks with the live node's task topic,
             see nodes.task_outputs), publish ``~/report`` (ShadowReport)
             every ``report_period`` seconds
deactivate = stop comparing; cleanup = release both models

It keeps off the live path's CPU: it runs in its own process, on at most
``max_rate`` frames a second, and it runs a frame only once the live node has
answered that frame, in the time the live node waits for the next one. A
frame that arrives while the worker is busy is dropped (and counted), never
queued (validation.frame_schedule decides; this node feeds it events and runs
what it hands out). Frames arrive serialized and only those it runs are
deserialized.

The latency gate compares the candidate with the live model run right beside
it: same process, same threads, same moment in the camera cycle. After each
candidate frame the next answered frame times the live model, so one gap
between frames never holds two runs. The live node's own latency (other
process, other threads, other load) is reported too, but an identical model
can measure 1.5x slower in shadow than there.

Before it takes frames, the worker scores both models on the labelled
images of the candidate's bundle and of the live version's (when they ship
validation.expected): real inference with exactly what each serves, in the
one process that has both loaded. The verdict waits for those scores.
Frames on which the two disagree are kept as samples (image and both
outputs, at most ``max_samples``) in ``samples_dir``, which the manager
gives and empties; see validation.samples.

Time is ROS time, so a simulation clock (use_sim_time) drives the
"T seconds" gate.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.errors import BundleError
from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.deploy.serving import open_serving_engine
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult, ShadowReport
from robot_model_deployer.nodes.conversions import (result_to_prediction,
                                                    serialized_header_stamp_ns, stamp_ns, verdict_to_report_msg)
from robot_model_deployer.nodes.image_cdr import read_image
from robot_model_deployer.nodes.model_lifecycle import ModelLifecycleNode
from robot_model_deployer.nodes.parameters import ParameterSpec, declare_parameters
from robot_model_deployer.nodes.runner import run_node
from robot_model_deployer.nodes.task_outputs import TASK_TOPICS, LiveJoin, TaskTopic
from robot_model_deployer.validation.frame_schedule import FrameRun, FrameSchedule, ScheduledFrame, Step
from robot_model_deployer.validation.labelled import compare_on_labelled, has_labelled_set
from robot_model_deployer.validation.samples import DEFAULT_MAX_SAMPLES, write_sample
from robot_model_deployer.validation.shadow import ShadowComparator
from robot_model_deployer.validation.shadow_report import Disagreement, LabelledSource

PARAMETERS = (
    ParameterSpec("model_dir", "", "Candidate bundle directory loaded on configure (set by the manager)."),
    ParameterSpec("artifacts_dir", "", "Optimized variants of the candidate ('' runs it as shipped; set by the manager)."),
    ParameterSpec("reference_model_dir", "",
                  "The live model's bundle directory, run beside the candidate as its latency reference "
                  "('' compares with the latency the live node reports; set by the manager)."),
    ParameterSpec("reference_artifacts_dir", "", "Optimized variants of the live model (set by the manager)."),
    ParameterSpec("samples_dir", "",
                  "Directory to keep disagreement samples in ('' keeps none; set by the manager to the "
                  "candidate's derived/shadow-samples in the store)."),
    ParameterSpec("max_samples", DEFAULT_MAX_SAMPLES, "Most disagreement samples kept per shadow run.",
                  minimum=0, maximum=10000),
    ParameterSpec("report_period", 0.5, "Seconds between ShadowReport messages.", minimum=0.05, maximum=60.0),
    ParameterSpec("providers", ["CPUExecutionProvider"], "ONNX Runtime execution providers for the candidate."),
    ParameterSpec("intra_op_threads", 1,
                  "CPU threads of one inference (few, so the live node keeps its CPU).",
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
        self._engine: InferenceEngine | None = None
        self._reference: InferenceEngine | None = None
        self._comparator: ShadowComparator | None = None
        self._lock = threading.Lock()
        # Made on configure and dropped on release, so no frame of an earlier run is still counted as busy.
        self._schedule: FrameSchedule[bytes] | None = None
        self._frame: ScheduledFrame[bytes] | None = None  # handed to the worker
        self._frame_ready = threading.Condition(self._lock)
        self._worker: threading.Thread | None = None
        self._inputs: list[Any] = []
        self._live_join: LiveJoin | None = None
        self._live_topic: TaskTopic | None = None
        self._report_timer = None
        self._report_publisher = None
        self._labelled_bundles: dict[LabelledSource, BundleDir] = {}
        self._samples_dir = ""
        self._sample_versions: dict[str, str] = {}

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._engine, served = self._open("model_dir", "artifacts_dir")
            reference_served = "none: latency is compared with the live node's own"
            bundles = {LabelledSource.CANDIDATE: load_bundle_dir(self.get_parameter("model_dir").value)}
            if self.get_parameter("reference_model_dir").value:
                self._reference, reference_served = self._open("reference_model_dir", "reference_artifacts_dir")
                bundles[LabelledSource.LIVE] = load_bundle_dir(self.get_parameter("reference_model_dir").value)
        except (BundleError, ModelLoadError) as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            self._engine = self._reference = None
            return TransitionCallbackReturn.FAILURE
        manifest = self._engine.manifest
        self._labelled_bundles = {source: bundle for source, bundle in bundles.items() if has_labelled_set(bundle)}
        self._samples_dir = self.get_parameter("samples_dir").value
        live = self._reference.manifest if self._reference is not None else None
        self._sample_versions = {"candidate": f"{manifest.name}@{manifest.version}",
                                 "live": f"{live.name}@{live.version}" if live is not None else "the live node's"}
        self._comparator = ShadowComparator(manifest.task, manifest.acceptance,
                                            labelled=tuple(self._labelled_bundles))
        self._schedule = FrameSchedule(self.get_parameter("max_rate").value, with_reference=self._reference is not None)
        self._report_publisher = self.create_lifecycle_publisher(ShadowReport, "~/report", 10)
        self._inputs = [
            self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data, raw=True),
            self.create_subscription(InferenceResult, "results", self._on_live_result, 50),
        ]
        detail = self._live_topic = TASK_TOPICS.get(manifest.task)
        self._live_join = LiveJoin() if detail is not None else None
        if detail is not None:  # the live prediction is on the task's topic, its latency in results
            self._inputs.append(self.create_subscription(detail.message, detail.topic, self._on_live_detail, 50))
        self._report_timer = self.create_timer(self.get_parameter("report_period").value, self._publish_report)
        self._worker = threading.Thread(target=self._run_models, name="shadow-candidate", daemon=True)
        self._worker.start()
        self.get_logger().info(f"candidate {manifest.name} {manifest.version} loaded ({served}); "
                               f"latency reference: {reference_served}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._schedule.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self._schedule.stop()
        self._publish_report()
        return super().on_deactivate(state)

    def _open(self, model_parameter: str, artifacts_parameter: str) -> tuple[InferenceEngine, str]:
        model_dir = self.get_parameter(model_parameter).value
        try:
            return open_serving_engine(
                model_dir, self.get_parameter(artifacts_parameter).value,
                providers=self.get_parameter("providers").value,
                threads=self.get_parameter("intra_op_threads").value, warmup_runs=2)
        except (BundleError, ModelLoadError) as exc:
            raise type(exc)(f"{model_parameter} {model_dir!r}: {exc}") from None

    # Traffic -------------------------------------------------------------------

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds / 1e9

    def _on_image(self, data: bytes) -> None:
        stamp = serialized_header_stamp_ns(data)
        with self._lock:
            if self._schedule is not None:
                self._follow(self._schedule.on_image(stamp, data))

    def _on_live_result(self, msg: InferenceResult) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if self._live_join is not None:
            with self._lock:
                self._on_live(stamp, self._live_join.add_latency(stamp, msg.inference_ms))
            return
        prediction = result_to_prediction(msg)
        with self._lock:
            self._on_live(stamp, (prediction, msg.inference_ms))

    def _on_live_detail(self, msg: Any) -> None:
        stamp, topic = stamp_ns(msg.header.stamp), self._live_topic
        if topic is None:
            return
        try:
            prediction = topic.to_prediction(msg)
        except ValueError as exc:  # a malformed live message is skipped, like a frame the live node missed
            self.get_logger().warning(f"cannot read the live model's {type(msg).__name__}: {exc}",
                                      throttle_duration_sec=10.0)
            return
        with self._lock:
            if self._live_join is not None:
                self._on_live(stamp, self._live_join.add_prediction(stamp, prediction))

    def _on_live(self, stamp: int, paired: tuple | None) -> None:
        """With the lock held: the live model's whole answer for one frame (None: half of it so far)."""
        if paired is None or self._schedule is None or not self._schedule.active:
            return
        prediction, latency_ms = paired
        self._comparator.add_live(stamp, prediction, self._now(), latency_ms)
        self._follow(self._schedule.on_live_answer(stamp))

    def _follow(self, step: Step[bytes]) -> None:
        """With the lock held: count what the schedule dropped, hand the worker what it says to run."""
        if step.dropped:
            self._comparator.add_dropped_frames(step.dropped)
        if step.ready is not None:
            self._frame = step.ready
            self._frame_ready.notify()

    def _run_models(self) -> None:
        # Warm up on this thread: the first runs on a new thread are slow (allocations, caches), and
        # they must not count against the candidate's latency.
        with self._lock:
            engines = [e for e in (self._engine, self._reference) if e is not None]
            schedule = self._schedule
        for engine in engines:
            engine.warm_up(3)
        self._score_labelled()
        while True:
            with self._lock:
                while self._frame is None and self._engine is not None:
                    self._frame_ready.wait()
                candidate, reference, frame, self._frame = self._engine, self._reference, self._frame, None
            if candidate is None:
                return
            if frame.run is FrameRun.CANDIDATE:
                self._run_candidate(candidate, frame.payload, frame.stamp_ns)
            elif reference is not None:
                self._run_reference(reference, frame.payload)
            with self._lock:
                schedule.run_done()

    def _score_labelled(self) -> None:
        """Both models on each labelled set, before any frame: the promotion gate's ground truth."""
        with self._lock:
            candidate, reference, bundles = self._engine, self._reference, dict(self._labelled_bundles)
        for source, bundle in bundles.items():
            if candidate is None:
                return
            comparison = compare_on_labelled(source, bundle, candidate.infer,
                                             reference.infer if reference is not None else None)
            self.get_logger().info(f"labelled images of the {source.value} version ({comparison.images}): "
                                   f"candidate {comparison.candidate_score:.3f}, live {comparison.live_score:.3f}"
                                   + (f"; {comparison.error}" if comparison.error else ""))
            with self._lock:
                if self._comparator is not None:
                    self._comparator.add_labelled(comparison)

    def _run_candidate(self, engine: InferenceEngine, data: bytes, key: int) -> None:
        try:
            frame = read_image(data)
            image, pixel_format = frame.pixels, frame.pixel_format
            prediction = engine.infer(image, pixel_format)
        except Exception:  # Any failure of the candidate is a verdict input, not a crash.
            with self._lock:
                if self._comparator is not None:
                    self._comparator.add_candidate_error(key, self._now())
            return
        with self._lock:
            if self._comparator is None:
                return
            disagreement = self._comparator.add_candidate(key, prediction, self._now(), prediction.inference_ms)
            saved = self._comparator.report().samples_saved
        if disagreement is not None and self._samples_dir and saved < self.get_parameter("max_samples").value:
            self._keep_sample(saved, image, pixel_format, disagreement)

    def _keep_sample(self, index: int, image, pixel_format: PixelFormat, disagreement: Disagreement) -> None:
        rgb = image[:, :, ::-1] if pixel_format is PixelFormat.BGR8 else image
        try:
            write_sample(Path(self._samples_dir), index, rgb[:, :, 0] if rgb.shape[2] == 1 else rgb, disagreement,
                         self._sample_versions)
        except OSError as exc:  # samples help the operator; failing to keep one never decides the verdict
            self.get_logger().warning(f"cannot keep a disagreement sample in {self._samples_dir}: {exc}",
                                      throttle_duration_sec=10.0)
            return
        with self._lock:
            if self._comparator is not None:
                self._comparator.record_sample(self._samples_dir)

    def _run_reference(self, engine: InferenceEngine, data: bytes) -> None:
        try:
            frame = read_image(data)
            latency_ms = engine.infer(frame.pixels, frame.pixel_format).inference_ms
        except Exception as exc:  # The live node judges the live model; here it only times it.
            self.get_logger().warning(f"the latency reference failed on a frame: {exc}", throttle_duration_sec=10.0)
            return
        with self._lock:
            if self._comparator is not None:
                self._comparator.add_reference(latency_ms)

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
            self._engine = self._reference = None
            self._comparator = None
            self._schedule = None
            self._frame = None
            self._frame_ready.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)
            self._worker = None
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        if self._report_timer is not None:
            self.destroy_timer(self._report_timer)
            self._report_timer = None
        if self._report_publisher is not None:
            self.destroy_lifecycle_publisher(self._report_publisher)
            self._report_publisher = None


def main(args: list[str] | None = None) -> None:
    # One executor thread: every callback is short (the models run on the worker thread), and
    # rclpy's MultiThreadedExecutor spins a core at 100% while a mutually exclusive callback runs.
    run_node(ShadowNode, args, parameters=PARAMETERS)
