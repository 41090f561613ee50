"""The launch file ends the whole graph when a node it cannot do without exits, and refuses a missing params_file.

Runs the launch file as `ros2 launch` does, through launch's LaunchService.
Needs launch and launch_ros from a ROS 2 install (not on PyPI); where they
are missing pytest skips this module. launch_testing is not needed.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_WHY = "needs launch and launch_ros from a ROS 2 install (not available from PyPI)"
pytest.importorskip("launch", reason=_WHY)
pytest.importorskip("launch_ros", reason=_WHY)

from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch import LaunchDescription, LaunchService  # noqa: E402
from launch.actions import IncludeLaunchDescription, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessExit, OnProcessStart, OnShutdown  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

from robot_model_deployer.testing.ros_graph import next_domain_id  # noqa: E402

PACKAGE = "robot_model_deployer"
# Four Python node processes start (imports, ONNX Runtime), then one refuses its parameters.
LAUNCH_TIMEOUT_S = 120.0


@dataclass
class LaunchRun:
    return_code: int
    timed_out: bool
    started: list[str] = field(default_factory=list)
    exited: dict[str, int] = field(default_factory=dict)
    shutdown_reasons: list[str] = field(default_factory=list)


def _launch(monkeypatch: pytest.MonkeyPatch, **arguments: str) -> LaunchRun:
    """Launch deployer.launch.py and wait until launch ends by itself (or time out and stop it)."""
    monkeypatch.setenv("ROS_DOMAIN_ID", str(next_domain_id()))  # the nodes inherit it
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    run = LaunchRun(return_code=-1, timed_out=False)
    launch_file = Path(get_package_share_directory(PACKAGE)) / "launch" / "deployer.launch.py"
    service = LaunchService()
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessStart(on_start=lambda event, _: run.started.append(event.process_name))),
        RegisterEventHandler(OnProcessExit(
            on_exit=lambda event, _: run.exited.__setitem__(event.process_name, event.returncode))),
        RegisterEventHandler(OnShutdown(on_shutdown=lambda event, _: run.shutdown_reasons.append(event.reason))),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)),
                                 launch_arguments=arguments.items()),
    ]))

    def stop() -> None:
        run.timed_out = True
        service.shutdown()

    timer = threading.Timer(LAUNCH_TIMEOUT_S, stop)
    timer.start()
    try:
        run.return_code = service.run()
    finally:
        timer.cancel()
    return run


def _params_file(tmp_path: Path, node: str, key: str, value: str) -> Path:
    """config/deployer.yaml with ``key: value`` in ``node``'s block."""
    lines = (Path(get_package_share_directory(PACKAGE)) / "config" / "deployer.yaml").read_text().splitlines()
    block = lines.index(f"/**/{node}:")
    line = next(i for i in range(block + 1, len(lines)) if lines[i].startswith(f"    {key}:"))
    assert not any(lines[i].startswith("/") for i in range(block + 1, line)), f"no {key} in {node}'s block"
    lines[line] = f"    {key}: {value}"
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_missing_params_file_is_an_error_and_no_node_starts(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "no-such-params.yaml"
    run = _launch(monkeypatch, params_file=str(missing), store_dir=str(tmp_path / "store"))
    assert not run.timed_out
    assert run.return_code != 0
    assert run.started == []
    assert any(f"params_file '{missing}' is not a file" in reason for reason in run.shutdown_reasons), \
        run.shutdown_reasons


@pytest.mark.parametrize("node, key, value", [
    ("perception_a", "warmup_runs", "0"),
    ("model_manager", "keep_versions", "-1"),
])
def test_the_graph_shuts_down_when_a_node_it_needs_exits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node: str,
                                                         key: str, value: str) -> None:
    params = _params_file(tmp_path, node, key, value)
    run = _launch(monkeypatch, params_file=str(params), store_dir=str(tmp_path / "store"))
    assert not run.timed_out, f"launch kept running after {node} exited: {run.exited}"
    assert any(reason.startswith(f"{node} exited with code 1") for reason in run.shutdown_reasons), \
        run.shutdown_reasons
    assert len(run.exited) == len(run.started) == 4, "every node the launch started has ended"
