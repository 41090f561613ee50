"""INT8 static quantization (QDQ) of a bundle's model, calibrated on its own images.

The model is prepared the way ONNX Runtime's quantization guide asks
(shape inference and graph optimization via ``quant_pre_process``; opset 13
or newer when weights are quantized per channel, since QuantizeLinear's
``axis`` needs it; dynamic input dimensions pinned to the calibration
shape), then quantized with ``quantize_static`` in QDQ format.

Some nodes must stay float: the decode tail of a detector (the sigmoid /
exp / concat of box coordinates after its last convolution) loses boxes
when quantized, and a classifier's softmax gains nothing. They are found
from the graph (every node with no Conv/Gemm/MatMul downstream of it, or
a YOLO-class head's decode, see head_scope.py) and excluded automatically,
together with the manifest's ``quantization.exclude_nodes``.

Two tools: ONNX Runtime's ``quantize_static`` (QDQ ONNX for the ORT CPU
and GPU providers) and NNCF's post-training quantization on the OpenVINO
model (IR for the OpenVINO runtime, the path Ultralytics takes for
OpenVINO INT8; nncf_quantize.py).
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import version_converter

from robot_model_deployer.inference.engine import first_line
from robot_model_deployer.optimize.head_scope import find_head_decode, find_stem

PER_CHANNEL_MIN_OPSET = 13
_COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


class QuantizationError(RuntimeError):
    """Quantization could not produce a model; the message says at which step and why."""


class Int8Scheme(str, Enum):
    """Signedness of activations and weights, plus 7-bit weights for non-VNNI x86."""

    S8S8 = "s8s8"
    S8S8_REDUCE_RANGE = "s8s8_reduce_range"
    U8S8 = "u8s8"
    U8U8 = "u8u8"


class CalibrationMethod(str, Enum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class FloatRegion(str, Enum):
    """How much of the graph's end stays float.

    ``decode_tail``: nodes with no Conv/Gemm/MatMul downstream.
    ``heads``: that plus the last Conv/Gemm/MatMul layers feeding it
    (the raw box and score maps stay float too).
    ``detect_head``: a YOLO-class head's decode (DFL, the concat/split of
    box and class maps, anchor arithmetic), found by name or structure.
    ``detect_head_and_stem``: that plus the first compute layers, which read
    the image (head_scope.find_stem).
    """

    DECODE_TAIL = "decode_tail"
    HEADS = "heads"
    DETECT_HEAD = "detect_head"
    DETECT_HEAD_AND_STEM = "detect_head_and_stem"


class QuantTool(str, Enum):
    """Which quantizer builds the INT8 model: ONNX Runtime (QDQ ONNX) or NNCF (OpenVINO IR)."""

    ORT = "ort"
    NNCF = "nncf"


_DEFAULT_PERCENTILE = 99.999


@dataclass(frozen=True)
class QuantizationConfig:
    """One way to quantize; checked when made so a bad combination fails before any work."""

    scheme: Int8Scheme = Int8Scheme.S8S8
    per_channel: bool = True
    calibration: CalibrationMethod = CalibrationMethod.MINMAX
    percentile: float = _DEFAULT_PERCENTILE
    symmetric_activations: bool = False
    float_region: FloatRegion = FloatRegion.DECODE_TAIL
    exclude_nodes: tuple[str, ...] = ()
    max_calibration_images: int = 64
    tool: QuantTool = QuantTool.ORT

    def __post_init__(self) -> None:
        if self.tool is QuantTool.NNCF and (self.calibration is not CalibrationMethod.MINMAX
                                            or self.symmetric_activations or not self.per_channel):
            raise ValueError("tool nncf uses NNCF's own ranges (mixed preset, per-channel weights): drop "
                             "calibration, symmetric_activations and per_channel, or use tool ort")
        if self.calibration is CalibrationMethod.PERCENTILE and not 50.0 < self.percentile <= 100.0:
            raise ValueError(f"percentile must be in (50, 100] for percentile calibration, got {self.percentile}")
        if self.calibration is not CalibrationMethod.PERCENTILE and self.percentile != _DEFAULT_PERCENTILE:
            raise ValueError("percentile only applies to calibration=percentile; drop it or set calibration")
        if self.scheme in (Int8Scheme.U8S8, Int8Scheme.U8U8) and self.symmetric_activations:
            raise ValueError("symmetric_activations needs signed activations (scheme s8s8 or s8s8_reduce_range): "
                             "symmetric uint8 wastes half the range")
        if self.max_calibration_images < 1:
            raise ValueError(f"max_calibration_images must be >= 1, got {self.max_calibration_images}")
        if any(not isinstance(n, str) or not n for n in self.exclude_nodes):
            raise ValueError("exclude_nodes must be non-empty node names")

    @property
    def label(self) -> str:
        """Short, stable name used for variant and file names."""
        region = {FloatRegion.DECODE_TAIL: "tail", FloatRegion.HEADS: "heads", FloatRegion.DETECT_HEAD: "head",
                  FloatRegion.DETECT_HEAD_AND_STEM: "head-stem"}
        if self.tool is QuantTool.NNCF:
            return f"nncf-{region[self.float_region]}"
        parts = [self.scheme.value, "pc" if self.per_channel else "pt", self.calibration.value]
        if self.calibration is CalibrationMethod.PERCENTILE:
            parts[-1] += f"{self.percentile:g}"
        if self.symmetric_activations:
            parts.append("sym")
        parts.append(region[self.float_region])
        return "-".join(parts)


@dataclass(frozen=True)
class QuantizedModel:
    """The result: where the INT8 model is and what was kept float, for the report."""

    path: Path
    config: QuantizationConfig
    float_nodes: tuple[str, ...]
    opset: int
    notes: tuple[str, ...] = ()


def quantize_model(model_path: str | Path, output_path: str | Path, calibration: Sequence[np.ndarray],
                   input_name: str, config: QuantizationConfig,
                   extra_feeds: Mapping[str, np.ndarray] | None = None) -> QuantizedModel:
    """Quantize ``model_path`` into ``output_path``, calibrated on preprocessed tensors.

    ``extra_feeds``: inputs fed beside the image on every run (RT-DETR's orig_target_sizes).

    ``calibration`` holds model-input tensors made by the bundle's own
    Preprocessor, so the ranges are the ones the robot will see. Scratch
    files live in a temporary directory removed afterwards. The ORT tool
    writes QDQ ONNX; NNCF writes OpenVINO IR (``output_path`` with .xml).
    """
    if not calibration:
        raise QuantizationError("no calibration images: add calibration.images to the bundle manifest")
    tensors = list(calibration)[: config.max_calibration_images]
    output_path = Path(output_path)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="rmd-quantize-") as scratch_dir:
        scratch = Path(scratch_dir)
        if config.tool is QuantTool.NNCF:
            from robot_model_deployer.optimize.nncf_quantize import quantize_openvino

            named = _named_copy(model_path, scratch / "named.onnx", tensors[0].shape, input_name, notes)
            excluded = _float_nodes_for(onnx.load(str(named)), config, notes)
            target = output_path.with_suffix(".xml")
            notes.extend(quantize_openvino(named, target, tensors, input_name, excluded, extra_feeds or {}))
            return QuantizedModel(target, config, excluded, _default_opset(onnx.load(str(named))), tuple(notes))
        prepared_path = prepare_for_quantization(model_path, scratch / "prepared.onnx", tensors[0].shape,
                                                 input_name, config.per_channel, notes)
        prepared = onnx.load(str(prepared_path))
        excluded = _float_nodes_for(prepared, config, notes)
        return _quantize_with_ort(prepared_path, prepared, output_path, scratch, tensors, input_name, config,
                                  excluded, notes, extra_feeds or {})


def _float_nodes_for(model: onnx.ModelProto, config: QuantizationConfig, notes: list[str]) -> tuple[str, ...]:
    """The recipe's float region plus the manifest's exclude_nodes that exist in ``model``."""
    if config.float_region in (FloatRegion.DETECT_HEAD, FloatRegion.DETECT_HEAD_AND_STEM):
        scope = find_head_decode(model)
        float_nodes = scope.nodes
        notes.append(f"head decode kept float: {len(float_nodes)} nodes, found by {scope.found_by}")
        if config.float_region is FloatRegion.DETECT_HEAD_AND_STEM:
            stem = find_stem(model)
            float_nodes += stem
            notes.append(f"stem kept float: {', '.join(stem)}")
    else:
        float_nodes = find_float_nodes(model, config.float_region)
    names = {n.name for n in model.graph.node}
    missing = [n for n in config.exclude_nodes if n not in names]
    if missing:
        notes.append(f"exclude_nodes not in the prepared graph (renamed or fused away): {', '.join(missing)}")
    return tuple(dict.fromkeys(float_nodes + tuple(n for n in config.exclude_nodes if n in names)))


def _named_copy(model_path: str | Path, target: Path, input_shape: Sequence[int], input_name: str,
                notes: list[str]) -> Path:
    """The model with its input pinned and every node named, so float regions can be given by name."""
    model = onnx.load(str(model_path))
    _pin_input_shape(model, input_name, input_shape, notes)
    _name_nodes(model)
    onnx.save(model, str(target))
    return target


def _quantize_with_ort(prepared_path: Path, prepared: onnx.ModelProto, output_path: Path, scratch: Path,
                       tensors: list[np.ndarray], input_name: str, config: QuantizationConfig,
                       excluded: tuple[str, ...], notes: list[str], extra_feeds: Mapping[str, np.ndarray],
                       ) -> QuantizedModel:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization import CalibrationMethod as OrtCalibration

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items: Iterator[np.ndarray] = iter(tensors)

        def get_next(self) -> dict[str, np.ndarray] | None:
            tensor = next(self._items, None)
            return None if tensor is None else {input_name: tensor, **extra_feeds}

    activation, weight = _QUANT_TYPES[config.scheme]
    extra: dict[str, object] = {"ActivationSymmetric": config.symmetric_activations, "WeightSymmetric": True}
    if config.calibration is CalibrationMethod.PERCENTILE:
        extra["CalibPercentile"] = config.percentile
    method = {CalibrationMethod.MINMAX: OrtCalibration.MinMax, CalibrationMethod.ENTROPY: OrtCalibration.Entropy,
              CalibrationMethod.PERCENTILE: OrtCalibration.Percentile}[config.calibration]
    try:
        quantize_static(
            str(prepared_path), str(scratch / "quantized.onnx"), _Reader(),
            quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
            reduce_range=config.scheme is Int8Scheme.S8S8_REDUCE_RANGE,
            activation_type=getattr(QuantType, activation), weight_type=getattr(QuantType, weight),
            nodes_to_exclude=list(excluded), calibrate_method=method, extra_options=extra,
        )
    except Exception as exc:  # The tool raises many exception types; one message for the report.
        raise QuantizationError(f"quantize_static failed ({config.label}): {first_line(exc)}") from exc
    output_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(scratch / "quantized.onnx"), output_path)
    return QuantizedModel(output_path, config, excluded, _default_opset(prepared), tuple(notes))


_QUANT_TYPES = {
    Int8Scheme.S8S8: ("QInt8", "QInt8"),
    Int8Scheme.S8S8_REDUCE_RANGE: ("QInt8", "QInt8"),
    Int8Scheme.U8S8: ("QUInt8", "QInt8"),
    Int8Scheme.U8U8: ("QUInt8", "QUInt8"),
}


def prepare_for_quantization(model_path: str | Path, output_path: Path, input_shape: Sequence[int],
                             input_name: str, per_channel: bool, notes: list[str] | None = None) -> Path:
    """Pin dynamic input dims, raise the opset for per-channel, name every node, run quant_pre_process."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    notes = notes if notes is not None else []
    model = onnx.load(str(model_path))
    _pin_input_shape(model, input_name, input_shape, notes)
    opset = _default_opset(model)
    if per_channel and opset < PER_CHANNEL_MIN_OPSET:
        try:
            model = version_converter.convert_version(model, PER_CHANNEL_MIN_OPSET)
        except Exception as exc:
            raise QuantizationError(f"per-channel quantization needs opset >= {PER_CHANNEL_MIN_OPSET} and converting "
                                    f"opset {opset} failed: {first_line(exc)}; use per_channel=False") from exc
        notes.append(f"opset {opset} -> {PER_CHANNEL_MIN_OPSET} for per-channel weights")
    _name_nodes(model)
    pinned = output_path.with_name("pinned.onnx")
    onnx.save(model, str(pinned))
    # Symbolic shape inference suits transformers and fails on some CNN exports; ONNX
    # shape inference after ORT's optimizer is what matters for QDQ placement.
    attempts = ({}, {"skip_symbolic_shape": True}, {"skip_symbolic_shape": True, "skip_optimization": True})
    last_error: Exception | None = None
    for options in attempts:
        try:
            quant_pre_process(str(pinned), str(output_path), **options)
            if options:
                notes.append("quant_pre_process with " + ", ".join(options))
            return output_path
        except Exception as exc:  # Try the next, less ambitious, pre-processing.
            last_error = exc
    raise QuantizationError(f"model pre-processing for quantization failed: {first_line(last_error)}")


def find_float_nodes(model: onnx.ModelProto, region: FloatRegion = FloatRegion.DECODE_TAIL) -> tuple[str, ...]:
    """Names of the nodes that must stay float: the graph's tail after its last compute layers."""
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)
    compute_downstream = [False] * len(nodes)
    # Nodes are topologically sorted in a valid ONNX graph, so one backward pass suffices.
    for index in range(len(nodes) - 1, -1, -1):
        compute_downstream[index] = any(
            nodes[c].op_type in _COMPUTE_OPS or compute_downstream[c]
            for output in nodes[index].output for c in consumers.get(output, ())
        )
    tail = {i for i, node in enumerate(nodes) if node.op_type not in _COMPUTE_OPS and not compute_downstream[i]}
    chosen = set(tail)
    if region is FloatRegion.HEADS:
        chosen |= {i for i, node in enumerate(nodes)
                   if node.op_type in _COMPUTE_OPS and not compute_downstream[i]}
    return tuple(nodes[i].name for i in sorted(chosen))


def _pin_input_shape(model: onnx.ModelProto, input_name: str, shape: Sequence[int], notes: list[str]) -> None:
    for graph_input in model.graph.input:
        if graph_input.name != input_name:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise QuantizationError(f"input {input_name} has rank {len(dims)} but calibration tensors have shape "
                                    f"{list(shape)}")
        pinned = []
        for dim, size in zip(dims, shape):
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                pinned.append(dim.dim_param or "?")
                dim.Clear()
                dim.dim_value = int(size)
        if pinned:
            notes.append(f"dynamic input dims {pinned} pinned to {list(shape)}")
        return
    raise QuantizationError(f"model has no input named {input_name}")


def _name_nodes(model: onnx.ModelProto) -> None:
    """nodes_to_exclude works by name; give unnamed nodes stable ones."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_rmd{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0
