"""Real third-party models: a CTC text recogniser is no classifier (the issue's "265000-class classifier").

PP-OCRv4's recogniser and its 2-class text-direction classifier ship in the
rapidocr-onnxruntime wheel (Apache-2.0), installed without its dependencies
(scripts/requirements-nodeps.lock); only the model files are used, so the
package is found without importing it. Skipped, saying why, when it is missing.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from robot_model_deployer.bundle.errors import ModelCheckError
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.testing.models import write_bundle

_SPEC = importlib.util.find_spec("rapidocr_onnxruntime")
pytestmark = pytest.mark.skipif(_SPEC is None, reason="rapidocr-onnxruntime (Apache-2.0, its PP-OCR models) is "
                                                      "not installed; scripts/setup.sh installs it")


def model_file(name: str) -> bytes:
    assert _SPEC is not None and _SPEC.submodule_search_locations
    return (Path(_SPEC.submodule_search_locations[0]) / "models" / name).read_bytes()


def classifier(width: int, labels: tuple[str, ...] | None) -> dict:
    manifest = {
        "schema_version": 1, "name": "ocr", "version": "1.0.0", "task": "classification", "model": "model.onnx",
        "input": {"width": width, "height": 48, "resize": "stretch", "color_order": "bgr", "layout": "nchw",
                  "dtype": "float32", "scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "classification": {"top_k": 1},
    }
    if labels:
        manifest["labels"] = "labels.txt"
    return manifest


def test_a_ctc_text_recogniser_is_refused_as_a_classifier(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "rec", model_file("ch_PP-OCRv4_rec_infer.onnx"), classifier(320, None),
                        labels=None)
    with pytest.raises(ModelCheckError) as refused:
        check_model(root)
    message = str(refused.value)
    assert "classification output has shape [1, 40, 6625]" in message
    assert "2 axes longer than 1 (a sequence such as a CTC text recogniser's" in message
    assert "manifest's classification section" in message


def test_the_text_direction_classifier_passes_as_a_two_class_classifier(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "cls", model_file("ch_ppocr_mobile_v2.0_cls_infer.onnx"),
                        classifier(192, ("0", "180")), labels=("0", "180"))
    check_model(root)
