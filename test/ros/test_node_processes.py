"""Each node executable as a ROS user starts it: its name in the graph, its topics, its start-up messages."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id, wait_for

# Python imports and ONNX Runtime make a node process take a few seconds to appear on a loaded machine.
START_TIMEOUT_S = 30.0


@pytest.fixture
def processes(request: pytest.FixtureRequest):
    started: list[NodeProcess] = []
    yield started
    for process in started:
        process.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for process in started:
            print(f"----- {process.name} -----\n{process.log()}")


@pytest.fixture
def client():
    """Makes a RosTestClient on a given domain; closes every one made after the test."""
    made: list[RosTestClient] = []

    def make(domain: int) -> RosTestClient:
        made.append(RosTestClient(domain))
        return made[-1]

    yield make
    for each in made:
        each.close()


def _png(path: Path, colour: tuple[int, int, int]) -> None:
    PILImage.fromarray(np.full((60, 80, 3), colour, np.uint8)).save(path)


def test_the_demo_camera_executable_publishes_frames(tmp_path: Path, processes: list[NodeProcess], client) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    _png(frames / "a.png", (255, 0, 0))
    _png(frames / "b.png", (0, 0, 255))
    domain = next_domain_id()
    observer = client(domain)
    images: list[Image] = []
    observer.node.create_subscription(Image, "/image", images.append,
                                      QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
    processes.append(NodeProcess("demo_camera_node", "demo_camera", domain, tmp_path,
                                 {"source": str(frames), "width": 32, "height": 24, "rate": 20.0,
                                  "frames_per_image": 1}))
    wait_for(lambda: len(images) >= 4, START_TIMEOUT_S, "four images from the demo camera")
    assert {(m.width, m.height, m.encoding, m.header.frame_id) for m in images} == {(32, 24, "rgb8", "camera")}
    assert {bytes(m.data[:3]) for m in images} == {bytes([255, 0, 0]), bytes([0, 0, 255])}
