"""The demo's v3 and v4 built from a real model by adding ONNX nodes, and the MCAP they are recorded in."""
from __future__ import annotations

import importlib.util
from io import BytesIO
import tarfile
import time

import numpy as np
import onnxruntime as ort
import pytest
import rclpy
import yaml
from PIL import Image as PILImage
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.manifest import parse_manifest
from robot_model_deployer.bundle.signing import generate_keypair
from robot_model_deployer.demo.versions import (constant_class_model, dark_threshold, nan_when_dark_model,
                                                retrained_model, scenario_versions)
from robot_model_deployer.testing import models
from robot_model_deployer.testing.ros_graph import next_domain_id


def run(model, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    tensor = (image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    return session.run(None, {"images": tensor})[0]


def test_the_constant_class_model_answers_the_last_class_whatever_it_sees():
    broken = constant_class_model(models.colour_classifier(), classification=True)
    for colour in models.COLOUR_LABELS:
        assert int(np.argmax(run(broken, models.solid_image(colour, 32, 32)))) == 2


def test_the_nan_model_answers_like_the_real_one_until_the_image_is_darker_than_the_threshold():
    real = models.colour_classifier()
    broken = nan_when_dark_model(real, threshold=40.0 / 255)
    bright = models.solid_image("green", 32, 32)  # mean pixel 85
    np.testing.assert_array_equal(run(broken, bright), run(real, bright))
    dim = (bright * 0.3).astype(np.uint8)  # mean pixel about 25
    assert np.isnan(run(broken, dim)).all()
    assert np.isnan(run(broken, np.zeros_like(bright))).all()


def test_the_retrained_model_agrees_with_the_original_but_is_not_a_copy():
    real = models.colour_classifier()
    retrained = retrained_model(real)
    for colour in models.COLOUR_LABELS:
        image = models.solid_image(colour, 32, 32)
        assert np.argmax(run(retrained, image)) == np.argmax(run(real, image))
        assert not np.array_equal(run(retrained, image), run(real, image))


def test_the_dark_threshold_lies_between_the_darkest_camera_frame_and_a_black_one_after_preprocessing():
    spec = parse_manifest(yaml.safe_dump(models.classifier_manifest())).input  # scale 1/255, no mean or std
    frames = [models.solid_image("red", 64, 48), (models.solid_image("blue", 64, 48) * 0.5).astype(np.uint8)]
    assert dark_threshold(spec, frames) == pytest.approx(127 / 255 / 3 / 2, rel=1e-4)
    imagenet = parse_manifest(yaml.safe_dump({**models.classifier_manifest(), "input": {
        **models.classifier_manifest()["input"], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}})).input
    black = -np.mean(np.array([0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225]))
    assert black < dark_threshold(imagenet, frames) < 0
    with pytest.raises(ValueError, match="as dark as a covered lens"):
        dark_threshold(spec, [*frames, np.zeros((48, 64, 3), np.uint8)])


def test_the_four_versions_are_signed_bundles_of_the_source_with_the_demo_acceptance(tmp_path):
    png = BytesIO()
    PILImage.fromarray(models.solid_image("red", 32, 32)).save(png, format="PNG")
    source = models.write_bundle(tmp_path / "colour", models.colour_classifier(),
                                 {**models.classifier_manifest(), "validation": {"images": ["validation/red.png"]}},
                                 extra_files={"validation/red.png": png.getvalue()})
    (source / "files.json").write_text("{}")  # a stale list from the author's tools is listed anew
    keys = generate_keypair(out_dir=tmp_path / "keys", name="demo")
    versions = scenario_versions(source, tmp_path / "out", keys.private_key, [models.solid_image("red")],
                                 {"shadow_frames": 40})
    assert [(v.label, v.version, v.expected) for v in versions] == [
        ("v1", "1.0.0", "live"), ("v2", "1.1.0", "live"), ("v3", "1.2.0", "refused in shadow"),
        ("v4", "1.3.0", "rolled back in probation")]
    assert [v.darken_in_probation for v in versions] == [False, False, False, True]
    for version in versions:
        with tarfile.open(version.bundle) as tar:
            names = tar.getnames()
            manifest = yaml.safe_load(tar.extractfile("manifest.yaml").read())
        assert "signature.json" in names and "files.json" in names
        assert manifest["version"] == version.version and manifest["acceptance"]["shadow_frames"] == 40
        assert manifest["quantization"]["allowed"] is False
        assert ("validation" in manifest) is (version.label == "v2")  # the others skip the optimize stage


@pytest.mark.skipif(importlib.util.find_spec("mcap_ros2") is None, reason="the demo extra (mcap) is missing")
def test_recorded_raw_messages_read_back_as_ros2_cdr_with_their_schema(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    from robot_model_deployer.demo.recording import McapRecorder, check_recording, ros2msg_schema

    schema = ros2msg_schema("sensor_msgs/msg/Image")
    assert schema.startswith("# This message contains an uncompressed image")
    assert "\n" + "=" * 80 + "\nMSG: std_msgs/Header\n" in schema and "\nMSG: builtin_interfaces/Time\n" in schema

    context = Context()
    rclpy.init(context=context, domain_id=next_domain_id())
    try:
        node = Node("recorder_test", context=context, enable_rosout=False,
                    start_parameter_services=False)
        seen = []
        recorder = McapRecorder(node, tmp_path / "run.mcap", [("rmd_test_image", Image, QoSProfile(depth=10), 0.0)],
                                observer=lambda topic, raw, now: seen.append(topic))
        publisher = node.create_publisher(Image, "rmd_test_image", QoSProfile(depth=10))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        image = Image(height=2, width=3, encoding="rgb8", step=9, data=bytes(range(18)))
        image.header.frame_id = "camera"
        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            publisher.publish(image)
            executor.spin_once(timeout_sec=0.1)
        recorder.close()
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    assert check_recording(tmp_path / "run.mcap") == {"/rmd_test_image": len(seen)}
    with open(tmp_path / "run.mcap", "rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        _, channel, _, decoded = next(reader.iter_decoded_messages())
    assert (channel.message_encoding, decoded.header.frame_id, decoded.width, decoded.encoding) == (
        "cdr", "camera", 3, "rgb8")
    assert bytes(decoded.data) == bytes(range(18))
