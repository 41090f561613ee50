"""RobotClient: push, deploy, watch and roll back models on one robot's manager over ROS 2.

The client owns an rclpy Context and spins its node on a thread of its own,
so it can be used from a plain script (``rmd robot``, the Mender update
module) that has no executor. Every request waits at most ``timeout``
seconds for the manager to answer; a deployment itself may take as long as
its stages take, and only its server vanishing for ``timeout`` ends the wait.
"""
from __future__ import annotations

import array
import hashlib
import json
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, BinaryIO, Callable

import rclpy
from action_msgs.srv import CancelGoal
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from robot_model_deployer.action import Deploy
from robot_model_deployer.msg import DeploymentStatus, ShadowReport
from robot_model_deployer.nodes.service_call import RESEND_S, answer_of
from robot_model_deployer.robot.outcome import (DEFAULT_TIMEOUT_S, LIVE_STAGES, DeployOutcome, Outcome, RobotAnswer, RobotRefused,
                                                RobotUnreachable, StageProgress, Until)
from robot_model_deployer.robot.views import listed_dicts, model_dict, status_dict
from robot_model_deployer.srv import (GetReport, GetStatus, ListModels, Rollback, UploadBegin, UploadChunk,
                                      UploadStatus)

MANAGER_NAME = "model_manager"
# 256 KiB: with the manager pacing uploads (upload_max_mb_s), bench_upload measured the live node's p99 during a
# push at 1.15-1.18x steady with 256 KiB chunks against 1.5-1.8x with 1 MiB ones (each chunk's spike is smaller).
CHUNK_BYTES = 256 << 10
# Chunks in flight. bench_upload on a loaded 2-core machine: 4 was not reliably faster than 1, and the
# live node's p99 during a push varied more with 4 (2-4x steady in two runs of three).
WINDOW = 1
MAX_RESYNCS = 5  # times in a row the client asks the offset again before it gives up
_POLL_S = 0.05
_SERVICE_CHECK_S = 0.2  # how often a wait for a chunk's answer checks that the manager is still there


