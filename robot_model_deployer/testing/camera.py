"""A bench camera that publishes like a camera driver: frames serialized once, each stamp written into the bytes."""
from __future__ import annotations

from typing import Sequence

from robot_model_deployer.nodes.conversions import write_serialized_header_stamp


class SerializedCamera:
    """Frames as CDR bytes; ``frame`` writes a stamp into a copy of one (no per-frame rclpy conversion).

    A camera driver in C++ publishes from its own buffer; an rclpy camera
    that fills an Image message per frame adds the message's Python-to-C
    conversion to every latency measured after its stamp.
    """

    def __init__(self, messages: Sequence) -> None:
        from rclpy.serialization import serialize_message
        self._frames = [bytearray(serialize_message(msg)) for msg in messages]

    def frame(self, index: int, stamp_ns: int) -> bytes:
        """Frame ``index`` (cycling) with header stamp ``stamp_ns``, ready for ``Publisher.publish``."""
        data = self._frames[index % len(self._frames)]
        write_serialized_header_stamp(data, stamp_ns)
        return bytes(data)
