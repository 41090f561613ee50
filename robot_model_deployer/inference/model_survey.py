"""What an ONNX file says about itself: inputs, outputs, producer and metadata, read with ONNX Runtime.

``rmd bundle init`` recognises an export from this (authoring/recognise.py).
The metadata is the exporter's free text (Ultralytics writes ``names`` as a
Python dict literal): parsed here with bounds, never evaluated.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import onnx
import onnxruntime as ort

from robot_model_deployer.inference.engine import ModelLoadError, first_line

MAX_METADATA_CHARS = 1 << 20
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(double)": "float64",
               "tensor(bool)": "bool", "tensor(int8)": "int8"}


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output; a dimension the graph leaves open is its symbolic name or '?'."""

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def static(self, axis: int) -> int | None:
        size = self.shape[axis]
        return size if isinstance(size, int) and size > 0 else None


@dataclass(frozen=True)
class ModelSurvey:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    producer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    output_ops: dict[str, str] = field(default_factory=dict)
    """The operator that produces each output (e.g. 'Softmax')."""

    def output(self, name: str) -> TensorInfo | None:
        return next((o for o in self.outputs if o.name == name), None)


def survey_model(path: str | Path) -> ModelSurvey:
    """Load ``path`` with ONNX Runtime (CPU) and describe it; ModelLoadError if it does not load."""
    path = Path(path)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises several unrelated exception types for bad files.
        raise ModelLoadError(f"{path.name} is not a model ONNX Runtime can load: {first_line(exc)}") from None
    meta = session.get_modelmeta()
    metadata = {str(k): str(v)[:MAX_METADATA_CHARS] for k, v in meta.custom_metadata_map.items()}
    graph = onnx.load(str(path), load_external_data=False).graph
    output_ops = {out: node.op_type for node in graph.node for out in node.output}
    outputs = tuple(_info(o) for o in session.get_outputs())
    return ModelSurvey(tuple(_info(i) for i in session.get_inputs()), outputs, meta.producer_name or "", metadata,
                       {o.name: output_ops[o.name] for o in outputs if o.name in output_ops})


def _info(arg: object) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else "?")
                  for d in getattr(arg, "shape"))
    kind = str(getattr(arg, "type"))
    return TensorInfo(str(getattr(arg, "name")), shape, _ORT_DTYPES.get(kind, kind))


def literal(text: str) -> object | None:
    """A Python or JSON literal from exporter metadata (e.g. Ultralytics' ``names``), or None if it is not one."""
    if len(text) > MAX_METADATA_CHARS:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
