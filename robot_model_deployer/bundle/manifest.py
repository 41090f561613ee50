"""The bundle manifest (``manifest.yaml``): a typed, validated schema.

Every field is checked when the manifest is read, so a bad bundle is refused
with a message naming the field before any model is loaded. See
docs/bundle-format.md for the format in prose.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Mapping

from robot_model_deployer.bundle.fields import FieldReader
from robot_model_deployer.bundle.semver import SemVer
from robot_model_deployer.bundle.strict_yaml import StrictYamlError, load_strict_yaml

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.yaml"
MODEL_NAME_RULE = "1-64 characters of a-z, 0-9, '_', '.', '-' starting with a letter or digit"
# Used with fullmatch: '$' would also match before a trailing newline.
_MODEL_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class ManifestError(ValueError):
    """The manifest is missing, unreadable or has a field with a bad value."""


def is_model_name(text: str) -> bool:
    """Whether ``text`` follows MODEL_NAME_RULE; the store also uses a model's name as a directory name."""
    return _MODEL_NAME_RE.fullmatch(text) is not None


class Task(str, Enum):
    CLASSIFICATION = "classification"
    DETECTION = "detection"


class ResizeMode(str, Enum):
    STRETCH = "stretch"
    LETTERBOX = "letterbox"
    CENTER_CROP = "center_crop"


class ColorOrder(str, Enum):
    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"


class Layout(str, Enum):
    NCHW = "nchw"
    NHWC = "nhwc"


