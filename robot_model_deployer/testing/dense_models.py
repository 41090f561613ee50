"""Tiny real ONNX segmentation and pose models whose right answers are known, and their manifests.

Built with ``onnx.helper`` like testing/models.py, in the real output layouts:

- colour segmenter ([1, 3, H/2, W/2] logits, or [1, H/2, W/2] class ids): a
  pixel's class is its dominant colour (red, green, blue), judged on 2x2
  blocks, so a red square on a green image is labelled red exactly where it is.
- colour instance segmenter (YOLOv8-seg: detections [1, 4 + 3 + 4, N] and
  protos [1, 4, H/4, W/4]): every ``cell`` x ``cell`` cell of the input is a
  candidate box covering the cell, scored by its channel means; its mask is
  the pixels of the cell's dominant colour. A red square half a cell wide
  gives one "red" box (the cell) whose mask is the square.
- corner pose model (YOLOv8-pose, [1, 4 + 1 + 2 * 3, N]): cells scored by
  their brightest channel mean, one class, keypoints at the cell's top-left
  corner and centre, visible as much as the cell is bright.
"""
from __future__ import annotations

import copy
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robot_model_deployer.testing.models import _model

# own channel minus the mean of the others, as the colour classifier does
_MIXING = 1.5 * np.eye(3, dtype=np.float32) - 0.5


def colour_segmenter(size: int = 32, class_ids: bool = False, scale: float = 10.0,
                     label_shift: int = 0) -> onnx.ModelProto:
    """Dominant colour per 2x2 block; input ``images`` [1, 3, size, size].

    ``class_ids``: output the argmax as int64 [1, size/2, size/2] instead of
    logits. ``label_shift``: answers the colour that many places further
    (wrong on purpose). ``scale``: how sure it is.
    """
    weights = np.roll(_MIXING * scale, label_shift, axis=0).reshape(3, 3, 1, 1)
    nodes = [helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["pooled", "mixing"], ["logits"])]
    half = size // 2
    if class_ids:
        nodes.append(helper.make_node("ArgMax", ["logits"], ["labels"], axis=1, keepdims=0))
        output = helper.make_tensor_value_info("labels", TensorProto.INT64, [1, half, half])
    else:
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, half, half])
    graph = helper.make_graph(
        nodes, "colour_segmenter",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])], [output],
        [numpy_helper.from_array(weights, "mixing")])
    return _model(graph)


def _cell_boxes(size: int, cell: int) -> np.ndarray:
    """[1, 4, N] cx, cy, w, h of each cell, row by row (the order AveragePool's output flattens in)."""
    count = size // cell
    ys, xs = np.meshgrid(np.arange(count), np.arange(count), indexing="ij")
    centres = (np.stack([xs.reshape(-1), ys.reshape(-1)]) + 0.5) * cell
    sizes = np.full((2, count * count), float(cell))
    return np.concatenate([centres, sizes])[None].astype(np.float32)


