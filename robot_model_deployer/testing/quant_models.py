"""Tiny real conv models for quantization tests, one that INT8 keeps and one it breaks.

- ``conv_classifier``: three Conv+Relu layers, GlobalAveragePool and Gemm,
  classing an image by its dominant colour (red/green/blue). Weights are an
  identity path plus small random mixing, so it behaves like a real CNN to
  the quantizer but its right answers are known.
- ``outlier_classifier``: the same task, but its first conv also emits a
  channel 500x brighter than the rest. INT8 activations share one scale per
  tensor, so the colour channels fall below one quantization step and the
  answers become noise: the accuracy gate must refuse it.
- ``yolo_head_detector``: a conv backbone with a YOLOX-style decode tail
  (Sigmoid, Exp, Mul, Concat, Reshape, Transpose) for float-node detection.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from robot_model_deployer.testing.models import COLOUR_LABELS, write_bundle

OPSET = 17


def conv_classifier(size: int = 32, channels: int = 8, seed: int = 0, opset: int = OPSET,
                    dynamic_batch: bool = False) -> onnx.ModelProto:
    """Conv+Relu x3 -> GlobalAveragePool -> Gemm, classing RGB images by dominant colour."""
    rng = np.random.default_rng(seed)
    initializers, nodes = [], []
    previous, in_channels = "images", 3
    for layer in range(3):
        kernel = rng.normal(0.0, 0.02, size=(channels, in_channels, 3, 3)).astype(np.float32)
        for c in range(min(3, in_channels)):
            kernel[c, c, 1, 1] += 1.0
        bias = rng.normal(0.0, 0.01, size=channels).astype(np.float32)
        initializers += [numpy_helper.from_array(kernel, f"w{layer}"), numpy_helper.from_array(bias, f"b{layer}")]
        nodes += [helper.make_node("Conv", [previous, f"w{layer}", f"b{layer}"], [f"conv{layer}"],
                                   name=f"conv{layer}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"conv{layer}"], [f"relu{layer}"], name=f"relu{layer}")]
        previous, in_channels = f"relu{layer}", channels
    return _classifier_tail(nodes, initializers, previous, channels, size, rng, opset, dynamic_batch,
                            "conv_classifier")


def outlier_classifier(size: int = 32, outlier_gain: float = 500.0, opset: int = OPSET) -> onnx.ModelProto:
    """Dominant-colour classifier whose first activation carries a huge outlier channel."""
    rng = np.random.default_rng(1)
    kernel = np.zeros((4, 3, 1, 1), dtype=np.float32)
    for c in range(3):
        kernel[c, c, 0, 0] = 1.0
    kernel[3, :, 0, 0] = outlier_gain
    initializers = [numpy_helper.from_array(kernel, "w0"), numpy_helper.from_array(np.zeros(4, np.float32), "b0")]
    nodes = [helper.make_node("Conv", ["images", "w0", "b0"], ["conv0"], name="conv0"),
             helper.make_node("Relu", ["conv0"], ["relu0"], name="relu0")]
    return _classifier_tail(nodes, initializers, "relu0", 4, size, rng, opset, False, "outlier_classifier",
                            noise=0.0)


def _classifier_tail(nodes: list, initializers: list, features: str, channels: int, size: int,
                     rng: np.random.Generator, opset: int, dynamic_batch: bool, name: str,
                     noise: float = 0.02) -> onnx.ModelProto:
    # logits = 10 * (own channel mean - mean of the other two), as testing.models.colour_classifier.
    weights = np.zeros((channels, 3), dtype=np.float32)
    weights[:3, :3] = (1.5 * np.eye(3) - 0.5) * 10.0
    weights += rng.normal(0.0, noise, size=weights.shape).astype(np.float32) if noise else 0.0
    initializers += [numpy_helper.from_array(weights, "fc_w"), numpy_helper.from_array(np.zeros(3, np.float32), "fc_b")]
    nodes += [helper.make_node("GlobalAveragePool", [features], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten", axis=1),
              helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc")]
    batch: int | str = "batch" if dynamic_batch else 1
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        initializers,
    )
    return _model(graph, opset)


def yolo_head_detector(size: int = 32, seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """Conv backbone + two head convs + a YOLOX-style decode tail; output [1, N, 6]."""
    rng = np.random.default_rng(seed)
    cells = size // 8

    def conv(name: str, source: str, out_c: int, in_c: int, stride: int = 1) -> list:
        kernel = rng.normal(0, 0.1, size=(out_c, in_c, 3, 3)).astype(np.float32)
        initializers.append(numpy_helper.from_array(kernel, f"{name}_w"))
        return [helper.make_node("Conv", [source, f"{name}_w"], [name], name=name, pads=[1, 1, 1, 1],
                                 strides=[stride, stride])]

    initializers: list = []
    nodes = conv("stem", "images", 8, 3, 2) + [helper.make_node("Relu", ["stem"], ["stem_r"], name="stem_relu")]
    nodes += conv("body", "stem_r", 8, 8, 4) + [helper.make_node("Relu", ["body"], ["body_r"], name="body_relu")]
    nodes += conv("box_head", "body_r", 4, 8) + conv("score_head", "body_r", 2, 8)
    for name, value in (("flat_shape", [1, 6, cells * cells]), ("s0", [0]), ("s2", [2]), ("s4", [4]), ("ax1", [1])):
        initializers.append(numpy_helper.from_array(np.array(value, np.int64), name))
    nodes += [
        helper.make_node("Slice", ["box_head", "s0", "s2", "ax1"], ["xy"], name="slice_xy"),
        helper.make_node("Slice", ["box_head", "s2", "s4", "ax1"], ["wh_raw"], name="slice_wh"),
        helper.make_node("Exp", ["wh_raw"], ["wh"], name="exp_wh"),
        helper.make_node("Sigmoid", ["score_head"], ["scores"], name="sigmoid_scores"),
        helper.make_node("Concat", ["xy", "wh", "scores"], ["decoded"], name="concat_decoded", axis=1),
        helper.make_node("Reshape", ["decoded", "flat_shape"], ["rows_t"], name="reshape_rows"),
        helper.make_node("Transpose", ["rows_t"], ["detections"], name="transpose_rows", perm=[0, 2, 1]),
    ]
    graph = helper.make_graph(
        nodes, "yolo_head_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, [1, cells * cells, 6])],
        initializers,
    )
    return _model(graph, opset)


def _model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="rmd-testing")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def colour_images(count: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """RGB uint8 images each dominated by one colour, with texture, cycling red/green/blue."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        image = rng.integers(0, 90, size=(size, size, 3)).astype(np.uint8)
        image[:, :, index % 3] = rng.integers(150, 256, size=(size, size)).astype(np.uint8)
        images.append(image)
    return images


def write_image_bundle(directory: str | Path, model: onnx.ModelProto, manifest: Mapping[str, Any],
                       calibration: Sequence[np.ndarray], validation: Sequence[np.ndarray],
                       labels: tuple[str, ...] = COLOUR_LABELS) -> Path:
    """A bundle with calibration/ and validation/ PNG images named in its manifest."""
    files: dict[str, bytes] = {}
    manifest = dict(manifest)
    for folder, images in (("calibration", calibration), ("validation", validation)):
        names = []
        for index, image in enumerate(images):
            relative = f"{folder}/{index:03d}.png"
            target = Path(directory) / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
            files[relative] = target.read_bytes()
            names.append(relative)
        manifest[folder] = {**dict(manifest.get(folder, {})), "images": names}
    return write_bundle(directory, model, manifest, labels=labels, extra_files=files)
