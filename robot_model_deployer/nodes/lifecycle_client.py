"""Drive a remote lifecycle node through its standard services.

Used from the manager's worker thread, never from an executor callback: each
call sends a request with ``call_async`` and waits on the future while the
executor (spinning in other threads) completes it.
"""
from __future__ import annotations

import threading
import time
from enum import IntEnum
from typing import Any, Callable, TypeVar

from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy._rclpy_pybind11 import RCLError
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.task import Future

from robot_model_deployer.deploy.switch import ServedModel, SlotState, SwapError

T = TypeVar("T")


class LifecycleState(IntEnum):
    """Primary lifecycle states (lifecycle_msgs/State ids)."""

    UNKNOWN = State.PRIMARY_STATE_UNKNOWN
    UNCONFIGURED = State.PRIMARY_STATE_UNCONFIGURED
    INACTIVE = State.PRIMARY_STATE_INACTIVE
    ACTIVE = State.PRIMARY_STATE_ACTIVE
    FINALIZED = State.PRIMARY_STATE_FINALIZED


class LifecycleTransition(IntEnum):
    CONFIGURE = Transition.TRANSITION_CONFIGURE
    CLEANUP = Transition.TRANSITION_CLEANUP
    ACTIVATE = Transition.TRANSITION_ACTIVATE
    DEACTIVATE = Transition.TRANSITION_DEACTIVATE


class LifecycleCallError(RuntimeError):
    """A lifecycle or parameter service did not answer, or refused."""


_CONTEXT_POLL_S = 0.1  # how soon a call in flight gives up once the context has shut down


class RemoteLifecycleNode:
    """Client side of one lifecycle node's ``~/get_state``, ``~/change_state`` and ``~/set_parameters``."""

    def __init__(self, node: Node, target: str, callback_group: CallbackGroup, timeout: float) -> None:
        self.name = target.lstrip("/")
        self._node = node
        self._timeout = timeout
        self._get_state = node.create_client(GetState, f"{target}/get_state", callback_group=callback_group)
        self._change_state = node.create_client(ChangeState, f"{target}/change_state", callback_group=callback_group)
        self._set_parameters = node.create_client(SetParameters, f"{target}/set_parameters",
                                                  callback_group=callback_group)

    def state(self) -> LifecycleState:
        response = self._call(self._get_state, GetState.Request(), "get_state")
        try:
            return LifecycleState(response.current_state.id)
        except ValueError:
            return LifecycleState.UNKNOWN

    def transition(self, transition: LifecycleTransition) -> bool:
        """Trigger a transition; True when the node reports success."""
        request = ChangeState.Request()
        request.transition.id = int(transition)
        return bool(self._call(self._change_state, request, transition.name.lower()).success)

    def set_string_parameters(self, values: dict[str, str]) -> None:
        parameters = [Parameter(name=name, value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                                string_value=value))
                      for name, value in values.items()]
        response = self._call(self._set_parameters, SetParameters.Request(parameters=parameters), "set_parameters")
        for name, result in zip(values, response.results):
            if not result.successful:
                raise LifecycleCallError(f"{self.name} refused parameter {name}: {result.reason}")

    def _call(self, client: Any, request: Any, what: str) -> Any:
        self._check_context(what)
        try:
            if not client.service_is_ready() and not client.wait_for_service(timeout_sec=self._timeout):
                raise LifecycleCallError(f"{self.name} does not offer {what} (is the node running?)")
            future: Future = client.call_async(request)
        except RCLError:  # the context went away since the check above (Ctrl-C during a deployment)
            self._check_context(what)
            raise
        done = threading.Event()
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + self._timeout
        # In slices: once the context shuts down (Ctrl-C) no answer can arrive, and waiting on would hold up
        # the node's shutdown for the whole timeout.
        while not done.wait(min(_CONTEXT_POLL_S, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline or not self._node.context.ok():
                future.cancel()
                self._check_context(what)
                raise LifecycleCallError(f"{self.name} did not answer {what} within {self._timeout:.0f} s")
        if future.exception() is not None:
            raise LifecycleCallError(f"{self.name} {what} failed: {future.exception()}")
        return future.result()

    def _check_context(self, what: str) -> None:
        if not self._node.context.ok():
            raise LifecycleCallError(f"{self.name} {what} not called: this node is shutting down")


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

    def set_parameters(self, values: dict[str, str]) -> None:
        """Set string parameters of the node (e.g. what it loads on its next configure)."""
        self._call(lambda: self.remote.set_string_parameters(values))

    def load(self, model: ServedModel) -> None:
        self.set_parameters({"model_dir": model.path, "artifacts_dir": model.artifacts})
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
