"""Model manager node: deploys bundles onto two lifecycle perception nodes.

Services (all under the node's name, e.g. /model_manager/deploy):
  ~/deploy      robot_model_deployer/srv/DeployModel
  ~/rollback    robot_model_deployer/srv/Rollback
  ~/get_status  robot_model_deployer/srv/GetStatus
Topic:
  ~/status      robot_model_deployer/msg/DeploymentStatus (transient local)

Deployments run one at a time on a worker thread; service callbacks only
hand work to it, and lifecycle calls go out with call_async, so the executor
keeps serving status requests while a model loads.
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from robot_model_deployer.deploy.preparation import prepare_bundle
from robot_model_deployer.deploy.switch import BlueGreenSwitch, ServedModel, SlotState, SwapError
from robot_model_deployer.msg import DeploymentStatus, ModelInfo
from robot_model_deployer.nodes.lifecycle_client import (LifecycleCallError, LifecycleState, LifecycleTransition,
                                                          RemoteLifecycleNode)
from robot_model_deployer.nodes.parameters import ParameterSpec, declare_parameters
from robot_model_deployer.srv import DeployModel, GetStatus, Rollback

T = TypeVar("T")

PARAMETERS = (
    ParameterSpec("perception_nodes", ["perception_a", "perception_b"],
                  "The two lifecycle perception nodes to switch between (relative to this node's namespace, or absolute).",
                  check=lambda v: None if len(v) == 2 and len(set(v)) == 2 else "must name two different nodes"),
    ParameterSpec("initial_bundle", "", "Bundle deployed when the manager starts (empty: none)."),
    ParameterSpec("service_timeout", 30.0, "Seconds to wait for a perception node to answer a lifecycle call.",
                  minimum=0.1, maximum=3600.0),
)

_SLOT_STATES = {
    LifecycleState.UNCONFIGURED: SlotState.UNCONFIGURED,
    LifecycleState.INACTIVE: SlotState.INACTIVE,
    LifecycleState.ACTIVE: SlotState.ACTIVE,
}


class LifecycleSlot:
    """A PerceptionSlot backed by a remote lifecycle perception node."""

    def __init__(self, remote: RemoteLifecycleNode) -> None:
        self.remote = remote
        self.name = remote.name

    def state(self) -> SlotState:
        return _SLOT_STATES.get(self._call(self.remote.state), SlotState.UNKNOWN)

    def load(self, model_dir: str) -> None:
        self._call(lambda: self.remote.set_string_parameter("model_dir", model_dir))
        self._transition(LifecycleTransition.CONFIGURE, "could not load the model (its log says why)")

    def unload(self) -> None:
        self._transition(LifecycleTransition.CLEANUP, "refused to release its model")

    def activate(self) -> None:
        self._transition(LifecycleTransition.ACTIVATE, "refused to activate")

    def deactivate(self) -> None:
        self._transition(LifecycleTransition.DEACTIVATE, "refused to deactivate")

    def _transition(self, transition: LifecycleTransition, failure: str) -> None:
        if not self._call(lambda: self.remote.transition(transition)):
            raise SwapError(f"{self.name} {failure}")

    def _call(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except LifecycleCallError as exc:
            raise SwapError(str(exc)) from None


class ManagerNode(Node):
    """Owns the deploy flow; turns service requests into calls on the core."""

    def __init__(self, node_name: str = "model_manager", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        settings = declare_parameters(self, PARAMETERS)
        clients_group = ReentrantCallbackGroup()
        slots = [LifecycleSlot(RemoteLifecycleNode(self, name, clients_group, settings["service_timeout"]))
                 for name in settings["perception_nodes"]]
        self._switch = BlueGreenSwitch(slots)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploy")
        self._busy = threading.Lock()
        self._stage = "idle"
        self._message = "waiting for a bundle"
        self._candidate: ServedModel | None = None

        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._status_publisher = self.create_publisher(DeploymentStatus, "~/status", latched)
        requests_group = ReentrantCallbackGroup()
        self.create_service(DeployModel, "~/deploy", self._on_deploy, callback_group=requests_group)
        self.create_service(Rollback, "~/rollback", self._on_rollback, callback_group=requests_group)
        self.create_service(GetStatus, "~/get_status", self._on_get_status,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_status()
        if settings["initial_bundle"]:
            self._start_job(lambda: self._deploy(settings["initial_bundle"], force=False))

    # Service callbacks: hand work to the worker, answer with its outcome. ---

    def _on_deploy(self, request: DeployModel.Request, response: DeployModel.Response) -> DeployModel.Response:
        job = self._start_job(lambda: self._deploy(request.bundle_path, request.force))
        if job is None:
            response.accepted, response.reason = False, self._busy_reason()
            return response
        model, reason = job.result()
        response.accepted = model is not None
        response.reason = reason
        if model is not None:
            response.model = _model_info(model)
        return response

    def _on_rollback(self, request: Rollback.Request, response: Rollback.Response) -> Rollback.Response:
        job = self._start_job(lambda: self._rollback(request.reason))
        if job is None:
            response.success, response.message = False, self._busy_reason()
            return response
        model, response.message = job.result()
        response.success = model is not None
        if model is not None:
            response.active = _model_info(model)
        return response

    def _on_get_status(self, request: GetStatus.Request, response: GetStatus.Response) -> GetStatus.Response:
        response.status = self._status()
        return response

    # Work on the deploy thread. ---------------------------------------------

    def _start_job(self, job: Callable[[], T]):
        """Run job on the worker unless one is running; None when busy."""
        if not self._busy.acquire(blocking=False):
            return None

        def run() -> T:
            try:
                return job()
            finally:
                self._busy.release()

        return self._worker.submit(run)

    def _deploy(self, bundle_path: str, force: bool) -> tuple[ServedModel | None, str]:
        self._set_stage("verify", f"checking {bundle_path}")
        try:
            model = prepare_bundle(bundle_path)
        except ValueError as exc:
            return self._fail(f"bundle rejected: {exc}")
        self._candidate = model
        self._set_stage("swap", f"loading {model.label()} on the standby perception node")
        try:
            self._switch.deploy(model)
        except SwapError as exc:
            self._candidate = None
            return self._fail(f"{model.label()} not deployed: {exc}; the live model is unchanged")
        self._candidate = None
        snapshot = self._switch.snapshot()
        message = f"{model.label()} is live on {snapshot.live_node}"
        self._set_stage("idle", message)
        self.get_logger().info(message)
        return model, message

    def _rollback(self, reason: str) -> tuple[ServedModel | None, str]:
        self._set_stage("rollback", f"rolling back: {reason or 'requested'}")
        try:
            model = self._switch.rollback()
        except SwapError as exc:
            return self._fail(f"rollback failed: {exc}")
        message = f"rolled back to {model.label()} ({reason or 'no reason given'})"
        self._set_stage("idle", message)
        self.get_logger().warning(message)
        return model, message

    def _fail(self, reason: str) -> tuple[None, str]:
        self.get_logger().error(reason)
        self._set_stage("failed", reason)
        return None, reason

    # Status. ------------------------------------------------------------------

    def _busy_reason(self) -> str:
        return f"a deployment is already running (stage {self._stage}: {self._message}); try again when it ends"

    def _set_stage(self, stage: str, message: str) -> None:
        self._stage, self._message = stage, message
        self._publish_status()

    def _status(self) -> DeploymentStatus:
        snapshot = self._switch.snapshot()
        status = DeploymentStatus()
        status.stamp = self.get_clock().now().to_msg()
        status.active = _model_info(snapshot.live_model)
        status.previous = _model_info(snapshot.standby_model)
        status.candidate = _model_info(self._candidate)
        status.live_node = snapshot.live_node if snapshot.live_model else ""
        status.standby_node = snapshot.standby_node
        status.stage = self._stage
        status.message = self._message
        return status

    def _publish_status(self) -> None:
        self._status_publisher.publish(self._status())

    def destroy_node(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
        super().destroy_node()


def _model_info(model: ServedModel | None) -> ModelInfo:
    if model is None:
        return ModelInfo()
    return ModelInfo(name=model.name, version=model.version, task=model.task, path=model.path,
                     model_sha256=model.model_sha256)


def main(args: list[str] | None = None) -> None:
    rclpy.init(args=args)
    node = ManagerNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
