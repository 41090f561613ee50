"""Demo camera: publishes real photos (or a video / image folder) as a camera would.

Frames are converted to messages once at start-up; publishing only stamps
them, so the camera itself costs almost nothing at 30 Hz.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robot_model_deployer.demo.frames import load_frames
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.nodes.conversions import array_to_image
from robot_model_deployer.nodes.parameters import ParameterSpec, ParameterValueError, declare_parameters
from robot_model_deployer.nodes.runner import run_node

PARAMETERS = (
    ParameterSpec("source", "skimage",
                  "Where frames come from: 'skimage' (photos bundled with scikit-image), a directory of "
                  "images, or a video file."),
    ParameterSpec("rate", 10.0, "Frames published per second.", minimum=0.1, maximum=1000.0),
    ParameterSpec("width", 640, "Frame width in pixels (frames are resized).", minimum=8, maximum=8192),
    ParameterSpec("height", 480, "Frame height in pixels.", minimum=8, maximum=8192),
    ParameterSpec("encoding", "rgb8", "Pixel encoding of the published images.", choices=("rgb8", "bgr8")),
    ParameterSpec("frames_per_image", 10, "Consecutive frames each still image is shown for.",
                  minimum=1, maximum=100000),
    ParameterSpec("frame_id", "camera", "frame_id written into every image header."),
    ParameterSpec("reliable", True, "Publish with reliable QoS (else best effort)."),
)


class DemoCameraNode(Node):
    """Publishes ``image`` at a fixed rate, cycling through the loaded frames."""

    def __init__(self, node_name: str = "demo_camera", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        settings = declare_parameters(self, PARAMETERS)
        encoding = PixelFormat(settings["encoding"])
        try:
            frames = load_frames(settings["source"], settings["width"], settings["height"])
        except ValueError as exc:
            raise ParameterValueError(f"parameter source: {exc}") from None
        self._messages = [array_to_image(frame if encoding is PixelFormat.RGB8 else frame[:, :, ::-1],
                                         encoding, settings["frame_id"]) for frame in frames]
        self._repeat = settings["frames_per_image"]
        self._count = 0
        self._encoding, self._frame_id = encoding, settings["frame_id"]
        self._override: list[Image] | None = None
        # Called with each published frame's stamp (ns): the demo's scenario counts frames sent.
        self.on_publish: Callable[[int], None] | None = None
        qos = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if settings["reliable"] else ReliabilityPolicy.BEST_EFFORT)
        self._publisher = self.create_publisher(Image, "image", qos)
        self.create_timer(1.0 / settings["rate"], self._publish)
        self.get_logger().info(f"publishing {len(self._messages)} frames from {settings['source']} "
                               f"at {settings['rate']:.1f} Hz, {settings['width']}x{settings['height']} {encoding.value}")

    def show(self, frames: Sequence[np.ndarray] | None) -> None:
        """Publish these RGB frames in turn from the next tick on (None: back to the source's frames)."""
        if frames is None:
            self._override = None
            return
        self._override = [array_to_image(frame if self._encoding is PixelFormat.RGB8 else frame[:, :, ::-1],
                                         self._encoding, self._frame_id) for frame in frames]

    def _publish(self) -> None:
        messages = self._override or self._messages
        msg = messages[(self._count // self._repeat) % len(messages)]
        msg.header.stamp = self.get_clock().now().to_msg()
        self._publisher.publish(msg)
        self._count += 1
        if self.on_publish is not None:
            self.on_publish(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)


def main(args: list[str] | None = None) -> None:
    run_node(DemoCameraNode, args, parameters=PARAMETERS)
