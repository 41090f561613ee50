"""The bundle manifest (``manifest.yaml``): a typed, validated schema.

Every field is checked when the manifest is read, so a bad bundle is refused
with a message naming the field before any model is loaded. See
docs/bundle-format.md for the format in prose.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath
from typing import Any, Mapping, Sequence

import yaml

from robot_model_deployer.bundle.semver import SemVer

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.yaml"
# Used with fullmatch: '$' would also match before a trailing newline.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")


class ManifestError(ValueError):
    """The manifest is missing, unreadable or has a field with a bad value."""


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
    """

    YOLO = "yolo"
    YOLOX = "yolox"
    BOXES_SCORES = "boxes_scores"


@dataclass(frozen=True)
class InputSpec:
    """How a camera image becomes the model's input tensor.

    Pixels are scaled by ``scale`` (after colour conversion), then
    normalised per channel: ``(x * scale - mean) / std``.
    """

    width: int
    height: int
    name: str = ""
    resize: ResizeMode = ResizeMode.STRETCH
    color_order: ColorOrder = ColorOrder.RGB
    layout: Layout = Layout.NCHW
    dtype: TensorType = TensorType.FLOAT32
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    letterbox_fill: int = 114

    def __post_init__(self) -> None:
        # The mean/std defaults have three values, so a gray spec built in code must pass its own.
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != self.channels:
                raise ValueError(
                    f"InputSpec {name} has {len(values)} value(s) but color_order {self.color_order.value} has "
                    f"{self.channels} channel(s); pass {name} with one value per channel"
                )

    @property
    def channels(self) -> int:
        return 1 if self.color_order is ColorOrder.GRAY else 3

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

    Latency passes when the candidate's p99 is within ``max_latency_ratio``
    times the live model's, or within ``latency_slack_ms`` of it: ratios of
    sub-millisecond latencies are scheduler noise, not a slower model.
    """

    min_top1_agreement: float = 0.99
    min_detection_f1: float = 0.95
    max_score_drift: float = 0.1
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 2.0
    max_error_rate: float = 0.0
    shadow_frames: int = 60
    shadow_seconds: float = 0.0
    probation_seconds: float = 5.0

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
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"{source} must be a YAML mapping, got {type(data).__name__}")
    return manifest_from_dict(data, source)


def manifest_from_dict(data: Mapping[str, Any], source: str = MANIFEST_NAME) -> Manifest:
    """Build a Manifest from already-parsed YAML; raises ManifestError."""
    r = _Reader(data, source)
    schema = r.integer("schema_version", required=True, minimum=1)
    if schema != SCHEMA_VERSION:
        raise ManifestError(
            f"{source}: schema_version {schema} is not supported by this robot "
            f"(it reads version {SCHEMA_VERSION}); rebuild the bundle with a matching rmd"
        )
    name = r.string("name", required=True)
    if not _NAME_RE.fullmatch(name):
        raise ManifestError(
            f"{source}: name '{name}' must be 1-64 characters of a-z, 0-9, '_', '.', '-' "
            "starting with a letter or digit"
        )
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
        input=_input_spec(r.section("input", required=True)),
        classification=_classification_spec(r.section("classification")),
        detection=_detection_spec(r.section("detection")),
        calibration=_calibration_spec(r.section("calibration")),
        validation=_validation_spec(r.section("validation")),
        acceptance=_acceptance_spec(r.section("acceptance")),
        quantization=_quantization_hints(r.section("quantization")),
        target_hints=r.strings("target_hints"),
    )
    r.reject_unknown()
    return manifest


def _input_spec(r: "_Reader") -> InputSpec:
    color = r.enum("color_order", ColorOrder, default=ColorOrder.RGB)
    channels = 1 if color is ColorOrder.GRAY else 3
    spec = InputSpec(
        width=r.integer("width", required=True, minimum=1, maximum=8192),
        height=r.integer("height", required=True, minimum=1, maximum=8192),
        name=r.string("name"),
        resize=r.enum("resize", ResizeMode, default=ResizeMode.STRETCH),
        color_order=color,
        layout=r.enum("layout", Layout, default=Layout.NCHW),
        dtype=r.enum("dtype", TensorType, default=TensorType.FLOAT32),
        scale=r.number("scale", default=1.0 / 255.0, minimum=0.0, exclusive_minimum=True),
        mean=r.numbers("mean", default=(0.0,) * channels, length=channels),
        std=r.numbers("std", default=(1.0,) * channels, length=channels, positive=True),
        letterbox_fill=r.integer("letterbox_fill", default=114, minimum=0, maximum=255),
    )
    r.reject_unknown()
    return spec


def _classification_spec(r: "_Reader") -> ClassificationSpec:
    spec = ClassificationSpec(
        top_k=r.integer("top_k", default=5, minimum=1, maximum=1000),
        softmax=r.boolean("softmax", default=False),
        output_name=r.string("output_name"),
    )
    r.reject_unknown()
    return spec


def _detection_spec(r: "_Reader") -> DetectionSpec:
    spec = DetectionSpec(
        format=r.enum("format", DetectionFormat, default=DetectionFormat.YOLO),
        score_threshold=r.number("score_threshold", default=0.25, minimum=0.0, maximum=1.0),
        iou_threshold=r.number("iou_threshold", default=0.45, minimum=0.0, maximum=1.0),
        max_detections=r.integer("max_detections", default=100, minimum=1, maximum=10000),
        strides=r.integers("strides", default=(8, 16, 32), positive=True),
        class_agnostic_nms=r.boolean("class_agnostic_nms", default=False),
        boxes_output=r.string("boxes_output"),
        scores_output=r.string("scores_output"),
    )
    r.reject_unknown()
    return spec


def _calibration_spec(r: "_Reader") -> CalibrationSpec:
    spec = CalibrationSpec(images=r.relpaths("images"))
    r.reject_unknown()
    return spec


def _validation_spec(r: "_Reader") -> ValidationSpec:
    spec = ValidationSpec(images=r.relpaths("images"), expected=r.relpath("expected"))
    r.reject_unknown()
    return spec


def _acceptance_spec(r: "_Reader") -> AcceptanceSpec:
    defaults = AcceptanceSpec()
    spec = AcceptanceSpec(
        min_top1_agreement=r.number("min_top1_agreement", default=defaults.min_top1_agreement, minimum=0.0, maximum=1.0),
        min_detection_f1=r.number("min_detection_f1", default=defaults.min_detection_f1, minimum=0.0, maximum=1.0),
        max_score_drift=r.number("max_score_drift", default=defaults.max_score_drift, minimum=0.0, maximum=1.0),
        max_latency_ratio=r.number("max_latency_ratio", default=defaults.max_latency_ratio, minimum=0.0, exclusive_minimum=True),
        latency_slack_ms=r.number("latency_slack_ms", default=defaults.latency_slack_ms, minimum=0.0),
        max_error_rate=r.number("max_error_rate", default=defaults.max_error_rate, minimum=0.0, maximum=1.0),
        shadow_frames=r.integer("shadow_frames", default=defaults.shadow_frames, minimum=0),
        shadow_seconds=r.number("shadow_seconds", default=defaults.shadow_seconds, minimum=0.0),
        probation_seconds=r.number("probation_seconds", default=defaults.probation_seconds, minimum=0.0),
    )
    r.reject_unknown()
    return spec


def _quantization_hints(r: "_Reader") -> QuantizationHints:
    hints = QuantizationHints(allowed=r.boolean("allowed", default=True), exclude_nodes=r.strings("exclude_nodes"))
    r.reject_unknown()
    return hints


_MISSING = object()


class _Reader:
    """Reads typed fields from one mapping; errors name the dotted field path."""

    def __init__(self, data: Mapping[str, Any], where: str, prefix: str = "") -> None:
        self._data = data
        self._where = where
        self._prefix = prefix
        self._seen: set[str] = set()

    def _error(self, key: str, problem: str) -> ManifestError:
        return ManifestError(f"{self._where}: {self._prefix}{key} {problem}")

    def _get(self, key: str, required: bool) -> Any:
        self._seen.add(key)
        value = self._data.get(key, _MISSING)
        if value is _MISSING or value is None:
            if required:
                raise self._error(key, "is required")
            return _MISSING
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(str(k) for k in self._data if k not in self._seen)
        if unknown:
            raise ManifestError(
                f"{self._where}: unknown field(s) {', '.join(self._prefix + k for k in unknown)} "
                "(misspelt, or written for a newer schema)"
            )

    def section(self, key: str, required: bool = False) -> "_Reader":
        value = self._get(key, required)
        if value is _MISSING:
            value = {}
        if not isinstance(value, dict):
            raise self._error(key, f"must be a mapping, got {type(value).__name__}")
        return _Reader(value, self._where, f"{self._prefix}{key}.")

    def string(self, key: str, required: bool = False, default: str = "") -> str:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise self._error(key, f"must be a string, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self._get(key, False)
        if value is _MISSING:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self._error(key, "must be a list of strings")
        return tuple(value)

    def relpath(self, key: str, required: bool = False) -> str:
        text = self.string(key, required)
        if not text:
            if required:
                raise self._error(key, "is required (got an empty path)")
            return ""
        return _check_relpath(text, lambda problem: self._error(key, problem))

    def relpaths(self, key: str) -> tuple[str, ...]:
        return tuple(_check_relpath(p, lambda problem: self._error(key, problem)) for p in self.strings(key))

    def enum(self, key: str, enum: type[Enum], required: bool = False, default: Any = None) -> Any:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        try:
            return enum(str(value).lower())
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise self._error(key, f"must be one of {choices}, got {value!r}") from None

    def boolean(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self._error(key, f"must be true or false, got {value!r}")
        return value

    def integer(self, key: str, required: bool = False, default: int = 0,
                minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._get(key, required)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._error(key, f"must be an integer, got {value!r}")
        _check_range(value, minimum, maximum, False, lambda problem: self._error(key, problem))
        return value

    def number(self, key: str, default: float, minimum: float | None = None,
               maximum: float | None = None, exclusive_minimum: bool = False) -> float:
        value = self._get(key, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._error(key, f"must be a number, got {value!r}")
        if not _is_finite(value):
            raise self._error(key, f"must be a finite number, got {value!r}")
        _check_range(value, minimum, maximum, exclusive_minimum, lambda problem: self._error(key, problem))
        return float(value)

    def numbers(self, key: str, default: Sequence[float], length: int | None = None,
                positive: bool = False) -> tuple[float, ...]:
        value = self._get(key, False)
        if value is _MISSING:
            return tuple(default)
        if not isinstance(value, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
        ):
            raise self._error(key, f"must be a list of numbers, got {value!r}")
        if not all(_is_finite(v) for v in value):
            raise self._error(key, f"values must all be finite numbers, got {value!r}")
        if length is not None and len(value) != length:
            raise self._error(key, f"must have {length} values (one per input channel), got {len(value)}")
        if positive and any(v <= 0 for v in value):
            raise self._error(key, f"values must all be > 0, got {value!r}")
        return tuple(float(v) for v in value)

    def integers(self, key: str, default: Sequence[int], positive: bool = False) -> tuple[int, ...]:
        value = self._get(key, False)
        if value is _MISSING:
            return tuple(default)
        if not isinstance(value, list) or not value or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self._error(key, f"must be a non-empty list of integers, got {value!r}")
        if positive and any(v <= 0 for v in value):
            raise self._error(key, f"values must all be > 0, got {value!r}")
        return tuple(value)


def _is_finite(value: int | float) -> bool:
    """False for NaN, +-inf and integers too large for a float (all pass range checks unnoticed)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _check_range(value: float, minimum: float | None, maximum: float | None,
                 exclusive_minimum: bool, error: Any) -> None:
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise error(f"must be {'>' if exclusive_minimum else '>='} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise error(f"must be <= {maximum}, got {value}")


def _check_relpath(text: str, error: Any) -> str:
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or "\\" in text or not path.parts:
        raise error(f"'{text}' must be a relative path inside the bundle (no '..', no leading '/')")
    return path.as_posix()
