"""Run real nodes in separate processes over real DDS, and talk to them (tests, bench/).

Every ROS test takes a ROS_DOMAIN_ID that no other test, on this host or in
this process, uses at the same time: its processes must never meet those of
another test run (another worktree's suite, a leftover node). A node that
shares the domain answers the same service names, and its answers (its
lifecycle state, a refused transition) reach our manager as if ours had sent
them.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import signal
import subprocess
import tempfile
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

from robot_model_deployer.nodes.service_call import RESEND_S, answer_of

PACKAGE = "robot_model_deployer"
MAX_DOMAIN_ID = 232  # Fast DDS's default ports allow 0..232; 0 (the default domain) is left to people
_DOMAIN_LOCKS = Path(tempfile.gettempdir()) / "robot_model_deployer-ros-domains"
_domains = itertools.count(os.getpid() % MAX_DOMAIN_ID)
_held: list[int] = []  # lock files of the domains this process took; the locks go when the process ends


def next_domain_id() -> int:
    """A domain id in 1..232 that no earlier test of this process, no other process holding one, and no
    running process on this host (a leftover node whose test is gone) uses."""
    for _ in range(MAX_DOMAIN_ID):
        domain = next(_domains) % MAX_DOMAIN_ID + 1
        if _reserve(domain) and domain not in _domains_of_running_processes():
            return domain
    raise RuntimeError(f"no free ROS domain id in 1..{MAX_DOMAIN_ID} on this host: stop leftover nodes "
                       "(ps -eo pid,args | grep robot_model_deployer) or other test runs, then retry")


def _reserve(domain: int) -> bool:
    """Take the host-wide lock of ``domain`` for the rest of this process; False when another process has it."""
    _DOMAIN_LOCKS.mkdir(exist_ok=True)
    fd = os.open(_DOMAIN_LOCKS / f"{domain}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _held.append(fd)
    return True


def _domains_of_running_processes() -> set[int]:
    """ROS_DOMAIN_ID of every process on this host whose environment we may read (Linux /proc)."""
    domains = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        for variable in variables:
            if variable.startswith(b"ROS_DOMAIN_ID="):
                value = variable.partition(b"=")[2]
                if value.isdigit():
                    domains.add(int(value))
    return domains


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
    if value == "":
        return "''"  # rcl refuses a bare `name:=`
    return str(value)


class NodeProcess:
    """One node executable in its own process; its output goes to a log file."""

    def __init__(self, exe: str, name: str, domain_id: int, log_dir: Path,
                 parameters: dict[str, Any] | None = None, remappings: dict[str, str] | None = None,
                 extra_env: dict[str, str] | None = None, params_file: Path | None = None) -> None:
        command = [executable(exe), "--ros-args", "-r", f"__node:={name}"]
        for key, value in (remappings or {}).items():
            command += ["-r", f"{key}:={value}"]
        if params_file is not None:  # before the -p values, which override it
            command += ["--params-file", str(params_file)]
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

    def call(self, srv_type: Any, service: str, request: Any, timeout: float = 60.0, query: bool = False) -> Any:
        """The answer of ``service``; a ``query`` (safe to run twice) is sent again while unanswered."""
        client = self.node.create_client(srv_type, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {service} did not appear within {timeout} s")
            answer = answer_of(client, request, timeout, RESEND_S if query else None)
            if answer is None:
                raise TimeoutError(f"service {service} did not answer within {timeout} s")
            return answer
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
