"""InferenceEngine on tiny real ONNX models: right answers, and load errors that say what to fix."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import manifest_from_dict
from robot_model_deployer.inference.engine import InferenceEngine, ModelLoadError
from robot_model_deployer.inference.preprocess import PixelFormat
from robot_model_deployer.testing.models import (
    COLOUR_LABELS, classifier_manifest, colour_classifier, colour_detector, detector_manifest, solid_image,
    write_bundle,
)

SIZE = 16


def classifier_bundle(root: Path, model: onnx.ModelProto | bytes | None = None,
                      labels: tuple[str, ...] = COLOUR_LABELS, **changes: Any) -> Path:
    manifest = classifier_manifest(size=SIZE)
    for key, value in changes.items():
        if isinstance(value, dict):
            manifest[key] = {**manifest.get(key, {}), **value}
        else:
            manifest[key] = value
    return write_bundle(root, colour_classifier(size=SIZE) if model is None else model, manifest, labels)


def engine_for(root: Path) -> InferenceEngine:
    return InferenceEngine.from_bundle(load_bundle_dir(root), warmup_runs=1)


def load_error(root: Path) -> str:
    with pytest.raises(ModelLoadError) as info:
        engine_for(root)
    return str(info.value)


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> InferenceEngine:
    return engine_for(classifier_bundle(tmp_path_factory.mktemp("classifier")))


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> InferenceEngine:
    root = write_bundle(tmp_path_factory.mktemp("detector"), colour_detector(size=64, cell=16),
                        detector_manifest(size=64))
    return engine_for(root)


# Classification --------------------------------------------------------------------

@pytest.mark.parametrize("colour", COLOUR_LABELS)
def test_classifier_names_the_colour_of_a_solid_rgb8_image(classifier: InferenceEngine, colour: str) -> None:
    prediction = classifier.infer(solid_image(colour, 40, 30), PixelFormat.RGB8)
    assert prediction.labels[0] == colour
    assert prediction.class_ids[0] == COLOUR_LABELS.index(colour)
    assert prediction.scores[0] > 0.99


@pytest.mark.parametrize("colour", COLOUR_LABELS)
def test_classifier_reads_bgr8_images_in_the_right_order(classifier: InferenceEngine, colour: str) -> None:
    bgr = np.ascontiguousarray(solid_image(colour, 40, 30)[:, :, ::-1])
    assert classifier.infer(bgr, PixelFormat.BGR8).labels[0] == colour


def test_rgb_image_read_as_bgr_swaps_red_and_blue(classifier: InferenceEngine) -> None:
    assert classifier.infer(solid_image("red"), PixelFormat.BGR8).labels[0] == "blue"


def test_classifier_returns_top_k_probabilities_with_timing(classifier: InferenceEngine) -> None:
    prediction = classifier.infer(solid_image("green"))
    assert len(prediction.labels) == 3 and set(prediction.labels) == set(COLOUR_LABELS)
    assert prediction.scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert list(prediction.scores) == sorted(prediction.scores, reverse=True)
    assert prediction.boxes.shape == (0, 4)
    assert prediction.inference_ms > 0
    assert prediction.is_finite()


def test_engine_reports_its_providers(classifier: InferenceEngine) -> None:
    assert classifier.providers == ["CPUExecutionProvider"]


def test_dynamic_batch_and_spatial_dims_are_accepted(tmp_path: Path) -> None:
    model = colour_classifier(size=SIZE)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "batch", "height", "width"
    engine = engine_for(classifier_bundle(tmp_path, model=model))
    assert engine.infer(solid_image("blue")).labels[0] == "blue"


# Detection -----------------------------------------------------------------------

def test_detector_finds_a_square_in_image_pixels_through_letterbox(detector: InferenceEngine) -> None:
    # 128x96 image -> letterboxed into 64x64 at scale 0.5 with 8 rows of padding top and bottom,
    # so each 16-pixel model cell is a 32-pixel square of the image starting at y = 16.
    image = np.zeros((96, 128, 3), np.uint8)
    image[16:48, 64:96, 0] = 255   # red square: model cell (column 2, row 1)
    image[48:80, 0:32, 2] = 255    # blue square: model cell (column 0, row 2)
    prediction = detector.infer(image, PixelFormat.RGB8)
    found = dict(zip(prediction.labels, prediction.boxes.tolist()))
    assert sorted(found) == ["blue", "red"]
    np.testing.assert_allclose(found["red"], [64, 16, 96, 48], atol=0.5)
    np.testing.assert_allclose(found["blue"], [0, 48, 32, 80], atol=0.5)
    assert (prediction.scores > 0.8).all()


def test_detector_finds_nothing_on_a_black_image(detector: InferenceEngine) -> None:
    prediction = detector.infer(np.zeros((96, 128, 3), np.uint8))
    assert prediction.labels == () and prediction.boxes.shape == (0, 4)


def test_detector_reads_bgr8(detector: InferenceEngine) -> None:
    image = np.zeros((64, 64, 3), np.uint8)
    image[0:16, 48:64, 0] = 255   # channel 0 is blue in bgr8
    prediction = detector.infer(image, PixelFormat.BGR8)
    assert prediction.labels == ("blue",)
    np.testing.assert_allclose(prediction.boxes[0], [48, 0, 64, 16], atol=0.5)


# Load errors ---------------------------------------------------------------------

def test_file_that_is_not_onnx_is_refused(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, model=b"\x00not an onnx model at all"))
    assert message.startswith("model.onnx is not a model ONNX Runtime can load: ")
    assert "\n" not in message


def test_input_dtype_mismatch_names_both_types(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, input={"dtype": "uint8"}))
    assert message == "model input 'images' is tensor(float) but the manifest says input.dtype uint8"


@pytest.mark.parametrize("change, axis", [({"width": 20}, 3), ({"height": 8}, 2),
                                          ({"color_order": "gray"}, 1)])
def test_input_shape_mismatch_names_the_axis(tmp_path: Path, change: dict, axis: int) -> None:
    message = load_error(classifier_bundle(tmp_path, input=change))
    assert message.startswith("model input 'images' has shape [1, 3, 16, 16], the manifest describes")
    assert message.endswith(f"(nchw): axis {axis} differs")


def test_layout_mismatch_is_a_shape_error(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, input={"layout": "nhwc"}))
    assert "the manifest describes [1, 16, 16, 3] (nhwc): axis 1 differs" in message


def test_rank_mismatch_is_a_shape_error(tmp_path: Path) -> None:
    model = colour_classifier(size=SIZE)
    model.graph.input[0].type.tensor_type.shape.dim.add().dim_value = 1  # now [1, 3, 16, 16, 1]
    message = load_error(classifier_bundle(tmp_path, model=model))
    assert "model input 'images' has shape [1, 3, 16, 16, 1], the manifest describes [1, 3, 16, 16] (nchw)" in message


def test_named_input_missing_lists_the_real_inputs(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, input={"name": "pixels"}))
    assert message == "model has no input named 'pixels' (it has images)"


def with_second_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The classifier with an extra input that feeds an extra output (e.g. a threshold input)."""
    model.graph.input.append(helper.make_tensor_value_info("threshold", TensorProto.FLOAT, [1]))
    model.graph.output.append(helper.make_tensor_value_info("threshold_out", TensorProto.FLOAT, [1]))
    model.graph.node.append(helper.make_node("Identity", ["threshold"], ["threshold_out"]))
    onnx.checker.check_model(model)
    return model


