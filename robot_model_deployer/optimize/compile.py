"""Compilation per accelerator: from an ONNX model to an artifact a session loads fast.

- cpu: ONNX Runtime's offline optimization: the graph rewritten for this
  CPU (fusions, QDQ -> QLinear kernels, NCHWc layout) is saved with
  ``SessionOptions.optimized_model_filepath`` and later loaded with
  optimizations off, so a perception node starts without redoing them.
- openvino: the ONNX model converted to OpenVINO IR (xml + bin), served
  through inference/openvino_session.py; compiled blobs cached.
- cuda / tensorrt: ONNX Runtime provider options as its docs describe them.
  TensorRT engines and timing caches live in a directory keyed by
  everything that makes an engine invalid (model sha256, ORT / TensorRT /
  CUDA versions, device, precision, input shapes); a change of any of them
  gives a new directory and the stale ones are removed. Engines are built
  by the optimize stage (in its worker) when it warms the variant up, never
  on a perception node's live path.

Each builder returns a CompiledArtifact (inference/artifacts.py): what a
node needs to load the variant, without importing this module.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from robot_model_deployer.bundle.filelist import file_sha256
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.inference.artifacts import (KEY_FILE, CompiledArtifact, cuda_runtime_version, read_cache_key,
                                                      tensorrt_version)
from robot_model_deployer.inference.engine import first_line

_OPENVINO_HINTS = {Precision.FP32: "f32", Precision.FP16: "f16", Precision.INT8: "f32"}


class CompileError(RuntimeError):
    """An artifact could not be built for an accelerator; the message says why."""


@dataclass(frozen=True)
class EngineCacheKey:
    """Everything a TensorRT engine (or any compiled blob) depends on."""

    model_sha256: str
    ort_version: str
    tensorrt_version: str
    cuda_version: str
    device: str
    precision: Precision
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...]

    def digest(self) -> str:
        """A short stable hash; equal keys give equal digests, any change gives a new one."""
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:20]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["precision"] = self.precision.value
        data["input_shapes"] = [[name, list(shape)] for name, shape in self.input_shapes]
        return data


def prepare_engine_cache(root: str | Path, key: EngineCacheKey) -> Path:
    """The cache directory for ``key`` under ``root``; older caches of the same model are removed.

    A directory whose recorded key differs only in runtime versions, device,
    precision or shapes holds engines that would be rejected or, worse,
    silently rebuilt on a live path, so it goes.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / key.digest()
    for entry in root.iterdir():
        if entry == target or not entry.is_dir():
            continue
        recorded = read_cache_key(entry)
        if recorded is None or recorded.get("model_sha256") == key.model_sha256:
            shutil.rmtree(entry, ignore_errors=True)
    target.mkdir(exist_ok=True)
    (target / KEY_FILE).write_text(json.dumps(key.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    return target


def model_input_shapes(model_path: str | Path) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Static input shapes (dynamic dims as -1), for cache keys."""
    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    shapes = []
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        shapes.append((graph_input.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)))
    return tuple(shapes)


def tensorrt_provider_options(precision: Precision, cache_dir: Path, device_id: int = 0,
                              workspace_bytes: int = 1 << 30) -> dict[str, Any]:
    """TensorRT EP options: engine and timing caches in ``cache_dir``, FP16/INT8 as asked.

    INT8 uses the QDQ scales already in the model (explicit quantization), so
    no calibration table is needed; FP16 stays enabled with INT8 so layers
    TensorRT keeps in float run in half precision.
    """
    if precision not in (Precision.FP32, Precision.FP16, Precision.INT8):
        raise ValueError(f"TensorRT cannot build {precision.value}")
    return {
        "device_id": device_id,
        "trt_max_workspace_size": workspace_bytes,
        "trt_fp16_enable": precision in (Precision.FP16, Precision.INT8),
        "trt_int8_enable": precision is Precision.INT8,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_builder_optimization_level": 3,
    }


def cuda_provider_options(device_id: int = 0) -> dict[str, Any]:
    """CUDA EP options: exhaustive cuDNN search once (in the optimize stage), then cached per session."""
    return {"device_id": device_id, "cudnn_conv_algo_search": "EXHAUSTIVE", "do_copy_in_default_stream": True}


def compile_cpu(model_path: Path, out_dir: Path, stem: str, precision: Precision) -> CompiledArtifact:
    """Save ONNX Runtime's CPU-optimized graph of ``model_path`` as ``<stem>.ort.onnx``."""
    target = out_dir / f"{stem}.ort.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    # ORT warns that an ENABLE_ALL graph is hardware specific: intended, it is built on the robot it serves.
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise CompileError(f"ONNX Runtime could not optimize {model_path.name}: {first_line(exc)}") from exc
    return CompiledArtifact(Accelerator.CPU, precision, target.name, offline_optimized=True)


def compile_openvino(model_path: Path, out_dir: Path, stem: str, precision: Precision) -> CompiledArtifact:
    """Convert ``model_path`` to OpenVINO IR; weights stay as they are (FP16 is a runtime hint)."""
    try:
        import openvino as ov
    except ImportError:
        raise CompileError("the openvino package is not installed: pip install openvino") from None
    target = out_dir / f"{stem}.xml"
    try:
        model = ov.Core().read_model(str(model_path))
        ov.save_model(model, str(target), compress_to_fp16=False)
    except Exception as exc:
        raise CompileError(f"OpenVINO could not convert {model_path.name}: {first_line(exc)}") from exc
    return CompiledArtifact(Accelerator.OPENVINO, precision, target.name, providers=("OpenVINO",),
                            provider_options=({},), openvino_hint=_OPENVINO_HINTS[precision],
                            cache_dir="openvino_cache", extra_files=(target.with_suffix(".bin").name,))


def compile_gpu(model_path: Path, out_dir: Path, stem: str, accelerator: Accelerator, precision: Precision,
                device_id: int, device_name: str) -> CompiledArtifact:
    """Model file plus ORT provider options for CUDA or TensorRT (CPU as the last provider)."""
    target = out_dir / f"{stem}.onnx"
    if accelerator is Accelerator.CUDA and precision is Precision.FP16:
        convert_to_fp16(model_path, target)
    else:
        shutil.copyfile(model_path, target)
    if accelerator is Accelerator.CUDA:
        return CompiledArtifact(accelerator, precision, target.name,
                                providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                                provider_options=(cuda_provider_options(device_id), {}))
    if accelerator is not Accelerator.TENSORRT:
        raise ValueError(f"compile_gpu does not build {accelerator.value}")
    key = EngineCacheKey(model_sha256=file_sha256(target), ort_version=ort.__version__,
                         tensorrt_version=tensorrt_version(), cuda_version=cuda_runtime_version(),
                         device=device_name, precision=precision, input_shapes=model_input_shapes(target))
    cache = prepare_engine_cache(out_dir / "trt_cache", key)
    # Stored relative to the output directory so the artifacts can move with it.
    options = tensorrt_provider_options(precision, Path("trt_cache") / cache.name, device_id)
    return CompiledArtifact(accelerator, precision, target.name,
                            providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
                            provider_options=(options, cuda_provider_options(device_id), {}),
                            cache_dir=str(Path("trt_cache") / cache.name))


def convert_to_fp16(model_path: Path, target: Path) -> None:
    """FP16 weights and compute with FP32 inputs/outputs, so pre/post-processing stays the same."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(model_path)), keep_io_types=True)
    onnx.save(model, str(target))
