"""Label images, instance masks and keypoints to and from ROS messages.

Segmentation goes out the way ROS users read it: a ``sensor_msgs/Image`` of
class ids, mono8 up to 255 classes and mono16 above (or when the bundle has
no labels to count). Instance masks and keypoints go out in our own
messages (msg/InstanceMasks, msg/Keypoints). The shadow node reads the same
messages back into Predictions to compare the live model with the candidate.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from robot_model_deployer.inference.dense import semantic_prediction
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.msg import InstanceMasks, Keypoints

MONO8_MAX_CLASSES = 255


def label_encoding(classes: int) -> str:
    """mono8 for at most MONO8_MAX_CLASSES classes, else (or when unknown: 0) mono16."""
    return "mono8" if 0 < classes <= MONO8_MAX_CLASSES else "mono16"


def label_image_to_msg(label_image: np.ndarray, header, classes: int) -> Image:
    """A class-id label image as a mono8 or mono16 (little-endian) Image with the camera frame's header."""
    encoding = label_encoding(classes)
    dtype = np.dtype("<u2") if encoding == "mono16" else np.dtype(np.uint8)
    msg = Image(header=header, height=int(label_image.shape[0]), width=int(label_image.shape[1]),
                encoding=encoding, is_bigendian=0)
    msg.step = msg.width * dtype.itemsize
    msg.data = np.ascontiguousarray(label_image, dtype=dtype).tobytes()
    return msg


def msg_to_label_image(msg: Image) -> np.ndarray:
    """The (H, W) uint16 class ids of a mono8 / mono16 label Image (honours step and byte order)."""
    if msg.encoding not in ("mono8", "mono16"):
        raise ValueError(f"a label image is mono8 or mono16, got encoding '{msg.encoding}'")
    dtype = np.dtype(np.uint8) if msg.encoding == "mono8" else np.dtype(">u2" if msg.is_bigendian else "<u2")
    row_bytes = msg.width * dtype.itemsize
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ValueError(f"label image geometry is inconsistent: {msg.width}x{msg.height} {msg.encoding}, "
                         f"step {msg.step}, {len(msg.data)} data bytes")
    rows = np.frombuffer(bytes(msg.data), np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    return np.ascontiguousarray(rows[:, :row_bytes]).view(dtype).reshape(msg.height, msg.width).astype(np.uint16)


def semantic_from_label_msg(msg: Image, labels: tuple[str, ...] = ()) -> Prediction:
    """The Prediction a label Image stands for (classes present, with their pixel shares)."""
    return semantic_prediction(msg_to_label_image(msg), labels)


def _mask_window(box: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The box rounded out to whole pixels and clipped to the image: x0, y0, x1, y1 (exclusive)."""
    x0, y0 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x1, y1 = min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)
    return x0, y0, max(x1, x0), max(y1, y0)


def instances_to_msg(prediction: Prediction, header, model_name: str, model_version: str,
                     node_name: str) -> InstanceMasks:
    """Boxes, classes and each mask cut to its box (mono8, 255 inside)."""
    _, height, width = prediction.masks.shape
    msg = InstanceMasks(header=header, model_name=model_name, model_version=model_version, node_name=node_name,
                        labels=list(prediction.labels), image_width=width, image_height=height)
    msg.class_ids = prediction.class_ids.astype(np.int32)
    msg.scores = prediction.scores.astype(np.float32)
    msg.boxes = prediction.boxes.astype(np.float32).reshape(-1)
    masks, xs, ys = [], [], []
    for box, mask in zip(prediction.boxes, prediction.masks):
        x0, y0, x1, y1 = _mask_window(box, width, height)
        crop = np.where(mask[y0:y1, x0:x1], 255, 0).astype(np.uint8)
        masks.append(Image(header=header, height=y1 - y0, width=x1 - x0, encoding="mono8", is_bigendian=0,
                           step=x1 - x0, data=crop.tobytes()))
        xs.append(x0)
        ys.append(y0)
    msg.masks, msg.mask_x, msg.mask_y = masks, xs, ys
    return msg


def msg_to_instances(msg: InstanceMasks) -> Prediction:
    """The Prediction an InstanceMasks message carries, masks back at the image's size."""
    count = len(msg.scores)
    if not (len(msg.masks) == len(msg.mask_x) == len(msg.mask_y) == len(msg.class_ids) == count
            and len(msg.boxes) == 4 * count):
        raise ValueError(f"InstanceMasks has {count} scores but {len(msg.class_ids)} classes, {len(msg.boxes)} box "
                         f"values and {len(msg.masks)} masks")
    masks = np.zeros((count, msg.image_height, msg.image_width), bool)
    for index, (crop, x0, y0) in enumerate(zip(msg.masks, msg.mask_x, msg.mask_y)):
        if crop.width and crop.height:
            pixels = msg_to_label_image(crop)
            masks[index, y0:y0 + crop.height, x0:x0 + crop.width] = pixels > 0
    return Prediction(np.asarray(msg.class_ids, np.int32), np.asarray(msg.scores, np.float32), tuple(msg.labels),
                      np.asarray(msg.boxes, np.float32).reshape(-1, 4), masks=masks)


def keypoints_to_msg(prediction: Prediction, header, model_name: str, model_version: str,
                     node_name: str) -> Keypoints:
    """Boxes, classes and (x, y, visibility) per keypoint, flat."""
    msg = Keypoints(header=header, model_name=model_name, model_version=model_version, node_name=node_name,
                    labels=list(prediction.labels), keypoints_per_object=int(prediction.keypoints.shape[1]))
    msg.class_ids = prediction.class_ids.astype(np.int32)
    msg.scores = prediction.scores.astype(np.float32)
    msg.boxes = prediction.boxes.astype(np.float32).reshape(-1)
    msg.keypoints = prediction.keypoints.astype(np.float32).reshape(-1)
    return msg


def msg_to_keypoints(msg: Keypoints) -> Prediction:
    """The Prediction a Keypoints message carries."""
    count, per = len(msg.scores), int(msg.keypoints_per_object)
    if len(msg.keypoints) != count * per * 3 or len(msg.boxes) != 4 * count:
        raise ValueError(f"Keypoints has {count} objects of {per} keypoints but {len(msg.keypoints)} keypoint "
                         f"values and {len(msg.boxes)} box values")
    return Prediction(np.asarray(msg.class_ids, np.int32), np.asarray(msg.scores, np.float32), tuple(msg.labels),
                      np.asarray(msg.boxes, np.float32).reshape(-1, 4),
                      keypoints=np.asarray(msg.keypoints, np.float32).reshape(count, per, 3))
