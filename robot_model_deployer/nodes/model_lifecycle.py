"""What every lifecycle node that holds a model does on cleanup, shutdown and error."""
from __future__ import annotations

from abc import abstractmethod

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn


class ModelLifecycleNode(LifecycleNode):
    """Releases its model (and the entities serving it) on cleanup, shutdown and error.

    on_error returns SUCCESS after releasing, so the node lands in
    unconfigured and can be configured again instead of finalized.
    """

    @abstractmethod
    def _release(self) -> None:
        """Stop serving and drop the model, its subscriptions, publishers and timers."""

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS
