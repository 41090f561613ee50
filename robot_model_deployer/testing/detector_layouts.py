"""The colour detector of testing/models.py in every detector layout the manifest names.

Each graph cuts the image in cells of ``cell`` pixels and makes one candidate
per cell: its box covers the cell, its class scores are the cell's channel
means (red, green, blue, in [0, 1]). A saturated square that fills a cell is
found there as its colour, so a decoder's boxes, classes and scores are
known for any image, in every layout:

- ``yolov8``: [1, 4 + 3, N] cx, cy, w, h in input pixels (Ultralytics YOLOv8/YOLO11);
- ``end2end``: [1, N, 6] x1, y1, x2, y2, best score, class (YOLOv10/YOLO26 NMS-free);
- ``detr``: [1, N, 4 + 3] normalized cx, cy, w, h (Ultralytics RT-DETR);
- ``rtdetr``: inputs ``images`` and ``orig_target_sizes`` ([w, h], int64), outputs
  ``labels`` [1, N], ``boxes`` [1, N, 4] xyxy in the pixels of that size, ``scores`` [1, N];
- ``tf_ssd``: uint8 NHWC input; ``detection_boxes`` [1, N, 4] normalized ymin, xmin,
  ymax, xmax, ``detection_scores``, ``detection_classes`` (1-based, float), ``num_detections``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robot_model_deployer.testing.models import OPSET, detector_manifest

TF_SSD_LABELS = ("background", "red", "green", "blue")
"""TF Object Detection class ids start at 1: line 0 of its labels file is the background."""


def _cells(size: int, cell: int) -> int:
    if size % cell:
        raise ValueError("size must be a multiple of cell")
    return size // cell


def _geometry(size: int, cell: int, corners: bool, normalized: bool, yx: bool = False) -> np.ndarray:
    """[1, 4, cells, cells] per-cell boxes: cx, cy, w, h or x1, y1, x2, y2 (y1, x1, y2, x2 with ``yx``)."""
    cells = _cells(size, cell)
    ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    if corners:
        x1, y1 = xs * cell, ys * cell
        rows = [y1, x1, y1 + cell, x1 + cell] if yx else [x1, y1, x1 + cell, y1 + cell]
    else:
        rows = [(xs + 0.5) * cell, (ys + 0.5) * cell, np.full_like(xs, cell), np.full_like(ys, cell)]
    geometry = np.stack(rows).astype(np.float32)[None]
    return geometry / size if normalized else geometry


class _Graph:
    """Nodes and constants of one graph, with the cell statistics every layout starts from."""

    def __init__(self, size: int, cell: int, image: str = "images") -> None:
        self.size, self.cell, self.cells = size, cell, _cells(size, cell)
        self.count = self.cells * self.cells
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self.node("AveragePool", [image], "cell_means", kernel_shape=[cell, cell], strides=[cell, cell])
        self.node("ReduceMax", ["cell_means"], "best", keepdims=1, axes=[1])
        self.node("ArgMax", ["cell_means"], "best_class", axis=1, keepdims=1)

    def node(self, op: str, inputs: list[str], output: str, **attributes: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def constant(self, name: str, value: np.ndarray) -> str:
        self.constants.append(numpy_helper.from_array(value, name))
        return name

    def flat(self, source: str, channels: int, output: str, transpose: bool = False) -> str:
        """[1, channels, cells, cells] -> [1, channels, N], or [1, N, channels] with ``transpose``."""
        shape = self.constant(f"{output}_shape", np.array([1, channels, self.count], np.int64))
        flat = self.node("Reshape", [source, shape], f"{output}_flat" if transpose else output)
        return self.node("Transpose", [flat], output, perm=[0, 2, 1]) if transpose else flat

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.constants)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="rmd-testing")
        model.ir_version = 8
        onnx.checker.check_model(model)
        return model


def _image(size: int) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])


def yolov8_layout(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    g = _Graph(size, cell)
    geometry = g.constant("geometry", _geometry(size, cell, corners=False, normalized=False))
    g.node("Concat", [geometry, "cell_means"], "grid", axis=1)
    g.flat("grid", 7, "output0")
    return g.model("yolov8_layout", [_image(size)],
                   [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 7, g.count])])


def end2end_layout(size: int = 64, cell: int = 16, normalized: bool = False) -> onnx.ModelProto:
    """``normalized``: boxes in [0, 1] instead of pixels (a layout the end2end decoder must not accept)."""
    g = _Graph(size, cell)
    geometry = g.constant("geometry", _geometry(size, cell, corners=True, normalized=normalized))
    g.node("Cast", ["best_class"], "class_float", to=TensorProto.FLOAT)
    g.node("Concat", [geometry, "best", "class_float"], "grid", axis=1)
    g.flat("grid", 6, "output0", transpose=True)
    return g.model("end2end_layout", [_image(size)],
                   [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, g.count, 6])])


def detr_layout(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    g = _Graph(size, cell)
    geometry = g.constant("geometry", _geometry(size, cell, corners=False, normalized=True))
    g.node("Concat", [geometry, "cell_means"], "grid", axis=1)
    g.flat("grid", 7, "output0", transpose=True)
    return g.model("detr_layout", [_image(size)],
                   [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, g.count, 7])])


def rtdetr_layout(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    g = _Graph(size, cell)
    geometry = g.constant("geometry", _geometry(size, cell, corners=True, normalized=True))
    g.flat(geometry, 4, "unit_boxes", transpose=True)
    g.node("Cast", ["orig_target_sizes"], "sizes_float", to=TensorProto.FLOAT)
    g.node("Tile", ["sizes_float", g.constant("twice", np.array([1, 2], np.int64))], "sizes_xyxy")
    g.node("Unsqueeze", ["sizes_xyxy", g.constant("query_axis", np.array([1], np.int64))], "sizes_row")
    g.node("Mul", ["unit_boxes", "sizes_row"], "boxes")
    row = g.constant("row_shape", np.array([1, g.count], np.int64))
    g.node("Reshape", ["best", row], "scores")
    g.node("Reshape", ["best_class", row], "labels")
    inputs = [_image(size), helper.make_tensor_value_info("orig_target_sizes", TensorProto.INT64, [1, 2])]
    return g.model("rtdetr_layout", inputs, [
        helper.make_tensor_value_info("labels", TensorProto.INT64, [1, g.count]),
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, g.count, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, g.count])])


def tf_ssd_layout(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    pre = [helper.make_node("Cast", ["input_tensor"], ["pixels"], to=TensorProto.FLOAT),
           helper.make_node("Mul", ["pixels", "inverse_255"], ["unit_pixels"]),
           helper.make_node("Transpose", ["unit_pixels"], ["images"], perm=[0, 3, 1, 2])]
    g = _Graph(size, cell)
    g.nodes[:0] = pre
    g.constant("inverse_255", np.array(1.0 / 255.0, np.float32))
    geometry = g.constant("geometry", _geometry(size, cell, corners=True, normalized=True, yx=True))
    g.flat(geometry, 4, "detection_boxes", transpose=True)
    row = g.constant("row_shape", np.array([1, g.count], np.int64))
    g.node("Reshape", ["best", row], "detection_scores")
    g.node("Cast", ["best_class"], "class_float", to=TensorProto.FLOAT)
    g.node("Add", ["class_float", g.constant("one", np.array(1.0, np.float32))], "class_one_based")
    g.node("Reshape", ["class_one_based", row], "detection_classes")
    g.node("Identity", [g.constant("count", np.array([g.count], np.float32))], "num_detections")
    image = helper.make_tensor_value_info("input_tensor", TensorProto.UINT8, [1, size, size, 3])
    return g.model("tf_ssd_layout", [image], [
        helper.make_tensor_value_info("detection_boxes", TensorProto.FLOAT, [1, g.count, 4]),
        helper.make_tensor_value_info("detection_classes", TensorProto.FLOAT, [1, g.count]),
        helper.make_tensor_value_info("detection_scores", TensorProto.FLOAT, [1, g.count]),
        helper.make_tensor_value_info("num_detections", TensorProto.FLOAT, [1])])


LAYOUTS: dict[str, Callable[..., onnx.ModelProto]] = {
    "yolov8": yolov8_layout, "end2end": end2end_layout, "detr": detr_layout,
    "rtdetr": rtdetr_layout, "tf_ssd": tf_ssd_layout,
}
"""Builder of each layout's colour detector, by its detection.format."""


def layout_manifest(fmt: str, size: int = 64, **overrides: Any) -> dict[str, Any]:
    """The colour detector's manifest for layout ``fmt`` (tf_ssd: uint8 NHWC input, stretch)."""
    manifest = detector_manifest(name=f"colour_{fmt}", size=size)
    manifest["detection"] = {**manifest["detection"], "format": fmt}
    if fmt == "tf_ssd":
        manifest["input"] = {**manifest["input"], "layout": "nhwc", "dtype": "uint8", "resize": "stretch"}
    manifest.update(overrides)
    return manifest
