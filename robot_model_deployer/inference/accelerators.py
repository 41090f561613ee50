"""The two axes a model variant is built along: where it runs and at what precision.

Shared by target profiles (what a robot may try), the optimizer (what it
built) and serving (what it loads), so it imports nothing.
"""
from __future__ import annotations

from enum import Enum


class Accelerator(str, Enum):
    """Where a variant runs: ONNX Runtime CPU, OpenVINO, or ORT's CUDA / TensorRT providers."""

    CPU = "cpu"
    OPENVINO = "openvino"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
