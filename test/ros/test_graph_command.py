"""The graph command and the node executables as a newcomer meets them: --help, one command, Ctrl-C."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from rcl_interfaces.srv import GetParameters
from rclpy.qos import QoSProfile

from robot_model_deployer.bundle.pack import create_bundle
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.nodes.manager_node import PARAMETERS as MANAGER
from robot_model_deployer.testing import models
from robot_model_deployer.testing.ros_graph import RosTestClient, executable, next_domain_id, wait_for

START_TIMEOUT_S = 90.0


@pytest.mark.parametrize("name", ["manager_node", "perception_node", "shadow_node", "demo_camera_node"])
def test_each_node_executable_answers_help_with_its_parameters_and_starts_nothing(name):
    done = subprocess.run([executable(name), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {name} [--ros-args")
    assert "parameters (set with -p NAME:=VALUE" in done.stdout
    if name == "manager_node":
        assert all(f"\n  {spec.name} (" in done.stdout for spec in MANAGER)


def test_a_missing_params_file_stops_the_graph_before_any_node_starts(tmp_path):
    done = subprocess.run([executable("graph"), "--params-file", str(tmp_path / "nope.yaml")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"graph: --params-file {tmp_path / 'nope.yaml'} is not a file: pass a "
                                                "YAML with one ros__parameters block per node, or leave it out for "
                                                "config/deployer.yaml"]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_one_command_starts_the_launch_files_graph_serves_a_model_and_ctrl_c_stops_every_node(tmp_path):
    bundle = tmp_path / "colour.tar"
    create_bundle(source=models.write_bundle(tmp_path / "colour", models.colour_classifier(),
                                             models.classifier_manifest()), output=bundle)
    domain = next_domain_id()
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
    log = tmp_path / "graph.log"
    with open(log, "w") as out:
        graph = subprocess.Popen([executable("graph"), "--demo-camera", "--allow-unsigned", "--initial-bundle",
                                  str(bundle), "--store-dir", str(tmp_path / "store")], env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    client = RosTestClient(domain)
    results: list[InferenceResult] = []
    seen = threading.Event()
    client.node.create_subscription(InferenceResult, "/results", lambda m: (results.append(m), seen.set()),
                                    QoSProfile(depth=10))
    try:
        wait_for(seen.is_set, START_TIMEOUT_S, f"a result from the graph's live model:\n{log.read_text()}")
        assert results[0].model_name == "colour_classifier"
        nodes = _children(graph.pid)
        assert len(nodes) == 5, log.read_text()
        text = log.read_text()
        ready = [line for line in text.splitlines() if "[model_manager]: ready: services" in line]
        assert len(ready) == 1, text
        assert "action /model_manager/deploy_bundle" in ready[0] and "unsigned bundles accepted" in ready[0]
        # The shipped parameters file reached the nodes: its optimize target, not the built-in default ''.
        answer = client.call(GetParameters, "/model_manager/get_parameters",
                             GetParameters.Request(names=["optimize_target", "store_dir"]), query=True)
        assert [value.string_value for value in answer.values] == ["x86_cpu", str(tmp_path / "store")]
        assert "fastdds_large_data.xml" in text
        started = time.monotonic()
        graph.send_signal(signal.SIGINT)
        assert graph.wait(30) == 0, log.read_text()
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in nodes), 5.0, "every node to exit")
        assert time.monotonic() - started < 30
    finally:
        client.close()
        if graph.poll() is None:
            os.killpg(graph.pid, signal.SIGKILL)
