"""ROS messages to and from the core's types (images in, predictions out)."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult

_CHANNELS = {PixelFormat.RGB8: 3, PixelFormat.BGR8: 3, PixelFormat.MONO8: 1}


class UnsupportedImageError(ValueError):
    """The image encoding or geometry cannot be read."""


def image_to_array(msg: Image) -> tuple[np.ndarray, PixelFormat]:
    """A zero-copy HxWxC view of an rgb8/bgr8/mono8 image, honouring ``step`` padding."""
    try:
        pixel_format = PixelFormat(msg.encoding.lower())
    except ValueError:
        raise UnsupportedImageError(
            f"image encoding '{msg.encoding}' is not supported; publish rgb8, bgr8 or mono8"
        ) from None
    channels = _CHANNELS[pixel_format]
    row_bytes = msg.width * channels
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height or msg.width == 0 or msg.height == 0:
        raise UnsupportedImageError(
            f"image geometry is inconsistent: {msg.width}x{msg.height} {msg.encoding}, step {msg.step}, "
            f"{len(msg.data)} data bytes"
        )
    buffer = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    rows = buffer.reshape(msg.height, msg.step)[:, :row_bytes]
    return rows.reshape(msg.height, msg.width, channels), pixel_format


def array_to_image(array: np.ndarray, encoding: PixelFormat, frame_id: str = "camera") -> Image:
    """An Image message holding ``array`` (HxWx3 for rgb8/bgr8, HxW for mono8)."""
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding.value
    msg.is_bigendian = 0
    msg.step = msg.width * _CHANNELS[encoding]
    msg.data = np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return msg


def prediction_to_result(prediction: Prediction, header, model_name: str, model_version: str,
                         task: str, node_name: str) -> InferenceResult:
    """Fill an InferenceResult (flat arrays) from a Prediction."""
    msg = InferenceResult()
    msg.header = header
    msg.model_name = model_name
    msg.model_version = model_version
    msg.task = task
    msg.node_name = node_name
    msg.class_ids = prediction.class_ids.astype(np.int32)
    msg.labels = list(prediction.labels)
    msg.scores = prediction.scores.astype(np.float32)
    msg.boxes = prediction.boxes.astype(np.float32).reshape(-1)
    msg.inference_ms = float(prediction.inference_ms)
    return msg
