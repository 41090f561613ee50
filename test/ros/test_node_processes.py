"""Each node executable as a ROS user starts it: its name in the graph, its topics, its start-up messages."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from builtin_interfaces.msg import Time as TimeMsg
from PIL import Image as PILImage
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image

from robot_model_deployer.nodes.clock_wait import FIRST_WARNING_S
from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, executable, next_domain_id, wait_for

# Python imports and ONNX Runtime make a node process take a few seconds to appear on a loaded machine.
START_TIMEOUT_S = 30.0
WAITING_FOR_CLOCK = "waiting for /clock"


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


def _node_names(client: RosTestClient) -> Counter[str]:
    return Counter(f"{namespace.rstrip('/')}/{name}" for name, namespace in client.node.get_node_names_and_namespaces())


def _subscribers(client: RosTestClient, topic: str) -> set[str]:
    return {info.node_name for info in client.node.get_subscriptions_info_by_topic(topic)}


def test_the_manager_and_its_probation_listener_each_keep_their_own_name_under_a_global_node_remap(
        tmp_path: Path, processes: list[NodeProcess], client) -> None:
    domain = next_domain_id()
    # NodeProcess passes `--ros-args -r __node:=robot_manager`, as launch does for name=...
    manager = NodeProcess("manager_node", "robot_manager", domain, tmp_path,
                          {"store_dir": str(tmp_path / "store"), "use_sim_time": True},
                          remappings={"image": "/front_camera/image_raw", "results": "/perception/results"})
    processes.append(manager)
    observer = client(domain)
    expected = {"/robot_manager", "/robot_manager_probation"}
    wait_for(lambda: expected <= set(_node_names(observer)), START_TIMEOUT_S, f"nodes {expected}")
    names = _node_names(observer)
    assert {name: names[name] for name in expected} == {"/robot_manager": 1, "/robot_manager_probation": 1}, names
    # What the listener takes from the global arguments: the topic remaps and use_sim_time.
    wait_for(lambda: "robot_manager_probation" in _subscribers(observer, "/front_camera/image_raw"), 10.0,
             "the listener on the remapped camera topic")
    # Each endpoint is discovered on its own: wait for each (a loaded machine sees them seconds apart).
    wait_for(lambda: "robot_manager_probation" in _subscribers(observer, "/perception/results"), 10.0,
             "the listener on the remapped results topic")
    wait_for(lambda: "robot_manager_probation" in _subscribers(observer, "/clock"), 10.0,
             "the listener on /clock (it lost use_sim_time)")
    assert not _subscribers(observer, "/image") and not _subscribers(observer, "/results")
    assert "already registered" not in manager.log(), manager.log()  # rosout: two nodes of one name


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


@pytest.mark.parametrize("exe, parameter, value", [
    ("shadow_node", "max_rate", "fast"),
    ("perception_node", "warmup_runs", "0"),
    ("perception_node", "image_qos", "lossy"),
    ("perception_node", "publish_vision_msgs", "maybe"),
    ("manager_node", "trust_dir", "/no/such/keys"),
    ("manager_node", "store_dir", "/dev/null/store"),
    ("manager_node", "optimize_target", "no_such_robot"),
    ("manager_node", "perception_nodes", "[perception_a]"),
    ("demo_camera_node", "source", "/no/such/video.mp4"),
])
def test_a_bad_parameter_ends_the_node_with_one_line_naming_it(tmp_path: Path, exe: str, parameter: str,
                                                              value: str) -> None:
    command = [executable(exe), "--ros-args", "-p", f"{parameter}:={value}"]
    if exe == "manager_node" and parameter != "store_dir":
        command += ["-p", f"store_dir:={tmp_path / 'store'}"]
    env = dict(os.environ, ROS_DOMAIN_ID=str(next_domain_id()), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{exe}: parameter {parameter}"), lines[0]
    assert "Traceback" not in done.stdout + done.stderr


class ClockPublisher:
    """Publishes /clock from the test process, as a simulator would."""

    def __init__(self, client: RosTestClient, start_s: float = 100.0) -> None:
        self._publisher = client.node.create_publisher(Clock, "/clock", 10)
        self._start_s, self._began = start_s, time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            ns = int((self._start_s + time.monotonic() - self._began) * 1e9)
            self._publisher.publish(Clock(clock=TimeMsg(sec=ns // 10**9, nanosec=ns % 10**9)))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_node_on_sim_time_says_it_waits_for_clock_until_time_comes(tmp_path: Path, processes: list[NodeProcess],
                                                                      client) -> None:
    without, with_clock = next_domain_id(), next_domain_id()
    observer = client(with_clock)
    clock = ClockPublisher(observer)
    try:
        waiting = NodeProcess("perception_node", "waiting", without, tmp_path, {"use_sim_time": True})
        ticking = NodeProcess("perception_node", "ticking", with_clock, tmp_path, {"use_sim_time": True})
        processes += [waiting, ticking]
        wait_for(lambda: "/ticking" in _node_names(observer), START_TIMEOUT_S, "the node with a clock to start")
        ticking_up = time.monotonic()
        wait_for(lambda: WAITING_FOR_CLOCK in waiting.log(), START_TIMEOUT_S, "the warning about /clock")
        # The clocked node has been up for longer than it would wait before it warns.
        wait_for(lambda: time.monotonic() > ticking_up + FIRST_WARNING_S + 2.0, 30.0, "the warning's time to pass")
    finally:
        clock.close()
    assert WAITING_FOR_CLOCK not in ticking.log(), ticking.log()
    warning = next(line for line in waiting.log().splitlines() if WAITING_FOR_CLOCK in line)
    assert "[WARN]" in warning and "use_sim_time" in warning, warning
    assert waiting.log().count(WAITING_FOR_CLOCK) == 1, "warned more than once within its first 10 s"


@dataclass
class ColourPerception:
    """A perception node process serving the colour classifier, configured, with an observer on its topics."""

    remote: Any
    publisher: Any
    results: list
    errors: list


def _colour_perception(tmp_path: Path, processes: list[NodeProcess], client, **parameters: Any) -> ColourPerception:
    from rclpy.callback_groups import ReentrantCallbackGroup

    from robot_model_deployer.msg import InferenceError, InferenceResult
    from robot_model_deployer.nodes.lifecycle_client import LifecycleTransition, RemoteLifecycleNode
    from robot_model_deployer.testing import models

    bundle = models.write_bundle(tmp_path / "bundle", models.colour_classifier(), models.classifier_manifest())
    domain = next_domain_id()
    observer = client(domain)
    processes.append(NodeProcess("perception_node", "perception", domain, tmp_path,
                                 {"model_dir": str(bundle), "image_qos": "reliable", **parameters}))
    remote = RemoteLifecycleNode(observer.node, "/perception", ReentrantCallbackGroup(), timeout=START_TIMEOUT_S)
    assert remote.transition(LifecycleTransition.CONFIGURE)
    node = ColourPerception(remote, None, [], [])
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    observer.node.create_subscription(InferenceError, "/inference_errors", node.errors.append, reliable)
    observer.node.create_subscription(InferenceResult, "/results", node.results.append, 10)
    node.publisher = observer.node.create_publisher(Image, "/image", reliable)
    wait_for(lambda: node.publisher.get_subscription_count() > 0, START_TIMEOUT_S, "the node's image subscription")
    return node


def _stamped(colour: str, second: int) -> Image:
    from robot_model_deployer.inference.preprocess import PixelFormat
    from robot_model_deployer.nodes.conversions import array_to_image
    from robot_model_deployer.testing import models

    msg = array_to_image(models.solid_image(colour), PixelFormat.RGB8)
    msg.header.stamp = TimeMsg(sec=second)
    return msg


def test_unreadable_frames_are_each_one_inference_error_and_the_node_serves_the_next(
        tmp_path: Path, processes: list[NodeProcess], client) -> None:
    from rclpy.serialization import serialize_message

    from robot_model_deployer.nodes.lifecycle_client import LifecycleTransition

    node = _colour_perception(tmp_path, processes, client)
    assert node.remote.transition(LifecycleTransition.ACTIVATE)
    rgba = _stamped("green", 1)
    rgba.encoding = "rgba8"
    short = _stamped("green", 2)
    short.height *= 2  # claims twice the rows it carries
    truncated = serialize_message(_stamped("green", 3))[:40]
    for bad in (rgba, short, truncated):
        node.publisher.publish(bad)
    errors, results = node.errors, node.results
    wait_for(lambda: len(errors) >= 3, START_TIMEOUT_S, "an InferenceError for each unreadable frame")
    reasons = {error.header.stamp.sec: error.reason for error in errors}
    assert "image encoding 'rgba8' is not supported; publish rgb8" in reasons[1], reasons
    assert "image geometry is inconsistent: 64x96 rgb8" in reasons[2], reasons
    assert "truncated" in reasons[3], reasons
    assert [error.errors for error in errors] == [1, 2, 3]
    node.publisher.publish(_stamped("green", 4))
    wait_for(lambda: any(result.header.stamp.sec == 4 for result in results), START_TIMEOUT_S,
             "the result of the good frame after the bad ones")
    answer = next(result for result in results if result.header.stamp.sec == 4)
    assert answer.labels[0] == "green" and answer.header.frame_id == "camera"
    assert not [result for result in results if result.header.stamp.sec in (1, 2, 3)]


def test_an_activated_standby_answers_the_last_frame_it_heard_when_it_is_fresh(
        tmp_path: Path, processes: list[NodeProcess], client) -> None:
    from robot_model_deployer.nodes.lifecycle_client import LifecycleTransition

    node = _colour_perception(tmp_path, processes, client, catch_up_max_age_s=1.5)
    results = node.results
    node.publisher.publish(_stamped("blue", 1))  # heard while inactive, then left to age
    time.sleep(3.0)
    assert node.remote.transition(LifecycleTransition.ACTIVATE)
    time.sleep(1.0)
    assert results == [], "a frame older than catch_up_max_age_s was answered on activation"

    assert node.remote.transition(LifecycleTransition.DEACTIVATE)
    node.publisher.publish(_stamped("blue", 2))
    time.sleep(0.05)  # delivered, and fresh for the 1.5 s the activation may take on a loaded machine
    assert node.remote.transition(LifecycleTransition.ACTIVATE)
    wait_for(lambda: len(results) >= 1, START_TIMEOUT_S, "the answer to the frame heard just before activation")
    time.sleep(0.5)
    assert [(r.header.stamp.sec, r.labels[0]) for r in results] == [(2, "blue")], "answered once, on activation"
