"""INT8 recipes as data: read from targets.yaml, checked up front, and judged by the gate on a YOLOv8 graph."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.deploy.optimizer import profile_fields
from robot_model_deployer.optimize.pipeline import FP32_FALLBACK, optimize_bundle
from robot_model_deployer.optimize.quantize import FloatRegion, QuantTool
from robot_model_deployer.optimize.recipes import Int8Recipe, RecipeError
from robot_model_deployer.optimize.report import VariantStatus
from robot_model_deployer.optimize.targets import (Accelerator, Precision, TargetConfigError, TargetProfile,
                                                   load_target_profile, load_target_profiles, profile_from_dict)
from robot_model_deployer.testing.quant_models import write_image_bundle
from robot_model_deployer.testing.yolo_export import export_yolo, ultralytics_version

HEAD_RECIPE = Int8Recipe("ort-head", float_region=FloatRegion.DETECT_HEAD)


def spread_scores(model: onnx.ModelProto, gain: float = 1e7) -> onnx.ModelProto:
    """Zero the class convs' biases and scale their weights: seeded features are tiny, logits then spread +-3."""
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if re.search(r"/cv3\.\d+\.2/Conv$", node.name):
            weight, bias = initializers[node.input[1]], initializers[node.input[2]]
            weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * gain, weight.name))
            bias.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(bias)), bias.name))
    return model


def test_shipped_targets_name_their_recipes_and_openvino_tries_nncf_first() -> None:
    profiles = load_target_profiles()
    openvino = profiles["x86_openvino"].int8_recipes
    assert openvino[0].tool is QuantTool.NNCF and openvino[0].float_region is FloatRegion.DETECT_HEAD
    assert not openvino[0].serves(Accelerator.CPU) and openvino[0].serves(Accelerator.OPENVINO)
    assert any(r.float_region is FloatRegion.DETECT_HEAD for r in profiles["x86_cpu"].int8_recipes)


def test_a_profile_passed_to_the_child_keeps_its_recipes() -> None:
    profile = load_target_profile("x86_openvino")
    assert profile_from_dict(profile.name, profile_fields(profile)) == profile


@pytest.mark.parametrize("text, words", [
    ("int8_recipes: {r: {tool: nncf, accelerators: [cpu]}}\ntargets: {t: {accelerators: [cpu], precisions: [int8], "
     "int8_recipes: [r]}}", "tool nncf cannot build for cpu"),
    ("int8_recipes: {r: {tool: nncf, calibration: entropy}}\ntargets: {t: {accelerators: [cpu], precisions: [int8]}}",
     "tool nncf uses NNCF's own ranges"),
    ("int8_recipes: {r: {float_region: everything}}\ntargets: {t: {accelerators: [cpu], precisions: [int8]}}",
     "int8_recipes.r.float_region"),
    ("targets: {t: {accelerators: [cpu], precisions: [int8], int8_recipes: [missing]}}",
     "names 'missing', which is not in int8_recipes"),
])
def test_bad_recipes_fail_when_the_file_is_read(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises((TargetConfigError, RecipeError), match=words):
        load_target_profiles(path)


@pytest.mark.skipif(ultralytics_version() is None, reason="ultralytics (test-time tool) is not installed")
def test_gate_refuses_an_int8_yolov8_below_the_f1_floor_and_fp32_serves(tmp_path: Path) -> None:
    # Seeded (untrained) weights, with the class convs scaled so scores spread over (0, 1) around the
    # threshold: INT8 flips boxes in and out, a measured F1 below a strict floor, which the gate must refuse.
    size = 128
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(10)]
    manifest = {
        "schema_version": 1, "name": "yolov8n-seeded", "version": "1.0.0", "task": "detection",
        "model": "model.onnx", "labels": "labels.txt",
        "input": {"width": size, "height": size, "resize": "letterbox", "color_order": "rgb", "layout": "nchw",
                  "dtype": "float32", "letterbox_fill": 114},
        "detection": {"format": "yolov8", "score_threshold": 0.5, "iou_threshold": 0.5, "max_detections": 300},
        "acceptance": {"min_detection_f1": 0.99, "max_score_drift": 1.0},
    }
    model = spread_scores(onnx.load(str(export_yolo("yolov8n", size, nc=2))))
    root = write_image_bundle(tmp_path / "bundle", model, manifest, images[:6], images[6:], labels=("a", "b"))
    target = TargetProfile("cpu_head", (Accelerator.CPU,), (Precision.INT8, Precision.FP32), benchmark_runs=3,
                           warmup_runs=1, int8_recipes=(HEAD_RECIPE,))
    report = optimize_bundle(load_bundle_dir(root), target, tmp_path / "out")

    int8 = [v for v in report.variants if v.precision is Precision.INT8]
    assert int8 and all(v.quantization.endswith("-head") for v in int8)
    assert any("head decode kept float" in note for v in int8 for note in v.notes)
    for variant in int8:
        assert variant.status is VariantStatus.REJECTED
        assert variant.detection_f1 is not None and 0.3 < variant.detection_f1 < 0.99  # INT8 works, not well enough
        assert f"box F1 at IoU 0.5 vs FP32 {variant.detection_f1:.3f} < 0.990" in variant.reason
    assert report.chosen == FP32_FALLBACK
