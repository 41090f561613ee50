"""Deploying over real DDS: manager and two perception nodes in their own processes."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id, stop_all, wait_for
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import DeploymentStatus, InferenceResult
from robot_model_deployer.nodes.conversions import array_to_image
from robot_model_deployer.srv import DeployModel, GetStatus, Rollback
from robot_model_deployer.testing.models import (classifier_manifest, colour_classifier, colour_detector,
                                                  solid_image, write_bundle)

MANAGER = "/model_manager"


@dataclass
class Graph:
    client: RosTestClient
    processes: list[NodeProcess]
    results: list[tuple[float, InferenceResult]] = field(default_factory=list)
    statuses: list[DeploymentStatus] = field(default_factory=list)

    def deploy(self, path: Path | str, force: bool = False) -> DeployModel.Response:
        return self.client.call(DeployModel, f"{MANAGER}/deploy", DeployModel.Request(bundle_path=str(path), force=force))

    def results_since(self, start: float) -> list[InferenceResult]:
        return [r for t, r in list(self.results) if t >= start]


@pytest.fixture
def graph(tmp_path: Path, request: pytest.FixtureRequest):
    domain = next_domain_id()
    perception = {"image_qos": "reliable", "warmup_runs": 1}
    processes = [NodeProcess("perception_node", "perception_a", domain, tmp_path, perception),
                 NodeProcess("perception_node", "perception_b", domain, tmp_path, perception),
                 NodeProcess("manager_node", "model_manager", domain, tmp_path)]
    client = RosTestClient(domain)
    graph = Graph(client, processes)
    client.node.create_subscription(InferenceResult, "/results",
                                    lambda msg: graph.results.append((time.monotonic(), msg)), 50)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    client.node.create_subscription(DeploymentStatus, f"{MANAGER}/status", graph.statuses.append, latched)
    yield graph
    client.close()
    stop_all(processes)
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for process in processes:
            print(f"----- {process.name} -----\n{process.log()}")


class Camera:
    """Publishes one image of a chosen colour at a steady rate from the test process."""

    def __init__(self, graph: Graph, rate: float = 20.0) -> None:
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self._publisher = graph.client.node.create_publisher(Image, "/image", qos)
        self._clock = graph.client.node.get_clock()
        self.colour = "red"
        self.sent: dict[tuple[int, int], str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(1.0 / rate,), daemon=True)

    def __enter__(self) -> "Camera":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            msg = array_to_image(solid_image(self.colour, 64, 48), PixelFormat.RGB8)
            msg.header.stamp = self._clock.now().to_msg()
            self.sent[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = self.colour
            self._publisher.publish(msg)


def _bundle(tmp_path: Path, name: str, version: str = "1.0.0", model=None, **manifest_changes) -> Path:
    manifest = classifier_manifest(version=version)
    manifest.update(manifest_changes)
    return write_bundle(tmp_path / name, model if model is not None else colour_classifier(), manifest)


def _max_gap(times: list[float]) -> float:
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def test_deployed_model_answers_camera_frames_with_the_right_class(graph: Graph, tmp_path: Path) -> None:
    response = graph.deploy(_bundle(tmp_path, "v1"))
    assert response.accepted, response.reason
    assert (response.model.name, response.model.version) == ("colour_classifier", "1.0.0")

    with Camera(graph) as camera:
        for colour in ("red", "blue", "green"):
            camera.colour = colour
            start = time.monotonic()
            wait_for(lambda: any(camera.sent.get((r.header.stamp.sec, r.header.stamp.nanosec)) == colour
                                 for r in graph.results_since(start)), 20.0, f"a result for a {colour} frame")
            result = next(r for r in reversed(graph.results_since(start))
                          if camera.sent.get((r.header.stamp.sec, r.header.stamp.nanosec)) == colour)
            assert result.labels[0] == colour
            assert result.scores[0] > 0.9
            assert (result.model_name, result.model_version, result.task) == ("colour_classifier", "1.0.0",
                                                                             "classification")
            assert result.node_name in ("perception_a", "perception_b")

    status = graph.client.call(GetStatus, f"{MANAGER}/get_status", GetStatus.Request()).status
    assert status.active.version == "1.0.0" and status.live_node == result.node_name


def test_bad_bundles_are_rejected_while_results_keep_flowing(graph: Graph, tmp_path: Path) -> None:
    assert graph.deploy(_bundle(tmp_path, "good")).accepted
    not_a_bundle = tmp_path / "notes.txt"
    not_a_bundle.write_text("hello")
    bad = {
        "missing path": (tmp_path / "does-not-exist", "does not exist"),
        "not a bundle": (not_a_bundle, "not a bundle directory"),
        "wrong manifest field": (_bundle(tmp_path, "badfield", input={"width": "wide", "height": 32}),
                                 "input.width must be an integer"),
        "unknown task": (_bundle(tmp_path, "badtask", task="segmentation"), "task must be one of"),
        "not onnx": (_bundle(tmp_path, "notonnx", model=b"this is not a model"), "not a model ONNX Runtime can load"),
        "input mismatch": (_bundle(tmp_path, "mismatch", model=colour_classifier(size=16)), "axis 2 differs"),
        "wrong output layout": (_bundle(tmp_path, "detector-as-classifier", model=colour_detector(size=32)),
                                "scores 32 classes but the labels file"),
    }
    with Camera(graph):
        wait_for(lambda: len(graph.results) >= 5, 20.0, "results from the good model")
        start = time.monotonic()
        for case, (path, reason) in bad.items():
            response = graph.deploy(path)
            assert not response.accepted, case
            assert reason in response.reason, f"{case}: {response.reason}"
        time.sleep(0.5)
        during = graph.results_since(start)
        times = [t for t, _ in graph.results if t >= start]
    assert len(during) >= 10
    assert {(r.model_name, r.model_version) for r in during} == {("colour_classifier", "1.0.0")}
    assert _max_gap(times) < 1.0, "results stopped while bad bundles were rejected"
    wait_for(lambda: graph.statuses and graph.statuses[-1].stage == "failed", 5.0, "a failed status")
    assert graph.statuses[-1].active.version == "1.0.0"


def test_new_version_swaps_without_a_gap_and_rolls_back(graph: Graph, tmp_path: Path) -> None:
    assert graph.deploy(_bundle(tmp_path, "v1")).accepted
    with Camera(graph, rate=30.0):
        wait_for(lambda: len(graph.results) >= 5, 20.0, "results from v1")
        start = time.monotonic()
        response = graph.deploy(_bundle(tmp_path, "v2", version="2.0.0"))
        assert response.accepted, response.reason
        wait_for(lambda: any(r.model_version == "2.0.0" for r in graph.results_since(start)), 10.0, "v2 results")
        rollback = graph.client.call(Rollback, f"{MANAGER}/rollback", Rollback.Request(reason="test"))
        assert rollback.success, rollback.message
        assert rollback.active.version == "1.0.0"
        rolled = time.monotonic()
        wait_for(lambda: any(r.model_version == "1.0.0" for r in graph.results_since(rolled)), 10.0, "v1 again")
        time.sleep(0.3)
        times = [t for t, _ in graph.results if t >= start]
    versions = [r.model_version for r in graph.results_since(start)]
    assert versions[0] == "1.0.0" and "2.0.0" in versions and versions[-1] == "1.0.0"
    assert _max_gap(times) < 0.25, "results stopped during the swap or the rollback"
