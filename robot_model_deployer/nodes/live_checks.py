"""The manager's side of the checks on live traffic: shadow runs and probation.

Both implement ports of deploy.ports and are called from the manager's deploy
thread, never from an executor callback; they wait by polling state that the
executor's callbacks update under a lock.
"""
from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Manifest
from robot_model_deployer.deploy.ports import StageError
from robot_model_deployer.deploy.switch import ServedModel, SwapError, release_slot
from robot_model_deployer.msg import InferenceError, InferenceResult, ShadowReport
from robot_model_deployer.nodes.conversions import report_msg_to_verdict, serialized_header_stamp_ns, stamp_ns
from robot_model_deployer.nodes.lifecycle_client import LifecycleSlot, RemoteLifecycleNode
from robot_model_deployer.nodes.side_node import SideNode
from robot_model_deployer.store.state import VersionRef
from robot_model_deployer.validation.answer_rate import AnswerTracker
from robot_model_deployer.validation.health import DEFAULT_WALL_MARGIN_S, HealthStatus, HealthThresholds, HealthWatch
from robot_model_deployer.validation.samples import samples_dir
from robot_model_deployer.validation.shadow import ShadowOutcome, ShadowVerdict

POLL_S = 0.05
# A new node answers within a frame or two; without a camera nothing comes, and the swap goes on.
HANDOVER_TIMEOUT_S = 0.5
HANDOVER_POLL_S = 0.002
# ROS time standing still this long (wall clock) during probation is shown as waiting for /clock.
CLOCK_IDLE_NOTICE_S = 2.0


class ShadowRun:
    """Runs the candidate on the shadow node until its report carries a verdict.

    ``derived_dir`` gives a version's derived/ directory in the store: the
    manager owns the store, so it empties the candidate's shadow-samples
    directory there before each run and hands it to the shadow node, the one
    writer while the run lasts (None: the node keeps no samples).
    """

    def __init__(self, node: Node, shadow_node: str, callback_group: CallbackGroup, service_timeout: float,
                 verdict_timeout: float, derived_dir: Callable[[VersionRef], Path] | None = None) -> None:
        self._slot = LifecycleSlot(RemoteLifecycleNode(node, shadow_node, callback_group, service_timeout))
        self._verdict_timeout = verdict_timeout
        self._derived_dir = derived_dir
        self._lock = threading.Lock()
        self._latest: ShadowReport | None = None
        self._listening = False
        node.create_subscription(ShadowReport, f"{shadow_node}/report", self._on_report, 10,
                                 callback_group=callback_group)

    def _on_report(self, msg: ShadowReport) -> None:
        with self._lock:
            if self._listening:
                self._latest = msg

    def validate(self, model: ServedModel, reference: ServedModel, manifest: Manifest, cancel: threading.Event,
                 progress: Callable[[float, str], None]) -> ShadowVerdict:
        version = str(manifest.version)
        try:
            release_slot(self._slot)
            self._slot.set_parameters({"reference_model_dir": reference.path,
                                       "reference_artifacts_dir": reference.artifacts,
                                       "samples_dir": self._fresh_samples_dir(model.ref)})
            self._slot.load(model)
            with self._lock:
                self._latest, self._listening = None, True
            self._slot.activate()
            deadline = time.monotonic() + self._verdict_timeout
            while not cancel.is_set():
                with self._lock:
                    latest = self._latest
                if latest is not None and (latest.candidate_name, latest.candidate_version) == (manifest.name, version):
                    verdict = report_msg_to_verdict(latest)
                    progress(verdict.progress, f"shadow: {verdict.report.frames_judged} frames judged, "
                                               f"agreement {verdict.report.agreement:.3f}")
                    if verdict.outcome is not ShadowOutcome.PENDING:
                        return verdict
                if time.monotonic() > deadline:
                    raise StageError(f"no shadow verdict within {self._verdict_timeout:.0f} s; is the camera "
                                     "publishing and the live perception node serving results?")
                time.sleep(POLL_S)
            raise StageError("cancelled")
        except (SwapError, OSError) as exc:
            raise StageError(str(exc)) from None
        finally:
            with self._lock:
                self._listening = False
            try:
                release_slot(self._slot)
            except SwapError:
                pass  # The next run releases it again; the live path never depends on the shadow.


    def _fresh_samples_dir(self, ref: VersionRef) -> str:
        """The candidate's samples directory, emptied of an earlier run's ('' when none is kept)."""
        if self._derived_dir is None:
            return ""
        directory = samples_dir(self._derived_dir(ref))
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        return str(directory)


