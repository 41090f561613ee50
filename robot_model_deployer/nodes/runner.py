"""Running one node as a process: the shared body of every node's ``main()``."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> None:
    """Init rclpy, spin the node until Ctrl-C or shutdown, then clean up.

    ``threads`` > 1 spins a MultiThreadedExecutor, for nodes whose callback
    groups must run side by side.
    """
    rclpy.init(args=args)
    node = make_node()
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