class RobotClient:
    """One robot's manager (``/<namespace>/model_manager``), reached over DDS. Close it (or use ``with``)."""

    def __init__(self, namespace: str = "", *, timeout: float = DEFAULT_TIMEOUT_S, manager: str = MANAGER_NAME,
                 domain_id: int | None = None) -> None:
        self.timeout = timeout
        self.prefix = "/" + "/".join(p for p in (*namespace.strip("/").split("/"), manager) if p)
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        try:
            self.node = Node(f"rmd_robot_{os.getpid()}_{id(self):x}", context=self._context)
            self._clients = {name: self.node.create_client(srv, f"{self.prefix}/{name}") for name, srv in (
                ("get_status", GetStatus), ("list_models", ListModels), ("rollback", Rollback),
                ("get_report", GetReport), ("upload_begin", UploadBegin), ("upload_chunk", UploadChunk),
                ("upload_status", UploadStatus))}
            self._cancel_goals = self.node.create_client(CancelGoal, f"{self.prefix}/deploy_bundle/_action/cancel_goal")
            self._action = ActionClient(self.node, Deploy, f"{self.prefix}/deploy_bundle")
            self._executor = SingleThreadedExecutor(context=self._context)
            self._executor.add_node(self.node)
        except Exception:
            rclpy.try_shutdown(context=self._context)
            raise
        self._gone_since: float | None = None  # when the action server was last seen gone
        self._spinning = threading.Lock()  # held by spin_once; entities are made while it waits
        self._thread = threading.Thread(target=self._spin, name="rmd-robot", daemon=True)
        self._thread.start()

    def __enter__(self) -> "RobotClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Leave the graph; a deployment this client started keeps running on the robot."""
        self._executor.shutdown(timeout_sec=1.0)
        self._action.destroy()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)
        self._thread.join(timeout=2.0)

    def _spin(self) -> None:
        while self._context.ok():
            try:
                with self._spinning:
                    self._executor.spin_once(timeout_sec=_POLL_S)
            except Exception:  # the context shut down under spin_once while closing
                if self._context.ok():
                    raise

    # ---- requests ---------------------------------------------------------------

    def _call(self, name: str, request: Any, timeout: float | None = None, query: bool = False) -> Any:
        """One service call; RobotUnreachable when the manager does not answer within ``timeout``.

        A ``query`` (changes nothing on the robot) is sent again while unanswered: see nodes/service_call.py.
        """
        timeout = self.timeout if timeout is None else timeout
        client = self._clients[name] if name in self._clients else self._cancel_goals
        service = client.srv_name
        if not client.wait_for_service(timeout_sec=timeout):
            raise RobotUnreachable(
                f"no manager answers {service} within {timeout:g} s: check that the robot's nodes run, that "
                f"ROS_DOMAIN_ID ({os.environ.get('ROS_DOMAIN_ID', '0')}) and --namespace match the robot's, "
                "or raise --timeout")
        answer = answer_of(client, request, timeout, RESEND_S if query else None)
        if answer is None:
            raise RobotUnreachable(f"{service} did not answer within {timeout:g} s: the manager may be busy or "
                                   "gone; check `rmd robot status`, or raise --timeout")
        return answer

    def status(self) -> dict[str, Any]:
        """The manager's status as ``views.status_dict`` (active, previous, running stage, last outcome)."""
        return status_dict(self._call("get_status", GetStatus.Request(), query=True).status)

    def list(self, name: str = "") -> list[dict[str, Any]]:
        """Every installed version (of ``name``) with its slot."""
        answer = self._call("list_models", ListModels.Request(name=name), query=True)
        return listed_dicts(answer.models, answer.slots)

    def report(self, version: str) -> dict[str, Any]:
        """What the robot knows about one installed version (``name@version`` or a version alone)."""
        answer = self._call("get_report", GetReport.Request(version=version), query=True)
        if not answer.found:
            raise RobotRefused(answer.reason)
        return json.loads(answer.report_json)

    def rollback(self, reason: str = "") -> RobotAnswer:
        """Serve the previous model again (the robot refuses when there is none, or a deployment runs)."""
        answer = self._call("rollback", Rollback.Request(reason=reason or "rmd robot rollback"))
        model = model_dict(answer.active)
        return RobotAnswer(answer.success, answer.message, model["ref"] if model else "")

    def cancel(self) -> RobotAnswer:
        """Cancel the running deployment (whoever started it as a Deploy goal); the live model stays live."""
        status = self.status()
        if status["deployment"] is None:
            return RobotAnswer(True, f"nothing to cancel: no deployment runs (stage {status['stage']})")
        answer = self._call("cancel_goal", CancelGoal.Request())  # zero id and stamp: every goal
        if answer.return_code != CancelGoal.Response.ERROR_NONE or not answer.goals_canceling:
            return RobotAnswer(False, f"the running deployment ({status['stage']}: {status['message']}) is not a "
                                      "Deploy goal (it came through the deploy service), so it cannot be cancelled; "
                                      "wait for it to end")
        return RobotAnswer(True, f"cancel sent to the deployment at stage {status['stage']}; the live model stays "
                                 "live (see `rmd robot status`)")

    # ---- upload -------------------------------------------------------------------

    def push(self, path: Path | str, progress: StageProgress | None = None) -> str:
        """Upload a bundle file; returns the upload id to deploy. Resumes an upload of the same bytes.

        Up to WINDOW chunks are in flight. A chunk that gets no answer (a disconnect, a
        manager restart) makes the client ask where the manager's copy ends
        and go on from there, for up to ``timeout`` seconds of silence.
        """
        path = Path(path)
        size, sha256 = path.stat().st_size, _file_sha256(path)
        answer = self._call("upload_begin", UploadBegin.Request(name=path.name, size=size, sha256=sha256))
        if not answer.accepted:
            raise RobotRefused(answer.reason)
        report = progress or (lambda stage, fraction, message: None)
        if not answer.complete:
            chunk_bytes = max(1, min(CHUNK_BYTES, answer.max_chunk or CHUNK_BYTES))
            with open(path, "rb") as source:
                self._transfer(source, answer.upload_id, answer.offset, size, chunk_bytes,
                               lambda offset: report("upload", offset / size, f"{path.name} {offset}/{size} bytes"))
        report("upload", 1.0, f"{path.name} uploaded as {answer.upload_id}")
        return answer.upload_id

    def _transfer(self, source: BinaryIO, upload_id: str, offset: int, size: int, chunk_bytes: int,
                  report: Callable[[int], None]) -> None:
        client = self._clients["upload_chunk"]
        pending: deque[tuple[int, Any]] = deque()  # (offset, future) of each chunk in flight, oldest first
        next_offset, resyncs = offset, 0
        report(offset)
        while True:
            while len(pending) < WINDOW and next_offset < size:
                source.seek(next_offset)
                data = source.read(chunk_bytes)
                pending.append((next_offset, client.call_async(_chunk_request(upload_id, next_offset, data))))
                next_offset += len(data)
            sent_at, future = pending.popleft()
            answer = self._answer(future)
            if answer is None or (not answer.accepted and answer.offset != sent_at):
                # No answer, or the copy ends elsewhere: drop what is in flight, resume where the copy ends.
                for _, future in pending:
                    client.remove_pending_request(future)
                pending.clear()
                resyncs += 1
                if resyncs > MAX_RESYNCS:
                    raise RobotUnreachable(f"upload {upload_id} made no progress in {MAX_RESYNCS} tries at offset "
                                           f"{next_offset}: check the manager's log; `rmd robot push` resumes it")
                state = self.upload_state(upload_id)
                if state.complete:
                    return
                next_offset = state.offset
                continue
            if not answer.accepted:
                raise RobotRefused(answer.reason)
            resyncs = 0
            report(answer.offset)
            if answer.complete:
                return

    def _answer(self, future: Any) -> Any:
        """A chunk's answer; None when none came within ``timeout`` or the service went away (a restart)."""
        client = self._clients["upload_chunk"]
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + self.timeout
        while not done.wait(_SERVICE_CHECK_S):
            if time.monotonic() > deadline or not client.service_is_ready():
                client.remove_pending_request(future)
                return None
        return future.result()

    def upload_state(self, upload_id: str) -> UploadStatus.Response:
        """Where an upload stands on the robot; RobotRefused when the robot does not know the id."""
        answer = self._call("upload_status", UploadStatus.Request(upload_id=upload_id), query=True)
        if not answer.found:
            raise RobotRefused(answer.reason)
        return answer

    def drop_upload(self, upload_id: str) -> str:
        answer = self._call("upload_status", UploadStatus.Request(upload_id=upload_id, cancel=True))
        if not answer.found:
            raise RobotRefused(answer.reason)
        return answer.reason

    # ---- deployment ---------------------------------------------------------------

    def deploy(self, bundle_path: str | None = None, upload_id: str | None = None, *, until: Until | str = Until.DONE,
               force: bool = False, progress: StageProgress | None = None) -> DeployOutcome:
        """Deploy a bundle on the robot (a path on its disk, or a finished upload) through the Deploy action.

        ``until="live"`` returns once the candidate serves (probation
        reached); the deployment then goes on on the robot, and ``status``
        tells how it ended. ``until="done"`` waits for the result.
        """
        until = Until(until)
        if bool(bundle_path) == bool(upload_id):
            raise ValueError("give either a bundle path on the robot or an upload id, not both or neither")
        if not self._action.wait_for_server(timeout_sec=self.timeout):
            raise RobotUnreachable(f"no Deploy action server at {self.prefix}/deploy_bundle within {self.timeout:g} "
                                   "s: check that the manager runs and --namespace and ROS_DOMAIN_ID match")
        live = threading.Event()

        def on_feedback(message: Any) -> None:
            feedback = message.feedback
            if progress is not None:
                progress(feedback.stage, float(feedback.progress), feedback.message)
            if feedback.stage in LIVE_STAGES:
                live.set()

        goal = Deploy.Goal(bundle_path=bundle_path or "", upload_id=upload_id or "", force=force)
        handle = self._wait(self._action.send_goal_async(goal, feedback_callback=on_feedback), "the Deploy goal")
        if not handle.accepted:  # a rejection carries no text: the status's `refused` says why
            status = self.status()
            return DeployOutcome(False, status["refused"] or "the robot rejected the Deploy goal", Outcome.REFUSED)
        result_future = handle.get_result_async()
        while not result_future.done():
            if until is Until.LIVE and live.is_set():
                status = self.status()
                version = (status["active"] or {}).get("ref", "")
                return DeployOutcome(True, f"{version} is live; probation goes on on the robot (watch it with "
                                           "`rmd robot status --watch`)", Outcome.LIVE, version)
            self._check_server()
            time.sleep(_POLL_S)
        return self._deploy_outcome(result_future.result().result)

    def _deploy_outcome(self, result: Any) -> DeployOutcome:
        version = model_dict(result.model)
        report = json.loads(result.report_json) if result.report_json else {}
        if result.accepted:
            return DeployOutcome(True, result.reason, Outcome.DEPLOYED, version["ref"] if version else "", report)
        last = self.status()["last"]
        outcome = Outcome(last["outcome"]) if last["outcome"] in (Outcome.ROLLED_BACK.value,
                                                                  Outcome.CANCELLED.value) else Outcome.REFUSED
        ref = (report.get("installed") or {}).get("ref", "")
        return DeployOutcome(False, result.reason, outcome, ref, report)

    def _check_server(self) -> None:
        """Raise RobotUnreachable once the action server has been gone for ``timeout`` seconds."""
        if self._action.server_is_ready():
            self._gone_since = None
            return
        since = self._gone_since = self._gone_since or time.monotonic()
        if time.monotonic() - since > self.timeout:
            raise RobotUnreachable(f"the manager at {self.prefix} went away during the deployment; on restart it "
                                   "rolls an unfinished candidate back: check `rmd robot status`")

    def _wait(self, future: Any, what: str) -> Any:
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        if not done.wait(self.timeout):
            raise RobotUnreachable(f"{what} got no answer from {self.prefix} within {self.timeout:g} s")
        return future.result()

    # ---- watching -----------------------------------------------------------------

    def watch(self, on_status: Callable[[dict[str, Any]], None],
              on_feedback: Callable[[str, float, str], None] | None = None,
              on_shadow: Callable[[Any], None] | None = None, shadow_node: str = "shadow") -> Callable[[], None]:
        """Call back on every status, Deploy feedback (any client's goal) and shadow report; returns a stop."""
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        namespace = self.prefix.rsplit("/", 1)[0]
        with self._spinning:
            return self._subscribe(namespace, latched, on_status, on_feedback, on_shadow, shadow_node)

    def _subscribe(self, namespace: str, latched: QoSProfile, on_status: Callable[[dict[str, Any]], None],
                   on_feedback: Callable[[str, float, str], None] | None, on_shadow: Callable[[Any], None] | None,
                   shadow_node: str) -> Callable[[], None]:
        subscriptions = [self.node.create_subscription(DeploymentStatus, f"{self.prefix}/status",
                                                       lambda msg: on_status(status_dict(msg)), latched)]
        if on_feedback is not None:
            subscriptions.append(self.node.create_subscription(
                Deploy.Impl.FeedbackMessage, f"{self.prefix}/deploy_bundle/_action/feedback",
                lambda msg: on_feedback(msg.feedback.stage, float(msg.feedback.progress), msg.feedback.message), 10))
        if on_shadow is not None:
            subscriptions.append(self.node.create_subscription(ShadowReport, f"{namespace}/{shadow_node}/report",
                                                               on_shadow, 10))

        def stop() -> None:
            with self._spinning:
                for subscription in subscriptions:
                    self.node.destroy_subscription(subscription)
        return stop


def _chunk_request(upload_id: str, offset: int, data: bytes) -> UploadChunk.Request:
    request = UploadChunk.Request(upload_id=upload_id, offset=offset, sha256=hashlib.sha256(data).hexdigest())
    request.data = array.array("B", data)  # taken as is; a bytes object is checked byte by byte (rosidl_python#156)
    return request


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