class ProbationWatch:
    """Feeds a HealthWatch from the camera, results and errors topics while a new model is on probation.

    Camera-rate traffic is heard by a side node (``<manager>_probation``), not
    on the manager's executor, whose hand-out of 30 Hz callbacks would spin a
    core the live node needs. The subscriptions live as
    long as the manager: destroying one from the deploy thread while an
    executor builds its wait set crashes rclpy ("cannot use Destroyable because
    destruction was requested"). Between probations the callbacks only keep
    the old model's answered share (AnswerTracker: the bar for the next
    probation); images arrive raw and are only counted by stamp. Time is the
    manager's (ROS time, simulated with use_sim_time).

    It also tells the blue/green switch when a newly activated node has
    answered its first frame (``wait_for_answer``). ``wall_margin_s``: see
    HealthThresholds (the manager's parameter probation_wall_margin_s).
    """

    def __init__(self, node: Node, wall_margin_s: float = DEFAULT_WALL_MARGIN_S) -> None:
        self._thresholds = HealthThresholds(wall_margin_s=wall_margin_s)
        self._clock = node.get_clock()
        self._lock = threading.Lock()
        self._watch: HealthWatch | None = None
        self._answers = AnswerTracker()
        self._answered: dict[str, float] = {}  # perception node -> time.monotonic() of its last result
        # Of the manager's arguments the listener needs the topics as the manager resolves them (remaps
        # included) and use_sim_time.
        self._side = SideNode(
            node, "probation",
            cli_args=_remaps_as_resolved_by(node, ("image", "results", "inference_errors", "/clock")),
            parameter_overrides=[Parameter("use_sim_time", value=node.get_parameter("use_sim_time").value)])
        listener = self._side.node
        listener.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data, raw=True)
        listener.create_subscription(InferenceResult, "results", self._on_result, 50)
        listener.create_subscription(InferenceError, "inference_errors", self._on_error, 50)
        self._side.start()

    def wait_for_answer(self, node_name: str, since: float, timeout: float = HANDOVER_TIMEOUT_S) -> None:
        """Return once ``node_name`` has published a result after ``since`` (time.monotonic()), or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._answered.get(node_name, 0.0) > since:
                    return
            time.sleep(HANDOVER_POLL_S)

    def close(self) -> None:
        """Stop listening (the manager calls this when it is destroyed)."""
        self._side.close()

    def _now(self) -> float:
        return self._clock.now().nanoseconds / 1e9

    def _on_image(self, data: bytes) -> None:
        stamp = serialized_header_stamp_ns(data)
        with self._lock:
            if self._watch is not None:
                self._watch.add_input(stamp, self._now())
            else:
                self._answers.add_frame(stamp, self._now())

    def _on_result(self, msg: InferenceResult) -> None:
        finite = all(map(_finite, msg.scores)) and all(map(_finite, msg.boxes))
        with self._lock:
            self._answered[msg.node_name] = time.monotonic()
            if self._watch is not None:
                self._watch.add_output(stamp_ns(msg.header.stamp), self._now(), msg.inference_ms, finite)
            else:
                self._answers.add_answer(stamp_ns(msg.header.stamp), self._now())

    def _on_error(self, msg: InferenceError) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.add_error(stamp_ns(msg.header.stamp), self._now())
            else:
                self._answers.add_answer(stamp_ns(msg.header.stamp), self._now())

    def watch(self, acceptance: AcceptanceSpec, cancel: threading.Event,
              progress: Callable[[float, str], None]) -> HealthStatus:
        started = time.monotonic()
        with self._lock:
            # Probation follows a swap from a live model: what the listener heard of it is the bar.
            answers = self._answers.baseline(self._now(), acceptance.probation_answer_grace_s)
            self._watch = HealthWatch(acceptance, self._thresholds, answers)
            self._answers = AnswerTracker()  # after probation, the next baseline is the model now live
        try:
            while True:
                with self._lock:
                    status = self._watch.status(self._now(), time.monotonic() - started)
                progress(min(1.0, status.watched_s / (acceptance.probation_seconds or 1.0)),
                         probation_message(status, acceptance.probation_seconds + self._thresholds.wall_margin_s))
                if status.decided or cancel.is_set():
                    return status
                time.sleep(POLL_S)
        finally:
            with self._lock:
                self._watch = None


def probation_message(status: HealthStatus, wall_limit_s: float) -> str:
    """One line for the status topic: the state, the counts, why, and whether it waits for /clock."""
    text = f"probation: {status.state.value}, {status.outputs}/{status.inputs} frames answered"
    if status.errors:
        text += f", {status.errors} errors"
    if status.reasons:
        text += f" ({'; '.join(status.reasons)})"
    elif status.clock_idle_s >= CLOCK_IDLE_NOTICE_S:
        text += (f"; waiting for /clock: ROS time has not advanced for {status.clock_idle_s:.0f} s "
                 f"(probation ends unjudged after {wall_limit_s:g} s of wall-clock time)")
    return text


def _remaps_as_resolved_by(node: Node, topics: tuple[str, ...]) -> list[str]:
    """Node arguments that send each of ``topics`` where ``node``'s own remap rules send it."""
    arguments = ["--ros-args"]  # rclpy's documentation says it is implied; rcl warns without it
    for topic in topics:
        arguments += ["-r", f"{topic}:={node.resolve_topic_name(topic)}"]
    return arguments


def _finite(value: float) -> bool:
    return value == value and value not in (float("inf"), float("-inf"))
