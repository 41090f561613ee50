"""The demo's scripted scenario, driven over ROS like any client would: the Deploy action and the services.

For each version: send a Deploy goal, print each feedback (the manager sends
it only when it changes) with the time, record it, and at the end print the
stage's figures from the result's report; then a manual rollback through the
``rollback`` service. The camera is covered (``DemoCameraNode.show``) some
frames into v4's probation and uncovered when its deployment ends.
"""
from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable

import numpy as np
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from robot_model_deployer.action import Deploy
from robot_model_deployer.demo.camera_node import DemoCameraNode
from robot_model_deployer.demo.story import DemoLog, StageSeen, StepOutcome, classify_outcome
from robot_model_deployer.demo.versions import Version
from robot_model_deployer.msg import DeploymentStatus
from robot_model_deployer.nodes.deploy_feedback import wording
from robot_model_deployer.srv import Rollback

MANAGER = "/model_manager"
CANCEL_WAIT_S = 30.0
PRINT_PERIOD_S = 1.0  # within one stage and wording, a feedback line at most this often (all are recorded)
DARK_AFTER_FRAMES = 30  # frames into v4's probation before the lens is covered
STATUS_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def figures(report: dict[str, Any]) -> list[str]:
    """One line per stage that ran, with its numbers (from the Deploy result's report_json)."""
    lines = []
    optimize = report.get("optimize") or {}
    if optimize.get("variants"):
        chosen = optimize.get("chosen", "")
        parts = []
        for variant in optimize["variants"]:
            if variant.get("status") == "skipped":
                continue
            p50 = f"{variant['p50_ms']:.1f} ms" if variant.get("p50_ms") else "-"
            agreement = variant.get("top1_agreement")
            agreement = f", agreement {agreement:.1%}" if agreement is not None else ""
            mark = "*" if variant["name"] == chosen else ""
            parts.append(f"{mark}{variant['name']} {variant['status']} {p50}{agreement}")
        lines.append(f"optimize: {'; '.join(parts)} (took {optimize.get('wall_seconds', 0):.0f} s; * serves)")
    elif optimize:
        lines.append(f"optimize: {optimize.get('skipped') or optimize.get('refused') or optimize}")
    shadow = report.get("shadow") or {}
    if shadow:
        baseline = shadow.get("reference_latency_p50_ms") or shadow.get("live_latency_p50_ms") or 0.0
        lines.append(f"shadow: {shadow['outcome']} after {shadow['frames_judged']} frames, agreement "
                     f"{shadow['agreement']:.1%}, median {shadow['candidate_latency_p50_ms']:.1f} ms vs "
                     f"{baseline:.1f} ms live, {shadow['candidate_non_finite']} NaN/Inf")
    probation = report.get("probation") or {}
    if probation.get("state") not in (None, "skipped"):
        lines.append(f"probation: {probation['state']} after {probation['watched_s']:.1f} s, "
                     f"{probation['outputs']}/{probation['inputs']} frames answered, "
                     f"{probation['non_finite']} NaN/Inf, median {probation.get('latency_p50_ms') or 0:.1f} ms")
    return lines


