"""Serialized Image frames read in place (nodes/image_cdr.py) agree with rclpy's own reading (no rclpy.init)."""
from __future__ import annotations

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from robot_model_deployer.nodes.conversions import UnsupportedImageError, image_to_array, stamp_ns
from robot_model_deployer.nodes.image_cdr import read_image

from test_conversions import image_msg, padded


def serialized(width: int, height: int, encoding: str, step: int, data: bytes, frame_id: str = "camera",
               stamp: tuple[int, int] = (1_700_000_000, 123_456_789)) -> bytes:
    msg = image_msg(width, height, encoding, step, data)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return serialize_message(msg)


@pytest.mark.parametrize("frame_id", ["", "c", "ca", "cam", "came", "camera_optical_frame", "kamera_ü"])
@pytest.mark.parametrize("encoding, channels, step_pad", [("rgb8", 3, 0), ("bgr8", 3, 5), ("mono8", 1, 3),
                                                          ("RGB8", 3, 0)])
def test_frames_read_in_place_match_rclpys_reading(frame_id: str, encoding: str, channels: int, step_pad: int) -> None:
    rows = np.random.default_rng(7).integers(0, 256, (5, 7, channels), dtype=np.uint8)
    step = 7 * channels + step_pad
    data = serialized(7, 5, encoding, step, padded(rows, step), frame_id=frame_id, stamp=(-3, 999_999_999))
    image = read_image(data)
    expected, expected_format = image_to_array(image_msg(7, 5, encoding, step, padded(rows, step)))
    assert image.pixel_format is expected_format
    np.testing.assert_array_equal(image.pixels, expected)
    assert image.header.frame_id == frame_id
    assert (image.header.stamp.sec, image.header.stamp.nanosec) == (-3, 999_999_999)
    assert stamp_ns(image.header.stamp) == -3 * 10**9 + 999_999_999


def test_pixels_are_a_view_of_the_received_bytes() -> None:
    data = serialized(4, 2, "rgb8", 12, bytes(range(24)))
    pixels = read_image(data).pixels
    assert not pixels.flags.owndata and not pixels.flags.writeable  # np.frombuffer over the bytes, not a copy
    assert pixels.base is not None


@pytest.mark.parametrize("encoding", ["rgba8", "mono16", "16UC1", ""])
def test_unsupported_encoding_says_what_to_publish(encoding: str) -> None:
    with pytest.raises(UnsupportedImageError, match=f"image encoding '{encoding}' is not supported; publish rgb8"):
        read_image(serialized(1, 1, encoding, 8, bytes(8)))


@pytest.mark.parametrize("width, height, encoding, step, size", [
    (4, 2, "rgb8", 11, 24), (4, 2, "rgb8", 12, 23), (4, 2, "mono8", 3, 8), (4, 2, "rgb8", 16, 24),
    (0, 2, "rgb8", 0, 0), (4, 0, "rgb8", 12, 0),
])
def test_inconsistent_geometry_is_refused_with_the_numbers(width, height, encoding, step, size) -> None:
    with pytest.raises(UnsupportedImageError,
                       match=f"image geometry is inconsistent: {width}x{height} {encoding}, step {step}, {size} data"):
        read_image(serialized(width, height, encoding, step, bytes(size)))


def test_every_truncation_is_an_unsupported_image() -> None:
    data = serialized(4, 2, "rgb8", 12, bytes(24))
    for cut in range(len(data)):
        with pytest.raises(UnsupportedImageError):
            read_image(data[:cut])


def test_a_length_field_larger_than_the_frame_is_refused() -> None:
    data = bytearray(serialized(4, 2, "rgb8", 12, bytes(24), frame_id="cam"))
    data[12:16] = (2**31).to_bytes(4, "little")  # frame_id's length, right after the stamp
    with pytest.raises(UnsupportedImageError, match="truncated"):
        read_image(bytes(data))


@pytest.mark.parametrize("encapsulation", [b"\x00\x02", b"\x00\x03", b"\xff\xff"])
def test_an_unknown_encapsulation_goes_to_rclpy_and_its_failure_is_one_clear_error(encapsulation: bytes) -> None:
    data = encapsulation + b"\x00\x00" + bytes(range(40))
    with pytest.raises(UnsupportedImageError):
        read_image(data)


def test_random_bytes_never_escape_as_another_error() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        size = int(rng.integers(0, 64))
        data = b"\x00\x01\x00\x00" + rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        try:
            read_image(data)
        except UnsupportedImageError:
            pass


@pytest.mark.parametrize("stamp", [0, 1, 1_700_000_000_123_456_789, -1])
def test_a_stamp_written_into_the_bytes_is_the_one_every_reader_sees(stamp: int) -> None:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from robot_model_deployer.nodes.conversions import serialized_header_stamp_ns, stamp_ns, write_serialized_header_stamp

    data = bytearray(serialized(4, 2, "rgb8", 12, bytes(24)))
    write_serialized_header_stamp(data, stamp)
    assert serialized_header_stamp_ns(bytes(data)) == stamp
    assert stamp_ns(read_image(bytes(data)).header.stamp) == stamp
    assert stamp_ns(deserialize_message(bytes(data), Image).header.stamp) == stamp


def test_a_message_too_short_for_a_header_has_no_stamp() -> None:
    from robot_model_deployer.nodes.conversions import serialized_header_stamp_ns

    with pytest.raises(ValueError, match="11 bytes is too short to hold a header"):
        serialized_header_stamp_ns(bytes(11))