class TensorType(str, Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    UINT8 = "uint8"


class DetectionFormat(str, Enum):
    """How a detector's raw output is laid out.

    ``yolo``: one tensor [1, N, 5 + C] of (cx, cy, w, h, objectness, class
    scores...) in input pixels (YOLOv5-style, already decoded).
    ``yolox``: the same layout but grid-relative, decoded here with
    ``strides`` (YOLOX exported without its decode step).
    ``boxes_scores``: two tensors, boxes [1, N, 4] as x1, y1, x2, y2 in input
    pixels and scores [1, N, C].
    ``yolov8``: Ultralytics YOLOv8 / YOLO11 detection, one tensor [1, 4 + C, N]
    of (cx, cy, w, h, class scores...) in input pixels, no objectness, scores
    already sigmoided.
    ``end2end``: NMS-free [1, K, 6] as x1, y1, x2, y2 in input pixels, score,
    class (YOLOv10, YOLO26 default exports); no NMS here.
    ``rtdetr``: RT-DETR / D-FINE official exports: inputs ``images`` and
    ``orig_target_sizes`` ([w, h], fed by the engine), outputs ``labels``
    [1, Q], ``boxes`` [1, Q, 4] as x1, y1, x2, y2 in the pixels of that size,
    ``scores`` [1, Q]; no NMS.
    ``detr``: one tensor [1, Q, 4 + C] of normalized (cx, cy, w, h, class
    scores...) (Ultralytics RT-DETR export); no NMS.
    ``tf_ssd``: TF Object Detection API / SSD: ``detection_boxes`` [1, N, 4]
    normalized ymin, xmin, ymax, xmax, ``detection_scores`` [1, N],
    ``detection_classes`` [1, N], ``num_detections`` [1]; NMS is in the graph.
    """

    YOLO = "yolo"
    YOLOX = "yolox"
    BOXES_SCORES = "boxes_scores"
    YOLOV8 = "yolov8"
    END2END = "end2end"
    RTDETR = "rtdetr"
    DETR = "detr"
    TF_SSD = "tf_ssd"


@dataclass(frozen=True)
class InputSpec:
    """How a camera image becomes the model's input tensor.

    Pixels are scaled by ``scale`` (after colour conversion), then
    normalised per channel: ``(x * scale - mean) / std``. The mean and std
    defaults are one neutral value per channel (read from a manifest, a
    gray input gets one of each; built in code, it must pass its own).
    """

    MEAN_PER_CHANNEL: ClassVar[float] = 0.0
    STD_PER_CHANNEL: ClassVar[float] = 1.0

    width: int
    height: int
    name: str = ""
    resize: ResizeMode = ResizeMode.STRETCH
    color_order: ColorOrder = ColorOrder.RGB
    layout: Layout = Layout.NCHW
    dtype: TensorType = TensorType.FLOAT32
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (MEAN_PER_CHANNEL,) * 3
    std: tuple[float, ...] = (STD_PER_CHANNEL,) * 3
    letterbox_fill: int = 114

    def __post_init__(self) -> None:
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.channels:
                raise ValueError(
                    f"InputSpec {name} has {len(values)} value(s) but color_order {self.color_order.value} has "
                    f"{self.channels} channel(s); pass {name} with one value per channel"
                )

    @staticmethod
    def channels_for(color_order: ColorOrder) -> int:
        return 1 if color_order is ColorOrder.GRAY else 3

    @property
    def channels(self) -> int:
        return self.channels_for(self.color_order)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        if self.layout is Layout.NCHW:
            return (1, self.channels, self.height, self.width)
        return (1, self.height, self.width, self.channels)


@dataclass(frozen=True)
class ClassificationSpec:
    """Turning class scores into a top-k list."""

    top_k: int = 5
    softmax: bool = False
    output_name: str = ""


@dataclass(frozen=True)
class DetectionSpec:
    """Turning raw detector outputs into boxes (see DetectionFormat)."""

    format: DetectionFormat = DetectionFormat.YOLO
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    strides: tuple[int, ...] = (8, 16, 32)
    class_agnostic_nms: bool = False
    boxes_output: str = ""
    scores_output: str = ""
    classes_output: str = ""


@dataclass(frozen=True)
class CalibrationSpec:
    """Images for INT8 calibration, relative to the bundle root."""

    images: tuple[str, ...] = ()


@dataclass(frozen=True)
class ValidationSpec:
    """Images and expected outputs that prove a model variant still works.

    ``expected`` names a YAML/JSON file with one entry per image (see
    docs/bundle-format.md); empty means FP32 outputs are the reference.
    """

    images: tuple[str, ...] = ()
    expected: str = ""


@dataclass(frozen=True)
class AcceptanceSpec:
    """Thresholds a candidate must meet in the optimization and shadow gates.

    Two gates ask two questions. *Equivalence* (optimize stage): does an
    optimized variant still say what its own FP32 says? ``min_top1_agreement``,
    ``min_detection_f1`` and ``max_score_drift`` are for it, strict. And the
    FP32 model itself must reach ``min_accuracy`` against validation.expected
    (top-1 accuracy, or box F1 at IoU 0.5; 0: the bundle states none).
    *Promotion* (shadow stage): is the new version at least as good as the
    live one? On labelled images (validation.expected of the candidate and
    of the live version) it may score at most ``max_regression`` below the
    live model (absolute). On live traffic its agreement with the live model
    must be at least ``min_live_agreement``: a loose floor that catches a
    broken model (a constant class agrees on about one frame in the number of
    classes) but not a better one, which disagrees where the old one was
    wrong. Its mean top-1 score (detection: mean box score and boxes per
    frame, counts +1) must be within a factor ``max_distribution_ratio`` of
    the live model's either way.

    Latency passes when the candidate's p99 is within ``max_latency_ratio``
    times the live model's, or within ``latency_slack_ms`` of it: ratios of
    sub-millisecond latencies are scheduler noise, not a slower model.

    Probation (after the swap) judges camera frames by their stamp: a frame
    is answered when a result (or a reported error) carries its stamp, however
    late that arrives. A frame is judged once it has waited
    ``probation_answer_grace_s`` for its answer; at least
    ``probation_min_answered`` of the frames judged over the last
    ``probation_window_s`` must be answered, checked once that window holds
    ``probation_min_frames`` of them. Frames seen in the first
    ``probation_warm_up_s`` are not judged for rate, stalls or latency (first
    inferences are slow). ``probation_stall_s``: unhealthy when no frame got
    an answer for this long while frames keep coming.
    """

    min_top1_agreement: float = 0.99
    min_detection_f1: float = 0.95
    max_score_drift: float = 0.1
    min_accuracy: float = 0.0
    max_regression: float = 0.02
    min_live_agreement: float = 0.5
    max_distribution_ratio: float = 2.0
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 2.0
    max_error_rate: float = 0.0
    shadow_frames: int = 60
    shadow_seconds: float = 0.0
    probation_seconds: float = 5.0
    probation_warm_up_s: float = 1.0
    probation_answer_grace_s: float = 0.5
    probation_window_s: float = 3.0
    probation_min_frames: int = 20
    probation_min_answered: float = 0.8
    probation_stall_s: float = 1.0

    def allowed_latency_ms(self, reference_ms: float) -> float:
        """The highest latency p99 accepted next to a reference model's p99."""
        return max(reference_ms * self.max_latency_ratio, reference_ms + self.latency_slack_ms)


@dataclass(frozen=True)
class QuantizationHints:
    """Author's hints for on-robot INT8 quantization."""

    allowed: bool = True
    exclude_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    """A parsed and validated ``manifest.yaml``."""

    name: str
    version: SemVer
    task: Task
    model: str
    input: InputSpec
    classification: ClassificationSpec = field(default_factory=ClassificationSpec)
    detection: DetectionSpec = field(default_factory=DetectionSpec)
    labels: str = ""
    description: str = ""
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    acceptance: AcceptanceSpec = field(default_factory=AcceptanceSpec)
    quantization: QuantizationHints = field(default_factory=QuantizationHints)
    target_hints: tuple[str, ...] = ()
    schema_version: int = SCHEMA_VERSION

    def referenced_files(self) -> list[str]:
        """Every bundle-relative file the manifest names."""
        files = [self.model]
        if self.labels:
            files.append(self.labels)
        files.extend(self.calibration.images)
        files.extend(self.validation.images)
        if self.validation.expected:
            files.append(self.validation.expected)
        return files


def parse_manifest(text: str, source: str = MANIFEST_NAME) -> Manifest:
    """Parse manifest YAML text; raises ManifestError naming the bad field."""
    try:
        data = load_strict_yaml(text, source)
    except StrictYamlError as exc:
        raise ManifestError(str(exc)) from None
    if not isinstance(data, dict):
        raise ManifestError(f"{source} must be a YAML mapping, got {type(data).__name__}")
    return manifest_from_dict(data, source)


def manifest_from_dict(data: Mapping[str, Any], source: str = MANIFEST_NAME) -> Manifest:
    """Build a Manifest from already-parsed YAML; raises ManifestError."""
    r = FieldReader(data, source, schema=Manifest, error=ManifestError)
    schema = r.integer("schema_version", required=True, minimum=1)
    if schema != SCHEMA_VERSION:
        raise ManifestError(
            f"{source}: schema_version {schema} is not supported by this robot "
            f"(it reads version {SCHEMA_VERSION}); rebuild the bundle with a matching rmd"
        )
    name = r.string("name", required=True)
    if not is_model_name(name):
        raise ManifestError(f"{source}: name '{name}' must be {MODEL_NAME_RULE}")
    version_text = r.string("version", required=True)
    try:
        version = SemVer.parse(version_text)
    except ValueError as exc:
        raise ManifestError(f"{source}: version: {exc}") from None
    task = r.enum("task", Task, required=True)
    manifest = Manifest(
        name=name,
        version=version,
        task=task,
        model=r.relpath("model", required=True),
        labels=r.relpath("labels"),
        description=r.string("description"),
        input=_input_spec(r.section("input", InputSpec, required=True)),
        classification=_classification_spec(r.section("classification", ClassificationSpec)),
        detection=_detection_spec(r.section("detection", DetectionSpec)),
        calibration=_calibration_spec(r.section("calibration", CalibrationSpec)),
        validation=_validation_spec(r.section("validation", ValidationSpec)),
        acceptance=_acceptance_spec(r.section("acceptance", AcceptanceSpec)),
        quantization=_quantization_hints(r.section("quantization", QuantizationHints)),
        target_hints=r.strings("target_hints"),
    )
    r.reject_unknown()
    return manifest


# Each reader below states the checks; the defaults are the dataclasses' own.

def _input_spec(r: FieldReader) -> InputSpec:
    color = r.enum("color_order", ColorOrder)
    channels = InputSpec.channels_for(color)
    spec = InputSpec(
        width=r.integer("width", required=True, minimum=1, maximum=8192),
        height=r.integer("height", required=True, minimum=1, maximum=8192),
        name=r.string("name"),
        resize=r.enum("resize", ResizeMode),
        color_order=color,
        layout=r.enum("layout", Layout),
        dtype=r.enum("dtype", TensorType),
        scale=r.number("scale", minimum=0.0, exclusive_minimum=True),
        mean=r.numbers("mean", length=channels, default=(InputSpec.MEAN_PER_CHANNEL,) * channels),
        std=r.numbers("std", length=channels, positive=True, default=(InputSpec.STD_PER_CHANNEL,) * channels),
        letterbox_fill=r.integer("letterbox_fill", minimum=0, maximum=255),
    )
    r.reject_unknown()
    return spec


def _classification_spec(r: FieldReader) -> ClassificationSpec:
    spec = ClassificationSpec(
        top_k=r.integer("top_k", minimum=1, maximum=1000),
        softmax=r.boolean("softmax"),
        output_name=r.string("output_name"),
    )
    r.reject_unknown()
    return spec


def _detection_spec(r: FieldReader) -> DetectionSpec:
    spec = DetectionSpec(
        format=r.enum("format", DetectionFormat),
        score_threshold=r.number("score_threshold", minimum=0.0, maximum=1.0),
        iou_threshold=r.number("iou_threshold", minimum=0.0, maximum=1.0),
        max_detections=r.integer("max_detections", minimum=1, maximum=10000),
        strides=r.integers("strides", positive=True),
        class_agnostic_nms=r.boolean("class_agnostic_nms"),
        boxes_output=r.string("boxes_output"),
        scores_output=r.string("scores_output"),
        classes_output=r.string("classes_output"),
    )
    r.reject_unknown()
    return spec


def _calibration_spec(r: FieldReader) -> CalibrationSpec:
    spec = CalibrationSpec(images=r.relpaths("images"))
    r.reject_unknown()
    return spec


def _validation_spec(r: FieldReader) -> ValidationSpec:
    spec = ValidationSpec(images=r.relpaths("images"), expected=r.relpath("expected"))
    r.reject_unknown()
    return spec


def _acceptance_spec(r: FieldReader) -> AcceptanceSpec:
    spec = AcceptanceSpec(
        min_top1_agreement=r.number("min_top1_agreement", minimum=0.0, maximum=1.0),
        min_detection_f1=r.number("min_detection_f1", minimum=0.0, maximum=1.0),
        max_score_drift=r.number("max_score_drift", minimum=0.0, maximum=1.0),
        min_accuracy=r.number("min_accuracy", minimum=0.0, maximum=1.0),
        max_regression=r.number("max_regression", minimum=0.0, maximum=1.0),
        min_live_agreement=r.number("min_live_agreement", minimum=0.0, maximum=1.0),
        max_distribution_ratio=r.number("max_distribution_ratio", minimum=1.0),
        max_latency_ratio=r.number("max_latency_ratio", minimum=0.0, exclusive_minimum=True),
        latency_slack_ms=r.number("latency_slack_ms", minimum=0.0),
        max_error_rate=r.number("max_error_rate", minimum=0.0, maximum=1.0),
        shadow_frames=r.integer("shadow_frames", minimum=0),
        shadow_seconds=r.number("shadow_seconds", minimum=0.0),
        probation_seconds=r.number("probation_seconds", minimum=0.0),
        probation_warm_up_s=r.number("probation_warm_up_s", minimum=0.0),
        probation_answer_grace_s=r.number("probation_answer_grace_s", minimum=0.0),
        probation_window_s=r.number("probation_window_s", minimum=0.0, exclusive_minimum=True),
        probation_min_frames=r.integer("probation_min_frames", minimum=1),
        probation_min_answered=r.number("probation_min_answered", minimum=0.0, maximum=1.0),
        probation_stall_s=r.number("probation_stall_s", minimum=0.0, exclusive_minimum=True),
    )
    r.reject_unknown()
    return spec


def _quantization_hints(r: FieldReader) -> QuantizationHints:
    hints = QuantizationHints(allowed=r.boolean("allowed"), exclude_nodes=r.strings("exclude_nodes"))
    r.reject_unknown()
    return hints
