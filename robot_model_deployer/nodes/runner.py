"""Running one node as a process: the shared body of every node's ``main()``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, NoReturn

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node

from robot_model_deployer.nodes.parameters import ParameterValueError


def run_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> None:
    """Init rclpy, spin the node until Ctrl-C or shutdown, then clean up.

    ``threads`` > 1 spins a MultiThreadedExecutor, for nodes whose callback
    groups must run side by side. Arguments rcl cannot parse and a parameter
    the node refuses (ParameterValueError) end the process with one line on
    stderr and exit code 1: a user (or launch's log) needs the parameter and
    the fix, not a traceback.
    """
    try:
        rclpy.init(args=args)
    except rclpy_implementation.RCLError as exc:
        _exit_with(f"bad ROS arguments: {exc}")
    try:
        node = make_node()
    except ParameterValueError as exc:
        rclpy.try_shutdown()
        _exit_with(str(exc))
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


def _exit_with(message: str) -> NoReturn:
    program = Path(sys.argv[0]).name or "node"
    raise SystemExit(f"{program}: {' '.join(message.split())}")
