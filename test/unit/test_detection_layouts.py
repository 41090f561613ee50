"""Every detector layout decoded to known boxes, and every wrong declaration refused with its fix.

The models are the colour detector in each layout (testing/detector_layouts.py):
one candidate per 16-pixel cell, scored by the cell's channel means, so a
saturated square filling one cell is one box of its colour, score 1.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from robot_model_deployer.bundle.errors import ModelCheckError
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.testing.detector_layouts import LAYOUTS, TF_SSD_LABELS, layout_manifest
from robot_model_deployer.testing.models import COLOUR_LABELS, colour_detector, detector_manifest, write_bundle

FORMATS = ("yolo", *LAYOUTS)


def model_for(fmt: str):
    return colour_detector() if fmt == "yolo" else LAYOUTS[fmt]()


def manifest_for(fmt: str, declared: str | None = None, **overrides) -> dict:
    manifest = detector_manifest() if fmt == "yolo" else layout_manifest(fmt)
    manifest["detection"] = {**manifest["detection"], "format": declared or fmt}
    manifest.update(overrides)
    return manifest


def labels_for(fmt: str) -> tuple[str, ...]:
    return TF_SSD_LABELS if fmt == "tf_ssd" else COLOUR_LABELS


def bundle(tmp_path: Path, fmt: str, declared: str | None = None, labels: tuple[str, ...] | None = None,
           images: dict[str, np.ndarray] | None = None, **overrides) -> Path:
    extra = {}
    for name, image in (images or {}).items():
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        extra[f"validation/{name}.png"] = buffer.getvalue()
    manifest = manifest_for(fmt, declared, **overrides)
    if images:
        manifest["validation"] = {"images": sorted(extra)}
    return write_bundle(tmp_path / f"{fmt}-as-{declared or fmt}", model_for(fmt), manifest,
                        labels=labels if labels is not None else labels_for(fmt), extra_files=extra)


def square(colour: str, x: int, y: int, side: int = 32, width: int = 128, height: int = 96) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[y:y + side, x:x + side, COLOUR_LABELS.index(colour)] = 255
    return image


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_layout_finds_the_square_in_image_pixels(tmp_path: Path, fmt: str) -> None:
    engine = InferenceEngine.from_bundle(load_bundle_dir(bundle(tmp_path, fmt)))
    if fmt == "tf_ssd":
        # Stretched 128x128 -> 64x64: the square at (32, 64) fills cell (1, 2).
        image, expected = square("green", 32, 64, width=128, height=128), [32, 64, 64, 96]
    else:
        # Letterboxed 128x96 -> 64x48 + 8 rows above: the square at (64, 16) fills cell (2, 1).
        image, expected = square("green", 64, 16), [64, 16, 96, 48]
    prediction = engine.infer(image)
    assert prediction.labels == ("green",)
    assert 0.85 < prediction.scores[0] <= 1.0  # the cell's mean: resizing blurs the square's edges a little
    np.testing.assert_allclose(prediction.boxes, [expected], atol=1e-4)


def test_rtdetr_boxes_scale_with_orig_target_sizes_the_engine_feeds(tmp_path: Path) -> None:
    engine = InferenceEngine.from_bundle(load_bundle_dir(bundle(tmp_path, "rtdetr")))
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:32, 48:64, 0] = 255
    candidates = engine.candidates(image)
    best = int(np.argmax(candidates.scores))
    np.testing.assert_allclose(candidates.boxes[best], [48, 16, 64, 32], atol=1e-4)


def test_layouts_without_nms_keep_overlapping_boxes_the_model_chose(tmp_path: Path) -> None:
    # Two adjacent red cells: no overlap, both kept in every layout; max_detections caps NMS-free layouts too.
    image = np.zeros((64, 64, 3), np.uint8)
    image[0:16, 0:32, 0] = 255
    for fmt in ("end2end", "detr", "rtdetr"):
        engine = InferenceEngine.from_bundle(load_bundle_dir(bundle(tmp_path, fmt)))
        assert engine.infer(image).labels == ("red", "red")
        capped = bundle(tmp_path / "capped", fmt, detection={"format": fmt, "score_threshold": 0.3,
                                                              "max_detections": 1})
        assert len(InferenceEngine.from_bundle(load_bundle_dir(capped)).infer(image).scores) == 1


@pytest.mark.parametrize(("actual", "declared"), [(a, d) for a in FORMATS for d in FORMATS if a != d])
def test_a_wrong_declaration_is_refused_with_the_right_format(tmp_path: Path, actual: str, declared: str) -> None:
    with pytest.raises(ModelCheckError) as refused:
        check_model(bundle(tmp_path, actual, declared))
    message = str(refused.value)
    assert f"set detection.format: {actual}" in message, message
    assert "manifest's detection section" in message, message


def test_yolo_declared_on_a_yolov8_output_names_the_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ModelCheckError) as refused:
        check_model(bundle(tmp_path, "yolov8", "yolo"))
    assert str(refused.value) == (
        "model check failed: model.onnx: output 'output0' [1, 7, 16] read as detection.format yolo holds 11 class "
        "scores but labels.txt lists 3 classes; it looks like YOLOv8 [1, 7, 16] ([1, 4 + C, N], C=3): set "
        "detection.format: yolov8; fix the model or the manifest's detection section and rebuild the bundle")


def test_a_class_count_that_differs_from_the_labels_points_at_the_labels(tmp_path: Path) -> None:
    with pytest.raises(ModelCheckError) as refused:
        check_model(bundle(tmp_path, "yolov8", labels=("red", "green", "blue", "yellow")))
    message = str(refused.value)
    assert "holds 3 class scores but labels.txt lists 4 classes" in message
    assert "manifest's labels section" in message


def test_scores_outside_0_1_on_validation_images_are_refused(tmp_path: Path) -> None:
    # Pixels fed as 0..255 instead of 0..1: cell means, the scores, reach 255.
    root = bundle(tmp_path, "yolov8", images={"red": square("red", 0, 0)},
                  input={**detector_manifest()["input"], "scale": 1.0})
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    message = str(refused.value)
    assert "scores on validation image validation/red.png range from 0 to 126.5, outside [0, 1]" in message
    assert "manifest's detection section" in message


def test_class_ids_not_in_the_labels_are_refused(tmp_path: Path) -> None:
    # end2end carries class ids, not one score per class: only the values can show a short labels file.
    root = bundle(tmp_path, "end2end", labels=("red", "green"), images={"blue": square("blue", 0, 0)})
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    message = str(refused.value)
    assert "class id 2 on validation image validation/blue.png is not in the labels: labels.txt lists 2 " \
           "classes (ids 0-1)" in message
    assert "manifest's labels section" in message


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_layout_passes_the_model_check_with_validation_images(tmp_path: Path, fmt: str) -> None:
    check_model(bundle(tmp_path, fmt, images={"red": square("red", 0, 0), "blue": square("blue", 64, 32)}))


def test_a_sequence_output_is_refused_as_a_classifier(tmp_path: Path) -> None:
    # A CTC recogniser's [1, T, C]: here the YOLOv8 layout's [1, 7, 16] read as classification.
    manifest = manifest_for("yolov8")
    manifest["task"] = "classification"
    del manifest["detection"]
    root = write_bundle(tmp_path / "seq", model_for("yolov8"), manifest)
    with pytest.raises(ModelLoadError) as refused:
        InferenceEngine.from_bundle(load_bundle_dir(root))
    message = str(refused.value)
    assert "classification output has shape [1, 7, 16]" in message
    assert "set task: detection and set detection.format: yolov8" in message
    assert refused.value.section == "classification"


def test_rtdetr_inputs_without_the_rtdetr_format_say_so(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError) as refused:
        InferenceEngine.from_bundle(load_bundle_dir(bundle(tmp_path, "rtdetr", "yolov8")))
    assert "like an RT-DETR / D-FINE export: set detection.format: rtdetr" in str(refused.value)


def test_boxes_wholly_in_the_letterbox_padding_are_not_reported(tmp_path: Path) -> None:
    # A white fill makes the padded cells score 1 in every channel; they lie outside the image.
    manifest = manifest_for("yolov8")
    manifest["input"] = {**manifest["input"], "letterbox_fill": 255}
    root = write_bundle(tmp_path / "fill", model_for("yolov8"), manifest)
    image = np.zeros((32, 64, 3), np.uint8)  # letterboxed into rows 16..48 of the 64x64 input
    image[0:16, 0:16, 2] = 255
    prediction = InferenceEngine.from_bundle(load_bundle_dir(root)).infer(image)
    assert prediction.labels == ("blue",)
    np.testing.assert_allclose(prediction.boxes, [[0, 0, 16, 16]], atol=1e-4)
