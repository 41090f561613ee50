"""Segmentation, instance masks and keypoints deployed and published over real DDS, and judged in shadow.

Manager, two perception nodes and the shadow node in their own processes (as
in test_deploy_multiprocess). The tiny models of testing/dense_models answer
known label images, masks and keypoints for the scene the camera publishes;
a second version goes through the shadow, which reads the live model's task
topic and judges by mask IoU or OKS.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.filelist import build_file_list
from robot_model_deployer.bundle.pack import write_bundle_tar
from robot_model_deployer.bundle.signing import load_private_key, sign_file_list
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult, InstanceMasks, Keypoints
from robot_model_deployer.nodes.conversions import array_to_image
from robot_model_deployer.nodes.dense_conversions import msg_to_instances, msg_to_label_image
from robot_model_deployer.testing import dense_models
from robot_model_deployer.testing.models import COLOUR_LABELS, write_bundle
from robot_model_deployer.testing.ros_graph import wait_for
from test_deploy_multiprocess import FAST_ACCEPTANCE, Graph, _graph

TIMEOUT_S = 30.0


@pytest.fixture
def graph(tmp_path: Path, request: pytest.FixtureRequest):
    yield from _graph(tmp_path, request)


def signed_bundle(graph: Graph, name: str, version: str, model, manifest: dict,
                  labels: tuple[str, ...] = COLOUR_LABELS) -> Path:
    body = {**manifest, "version": version, "acceptance": dict(FAST_ACCEPTANCE)}
    source = write_bundle(graph.work / name, model, body, labels)
    file_list = build_file_list(source).to_bytes()
    output = graph.work / f"{name}.tar"
    write_bundle_tar(output=output, root=source, file_list_bytes=file_list,
                     signature=sign_file_list(file_list, load_private_key(graph.keys / "signing.key")))
    return output


class SceneCamera:
    """Publishes one fixed RGB scene at 30 Hz from the test process."""

    def __init__(self, graph: Graph, scene: np.ndarray) -> None:
        self._publisher = graph.client.node.create_publisher(Image, "/image",
                                                             QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self._clock = graph.client.node.get_clock()
        self._scene = scene
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SceneCamera":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1 / 30):
            msg = array_to_image(self._scene, PixelFormat.RGB8)
            msg.header.stamp = self._clock.now().to_msg()
            self._publisher.publish(msg)


def received(graph: Graph, message_type, topic: str) -> list:
    messages: list = []
    graph.client.node.create_subscription(message_type, topic, messages.append, 20)
    return messages


def verdict(graph: Graph, version: str):
    return [r for r in graph.shadow_reports if r.candidate_version == version and r.outcome != "pending"][-1]


def after(messages: list, start_count: int, timeout: float = TIMEOUT_S):
    wait_for(lambda: len(messages) > start_count, timeout, "a message on the task topic")
    return messages[-1]


def test_segmentation_label_image_is_published_and_a_wrong_version_is_refused_on_mask_iou(graph: Graph) -> None:
    labels = received(graph, Image, "/segmentation")
    scene = np.zeros((64, 64, 3), np.uint8)
    scene[:, :, 1] = 255
    scene[16:40, 8:32] = (255, 0, 0)
    expected = np.ones((64, 64), np.uint16)
    expected[16:40, 8:32] = 0
    manifest = dense_models.segmenter_manifest(size=32)
    response = graph.deploy(signed_bundle(graph, "v1", "1.0.0", dense_models.colour_segmenter(32), manifest))
    assert response.accepted, response.reason
    with SceneCamera(graph, scene):
        msg = after(labels, 0)
        assert (msg.encoding, msg.width, msg.height) == ("mono8", 64, 64)
        assert (msg_to_label_image(msg) == expected).all()
        results = [r for _, r in graph.results if r.task == "segmentation"]
        assert results and tuple(results[-1].labels) == ("green", "red")

        unsure = signed_bundle(graph, "v2", "2.0.0", dense_models.colour_segmenter(32, scale=1.0), manifest)
        response = graph.deploy(unsure)
        assert response.accepted, response.reason
        report = verdict(graph, "2.0.0")
        assert (report.task, report.outcome, report.agreement) == ("segmentation", "pass", 1.0)
        assert report.frames_paired >= FAST_ACCEPTANCE["shadow_frames"] // 2

        wrong = signed_bundle(graph, "v3", "3.0.0", dense_models.colour_segmenter(32, label_shift=1), manifest)
        response = graph.deploy(wrong)
        assert not response.accepted
        report = verdict(graph, "3.0.0")
        assert report.outcome == "fail" and report.agreement == 0.0
        assert any("mean mask IoU against the live model is 0.000" in reason for reason in report.reasons), \
            report.reasons
        start = len(labels)
        assert (msg_to_label_image(after(labels, start)) == expected).all()  # the live version still serves


def test_instance_masks_are_published_and_judged_in_shadow(graph: Graph) -> None:
    instances = received(graph, InstanceMasks, "/instances")
    scene = np.zeros((64, 64, 3), np.uint8)
    scene[16:32, 16:24] = (255, 0, 0)
    manifest = dense_models.instance_manifest(size=64)
    model = dense_models.colour_instance_segmenter(64)
    response = graph.deploy(signed_bundle(graph, "v1", "1.0.0", model, manifest))
    assert response.accepted, response.reason
    with SceneCamera(graph, scene):
        msg = after(instances, 0)
        assert (tuple(msg.labels), list(msg.boxes)) == (("red",), [16.0, 16.0, 32.0, 32.0])
        assert (msg.masks[0].width, msg.masks[0].height, msg.masks[0].encoding) == (16, 16, "mono8")
        mask = msg_to_instances(msg).masks[0]
        assert mask[17:31, 17:23].all() and not mask[:, 25:].any()

        response = graph.deploy(signed_bundle(graph, "v2", "2.0.0", model, manifest))
        assert response.accepted, response.reason
        report = verdict(graph, "2.0.0")
        assert (report.task, report.outcome, report.agreement) == ("instance_segmentation", "pass", 1.0)
        assert report.box_precision == 1.0 and report.frames_paired > 0


def test_keypoints_are_published_and_judged_in_shadow(graph: Graph) -> None:
    keypoints = received(graph, Keypoints, "/keypoints")
    scene = np.zeros((64, 64, 3), np.uint8)
    scene[0:16, 32:48] = 255
    manifest = dense_models.pose_manifest(size=64)
    model = dense_models.corner_pose_model(64)
    response = graph.deploy(signed_bundle(graph, "v1", "1.0.0", model, manifest, dense_models.POSE_LABELS))
    assert response.accepted, response.reason
    with SceneCamera(graph, scene):
        msg = after(keypoints, 0)
        assert list(msg.boxes) == [32.0, 0.0, 48.0, 16.0] and msg.keypoints_per_object == 2
        assert list(msg.keypoints) == [32.0, 0.0, 1.0, 40.0, 8.0, 1.0]
        results = [r for _, r in graph.results if r.task == "pose"]
        assert results and list(results[-1].boxes) == [32.0, 0.0, 48.0, 16.0]

        started = time.monotonic()
        response = graph.deploy(signed_bundle(graph, "v2", "2.0.0", model, manifest, dense_models.POSE_LABELS))
        assert response.accepted, response.reason
        report = verdict(graph, "2.0.0")
        assert (report.task, report.outcome, report.agreement) == ("pose", "pass", 1.0)
        assert time.monotonic() - started < 60.0