def test_multiple_inputs_without_a_name_asks_for_input_name(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, model=with_second_input(colour_classifier(size=SIZE))))
    assert message == "model has 2 inputs; name the image input in manifest input.name"


def test_multiple_inputs_with_a_wrong_name_lists_both(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, model=with_second_input(colour_classifier(size=SIZE)),
                                           input={"name": "image"}))
    assert message == "model has no input named 'image' (it has images, threshold)"


@pytest.mark.parametrize("labels", [("red", "green"), ("red", "green", "blue", "yellow")])
def test_labels_count_mismatch_names_both_counts(tmp_path: Path, labels: tuple[str, ...]) -> None:
    message = load_error(classifier_bundle(tmp_path, labels=labels))
    assert message == (f"model.onnx: model scores 3 classes but the labels file labels.txt lists {len(labels)}; "
                       "fix the labels file (one class per line)")


def test_named_classification_output_missing(tmp_path: Path) -> None:
    message = load_error(classifier_bundle(tmp_path, classification={"output_name": "probs"}))
    assert message == "model has no output named 'probs' (classification.output_name; it has logits)"


def test_named_classification_output_is_used(tmp_path: Path) -> None:
    engine = engine_for(classifier_bundle(tmp_path, classification={"output_name": "logits"}))
    assert engine.infer(solid_image("red")).labels[0] == "red"


def test_named_detection_output_missing(tmp_path: Path) -> None:
    manifest = detector_manifest(size=64)
    manifest["detection"]["boxes_output"] = "boxes"
    root = write_bundle(tmp_path, colour_detector(size=64), manifest)
    assert load_error(root) == "model.onnx: model has no output named 'boxes' (it has detections)"


def test_output_layout_that_does_not_match_the_task_fails_at_load(tmp_path: Path) -> None:
    manifest = detector_manifest(size=SIZE)
    root = write_bundle(tmp_path, colour_classifier(size=SIZE), manifest)
    message = load_error(root)
    assert message.startswith("model.onnx: output 'logits' [1, 3] does not fit detection.format yolo [1, N, 5 + C]")


def test_engine_can_be_built_without_a_bundle_dir(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(colour_classifier(size=SIZE).SerializeToString())
    manifest = manifest_from_dict(classifier_manifest(size=SIZE))
    engine = InferenceEngine(path, manifest, warmup_runs=0)
    assert engine.infer(solid_image("green")).labels[0] == "1"  # no labels: ids as strings
