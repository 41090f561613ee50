"""vision_msgs from a real perception node process, over DDS, as a ROS tool would receive them.

With vision_msgs on the path (the real package, or the test stand-in that
scripts/test.sh builds: test/vision_msgs_standin), the node publishes
Detection2DArray or Classification for every frame beside InferenceResult,
and LabelInfo latched while active. Without it, or with the parameters off,
it serves InferenceResult alone.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.nodes.conversions import array_to_image, stamp_ns
from robot_model_deployer.nodes.vision_conversions import vision_msgs_missing
from robot_model_deployer.testing.models import (
    classifier_manifest, colour_classifier, colour_detector, detector_manifest, solid_image, write_bundle,
)
from robot_model_deployer.testing.ros_graph import NodeProcess, RosTestClient, next_domain_id, wait_for
from robot_model_deployer.testing.vision_msgs_env import UPSTREAM_TYPE_HASHES, environment_without_vision_msgs

START_TIMEOUT_S = 30.0  # Python imports and ONNX Runtime on a loaded machine
MESSAGE_TIMEOUT_S = 20.0
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
FRUIT = ("cherry", "leaf", "sky")  # the classifier's labels, unlike the detector's red/green/blue
NOT_USABLE = "vision_msgs is not usable"
needs_vision_msgs = pytest.mark.skipif(vision_msgs_missing() is not None,
                                       reason="vision_msgs is not importable: scripts/test.sh builds a test stand-in")


@pytest.fixture
def graph(request: pytest.FixtureRequest):
    """A domain of its own, an observer client in it, and the node processes a test starts there."""
    domain = next_domain_id()
    client = RosTestClient(domain)
    started: list[NodeProcess] = []
    yield domain, client, started
    camera = getattr(request.node, "camera", None)
    if camera is not None:
        camera.close()
    client.close()
    for process in started:
        process.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        for process in started:
            print(f"----- {process.name} -----\n{process.log()}")


class Camera:
    """Publishes one image again and again with a new stamp, from the test process."""

    def __init__(self, client: RosTestClient, image: np.ndarray, rate: float = 20.0) -> None:
        self._publisher = client.node.create_publisher(Image, "/image", QoSProfile(depth=5,
                                                       reliability=ReliabilityPolicy.RELIABLE))
        self._clock = client.node.get_clock()
        self.image = image
        self._period = 1.0 / rate
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            msg = array_to_image(self.image, PixelFormat.RGB8, frame_id="front_camera")
            msg.header.stamp = self._clock.now().to_msg()
            self._publisher.publish(msg)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def perception(domain: int, tmp_path: Path, name: str, bundle: Path, **extra) -> NodeProcess:
    parameters = {"model_dir": str(bundle), "image_qos": "reliable", "warmup_runs": 1, **extra.pop("parameters", {})}
    return NodeProcess("perception_node", name, domain, tmp_path, parameters, **extra)


def transition(client: RosTestClient, node: str, transition_id: int) -> None:
    request = ChangeState.Request()
    request.transition.id = transition_id
    assert client.call(ChangeState, f"/{node}/change_state", request, timeout=START_TIMEOUT_S).success, transition_id


def set_model_dir(client: RosTestClient, node: str, bundle: Path) -> None:
    value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(bundle))
    response = client.call(SetParameters, f"/{node}/set_parameters",
                           SetParameters.Request(parameters=[Parameter(name="model_dir", value=value)]))
    assert response.results[0].successful, response.results[0].reason


def publishers(client: RosTestClient, topic: str) -> list:
    return list(client.node.get_publishers_info_by_topic(topic))


def paired(results: list[InferenceResult], others: list) -> tuple[InferenceResult, object]:
    """The first InferenceResult and vision message of one frame (same stamp)."""
    by_stamp = {stamp_ns(r.header.stamp): r for r in list(results)}
    for other in list(others):
        result = by_stamp.get(stamp_ns(other.header.stamp))
        if result is not None:
            return result, other
    raise AssertionError("no frame has both an InferenceResult and a vision_msgs message")


def has_pair(results: list, others: list) -> bool:
    return bool({stamp_ns(r.header.stamp) for r in list(results)} & {stamp_ns(o.header.stamp) for o in list(others)})


def hypotheses(message) -> list[tuple[str, float]]:
    if hasattr(message, "detections"):
        return [(d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) for d in message.detections]
    return [(r.class_id, r.score) for r in message.results]


@needs_vision_msgs
def test_a_detector_then_a_classifier_publish_vision_msgs_and_latch_their_label_info(
        tmp_path: Path, graph, request: pytest.FixtureRequest) -> None:
    from vision_msgs.msg import Classification, Detection2DArray, LabelInfo
    domain, client, started = graph
    detector = write_bundle(tmp_path / "detector", colour_detector(), detector_manifest())
    classifier = write_bundle(tmp_path / "classifier", colour_classifier(), classifier_manifest(), labels=FRUIT)
    results: list[InferenceResult] = []
    detections: list[Detection2DArray] = []
    classifications: list[Classification] = []
    client.node.create_subscription(InferenceResult, "/results", results.append, RELIABLE)
    client.node.create_subscription(Detection2DArray, "/detections", detections.append, RELIABLE)
    client.node.create_subscription(Classification, "/classification", classifications.append, RELIABLE)
    started.append(perception(domain, tmp_path, "perception", detector))
    transition(client, "perception", Transition.TRANSITION_CONFIGURE)
    assert not publishers(client, "/label_info"), "LabelInfo before activation (a standby would latch it)"
    transition(client, "perception", Transition.TRANSITION_ACTIVATE)
    image = np.zeros((64, 64, 3), np.uint8)
    image[32:48, 16:32, 0] = 255  # one red cell of the colour detector: box x 16..32, y 32..48
    request.node.camera = camera = Camera(client, image)

    wait_for(lambda: has_pair(results, detections), MESSAGE_TIMEOUT_S, "a frame's InferenceResult and Detection2DArray")
    result, message = paired(results, detections)
    assert (message.header.frame_id, stamp_ns(message.header.stamp)) == ("front_camera", stamp_ns(result.header.stamp))
    assert list(result.labels) == ["red"] and len(message.detections) == 1
    detection = message.detections[0]
    assert stamp_ns(detection.header.stamp) == stamp_ns(result.header.stamp)
    centre = detection.bbox.center.position
    assert (centre.x, centre.y, detection.bbox.size_x, detection.bbox.size_y) == pytest.approx((24, 40, 16, 16))
    assert hypotheses(message) == [(str(result.class_ids[0]), pytest.approx(result.scores[0]))]
    (writer,) = publishers(client, "/detections")
    assert str(writer.topic_type_hash) == UPSTREAM_TYPE_HASHES["Detection2DArray"]

    # A subscriber that comes late still gets the class map.
    labels: list[LabelInfo] = []
    client.node.create_subscription(LabelInfo, "/label_info", labels.append, LATCHED)
    wait_for(lambda: labels, MESSAGE_TIMEOUT_S, "the latched LabelInfo")
    assert [(c.class_id, c.class_name) for c in labels[0].class_map] == [(0, "red"), (1, "green"), (2, "blue")]
    assert labels[0].threshold == pytest.approx(0.3)
    (writer,) = publishers(client, "/label_info")
    assert str(writer.topic_type_hash) == UPSTREAM_TYPE_HASHES["LabelInfo"]

    # Deactivated, the node withdraws its LabelInfo; the next model latches its own.
    transition(client, "perception", Transition.TRANSITION_DEACTIVATE)
    wait_for(lambda: not publishers(client, "/label_info"), MESSAGE_TIMEOUT_S, "LabelInfo withdrawn")
    transition(client, "perception", Transition.TRANSITION_CLEANUP)
    set_model_dir(client, "perception", classifier)
    transition(client, "perception", Transition.TRANSITION_CONFIGURE)
    transition(client, "perception", Transition.TRANSITION_ACTIVATE)
    camera.image = solid_image("red")
    wait_for(lambda: has_pair(results, classifications), MESSAGE_TIMEOUT_S,
             "a frame's InferenceResult and Classification")
    result, message = paired(results, classifications)
    assert result.labels[0] == "cherry"
    assert hypotheses(message) == [(str(i), pytest.approx(s)) for i, s in zip(result.class_ids, result.scores)]
    (writer,) = publishers(client, "/classification")
    assert str(writer.topic_type_hash) == UPSTREAM_TYPE_HASHES["Classification"]
    late: list[LabelInfo] = []
    client.node.create_subscription(LabelInfo, "/label_info", late.append, LATCHED)
    wait_for(lambda: late, MESSAGE_TIMEOUT_S, "the classifier's latched LabelInfo")
    seen = len(results)
    wait_for(lambda: len(results) >= seen + 5, MESSAGE_TIMEOUT_S, "five more frames")
    assert [[c.class_name for c in m.class_map] for m in late] == [list(FRUIT)], "only the live model's classes"
    assert late[0].threshold == 0.0


def test_without_vision_msgs_or_with_it_turned_off_the_node_serves_inference_result_alone(
        tmp_path: Path, graph, request: pytest.FixtureRequest) -> None:
    environment = environment_without_vision_msgs()
    if environment is None:
        pytest.skip("vision_msgs shares its prefix with ROS itself and cannot be left out")
    domain, client, started = graph
    detector = write_bundle(tmp_path / "detector", colour_detector(), detector_manifest())
    results: list[InferenceResult] = []
    client.node.create_subscription(InferenceResult, "/results", results.append, RELIABLE)
    without = perception(domain, tmp_path, "without_vision_msgs", detector, extra_env=environment)
    turned_off = perception(domain, tmp_path, "turned_off", detector,
                            parameters={"publish_vision_msgs": False, "publish_label_info": False})
    started += [without, turned_off]
    for name in ("without_vision_msgs", "turned_off"):
        transition(client, name, Transition.TRANSITION_CONFIGURE)
        transition(client, name, Transition.TRANSITION_ACTIVATE)
    request.node.camera = Camera(client, solid_image("green", 64, 64))
    wait_for(lambda: {r.node_name for r in list(results)} == {"without_vision_msgs", "turned_off"},
             MESSAGE_TIMEOUT_S, "InferenceResult from both nodes")
    assert {tuple(r.labels) for r in list(results)} == {("green",) * 16}  # every cell of a solid green frame
    for topic in ("/detections", "/classification", "/label_info"):
        assert not publishers(client, topic), topic
    lines = [line for line in without.log().splitlines() if NOT_USABLE in line]
    assert len(lines) == 1 and "No module named 'vision_msgs'" in lines[0], without.log()
    assert "[INFO]" in lines[0] and "InferenceResult only" in lines[0]
    assert NOT_USABLE not in turned_off.log()
