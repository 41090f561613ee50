"""The YOLO head decode stays float and the rest is quantized, on real Ultralytics graphs.

Models are Ultralytics architectures exported at test time (testing/yolo_export.py):
their graphs, names and heads are the real ones; their weights are seeded, which is
all a graph inspection needs.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest

from robot_model_deployer.optimize.head_scope import find_head_decode, find_stem
from robot_model_deployer.optimize.nncf_quantize import nncf_available
from robot_model_deployer.optimize.quantize import FloatRegion, QuantizationConfig, QuantTool, quantize_model
from robot_model_deployer.testing.yolo_export import export_yolo, ultralytics_version

pytestmark = pytest.mark.skipif(ultralytics_version() is None, reason="ultralytics (test-time tool) is not installed")

SIZE = 128
_QUANTIZER_TRANSPARENT = {"Concat", "Split", "VariadicSplit", "MaxPool", "Reshape", "Interpolate", "StridedSlice",
                          "Transpose"}
_BRANCH_CONV = re.compile(r"/cv[234]\.\d+/cv[234]\.\d+\.2/Conv$")


def exported(arch: str) -> onnx.ModelProto:
    return onnx.load(str(export_yolo(arch, SIZE)))


def tensors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.random((1, 3, SIZE, SIZE), dtype=np.float32) for _ in range(count)]


def head_index(model: onnx.ModelProto) -> int:
    return max(int(m.group(1)) for n in model.graph.node if (m := re.match(r"/model\.(\d+)/", n.name)))


@pytest.mark.parametrize("arch", ["yolov8n", "yolo11n", "yolov8n-seg", "yolov8n-pose"])
def test_head_decode_is_the_last_modules_own_ops_found_by_name_and_by_structure(arch: str) -> None:
    model = exported(arch)
    head = f"/model.{head_index(model)}/"
    scope = find_head_decode(model)
    assert scope.found_by == "ultralytics-names"
    names = set(scope.nodes)
    assert {f"{head}dfl/conv/Conv", f"{head}Sigmoid"} <= names
    assert all(n.startswith(head) for n in names)
    # The per-scale branch convs (boxes cv2, classes cv3, masks/keypoints cv4) stay quantizable.
    assert not any(_BRANCH_CONV.search(n) for n in names)

    # The same graph with its names gone: structure alone finds a region that holds the named one.
    anonymous = onnx.ModelProto()
    anonymous.CopyFrom(model)
    original = [n.name for n in anonymous.graph.node]
    for index, node in enumerate(anonymous.graph.node):
        node.name = f"node{index}"
    by_structure = find_head_decode(anonymous)
    assert by_structure.found_by == "structure"
    found = {original[int(n[4:])] for n in by_structure.nodes}
    assert names <= found
    assert all(n.startswith(head) for n in found if n.startswith("/model."))  # nothing of the backbone or neck
    # Of the branch convs, at most the last of each joins the float region.
    assert not any(re.search(r"/cv[234]\.\d+\.[01]/conv/Conv$", n) for n in found)


def test_the_stem_is_the_conv_that_reads_the_image() -> None:
    assert find_stem(exported("yolov8n")) == ("/model.0/conv/Conv",)


@pytest.mark.parametrize("region", [FloatRegion.DETECT_HEAD, FloatRegion.DETECT_HEAD_AND_STEM])
def test_ort_detect_head_recipe_keeps_the_decode_float_and_quantizes_every_other_conv(
        tmp_path: Path, region: FloatRegion) -> None:
    source = export_yolo("yolov8n", SIZE)
    config = QuantizationConfig(float_region=region)
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(4), "images", config)
    assert any("found by ultralytics-names" in note for note in result.notes)
    assert ("/model.0/conv/Conv" in result.float_nodes) == (region is FloatRegion.DETECT_HEAD_AND_STEM)
    graph = onnx.load(str(result.path)).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    float_nodes = set(result.float_nodes)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    for conv in convs:
        weight_from = produced_by.get(conv.input[1])
        quantized = weight_from is not None and weight_from.op_type == "DequantizeLinear"
        assert quantized == (conv.name not in float_nodes), conv.name
    for node in graph.node:
        if node.name in float_nodes and node.op_type in ("Sigmoid", "Softmax", "Concat", "Split"):
            assert not any(produced_by.get(i) is not None and produced_by[i].op_type == "DequantizeLinear"
                           for i in node.input), f"{node.name} reads a dequantized tensor"


@pytest.mark.skipif(not nncf_available(), reason="nncf and openvino are not installed (pip extra openvino)")
def test_nncf_recipe_writes_openvino_ir_with_the_head_ignored(tmp_path: Path) -> None:
    import openvino as ov

    source = export_yolo("yolov8n", SIZE)
    config = QuantizationConfig(tool=QuantTool.NNCF, float_region=FloatRegion.DETECT_HEAD)
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(4), "images", config)
    assert result.path.suffix == ".xml" and result.path.with_suffix(".bin").is_file()
    model = ov.Core().read_model(str(result.path))
    ops = {op.get_friendly_name(): op for op in model.get_ops()}

    def fed_by_fake_quantize(op) -> bool:
        """A FakeQuantize on an input, directly or through ops NNCF moves quantizers across."""
        for value in op.input_values():
            producer = value.get_node()
            if producer.get_type_name() == "FakeQuantize":
                return True
            if producer.get_type_name() in _QUANTIZER_TRANSPARENT and fed_by_fake_quantize(producer):
                return True
        return False

    float_names = set(result.float_nodes)
    convs = [op for op in model.get_ops() if op.get_type_name() == "Convolution"]
    float_convs = [op for op in convs if op.get_friendly_name().removesuffix("/WithoutBiases") in float_names]
    assert [op.get_friendly_name() for op in float_convs] == ["/model.22/dfl/conv/Conv"]
    for conv in convs:
        assert fed_by_fake_quantize(conv) == (conv not in float_convs), conv.get_friendly_name()
    for name in float_names:
        if name in ops and ops[name].get_type_name() in ("Sigmoid", "Concat", "SoftMax"):
            assert not fed_by_fake_quantize(ops[name]), name


def test_nncf_needs_its_own_ranges() -> None:
    with pytest.raises(ValueError, match="tool nncf uses NNCF's own ranges"):
        QuantizationConfig(tool=QuantTool.NNCF, symmetric_activations=True)
    assert QuantizationConfig(tool=QuantTool.NNCF, float_region=FloatRegion.DETECT_HEAD).label == "nncf-head"