class ScenarioDriver:
    """Runs the steps in order until the deadline; every event goes into ``log``."""

    def __init__(self, node: Node, camera: DemoCameraNode, dark: np.ndarray, log: DemoLog, start: float,
                 deadline: float, rate: float, say: Callable[[str], None] = lambda line: print(line, flush=True),
                 graph_down: Callable[[], str | None] = lambda: None) -> None:
        """``graph_down``: why the node graph can no longer answer (a node exited), or None."""
        self._node, self._camera, self._dark, self._log = node, camera, dark, log
        self._graph_down = graph_down
        self.stopped_because = ""
        self._start, self._deadline, self._rate, self._say = start, deadline, rate, say
        self._action = ActionClient(node, Deploy, f"{MANAGER}/deploy_bundle")
        self._rollback = node.create_client(Rollback, f"{MANAGER}/rollback")
        self._status_line = ""
        self._step = ""
        node.create_subscription(DeploymentStatus, f"{MANAGER}/status", self._on_status, STATUS_QOS)

    def now(self) -> float:
        return time.monotonic() - self._start

    def _left(self) -> float:
        return self._deadline - time.monotonic()

    def _on_status(self, status: DeploymentStatus) -> None:
        """A manual rollback has no feedback: its progress is the status's stage and message."""
        line = f"{status.stage}: {status.message}"
        if self._step == "rollback" and line != self._status_line:
            self._log.add(StageSeen(self.now(), "rollback", status.stage, 0.0, status.message))
            self._say(f"{self.now():7.1f}s  status    {line}")
        self._status_line = line

    def wait_for_manager(self) -> bool:
        while self._left() > 0 and self._node.context.ok() and not self._graph_down():
            if self._action.wait_for_server(timeout_sec=min(1.0, self._left())):
                return True
        return False

    def deploy(self, version: Version) -> StepOutcome | None:
        """One Deploy goal to its end; None when the deadline cut it short (the goal is cancelled)."""
        begin, self._step = self.now(), version.label
        self._say(f"{begin:7.1f}s  {version.label:<3} deploying {version.bundle.name} (scripted: {version.expected})")
        last_stage = [""]
        printed: list[Any] = [("", ""), 0.0]  # what was last printed, and when
        covered = threading.Event()
        timers: list[threading.Timer] = []

        def on_feedback(message: Any) -> None:
            feedback = message.feedback
            now = self.now()
            self._log.add(StageSeen(now, version.label, feedback.stage, feedback.progress, feedback.message))
            shown = (feedback.stage, wording(feedback.message))
            if shown != printed[0] or now - printed[1] >= PRINT_PERIOD_S or feedback.progress >= 1.0:
                self._say(f"{now:7.1f}s  {version.label:<3} {feedback.stage:<9} {feedback.progress:4.0%}  "
                          f"{feedback.message}")
                printed[:] = [shown, now]
            last_stage[0] = feedback.stage
            if version.darken_in_probation and feedback.stage == "probation" and not covered.is_set():
                covered.set()
                timer = threading.Timer(DARK_AFTER_FRAMES / self._rate, self._cover_lens, (version.label,))
                timer.daemon = True
                timer.start()
                timers.append(timer)

        try:
            step = self._run_goal(version, begin, on_feedback, last_stage)
            if step is None:  # cut short: the table still says where it stood
                self._log.add(StepOutcome(version.label, version.version, version.expected,
                                          f"stopped in {last_stage[0] or 'verify'}",
                                          self.stopped_because or "--duration reached", begin, self.now()))
            return step
        finally:
            for timer in timers:  # a deployment that ended before the lens was covered leaves it uncovered
                timer.cancel()
            self._camera.show(None)

    def _run_goal(self, version: Version, begin: float, on_feedback: Callable[[Any], None],
                  last_stage: list[str]) -> StepOutcome | None:
        sent = self._action.send_goal_async(Deploy.Goal(bundle_path=str(version.bundle)), feedback_callback=on_feedback)
        if not self._wait(sent):
            return None
        handle = sent.result()
        if not handle.accepted:
            reason = "the manager rejected the goal (another deployment runs; see its status's refused)"
            return self._finish(version, begin, False, reason, last_stage[0], {})
        done = handle.get_result_async()
        if not self._wait(done):
            if self.stopped_because:
                return None
            self._say(f"{self.now():7.1f}s  {version.label:<3} --duration reached: cancelling the deployment")
            handle.cancel_goal_async()
            self._wait(done, CANCEL_WAIT_S)
            return None
        result = done.result().result
        report = json.loads(result.report_json or "{}")
        for line in figures(report):
            self._say(f"{self.now():7.1f}s  {version.label:<3} {line}")
        return self._finish(version, begin, result.accepted, result.reason, last_stage[0], report)

    def _cover_lens(self, label: str) -> None:
        self._say(f"{self.now():7.1f}s  {label:<3} camera: the lens is covered (black frames) "
                  f"{DARK_AFTER_FRAMES} frames into probation")
        self._camera.show([self._dark])

    def _finish(self, version: Version, begin: float, accepted: bool, reason: str, last_stage: str,
                report: dict[str, Any]) -> StepOutcome:
        outcome = classify_outcome(accepted, reason, last_stage)
        step = StepOutcome(version.label, version.version, version.expected, outcome, reason, begin, self.now())
        self._log.add(step)
        mark = "as scripted" if step.as_scripted else f"NOT as scripted ({version.expected})"
        self._say(f"{self.now():7.1f}s  {version.label:<3} => {outcome} ({mark}): {reason}")
        self._step = ""
        return step

    def manual_rollback(self, expected_version: str) -> StepOutcome | None:
        begin, self._step = self.now(), "rollback"
        self._say(f"{begin:7.1f}s  manual rollback: calling {MANAGER}/rollback")
        if not self._rollback.wait_for_service(timeout_sec=max(0.1, min(10.0, self._left()))):
            return None
        answer = self._rollback.call_async(Rollback.Request(reason="demo: manual rollback"))
        if not self._wait(answer):
            return None
        response = answer.result()
        served = f"{response.active.version}" if response.success else ""
        outcome = f"rolled back to {served}" if response.success else "rollback failed"
        step = StepOutcome("rollback", served, f"rolled back to {expected_version}", outcome, response.message,
                           begin, self.now())
        self._log.add(step)
        self._say(f"{self.now():7.1f}s  manual rollback => {outcome}: {response.message}")
        self._step = ""
        return step

    def _wait(self, future: Any, limit: float | None = None) -> bool:
        """Until ``future`` is done, the deadline, Ctrl-C (rclpy's handler shuts the context down) or a node exit."""
        end = time.monotonic() + limit if limit is not None else self._deadline
        while not future.done() and time.monotonic() < end:
            if not self._node.context.ok():
                self.stopped_because = "interrupted (Ctrl-C)"
                break
            down = self._graph_down()
            if down:
                self.stopped_because = down
                break
            time.sleep(0.02)
        return future.done()
