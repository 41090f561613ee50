"""ROS messages to and from the core's types (images in, predictions out)."""
from __future__ import annotations

import math
import struct

import numpy as np
from sensor_msgs.msg import Image

from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.msg import InferenceResult
from robot_model_deployer.msg import ShadowReport as ShadowReportMsg
from robot_model_deployer.validation.shadow import ShadowOutcome, ShadowReport, ShadowVerdict


class UnsupportedImageError(ValueError):
    """The image encoding or geometry cannot be read."""


def image_to_array(msg: Image) -> tuple[np.ndarray, PixelFormat]:
    """A zero-copy HxWxC view of an rgb8/bgr8/mono8 image, honouring ``step`` padding."""
    return pixel_view(msg.data, 0, msg.width, msg.height, msg.encoding, msg.step, len(msg.data))


def pixel_view(buffer, offset: int, width: int, height: int, encoding: str, step: int,
               size: int) -> tuple[np.ndarray, PixelFormat]:
    """A zero-copy HxWxC view of the ``size`` image bytes at ``offset`` in ``buffer`` (an Image's fields).

    UnsupportedImageError names an encoding other than rgb8/bgr8/mono8, or a
    geometry the bytes do not hold.
    """
    try:
        pixel_format = PixelFormat(encoding.lower())
    except ValueError:
        raise UnsupportedImageError(
            f"image encoding '{encoding}' is not supported; publish rgb8, bgr8 or mono8"
        ) from None
    channels = pixel_format.channels
    row_bytes = width * channels
    if step < row_bytes or size < step * height or width == 0 or height == 0:
        raise UnsupportedImageError(
            f"image geometry is inconsistent: {width}x{height} {encoding}, step {step}, {size} data bytes"
        )
    rows = np.frombuffer(buffer, dtype=np.uint8, count=step * height, offset=offset).reshape(height, step)
    return rows[:, :row_bytes].reshape(height, width, channels), pixel_format


def array_to_image(array: np.ndarray, encoding: PixelFormat, frame_id: str = "camera") -> Image:
    """An Image message holding ``array`` (HxWx3 for rgb8/bgr8, HxW or HxWx1 for mono8)."""
    channels = encoding.channels
    fits = (array.ndim == 3 and array.shape[2] == channels) or (channels == 1 and array.ndim == 2)
    if not fits:
        expected = "HxW or HxWx1" if channels == 1 else f"HxWx{channels}"
        raise ValueError(f"encoding {encoding.value} needs an {expected} array, got shape {array.shape}")
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding.value
    msg.is_bigendian = 0
    msg.step = msg.width * channels
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


def result_to_prediction(msg: InferenceResult) -> Prediction:
    """The Prediction an InferenceResult carries (e.g. the live model's, for shadow comparison)."""
    return Prediction(
        class_ids=np.asarray(msg.class_ids, dtype=np.int32),
        scores=np.asarray(msg.scores, dtype=np.float32),
        labels=tuple(msg.labels),
        boxes=np.asarray(msg.boxes, dtype=np.float32).reshape(-1, 4),
        inference_ms=float(msg.inference_ms),
    )


def stamp_ns(stamp) -> int:
    """A builtin_interfaces/Time as integer nanoseconds (the key results are paired by)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


_NUMBER_FIELDS = ("watched_s", "agreement", "mean_score_drift", "candidate_latency_p50_ms",
                  "candidate_latency_p99_ms", "live_latency_p50_ms", "live_latency_p99_ms",
                  "reference_latency_p50_ms", "reference_latency_p99_ms", "candidate_mean_score", "live_mean_score",
                  "candidate_mean_boxes", "live_mean_boxes", "candidate_labelled_score", "live_labelled_score",
                  "candidate_live_set_score", "live_live_set_score")
_COUNT_FIELDS = ("frames_judged", "frames_paired", "candidate_frames", "live_frames", "candidate_errors",
                 "candidate_non_finite", "live_non_finite", "dropped_frames", "expired_candidate", "expired_live",
                 "reference_frames", "disagreements", "samples_saved", "labelled_images", "live_set_images")


def verdict_to_report_msg(verdict: ShadowVerdict, candidate_name: str, candidate_version: str) -> ShadowReportMsg:
    """Copy a shadow verdict and every number of its report into a ShadowReport message."""
    report = verdict.report
    msg = ShadowReportMsg(candidate_name=candidate_name, candidate_version=candidate_version,
                          task=report.task.value, outcome=verdict.outcome.value, reasons=list(verdict.reasons),
                          progress=float(verdict.progress), samples_dir=report.samples_dir)
    for name in _NUMBER_FIELDS:
        setattr(msg, name, float(getattr(report, name)))
    for name in _COUNT_FIELDS:
        setattr(msg, name, int(getattr(report, name)))
    msg.box_precision = float("nan") if report.box_precision is None else float(report.box_precision)
    msg.box_recall = float("nan") if report.box_recall is None else float(report.box_recall)
    return msg


def report_msg_to_verdict(msg: ShadowReportMsg) -> ShadowVerdict:
    """The shadow verdict a ShadowReport message carries (the manager's view of it)."""
    values = {name: float(getattr(msg, name)) for name in _NUMBER_FIELDS}
    values.update({name: int(getattr(msg, name)) for name in _COUNT_FIELDS})
    report = ShadowReport(task=Task(msg.task),
                          box_precision=None if math.isnan(msg.box_precision) else float(msg.box_precision),
                          box_recall=None if math.isnan(msg.box_recall) else float(msg.box_recall),
                          samples_dir=msg.samples_dir, **values)
    return ShadowVerdict(ShadowOutcome(msg.outcome), tuple(msg.reasons), float(msg.progress), report)


_STAMP_OFFSET, _STAMP_END = 4, 12  # a header's stamp in CDR: after the 4-byte encapsulation header


def serialized_header_stamp_ns(data: bytes) -> int:
    """Header stamp of a serialized message that starts with std_msgs/Header (e.g. an Image).

    Lets a raw subscription count camera frames without deserializing
    megabytes of pixels: CDR puts the stamp (int32 sec, uint32 nanosec)
    right after the 4-byte encapsulation header, whose second byte says
    the byte order.
    """
    if len(data) < _STAMP_END:
        raise ValueError(f"serialized message of {len(data)} bytes is too short to hold a header")
    sec, nanosec = struct.unpack_from(_stamp_format(data), data, _STAMP_OFFSET)
    return sec * 1_000_000_000 + nanosec


def write_serialized_header_stamp(data: bytearray, stamp: int) -> None:
    """Write ``stamp`` (ns) into a serialized message that starts with std_msgs/Header, in place."""
    struct.pack_into(_stamp_format(data), data, _STAMP_OFFSET, *divmod(stamp, 1_000_000_000))


def _stamp_format(data: bytes | bytearray) -> str:
    return ("<" if data[1] & 1 else ">") + "iI"