def colour_instance_segmenter(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    """YOLOv8-seg layout: outputs ``output0`` [1, 11, N] and ``output1`` protos [1, 4, size/4, size/4]."""
    count = (size // cell) ** 2
    # coefficients: 6 x each channel mean, and 1 for the constant proto (-1), so only pixels of the
    # colours the cell has are inside (protos are 10 x (pixel - 0.5) per colour).
    nodes = [
        helper.make_node("AveragePool", ["images"], ["cell_means"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Reshape", ["cell_means", "flat_shape"], ["scores"]),
        helper.make_node("Mul", ["scores", "six"], ["colour_coefficients"]),
        helper.make_node("Concat", ["boxes", "scores", "colour_coefficients", "bias_coefficient"], ["output0"],
                         axis=1),
        helper.make_node("AveragePool", ["images"], ["quarter"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Sub", ["quarter", "half"], ["centred"]),
        helper.make_node("Mul", ["centred", "ten"], ["colour_protos"]),
        helper.make_node("Concat", ["colour_protos", "constant_proto"], ["output1"], axis=1),
    ]
    quarter = size // 4
    initializers = [
        numpy_helper.from_array(np.array([1, 3, count], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
        numpy_helper.from_array(np.array(10.0, np.float32), "ten"),
        numpy_helper.from_array(_cell_boxes(size, cell), "boxes"),
        numpy_helper.from_array(np.full((1, 1, count), 1.0, np.float32), "bias_coefficient"),
        numpy_helper.from_array(np.full((1, 1, quarter, quarter), -1.0, np.float32), "constant_proto"),
    ]
    graph = helper.make_graph(
        nodes, "colour_instance_segmenter",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 11, count]),
         helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 4, quarter, quarter])],
        initializers)
    return _model(graph)


def corner_pose_model(size: int = 64, cell: int = 16) -> onnx.ModelProto:
    """YOLOv8-pose layout, one class, 2 keypoints (cell corner, cell centre): output [1, 11, N]."""
    count = (size // cell) ** 2
    boxes = _cell_boxes(size, cell)
    corners = boxes[:, :2] - cell / 2
    keypoint_xy = np.concatenate([corners, boxes[:, :2]], axis=1)  # [1, 4, N]: x1, y1, x2, y2
    nodes = [
        helper.make_node("AveragePool", ["images"], ["cell_means"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("ReduceMax", ["cell_means"], ["brightest"], axes=[1], keepdims=1),
        helper.make_node("Reshape", ["brightest", "flat_shape"], ["score"]),
        helper.make_node("Split", ["keypoint_xy", "split_sizes"], ["kp1", "kp2"], axis=1),
        helper.make_node("Concat", ["boxes", "score", "kp1", "score", "kp2", "score"], ["output0"], axis=1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 1, count], np.int64), "flat_shape"),
        numpy_helper.from_array(boxes, "boxes"),
        numpy_helper.from_array(keypoint_xy.astype(np.float32), "keypoint_xy"),
        numpy_helper.from_array(np.array([2, 2], np.int64), "split_sizes"),
    ]
    graph = helper.make_graph(
        nodes, "corner_pose_model",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 11, count])], initializers)
    return _model(graph)


def _base(name: str, task: str, size: int, resize: str) -> dict[str, Any]:
    return {"schema_version": 1, "name": name, "version": "1.0.0", "task": task, "model": "model.onnx",
            "labels": "labels.txt",
            "input": {"width": size, "height": size, "resize": resize, "color_order": "rgb", "layout": "nchw",
                      "dtype": "float32", "scale": 1.0 / 255.0, "letterbox_fill": 0}}


def segmenter_manifest(name: str = "colour_segmenter", size: int = 32, class_ids: bool = False) -> dict[str, Any]:
    return {**_base(name, "segmentation", size, "stretch"),
            "segmentation": {"format": "class_ids" if class_ids else "logits"}}


def instance_manifest(name: str = "colour_instances", size: int = 64) -> dict[str, Any]:
    return {**_base(name, "instance_segmentation", size, "letterbox"),
            "detection": {"score_threshold": 0.3, "iou_threshold": 0.5},
            "instances": {"mask_coefficients": 4}}


def pose_manifest(name: str = "corner_pose", size: int = 64) -> dict[str, Any]:
    return {**_base(name, "pose", size, "letterbox"),
            "detection": {"score_threshold": 0.3, "iou_threshold": 0.5},
            "pose": {"keypoints": 2}}


POSE_LABELS = ("thing",)


def spread_class_map(model: onnx.ModelProto, gain: float = 200.0) -> onnx.ModelProto:
    """A copy of a segmentation model whose last Conv before its ArgMax is ``gain`` times louder, without bias.

    Seeded random weights leave yolo26n-sem's classifier dominated by its
    bias: every pixel gets one class, so mask IoU against FP32 is 1.0 whatever
    a variant does. Without the bias and louder, the class map follows the
    image (the role DrivenHead plays for the detection heads).
    """
    model = copy.deepcopy(model)
    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    node = next(n for n in graph.node if n.op_type == "ArgMax")
    while node.op_type != "Conv":
        node = producers[node.input[0]]
    initializers = {i.name: i for i in graph.initializer}
    weight = initializers[node.input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * gain, weight.name))
    if len(node.input) > 2:
        bias = initializers[node.input[2]]
        bias.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(bias)), bias.name))
    return model
