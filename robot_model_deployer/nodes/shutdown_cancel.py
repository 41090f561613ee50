"""The manager's cancel for a deployment, which a shutdown of the node sets too."""
from __future__ import annotations

import threading

from rclpy.context import Context


class ShutdownCancel(threading.Event):
    """A deployment's cancel: set by its caller, and set as soon as the node's context shuts down.

    Ctrl-C shuts the context down at once, before any callback of ours runs, and the executor then waits
    for the callback waiting on the deployment: every stage polls this, so the deployment stops then (not
    only in destroy_node, which runs after the executor), and a stage that failed for the shutdown (a
    lifecycle call "not called: this node is shutting down") finds it cancelled: the flow records a
    cancel, not a refusal of the model.
    """

    def __init__(self, context: Context) -> None:
        super().__init__()
        self._context = context

    def is_set(self) -> bool:
        return super().is_set() or not self._context.ok()
