"""Model manager node: takes bundles through the deploy flow onto two perception nodes.

Interfaces (under the node's name, e.g. /model_manager/deploy):
  ~/deploy         srv  DeployModel  (answers when the deployment ends)
  ~/deploy_bundle  action Deploy     (feedback per stage; cancel at any stage)
  ~/rollback       srv  Rollback     (manual rollback to the warm previous model)
  ~/list_models    srv  ListModels
  ~/get_status     srv  GetStatus
  ~/get_report     srv  GetReport    (one version's record, history and last deployment report)
  ~/upload_*       srv  UploadBegin, UploadChunk, UploadStatus (nodes/upload_server.py); deploy by upload_id
  ~/status         DeploymentStatus  (transient local)
  /diagnostics     diagnostic_msgs/DiagnosticArray (1 Hz)

One deployment runs at a time on a worker thread; a second request is
refused with the reason. Callbacks only hand work over and answer, so the
executor keeps serving status while a model loads, runs in shadow or sits
in probation.

The Deploy action follows rclpy's action-server habits: a goal that arrives
while a deployment runs is rejected in goal_callback (a rejection carries no
text in ROS 2, so the reason is logged and published as the status's
``refused``; the DeployModel service answers it as its ``reason``), a cancel
arrives through cancel_callback and stops the deployment at once, and
destroy_node cancels a running deployment and waits for it to end.
"""
from __future__ import annotations

import json
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any, Callable, TypeVar

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from robot_model_deployer.bundle.text import one_line
from robot_model_deployer.deploy.flow import DeploymentFlow, DeployOutcome
from robot_model_deployer.deploy.optimizer import OnRobotOptimizer
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.deploy.switch import BlueGreenSwitch, ServedModel, SwapError
from robot_model_deployer.isolation.child import ChildLimits
from robot_model_deployer.store.model_store import STAGING_DIR, UPLOADS_DIR, ModelStore
from robot_model_deployer.store.state import DeploymentStage, StoreError, VersionRef
from robot_model_deployer.action import Deploy
from robot_model_deployer.msg import DeploymentStatus, ModelInfo
from robot_model_deployer.nodes.deploy_feedback import FeedbackGate
from robot_model_deployer.nodes.lifecycle_client import LifecycleSlot, RemoteLifecycleNode
from robot_model_deployer.nodes.live_checks import ProbationWatch, ShadowRun
from robot_model_deployer.nodes.manager_ready import ready_line
from robot_model_deployer.nodes.manager_status import (deployment_diagnostics, deployment_status, installed_info,
                                                       listed_models, model_info, version_info)
from robot_model_deployer.nodes.manager_settings import PARAMETERS, flow_settings, open_store, optimize_target
from robot_model_deployer.nodes.parameters import declare_parameters
from robot_model_deployer.nodes.runner import run_node
from robot_model_deployer.nodes.shutdown_cancel import ShutdownCancel
from robot_model_deployer.nodes.upload_server import PARAMETERS as UPLOAD_PARAMETERS, upload_server
from robot_model_deployer.nodes.version_report import LastOutcome, keep_report, version_report
from robot_model_deployer.srv import DeployModel, GetReport, GetStatus, ListModels, Rollback

T = TypeVar("T")
DESTROY_JOIN_S = 20.0
"""How long destroy_node waits for a cancelled deployment to end. Its stages stop within a poll period
(the optimizer's child is killed); what may take longer is a lifecycle call already in flight."""


class ManagerNode(Node):
    """Owns the store and the deploy flow; turns requests into flow calls."""

    _started = False  # rclpy's context shutdown also destroys a manager that refused a parameter

    def __init__(self, node_name: str = "model_manager", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        settings = declare_parameters(self, PARAMETERS + UPLOAD_PARAMETERS)
        # Every setting is read before anything starts, so a refused one leaves no thread or listener behind.
        store, flow, target = open_store(settings), flow_settings(settings), optimize_target(settings)
        self._traffic = ProbationWatch(self, settings["probation_wall_margin_s"])
        self._flow = DeploymentFlow(store, self._make_switch(settings), flow,
                                    **self._make_ports(settings, target, store))
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploy")
        self._busy = threading.Lock()
        self._running: tuple[Future, threading.Event] | None = None  # the deploy thread's job and its cancel
        self._shutdown_cancel_at: float | None = None
        self._goal_cancels: dict[bytes, threading.Event] = {}
        self._closing = False
        self._refused = ""
        self._stage = DeploymentStage.IDLE
        self._message = "starting"
        self._health = ""
        self._last = LastOutcome()
        self._uploads = upload_server(self, store.root / STAGING_DIR / UPLOADS_DIR, settings)

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._status_publisher = self.create_publisher(DeploymentStatus, "~/status", latched)
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        requests = ReentrantCallbackGroup()
        self.create_service(DeployModel, "~/deploy", self._on_deploy, callback_group=requests)
        self.create_service(Rollback, "~/rollback", self._on_rollback, callback_group=requests)
        quick = MutuallyExclusiveCallbackGroup()
        self.create_service(GetStatus, "~/get_status", self._on_get_status, callback_group=quick)
        self.create_service(ListModels, "~/list_models", self._on_list_models, callback_group=quick)
        self.create_service(GetReport, "~/get_report", lambda request, response: version_report(
            self._flow.store, request, response), callback_group=quick)
        self._action = ActionServer(self, Deploy, "~/deploy_bundle", execute_callback=self._execute_goal,
                                    goal_callback=self._on_goal, cancel_callback=self._on_cancel,
                                    callback_group=requests)
        self.create_timer(1.0, self._publish_diagnostics, callback_group=quick)
        self._started = True
        self.get_logger().info(ready_line(self.get_fully_qualified_name(), flow.trust,
                                          flow.allow_unsigned))
        self._publish_status()
        self._start_job(lambda: self._start_serving(settings["initial_bundle"]))

    def _make_switch(self, settings: dict[str, Any]) -> BlueGreenSwitch:
        group = ReentrantCallbackGroup()
        return BlueGreenSwitch([LifecycleSlot(RemoteLifecycleNode(self, name, group, settings["service_timeout"]))
                                for name in settings["perception_nodes"]], self._traffic.wait_for_answer)

    def _make_ports(self, settings: dict[str, Any], target: TargetProfile | None,
                    store: ModelStore) -> dict[str, Any]:
        group = ReentrantCallbackGroup()
        ports: dict[str, Any] = {}
        if settings["shadow_node"]:
            ports["shadow"] = ShadowRun(self, settings["shadow_node"], group, settings["service_timeout"],
                                        settings["shadow_timeout"], derived_dir=store.derived_dir)
        if settings["probation"]:
            ports["probation"] = self._traffic
        if target is not None:
            limits = ChildLimits(memory_mb=settings["optimize_memory_mb"], seconds=settings["optimize_timeout_s"])
            if limits.seconds < target.time_limit_s:
                self.get_logger().warning(
                    f"optimize_timeout_s ({limits.seconds:g} s) is below target {target.name}'s time_limit_s "
                    f"({target.time_limit_s:g} s): a long optimization is killed instead of stopping early")
            ports["optimizer"] = OnRobotOptimizer(target, limits)
        return ports

    # Requests: hand work to the deploy thread, answer with its outcome. -------

    def _on_deploy(self, request: DeployModel.Request, response: DeployModel.Response) -> DeployModel.Response:
        cancel = ShutdownCancel(self.context)
        bundle_path, refusal = self._uploads.bundle_path(request)
        job = None if refusal else self._start_job(lambda: self._deploy(bundle_path, request.force, cancel, None),
                                                   cancel)
        outcome = (job.result() if job is not None
                   else DeployOutcome(False, refusal or self._refuse("deploy", bundle_path)))
        response.accepted, response.reason = outcome.accepted, outcome.reason
        response.model = model_info(outcome.model)
        return response

    def _on_goal(self, goal: Deploy.Goal) -> GoalResponse:
        """Reject a Deploy goal while a deployment runs; the reason is logged and in status (a rejection has no text)."""
        if self._closing or self._busy.locked():
            self._refuse("Deploy goal", goal.bundle_path)
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle) -> CancelResponse:
        """A cancel of a running goal stops its deployment now; one not yet running is cancelled as it starts."""
        cancel = self._goal_cancels.get(bytes(goal_handle.goal_id.uuid))
        if cancel is not None:
            cancel.set()
        return CancelResponse.ACCEPT

    def _execute_goal(self, goal_handle) -> Deploy.Result:
        key = bytes(goal_handle.goal_id.uuid)
        cancel = self._goal_cancels.setdefault(key, ShutdownCancel(self.context))
        if goal_handle.is_cancel_requested:  # cancelled between acceptance and now
            cancel.set()
        try:
            # Between goal_callback and here another request may have started one: then this goal is aborted.
            bundle_path, refusal = self._uploads.bundle_path(goal_handle.request)
            job = None if refusal else self._start_job(
                lambda: self._deploy(bundle_path, goal_handle.request.force, cancel, goal_handle), cancel)
            if job is None:
                outcome = DeployOutcome(False, refusal or self._refuse("Deploy goal", bundle_path))
            else:
                outcome = job.result()
        finally:
            self._goal_cancels.pop(key, None)
        if not self.context.ok():  # shut down while it ran: the goal can no longer be answered
            return Deploy.Result(accepted=False, reason=outcome.reason)
        result = Deploy.Result(accepted=outcome.accepted, reason=outcome.reason, model=model_info(outcome.model),
                               report_json=json.dumps(outcome.report, default=str))
        if goal_handle.is_cancel_requested and not outcome.accepted:  # (a shutdown's cancel aborts)
            goal_handle.canceled()
        elif outcome.accepted:
            goal_handle.succeed()
        else:
            goal_handle.abort()
        return result

    def _on_rollback(self, request: Rollback.Request, response: Rollback.Response) -> Rollback.Response:
        """Roll back to the store's previous version; a running deployment is cancelled first.

        A candidate on probation is what status shows as active, so cancelling
        it (which puts the old model back) is the rollback; a deployment that
        had not swapped yet is stopped and the rollback then runs as usual.
        """
        running = self._running
        if running is not None and not running[0].done() and not self._closing:
            running[1].set()
            outcome = running[0].result()
            if isinstance(outcome, DeployOutcome) and outcome.rolled_back:
                response.success, response.message = True, f"cancelled the deployment on probation: {outcome.reason}"
                response.active = model_info(self._flow.switch.snapshot().live_model)
                return response
        job = self._start_job(lambda: self._rollback(request.reason))
        model, response.message = job.result() if job is not None else (None, self._refuse("rollback", ""))
        response.success = model is not None
        response.active = model_info(model)
        return response

    def _on_get_status(self, request: GetStatus.Request, response: GetStatus.Response) -> GetStatus.Response:
        response.status = self._status()
        return response

    def _on_list_models(self, request: ListModels.Request, response: ListModels.Response) -> ListModels.Response:
        store = self._flow.store
        response.models, response.slots = listed_models(store.list_versions(), store.state, request.name)
        return response

    # Work on the deploy thread. -------------------------------------------------

    def _start_job(self, job: Callable[[], T], cancel: threading.Event | None = None) -> Future | None:
        """Run job on the deploy thread unless one is running (or the node is closing); None then.

        ``cancel`` is what destroy_node sets to stop it. Whatever the job
        raises is logged with its traceback, never dropped.
        """
        if self._closing or not self._busy.acquire(blocking=False):
            return None
        self._refused = ""

        def run() -> T:
            try:
                return job()
            finally:
                self._busy.release()

        future = self._worker.submit(run)
        self._running = (future, cancel or ShutdownCancel(self.context))
        future.add_done_callback(self._log_failed_job)
        return future

    def _log_failed_job(self, job: Future) -> None:
        error = None if job.cancelled() else job.exception()
        if error is not None:
            self.get_logger().error("the deploy thread's job failed: "
                                    + "".join(traceback.format_exception(type(error), error, error.__traceback__)))

    def _start_serving(self, initial_bundle: str) -> None:
        try:
            served = self._flow.serve_committed()
        except Exception as exc:  # start-up failures are logged and shown; the manager serves requests anyway
            self.get_logger().error(f"cannot serve the committed model: {traceback.format_exc()}")
            why = str(exc) if isinstance(exc, SwapError) else f"{type(exc).__name__}: {exc}"
            self._set_stage(DeploymentStage.FAILED, one_line(f"cannot serve the committed model: {why}"))
            return
        if served is not None:
            self._set_stage(DeploymentStage.IDLE, f"serving {served.label()} from the store")
        elif initial_bundle:
            self._deploy(initial_bundle, False, ShutdownCancel(self.context), None)
        else:
            self._set_stage(DeploymentStage.IDLE, "waiting for a bundle")

    def _deploy(self, bundle_path: str, force: bool, cancel: threading.Event, goal_handle) -> DeployOutcome:
        feedback = FeedbackGate()

        def progress(stage: DeploymentStage, fraction: float, message: str) -> None:
            message = one_line(message)  # may quote a bundle; ROS strings must be printable UTF-8
            if stage is DeploymentStage.PROBATION:
                self._health = message
            if stage is not self._stage or message != self._message:
                self._set_stage(stage, message)
            if goal_handle is not None and self.context.ok() and feedback.changed(stage.value, fraction, message):
                goal_handle.publish_feedback(Deploy.Feedback(stage=stage.value, progress=float(fraction),
                                                             message=message))

        try:
            outcome = self._flow.deploy(bundle_path, force=force, progress=progress, cancel=cancel)
        except Exception as exc:  # never out of a deployment: the manager keeps serving and says why
            self.get_logger().error(f"deployment of {one_line(bundle_path)} failed: {traceback.format_exc()}")
            outcome = DeployOutcome(False, f"deployment failed: {type(exc).__name__}: {exc}")
        outcome = replace(outcome, reason=one_line(outcome.reason))
        if outcome.rolled_back or outcome.cancelled:
            self._health = ""  # the model put back was not judged by this probation
        self._last = LastOutcome.of_deployment(outcome)
        try:
            keep_report(self._flow.store, outcome)
        except OSError as exc:
            self.get_logger().warning(f"cannot keep the deployment report: {exc}")
        ended = DeploymentStage.IDLE if outcome.accepted else \
            DeploymentStage.CANCELLED if outcome.cancelled else DeploymentStage.FAILED
        self._set_stage(ended, outcome.reason)
        # rclpy ties a severity to each logging call site, so the two levels need two calls.
        if outcome.accepted:
            self.get_logger().info(outcome.reason)
        else:
            self.get_logger().error(outcome.reason)
        return outcome

    def _rollback(self, reason: str) -> tuple[ServedModel | None, str]:
        self._set_stage(DeploymentStage.ROLLBACK, f"rolling back: {reason or 'requested'}")
        try:
            model = self._flow.rollback(reason)
        except (SwapError, StoreError) as exc:
            message = f"rollback failed: {exc}"
            self._set_stage(DeploymentStage.FAILED, message)
            self.get_logger().error(message)
            return None, message
        message = f"rolled back to {model.label()} ({reason or 'no reason given'})"
        self._health = ""  # probation judged the model that no longer serves
        self._last = LastOutcome("rolled_back", str(model.ref), message)
        self._set_stage(DeploymentStage.IDLE, message)
        self.get_logger().warning(message)
        return model, message

    # Status. --------------------------------------------------------------------

    def _busy_reason(self) -> str:
        if self._closing:
            return "the manager is shutting down"
        return f"a deployment is already running (stage {self._stage.value}: {self._message}); try again when it ends"

    def _refuse(self, what: str, bundle_path: str) -> str:
        """Log and publish (status ``refused``) why a request was refused; returns the reason."""
        reason = self._busy_reason()
        about = f" for {one_line(bundle_path, 200)}" if bundle_path else ""
        self._refused = f"{what}{about} refused: {reason}"
        self.get_logger().warning(self._refused)
        self._publish_status()
        return reason

    def _set_stage(self, stage: DeploymentStage, message: str) -> None:
        self._stage, self._message = stage, message
        self._publish_status()

    def _status(self) -> DeploymentStatus:
        store = self._flow.store
        state = store.state
        candidate = version_info(state.candidate, store.bundle_dir(state.candidate)) if state.candidate else ModelInfo()
        snapshot = self._flow.switch.snapshot()
        # On probation the candidate serves, and a rollback puts the store's active version back.
        on_probation = snapshot.live_model is not None and snapshot.live_model.ref == state.candidate
        return self._last.fill(deployment_status(
            snapshot=snapshot, previous=self._stored_info(state.active if on_probation else state.previous),
            candidate=candidate,
            stage=self._stage, message=self._message, health=self._health, stamp=self.get_clock().now().to_msg(),
            refused=self._refused))

    def _stored_info(self, ref: VersionRef | None) -> ModelInfo:
        """A slot's version as the store has it; status still names it when its record is damaged."""
        if ref is None:
            return ModelInfo()
        store = self._flow.store
        try:
            return installed_info(store.installed(ref), store.state)
        except StoreError:
            return version_info(ref, store.bundle_dir(ref))

    def _publish_status(self) -> None:
        if self.context.ok():  # a deployment cancelled by a shutdown still ends (and records) on its thread
            self._status_publisher.publish(self._status())

    def _publish_diagnostics(self) -> None:
        self._diagnostics.publish(deployment_diagnostics(self._status(), node_name=self.get_name(),
                                                         hardware_id=self.get_fully_qualified_name()))

    def destroy_node(self) -> None:
        if self._started:
            self._cancel_and_join()
            self._worker.shutdown(wait=False, cancel_futures=True)
            self._action.destroy()
            self._traffic.close()
            self._uploads.close()
        super().destroy_node()


    def _cancel_for_shutdown(self) -> None:
        """Refuse new work and stop a running deployment (the flow records it as cancelled)."""
        self._closing = True
        running = self._running
        if running is None or running[0].done() or self._shutdown_cancel_at is not None:
            return
        self.get_logger().warning(f"shutting down: cancelling the running deployment ({self._stage.value}: "
                                  f"{self._message})")
        self._shutdown_cancel_at = time.monotonic()
        running[1].set()

    def _cancel_and_join(self) -> None:
        """Cancel a running deployment and wait (at most DESTROY_JOIN_S) for it to end."""
        self._cancel_for_shutdown()
        if self._running is None or self._shutdown_cancel_at is None:
            return
        if wait([self._running[0]], timeout=DESTROY_JOIN_S).not_done:
            self.get_logger().error(f"the cancelled deployment did not end within {DESTROY_JOIN_S:g} s; "
                                    "the store recovers it at the next start")
        else:
            self.get_logger().info(f"the cancelled deployment ended "
                                   f"{time.monotonic() - self._shutdown_cancel_at:.1f} s after the cancel")


def main(args: list[str] | None = None) -> None:
    run_node(ManagerNode, args, threads=6, parameters=PARAMETERS)
