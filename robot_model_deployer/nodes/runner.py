"""Running one node as a process: the shared body of every node's ``main()``."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, NoReturn, Sequence

import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node

from robot_model_deployer.nodes.clock_wait import ClockNotice, ClockWait, started_message, waiting_message
from robot_model_deployer.nodes.parameters import ParameterSpec, ParameterValueError, parameters_help

CLOCK_CHECK_PERIOD_S = 0.5


def run_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 1,
             parameters: Sequence[ParameterSpec] = ()) -> None:
    """Init rclpy, spin the node until Ctrl-C or shutdown, then clean up.

    ``-h``/``--help`` before any ``--ros-args`` prints the node's
    ``parameters`` (its declarations, so the help cannot drift) and exits 0.

    ``threads`` > 1 spins a MultiThreadedExecutor, for nodes whose callback
    groups must run side by side. Arguments rcl cannot parse and a parameter
    the node refuses (ParameterValueError) end the process with one line on
    stderr and exit code 1: a user (or launch's log) needs the parameter and
    the fix, not a traceback.
    """
    _print_help_if_asked(make_node, sys.argv if args is None else args, parameters)
    try:
        rclpy.init(args=args)
    except rclpy_implementation.RCLError as exc:
        _exit_with(f"bad ROS arguments: {exc}")
    try:
        node = make_node()
    except ParameterValueError as exc:
        rclpy.try_shutdown()
        _exit_with(str(exc))
    _warn_while_waiting_for_clock(node)
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


def _print_help_if_asked(make_node: Callable[[], Node], argv: Sequence[str], parameters: Sequence[ParameterSpec],
                         ) -> None:
    own = list(argv[1:argv.index("--ros-args")] if "--ros-args" in argv else argv[1:])
    if "-h" not in own and "--help" not in own:
        return
    summary = (make_node.__doc__ or "").strip().split("\n\n")[0]
    print(parameters_help(Path(argv[0]).name if argv else "node", " ".join(summary.split()), parameters))
    raise SystemExit(0)


def _warn_while_waiting_for_clock(node: Node) -> None:
    """With use_sim_time, log (see nodes.clock_wait) while ROS time has not started."""
    if not node.get_parameter("use_sim_time").value:
        return
    clock, topic, began = node.get_clock(), node.resolve_topic_name("/clock"), time.monotonic()
    wait = ClockWait()

    def check() -> None:
        waited_s = time.monotonic() - began
        notice = wait.update(waited_s, clock.now().nanoseconds > 0)
        if notice is ClockNotice.STILL_WAITING:
            node.get_logger().warning(waiting_message(topic, waited_s))
        elif notice is ClockNotice.STARTED:
            node.get_logger().info(started_message(topic, waited_s))
        if wait.done:
            timer.cancel()  # not destroyed: another executor thread may be building its wait set

    # A steady clock: a timer on ROS time would wait for /clock too.
    timer = node.create_timer(CLOCK_CHECK_PERIOD_S, check, clock=Clock(clock_type=ClockType.STEADY_TIME))


def _exit_with(message: str) -> NoReturn:
    program = Path(sys.argv[0]).name or "node"
    raise SystemExit(f"{program}: {' '.join(message.split())}")
