"""The optimize stage on segmentation and pose models: INT8 variants judged by mask IoU and OKS against FP32.

A crafted segmenter (known answers, validation.expected as label PNGs) and
Ultralytics' yolo26n-sem and yolov8n-pose architectures exported here.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from robot_model_deployer.bundle.loader import BundleDir, load_bundle_dir
from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.inference.accelerators import Accelerator, Precision
from robot_model_deployer.optimize.pipeline import ModelRefusedError, optimize_bundle
from robot_model_deployer.optimize.report import VariantStatus, format_table
from robot_model_deployer.optimize.targets import TargetProfile
from robot_model_deployer.testing import dense_models
from robot_model_deployer.testing.quant_models import write_image_bundle
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo, require_ultralytics
from robot_model_deployer.validation.labelled import ExpectedOutputsError, load_expected_outputs

CPU_ONLY = TargetProfile("test_cpu", (Accelerator.CPU,), (Precision.INT8, Precision.FP32), benchmark_runs=5,
                         warmup_runs=1)


def scenes(count: int, size: int, seed: int) -> list[np.ndarray]:
    """Images of a square of one colour on another, with texture, and the dominant-colour label of each pixel."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        image = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        image[:, :, index % 3] = 230
        top, left = rng.integers(0, size // 2, 2)
        image[top:top + size // 2, left:left + size // 2] = rng.integers(0, 60, 3)
        image[top:top + size // 2, left:left + size // 2, (index + 1) % 3] = 230
        images.append(image)
    return images


def right_labels(image: np.ndarray) -> np.ndarray:
    blocks = image.reshape(image.shape[0] // 4, 4, image.shape[1] // 4, 4, 3).mean(axis=(1, 3))
    return np.repeat(np.repeat(blocks.argmax(axis=2), 4, axis=0), 4, axis=1).astype(np.uint8)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def segmenter_bundle(root: Path, model, min_accuracy: float = 0.0):
    validation = scenes(6, 32, seed=2)
    manifest = {**dense_models.segmenter_manifest(size=32), "acceptance": {"min_accuracy": min_accuracy},
                "validation": {"expected": "expected.json"}}
    write_image_bundle(root, model, manifest, scenes(8, 32, seed=1), validation)
    expected = {}
    for index, image in enumerate(validation):
        name = f"labels/{index:03d}.png"
        (root / "labels").mkdir(exist_ok=True)
        (root / name).write_bytes(png(right_labels(image)))
        expected[f"validation/{index:03d}.png"] = {"label_image": name}
    (root / "expected.json").write_text(json.dumps(expected))
    return load_bundle_dir(root)


def test_int8_segmenter_is_judged_by_mask_iou_and_fp32_by_its_labels(tmp_path: Path) -> None:
    bundle = segmenter_bundle(tmp_path / "bundle", dense_models.colour_segmenter(32), min_accuracy=0.9)
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    int8 = next(v for v in report.variants if v.precision is Precision.INT8)
    assert int8.status is VariantStatus.ACCEPTED, int8.reason
    assert int8.mask_iou is not None and int8.mask_iou >= 0.9 and int8.top1_agreement is None
    assert f"{int8.mask_iou:.3f}" in format_table(report)


def test_a_segmenter_wrong_against_its_own_labels_is_refused_before_any_variant(tmp_path: Path) -> None:
    bundle = segmenter_bundle(tmp_path / "bundle", dense_models.colour_segmenter(32, label_shift=1),
                              min_accuracy=0.9)
    with pytest.raises(ModelRefusedError, match=r"FP32 mean mask IoU against validation.expected is 0\.0\d\d, below the 0.900"):
        optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")


def test_expected_label_image_outside_the_bundle_is_refused(tmp_path: Path) -> None:
    (tmp_path / "expected.json").write_text(json.dumps({"a.png": {"label_image": "../secret.png"}}))
    with pytest.raises(ExpectedOutputsError, match="must be a path inside the bundle"):
        load_expected_outputs(tmp_path / "expected.json", ["a.png"], Task.SEGMENTATION)


def exported_bundle(root: Path, model: onnx.ModelProto, manifest: dict, size: int) -> BundleDir:
    images = [np.asarray(Image.fromarray(i).resize((size, size))) for i in scenes(12, 64, seed=3)]
    write_image_bundle(root, model, manifest, images[:8], images[8:], labels=())
    return load_bundle_dir(root)


@pytest.mark.parametrize("arch, nc, task, sections, measure", [
    ("yolo26n-sem", 4, "segmentation", {"segmentation": {"format": "class_ids"}}, "mask_iou"),
    ("yolov8n-pose", 1, "pose", {"detection": {"score_threshold": 0.5}}, "keypoint_oks"),
])
def test_int8_of_an_ultralytics_architecture_is_judged_by_its_tasks_measure(tmp_path: Path, arch: str, nc: int,
                                                                            task: str, sections: dict,
                                                                            measure: str) -> None:
    require_ultralytics()
    size = 128
    model = onnx.load(str(export_yolo(arch, size, nc=nc, head=DrivenHead() if task == "pose" else None)))
    if task == "segmentation":
        model = dense_models.spread_class_map(model)  # else the seeded classifier gives one class everywhere
    manifest = {"schema_version": 1, "name": arch, "version": "1.0.0", "task": task, "model": "model.onnx",
                "input": {"width": size, "height": size, "resize": "letterbox"}, **sections}
    bundle = exported_bundle(tmp_path / "bundle", model, manifest, size)
    report = optimize_bundle(bundle, CPU_ONLY, tmp_path / "out")
    int8 = next(v for v in report.variants if v.precision is Precision.INT8)
    assert int8.status in (VariantStatus.ACCEPTED, VariantStatus.REJECTED), int8.reason
    value = getattr(int8, measure)
    assert value is not None and 0.0 <= value <= 1.0
    threshold = {"mask_iou": 0.9, "keypoint_oks": 0.9}[measure]
    assert (int8.status is VariantStatus.ACCEPTED) == (value >= threshold), (value, int8.reason)
    if int8.status is VariantStatus.REJECTED:
        assert f"acceptance.min_{'mask_iou' if measure == 'mask_iou' else 'keypoint_oks'}" in int8.reason
    print(f"{arch} INT8 {measure} {value:.3f} ({int8.status.value}) p50 {int8.p50_ms} ms vs FP32 "
          f"{report.variant('fp32-cpu').p50_ms if any(v.name == 'fp32-cpu' for v in report.variants) else '?'}")
