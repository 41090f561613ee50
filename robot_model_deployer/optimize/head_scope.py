"""Which nodes of a detector are its head's decode: the part INT8 must leave float.

A YOLOv8/YOLO11-class head (Detect, and Segment, Pose and OBB built on it)
ends in box-distribution logits and class logits from per-scale convs, which
are reshaped, concatenated and split again, pass a DFL softmax + 1x1 conv,
and are decoded with anchor arithmetic (Add/Sub/Mul/Div) and a Sigmoid.
Quantizing that concatenation puts box logits and class logits on one
scale and flips scores near the threshold, so Ultralytics' OpenVINO INT8
export keeps those operations float (an NNCF ignored scope), while the
per-scale convs feeding them are quantized like the rest.

Two ways to find them, so models that are not Ultralytics exports work too:

- by name: Ultralytics exports name nodes ``/model.<i>/...`` after their
  module; the head is the module with the highest index, and its decode
  ops are those directly in it or in its ``dfl`` submodule (its conv
  branches ``cv2.*``, ``cv3.*``, ``cv4.*``, ``proto`` are deeper).
- by structure: the graph's tail (nodes with no Conv/Gemm/MatMul
  downstream), the compute layers that feed only that tail (the DFL conv,
  and the last class / mask-coefficient / keypoint convs where nothing
  but decode follows them), then, repeatedly, every non-compute node whose
  outputs go only into the region (softmax, the concat/split of box and
  class maps, the reshapes, the activation before a float conv). It stops
  at the branch convs before those, which stay quantized. It keeps a little
  more float than the names do, for graphs that have no Ultralytics names.

The stem (``find_stem``): the first compute layers, those that read the
image input, through non-compute ops only. They see raw pixels, whose
useful range in a low-contrast picture is a sliver of the calibrated one;
on a trained YOLOv8n keeping them float too lifted box F1 against FP32
from 0.81 to 0.92 at about the same speed (bench/bench_optimize.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import onnx

_COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_ULTRALYTICS_NODE = re.compile(r"^/model\.(\d+)/")
# Parts of an Ultralytics head module that show it is a Detect-family head.
_HEAD_MARKERS = ("/dfl/", "/cv2.", "/cv3.", "/one2one")


@dataclass(frozen=True)
class HeadScope:
    """The head decode nodes and how they were found (``ultralytics-names`` or ``structure``)."""

    nodes: tuple[str, ...]
    found_by: str


def find_head_decode(model: onnx.ModelProto) -> HeadScope:
    """The head decode nodes of ``model`` (named nodes expected: run quantize's _name_nodes first)."""
    by_name = _by_ultralytics_names(model)
    if by_name:
        return HeadScope(by_name, "ultralytics-names")
    return HeadScope(_by_structure(model), "structure")


def find_stem(model: onnx.ModelProto) -> tuple[str, ...]:
    """Names of the compute nodes the graph inputs reach through non-compute nodes only."""
    initializers = {i.name for i in model.graph.initializer}
    reached = {i.name for i in model.graph.input if i.name not in initializers}
    stem = []
    for node in model.graph.node:  # topological order
        if not any(name in reached for name in node.input):
            continue
        if node.op_type in _COMPUTE_OPS:
            stem.append(node.name)
        else:
            reached.update(node.output)
    return tuple(stem)


def _by_ultralytics_names(model: onnx.ModelProto) -> tuple[str, ...]:
    modules = {}
    for node in model.graph.node:
        match = _ULTRALYTICS_NODE.match(node.name)
        if match:
            modules.setdefault(int(match.group(1)), []).append(node.name)
    if not modules:
        return ()
    head = max(modules)
    names = modules[head]
    if not any(marker in name for name in names for marker in _HEAD_MARKERS):
        return ()
    own = re.compile(rf"^/model\.{head}/([^/]+|dfl/.+)$")
    return tuple(name for name in names if own.match(name))


def _by_structure(model: onnx.ModelProto) -> tuple[str, ...]:
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)

    def users(index: int) -> list[int]:
        return [c for output in nodes[index].output for c in consumers.get(output, ())]

    compute_downstream = [False] * len(nodes)
    # Valid ONNX graphs are topologically sorted: one backward pass suffices.
    for index in range(len(nodes) - 1, -1, -1):
        compute_downstream[index] = any(nodes[c].op_type in _COMPUTE_OPS or compute_downstream[c]
                                        for c in users(index))
    region = {i for i, node in enumerate(nodes) if node.op_type not in _COMPUTE_OPS and not compute_downstream[i]}
    region |= {i for i, node in enumerate(nodes)
               if node.op_type in _COMPUTE_OPS and users(i) and all(c in region for c in users(i))}
    for index in range(len(nodes) - 1, -1, -1):
        if index not in region and nodes[index].op_type not in _COMPUTE_OPS and users(index) \
                and all(c in region for c in users(index)):
            region.add(index)
    return tuple(nodes[i].name for i in sorted(region))
