"""INT8 quantization of tiny conv models: it calibrates, keeps decode tails float, and checks its config."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from robot_model_deployer.optimize.quantize import (
    CalibrationMethod, FloatRegion, Int8Scheme, QuantizationConfig, QuantizationError, find_float_nodes,
    quantize_model,
)
from robot_model_deployer.testing.quant_models import (
    colour_images, conv_classifier, outlier_classifier, yolo_head_detector,
)

SIZE = 32


def tensors(count: int, seed: int = 0) -> list[np.ndarray]:
    return [(image.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
            for image in colour_images(count, SIZE, seed)]


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def run(path: Path, tensor: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": tensor})[0]


def test_conv_classifier_quantizes_to_int8_and_keeps_its_answers(tmp_path: Path) -> None:
    source = save(conv_classifier(SIZE), tmp_path / "fp32.onnx")
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(8), "images", QuantizationConfig())
    model = onnx.load(str(result.path))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8_weights = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 3  # the three conv kernels, per channel
    for tensor in tensors(9, seed=5):
        assert run(result.path, tensor).argmax() == run(source, tensor).argmax()


def test_outlier_activation_breaks_naive_int8(tmp_path: Path) -> None:
    source = save(outlier_classifier(SIZE), tmp_path / "fp32.onnx")
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(8), "images", QuantizationConfig())
    agreement = np.mean([run(result.path, t).argmax() == run(source, t).argmax() for t in tensors(12, seed=3)])
    assert agreement < 0.9


def test_opset_11_with_dynamic_batch_is_upgraded_and_pinned(tmp_path: Path) -> None:
    source = save(conv_classifier(SIZE, opset=11, dynamic_batch=True), tmp_path / "fp32.onnx")
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(4), "images", QuantizationConfig(per_channel=True))
    assert result.opset >= 13
    assert any("opset 11 -> 13" in note for note in result.notes)
    assert any("pinned" in note for note in result.notes)
    tensor = tensors(1)[0]
    assert run(result.path, tensor).argmax() == run(source, tensor).argmax()


def test_per_tensor_keeps_old_opset(tmp_path: Path) -> None:
    source = save(conv_classifier(SIZE, opset=11), tmp_path / "fp32.onnx")
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(4), "images",
                            QuantizationConfig(per_channel=False, scheme=Int8Scheme.U8S8))
    assert result.opset == 11


def test_decode_tail_is_found_and_stays_float(tmp_path: Path) -> None:
    model = yolo_head_detector(SIZE)
    tail = set(find_float_nodes(model))
    assert tail == {"slice_xy", "slice_wh", "exp_wh", "sigmoid_scores", "concat_decoded", "reshape_rows",
                    "transpose_rows"}
    heads = set(find_float_nodes(model, FloatRegion.HEADS))
    assert heads == tail | {"box_head", "score_head"}
    source = save(model, tmp_path / "det.onnx")
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(4), "images", QuantizationConfig())
    quantized = onnx.load(str(result.path))
    producers = {out: node for node in quantized.graph.node for out in node.output}
    exp = next(n for n in quantized.graph.node if n.op_type == "Exp")
    assert producers[exp.input[0]].op_type != "DequantizeLinear"  # Exp reads float, not INT8 coordinates.
    assert set(result.float_nodes) >= {"exp_wh", "sigmoid_scores"}


def test_classifier_tail_is_empty_when_gemm_is_last() -> None:
    assert find_float_nodes(conv_classifier(SIZE)) == ()
    assert find_float_nodes(conv_classifier(SIZE), FloatRegion.HEADS) == ("fc",)


def test_manifest_exclusions_are_honoured_and_unknown_ones_noted(tmp_path: Path) -> None:
    source = save(conv_classifier(SIZE), tmp_path / "fp32.onnx")
    result = quantize_model(source, tmp_path / "int8.onnx", tensors(4), "images",
                            QuantizationConfig(exclude_nodes=("conv0", "no_such_node")))
    assert "conv0" in result.float_nodes
    assert any("no_such_node" in note for note in result.notes)


def test_no_calibration_images_is_an_error_that_says_what_to_add(tmp_path: Path) -> None:
    source = save(conv_classifier(SIZE), tmp_path / "fp32.onnx")
    with pytest.raises(QuantizationError, match="calibration.images"):
        quantize_model(source, tmp_path / "int8.onnx", [], "images", QuantizationConfig())


@pytest.mark.parametrize("changes, words", [
    ({"calibration": CalibrationMethod.PERCENTILE, "percentile": 40.0}, "percentile must be"),
    ({"percentile": 99.0}, "only applies"),
    ({"scheme": Int8Scheme.U8U8, "symmetric_activations": True}, "signed activations"),
    ({"max_calibration_images": 0}, "max_calibration_images"),
    ({"exclude_nodes": ("",)}, "exclude_nodes"),
])
def test_bad_config_combinations_fail_up_front(changes: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        QuantizationConfig(**changes)


def test_config_labels_differ_per_recipe() -> None:
    labels = {QuantizationConfig().label, QuantizationConfig(scheme=Int8Scheme.U8S8).label,
              QuantizationConfig(float_region=FloatRegion.HEADS).label, QuantizationConfig(per_channel=False).label}
    assert len(labels) == 4
