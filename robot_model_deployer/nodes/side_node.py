"""A helper node beside the manager, spun by an executor and a thread of its own.

The manager's MultiThreadedExecutor spins a core while it hands out
camera-rate callbacks, and its callbacks run at the manager's priority:
traffic that needs neither (probation's listener, the upload services) goes
to a side node, on one thread that may run at a lower priority.
"""
from __future__ import annotations

import os
import threading
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

CLOSE_JOIN_S = 5.0  # how long close waits for the thread's callback in flight


class SideNode:
    """``<owner>_<suffix>`` in the owner's namespace and context; ``start`` once its entities exist.

    It takes none of the process's global arguments (a global ``-r __node:=NAME``
    would give it the owner's name) and offers no parameter services: what it
    needs of the owner's arguments, the caller passes in ``node_options``.
    """

    def __init__(self, owner: Node, suffix: str, nice: int = 0, **node_options: Any) -> None:
        self.node = rclpy.create_node(f"{owner.get_name()}_{suffix}", namespace=owner.get_namespace(),
                                      context=owner.context, use_global_arguments=False,
                                      start_parameter_services=False, **node_options)
        self._executor = SingleThreadedExecutor(context=owner.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, args=(nice,), name=suffix, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop spinning, then destroy the node (never while a callback of it runs)."""
        self._executor.shutdown(timeout_sec=CLOSE_JOIN_S)
        self._thread.join(timeout=CLOSE_JOIN_S)
        self.node.destroy_node()

    def _spin(self, nice: int) -> None:
        if nice:  # Linux gives each thread its own nice value: lower this one's only
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass  # the process is shutting down (Ctrl-C)
