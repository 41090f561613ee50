"""Run real nodes in separate processes over real DDS, and talk to them (tests, bench/).

Every ROS test takes a fresh ROS_DOMAIN_ID so that its processes never meet
those of another test (or a leftover process) on this host.
"""
from __future__ import annotations

import itertools
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import rclpy
from ament_index_python.packages import get_package_prefix
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

PACKAGE = "robot_model_deployer"
_domains = itertools.count((os.getpid() % 20) * 5 + 1)


def next_domain_id() -> int:
    """A domain id in 1..101 not used by an earlier test of this process."""
    return (next(_domains) - 1) % 101 + 1


def executable(name: str) -> str:
    path = Path(get_package_prefix(PACKAGE)) / "lib" / PACKAGE / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run scripts/setup.sh to build the package")
    return str(path)


def _ros_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_ros_value(v) if not isinstance(v, str) else f"'{v}'" for v in value) + "]"
    return str(value)


class NodeProcess:
    """One node executable in its own process; its output goes to a log file."""

    def __init__(self, exe: str, name: str, domain_id: int, log_dir: Path,
                 parameters: dict[str, Any] | None = None, remappings: dict[str, str] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        command = [executable(exe), "--ros-args", "-r", f"__node:={name}"]
        for key, value in (remappings or {}).items():
            command += ["-r", f"{key}:={value}"]
        for key, value in (parameters or {}).items():
            command += ["-p", f"{key}:={_ros_value(value)}"]
        env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0", **(extra_env or {}))
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class RosTestClient:
    """An rclpy node in the test process, spun by a background thread."""

    def __init__(self, domain_id: int, name: str = "test_client") -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinning = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def action_client(self, action_type: Any, name: str) -> ActionClient:
        """An action client, made while the executor waits: rclpy lists an ActionClient among the
        node's waitables before it is fully built, and an executor that meets it then dies."""
        with self._spinning:
            return ActionClient(self.node, action_type, name)

    def _spin(self) -> None:
        while self.context.ok():
            try:
                with self._spinning:
                    self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutdown races while the test tears down
                if self.context.ok():
                    raise

    def call(self, srv_type: Any, service: str, request: Any, timeout: float = 60.0) -> Any:
        client = self.node.create_client(srv_type, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {service} did not appear within {timeout} s")
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise TimeoutError(f"service {service} did not answer within {timeout} s")
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self._thread.join(timeout=2.0)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stop_all(processes: Iterable[NodeProcess]) -> None:
    for process in processes:
        process.stop()
