"""A serialized sensor_msgs/Image read in place: the pixels are a numpy view of the received bytes.

rclpy turns a received Image into Python objects by copying its ``data``
into an ``array.array``; for a 640x480 rgb8 frame that conversion is most
of what the node costs beyond inference (bench/bench_perception_latency.py).
The perception and shadow nodes subscribe with ``raw=True`` and read the
CDR themselves: header, geometry and encoding are parsed, the pixels are
``np.frombuffer`` over the same bytes. An encapsulation this reader does
not know falls back to rclpy's own deserialization, so any sender works.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.nodes.conversions import UnsupportedImageError, image_to_array, pixel_view

# CDR and XCDR2 plain encapsulations (big-endian, little-endian). Image has no 8-byte member, so the
# two lay its fields out alike; the first byte pair of the 4-byte encapsulation header names it.
_PLAIN_ENCAPSULATIONS = {0x0000: ">", 0x0001: "<", 0x0006: ">", 0x0007: "<"}
_ENCAPSULATION_BYTES = 4


@dataclass(frozen=True)
class ReceivedImage:
    """One camera frame: its header, and its pixels as an HxWxC view (no copy)."""

    header: Header
    pixels: np.ndarray
    pixel_format: PixelFormat


class _Reader:
    """Aligned CDR reads; offsets count from the end of the encapsulation header, as CDR aligns them."""

    def __init__(self, data: bytes, order: str) -> None:
        self.data, self.order, self.offset = data, order, 0

    def _take(self, size: int, align: int) -> int:
        self.offset += -self.offset % align
        start = _ENCAPSULATION_BYTES + self.offset
        if start + size > len(self.data):
            raise UnsupportedImageError(f"serialized image is truncated: {len(self.data)} bytes")
        self.offset += size
        return start

    def uint32(self) -> int:
        return struct.unpack_from(self.order + "I", self.data, self._take(4, 4))[0]

    def int32(self) -> int:
        return struct.unpack_from(self.order + "i", self.data, self._take(4, 4))[0]

    def uint8(self) -> int:
        return self.data[self._take(1, 1)]

    def string(self) -> str:
        length = self.uint32()  # counts the terminating NUL
        start = self._take(length, 1)
        return bytes(self.data[start:start + max(0, length - 1)]).decode("utf-8", errors="replace")

    def byte_sequence(self) -> tuple[int, int]:
        """(start, length) of a uint8[] in ``data``."""
        length = self.uint32()
        return self._take(length, 1), length


def read_image(data: bytes) -> ReceivedImage:
    """Header and a zero-copy pixel view of a serialized Image (UnsupportedImageError when unreadable)."""
    if len(data) < _ENCAPSULATION_BYTES:
        raise UnsupportedImageError(f"serialized image of {len(data)} bytes is too short")
    order = _PLAIN_ENCAPSULATIONS.get(int.from_bytes(data[:2], "big"))
    if order is None:  # another encapsulation: let rclpy read it
        try:
            msg = deserialize_message(data, Image)
        except Exception as exc:  # rclpy raises what the type support says; a bad frame is one line, not a crash
            raise UnsupportedImageError(f"cannot read the serialized image: {exc}") from None
        pixels, pixel_format = image_to_array(msg)
        return ReceivedImage(msg.header, pixels, pixel_format)
    reader = _Reader(data, order)
    header = Header()
    header.stamp.sec, header.stamp.nanosec = reader.int32(), reader.uint32()
    header.frame_id = reader.string()
    height, width = reader.uint32(), reader.uint32()
    encoding = reader.string()
    reader.uint8()  # is_bigendian: the pixel formats read here are bytes, whatever the order
    step = reader.uint32()
    start, length = reader.byte_sequence()
    pixels, pixel_format = pixel_view(data, start, width, height, encoding, step, length)
    return ReceivedImage(header, pixels, pixel_format)
