"""Image messages to arrays and back, predictions to InferenceResult messages (no rclpy.init)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.nodes.conversions import (
    UnsupportedImageError, array_to_image, image_to_array, prediction_to_result, report_msg_to_verdict,
    verdict_to_report_msg,
)
from robot_model_deployer.validation.shadow import ShadowOutcome, ShadowReport, ShadowVerdict


def image_msg(width: int, height: int, encoding: str, step: int, data: bytes) -> Image:
    msg = Image()
    msg.width, msg.height, msg.encoding, msg.step = width, height, encoding, step
    msg.data = data
    return msg


def padded(rows: np.ndarray, step: int) -> bytes:
    """Rows of an image as bytes with each row padded to ``step`` bytes with 0xEE."""
    height = rows.shape[0]
    flat = rows.reshape(height, -1)
    buffer = np.full((height, step), 0xEE, np.uint8)
    buffer[:, :flat.shape[1]] = flat
    return buffer.tobytes()


# image_to_array -------------------------------------------------------------------

def test_rgb8_without_padding() -> None:
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    array, pixel_format = image_to_array(image_msg(3, 2, "rgb8", 9, pixels.tobytes()))
    assert pixel_format is PixelFormat.RGB8
    np.testing.assert_array_equal(array, pixels)


def test_padded_step_is_skipped() -> None:
    pixels = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    array, _ = image_to_array(image_msg(5, 3, "rgb8", 20, padded(pixels, 20)))  # 15 bytes + 5 padding
    assert array.shape == (3, 5, 3)
    np.testing.assert_array_equal(array, pixels)
    assert not (array == 0xEE).any()


def test_extra_trailing_data_is_ignored() -> None:
    pixels = np.full((2, 2, 3), 7, np.uint8)
    array, _ = image_to_array(image_msg(2, 2, "bgr8", 6, pixels.tobytes() + b"\xff" * 10))
    np.testing.assert_array_equal(array, pixels)


def test_bgr8_is_returned_as_stored_with_its_format() -> None:
    pixels = np.zeros((1, 2, 3), np.uint8)
    pixels[..., 0] = 255  # blue in bgr8
    array, pixel_format = image_to_array(image_msg(2, 1, "bgr8", 6, pixels.tobytes()))
    assert pixel_format is PixelFormat.BGR8
    assert array[0, 0].tolist() == [255, 0, 0]


def test_mono8_has_one_channel_and_honours_padding() -> None:
    pixels = np.arange(4 * 3, dtype=np.uint8).reshape(4, 3)
    array, pixel_format = image_to_array(image_msg(3, 4, "mono8", 8, padded(pixels, 8)))
    assert pixel_format is PixelFormat.MONO8
    assert array.shape == (4, 3, 1)
    np.testing.assert_array_equal(array[:, :, 0], pixels)


def test_encoding_is_case_insensitive() -> None:
    _, pixel_format = image_to_array(image_msg(1, 1, "RGB8", 3, b"\x01\x02\x03"))
    assert pixel_format is PixelFormat.RGB8


@pytest.mark.parametrize("encoding", ["rgba8", "bgra8", "mono16", "16UC1", "yuv422", ""])
def test_unsupported_encoding_names_it_and_the_supported_ones(encoding: str) -> None:
    with pytest.raises(UnsupportedImageError) as info:
        image_to_array(image_msg(1, 1, encoding, 8, bytes(8)))
    assert str(info.value) == f"image encoding '{encoding}' is not supported; publish rgb8, bgr8 or mono8"


@pytest.mark.parametrize("width, height, encoding, step, size", [
    (4, 2, "rgb8", 11, 24),      # step shorter than a row
    (4, 2, "rgb8", 12, 23),      # data shorter than step * height
    (4, 2, "mono8", 3, 8),       # mono step shorter than a row
    (4, 2, "rgb8", 16, 24),      # padded step but data not padded
    (0, 2, "rgb8", 0, 0),        # no columns
    (4, 0, "rgb8", 12, 0),       # no rows
])
def test_inconsistent_geometry_is_refused_with_the_numbers(width, height, encoding, step, size) -> None:
    with pytest.raises(UnsupportedImageError) as info:
        image_to_array(image_msg(width, height, encoding, step, bytes(size)))
    message = str(info.value)
    assert message.startswith("image geometry is inconsistent: ")
    assert f"{width}x{height} {encoding}, step {step}, {size} data bytes" in message


def test_unsupported_image_error_is_a_value_error() -> None:
    assert issubclass(UnsupportedImageError, ValueError)


# array_to_image -------------------------------------------------------------------

@pytest.mark.parametrize("encoding, shape", [(PixelFormat.RGB8, (5, 7, 3)), (PixelFormat.BGR8, (1, 1, 3)),
                                             (PixelFormat.MONO8, (6, 4))])
def test_array_to_image_round_trip(encoding: PixelFormat, shape) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    msg = array_to_image(array, encoding, frame_id="cam_left")
    assert (msg.height, msg.width, msg.encoding) == (shape[0], shape[1], encoding.value)
    assert msg.step == shape[1] * (1 if encoding is PixelFormat.MONO8 else 3)
    assert msg.header.frame_id == "cam_left" and msg.is_bigendian == 0
    back, pixel_format = image_to_array(msg)
    assert pixel_format is encoding
    np.testing.assert_array_equal(back.reshape(shape), array)


def test_array_to_image_accepts_non_contiguous_arrays() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    bgr_view = rgb[:, :, ::-1]
    back, _ = image_to_array(array_to_image(bgr_view, PixelFormat.BGR8))
    np.testing.assert_array_equal(back, bgr_view)


@pytest.mark.parametrize("encoding, shape", [
    (PixelFormat.RGB8, (4, 6)), (PixelFormat.BGR8, (4, 6, 4)), (PixelFormat.RGB8, (4, 6, 1)),
    (PixelFormat.MONO8, (4, 6, 3)), (PixelFormat.MONO8, (24,)), (PixelFormat.RGB8, (1, 4, 6, 3)),
])
def test_array_to_image_refuses_a_shape_that_does_not_fit_the_encoding(encoding: PixelFormat, shape) -> None:
    expected = "HxW or HxWx1" if encoding is PixelFormat.MONO8 else "HxWx3"
    with pytest.raises(ValueError, match=rf"^encoding {encoding.value} needs an {expected} array, "
                                         rf"got shape \({', '.join(map(str, shape))},?\)$"):
        array_to_image(np.zeros(shape, np.uint8), encoding)


def test_array_to_image_accepts_mono8_with_one_channel_axis() -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4, 1)
    msg = array_to_image(array, PixelFormat.MONO8)
    assert (msg.height, msg.width, msg.step) == (3, 4, 4)
    np.testing.assert_array_equal(image_to_array(msg)[0], array)


def test_array_to_image_default_frame_id() -> None:
    assert array_to_image(np.zeros((1, 1, 3), np.uint8), PixelFormat.RGB8).header.frame_id == "camera"


# prediction_to_result ------------------------------------------------------------

def header(frame_id: str = "camera", sec: int = 12, nanosec: int = 345) -> Header:
    h = Header()
    h.frame_id = frame_id
    h.stamp.sec, h.stamp.nanosec = sec, nanosec
    return h


def test_detection_prediction_fills_flat_arrays() -> None:
    prediction = Prediction(
        class_ids=np.array([2, 0], np.int64), scores=np.array([0.9, 0.5], np.float64),
        labels=("blue", "red"), boxes=np.array([[1, 2, 3, 4], [5.5, 6, 7, 8]], np.float64), inference_ms=3.25)
    msg = prediction_to_result(prediction, header(), "det", "1.2.0", "detection", "perception_a")
    assert isinstance(msg, InferenceResult)
    assert (msg.model_name, msg.model_version, msg.task, msg.node_name) == ("det", "1.2.0", "detection",
                                                                             "perception_a")
    assert msg.header.frame_id == "camera"
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (12, 345)
    assert list(msg.class_ids) == [2, 0]
    assert list(msg.labels) == ["blue", "red"]
    np.testing.assert_allclose(msg.scores, [0.9, 0.5], rtol=1e-6)
    np.testing.assert_allclose(msg.boxes, [1, 2, 3, 4, 5.5, 6, 7, 8])
    assert msg.inference_ms == pytest.approx(3.25)


def test_classification_prediction_has_empty_boxes() -> None:
    prediction = Prediction(np.array([1, 0, 2], np.int32), np.array([0.7, 0.2, 0.1], np.float32),
                            ("green", "red", "blue"))
    msg = prediction_to_result(prediction, header(), "cls", "1.0.0", "classification", "perception_b")
    assert list(msg.class_ids) == [1, 0, 2]
    assert list(msg.labels) == ["green", "red", "blue"]
    assert len(msg.boxes) == 0
    assert len(msg.scores) == 3


def test_empty_detection_result() -> None:
    empty = Prediction(np.zeros(0, np.int32), np.zeros(0, np.float32), ())
    msg = prediction_to_result(empty, header(), "det", "1.0.0", "detection", "perception_a")
    assert len(msg.class_ids) == len(msg.scores) == len(msg.boxes) == len(msg.labels) == 0


# ShadowReport messages ---------------------------------------------------------------


@pytest.mark.parametrize("task", list(Task))
def test_every_shadow_report_number_survives_the_message(task: Task) -> None:
    values = {}
    for index, field in enumerate(f for f in dataclasses.fields(ShadowReport) if f.name != "task"):
        values[field.name] = {"int": index + 1, "str": f"/store/samples/{index}"}.get(field.type, index + 0.5)
    if task is Task.CLASSIFICATION:
        values["box_precision"] = values["box_recall"] = None
    verdict = ShadowVerdict(ShadowOutcome.FAIL, ("too slow", "disagrees"), 1.0, ShadowReport(task=task, **values))

    msg = verdict_to_report_msg(verdict, "net", "2.0.0")

    assert (msg.candidate_name, msg.candidate_version) == ("net", "2.0.0")
    assert report_msg_to_verdict(msg) == verdict
