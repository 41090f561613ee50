"""An OpenVINO compiled model behind the ONNX Runtime session interface the engine uses.

OpenVINO is an optional extra (``pip install openvino``): it reads the same
ONNX files (FP32 or QDQ INT8) and on Intel CPUs often runs them faster than
ONNX Runtime's CPU provider. This adapter lets InferenceEngine serve it with
the bundle's own pre- and post-processing, so the gate and the perception
node see identical Predictions whichever runtime is underneath.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_ELEMENT_TYPES = {"f32": "tensor(float)", "f16": "tensor(float16)", "u8": "tensor(uint8)", "i8": "tensor(int8)",
                  "i32": "tensor(int32)", "i64": "tensor(int64)"}


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


@dataclass(frozen=True)
class TensorInfo:
    """Mirrors onnxruntime.NodeArg: what the engine reads about a model input or output."""

    name: str
    shape: list[int | str]
    type: str


class OpenVinoSession:
    """Compile ``model_path`` (ONNX or OpenVINO IR) for ``device`` and run it like an ORT session.

    ``precision_hint`` pins the CPU plugin's inference precision ("f32",
    "f16", "bf16"): on CPUs with AMX/AVX512-BF16 OpenVINO otherwise runs
    FP32 models in bf16 by default, which changes results silently.
    ``cache_dir`` keeps compiled blobs so a later load is fast. ``threads``
    caps the CPU threads of one inference (0: OpenVINO decides).
    """

    def __init__(self, model_path: str | Path, device: str = "CPU", precision_hint: str = "f32",
                 cache_dir: str | Path | None = None, num_streams: int = 1, threads: int = 0) -> None:
        if not openvino_available():
            raise RuntimeError("the openvino package is not installed: pip install openvino")
        import openvino as ov

        core = ov.Core()
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint, "NUM_STREAMS": str(num_streams),
                                  "PERFORMANCE_HINT": "LATENCY"}
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        self.device = device
        self._compiled = core.compile_model(str(model_path), device, config)
        self._request = self._compiled.create_infer_request()
        self._inputs = [self._info(port) for port in self._compiled.inputs]
        self._outputs = [self._info(port) for port in self._compiled.outputs]

    @staticmethod
    def _info(port: Any) -> TensorInfo:
        shape = [int(d.get_length()) if d.is_static else "?" for d in port.get_partial_shape()]
        element = port.get_element_type().get_type_name()
        return TensorInfo(port.get_any_name(), shape, _ELEMENT_TYPES.get(element, f"tensor({element})"))

    def get_inputs(self) -> list[TensorInfo]:
        return list(self._inputs)

    def get_outputs(self) -> list[TensorInfo]:
        return list(self._outputs)

    def get_providers(self) -> list[str]:
        return [f"OpenVINO:{self.device}"]

    def run(self, output_names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self._request.infer(feeds)
        by_name = {port.get_any_name(): results[port] for port in self._compiled.outputs}
        names = list(output_names) if output_names else [o.name for o in self._outputs]
        return [np.asarray(by_name[name]).copy() for name in names]
