"""The accuracy gate's verdicts on hand-made predictions, and the expected-outputs file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.optimize.gate import check_reference, check_variant
from robot_model_deployer.validation.labelled import ExpectedOutputsError, load_expected_outputs


def top1(class_id: int) -> Prediction:
    return Prediction(np.array([class_id], np.int32), np.array([0.9], np.float32), ())


def boxes(rows: list[tuple[float, float, float, float]], score: float = 0.8) -> Prediction:
    array = np.asarray(rows, np.float32).reshape(-1, 4)
    return Prediction(np.zeros(len(array), np.int32), np.full(len(array), score, np.float32), (), boxes=array)


def test_classification_gate_uses_the_manifest_threshold() -> None:
    references = [top1(i % 3) for i in range(10)]
    one_flip = references[:9] + [top1(2 if references[9].class_ids[0] != 2 else 1)]
    assert check_variant(Task.CLASSIFICATION, references, references, AcceptanceSpec()).passed
    strict = check_variant(Task.CLASSIFICATION, one_flip, references, AcceptanceSpec())
    assert not strict.passed and strict.top1_agreement == pytest.approx(0.9) and "0.900 < 0.990" in strict.reason
    assert check_variant(Task.CLASSIFICATION, one_flip, references, AcceptanceSpec(min_top1_agreement=0.9)).passed


def test_detection_gate_checks_f1_and_score_drift() -> None:
    reference = [boxes([(0, 0, 10, 10), (20, 20, 30, 30)])]
    assert check_variant(Task.DETECTION, reference, reference, AcceptanceSpec()).passed
    moved = [boxes([(0, 0, 10, 10), (26, 26, 36, 36)])]  # second box IoU < 0.5
    result = check_variant(Task.DETECTION, moved, reference, AcceptanceSpec())
    assert not result.passed and result.detection_f1 == pytest.approx(0.5) and "box F1" in result.reason
    drifted = [boxes([(0, 0, 10, 10), (20, 20, 30, 30)], score=0.5)]
    result = check_variant(Task.DETECTION, drifted, reference, AcceptanceSpec())
    assert not result.passed and result.score_drift == pytest.approx(0.3) and "drift" in result.reason


def test_non_finite_outputs_fail_whatever_the_scores() -> None:
    bad = Prediction(np.array([0], np.int32), np.array([np.nan], np.float32), ())
    result = check_variant(Task.CLASSIFICATION, [bad], [top1(0)], AcceptanceSpec(min_top1_agreement=0.0))
    assert not result.passed and "NaN" in result.reason


def test_no_validation_images_fails_with_what_to_add() -> None:
    result = check_variant(Task.CLASSIFICATION, [], [], AcceptanceSpec())
    assert not result.passed and "validation.images" in result.reason


def test_expected_outputs_are_scored_and_compared_with_fp32(tmp_path: Path) -> None:
    images = ["validation/0.png", "validation/1.png"]
    (tmp_path / "expected.yaml").write_text(
        "validation/0.png: {class_id: 1}\nvalidation/1.png: {class_id: 2}\n", encoding="utf-8")
    expected = load_expected_outputs(tmp_path / "expected.yaml", images, Task.CLASSIFICATION)
    references = [top1(1), top1(2)]
    candidate = [top1(1), top1(0)]
    result = check_variant(Task.CLASSIFICATION, candidate, references, AcceptanceSpec(), expected)
    assert result.expected_agreement == 0.5 and not result.passed
    assert "vs expected outputs 0.500, FP32 gets 1.000" in result.reason
    with pytest.raises(ExpectedOutputsError, match="class_id"):
        (tmp_path / "bad.yaml").write_text("validation/0.png: {label: cat}\n", encoding="utf-8")
        load_expected_outputs(tmp_path / "bad.yaml", images[:1], Task.CLASSIFICATION)


def test_expected_detection_boxes_load_and_missing_entries_fail(tmp_path: Path) -> None:
    (tmp_path / "expected.json").write_text('{"a.png": {"boxes": [[0, 0, 10, 10, 0]]}, "b.png": {"boxes": []}}',
                                            encoding="utf-8")
    loaded = load_expected_outputs(tmp_path / "expected.json", ["a.png", "b.png"], Task.DETECTION)
    assert loaded[0].boxes.shape == (1, 4) and len(loaded[1].scores) == 0
    with pytest.raises(ExpectedOutputsError, match="c.png"):
        load_expected_outputs(tmp_path / "expected.json", ["c.png"], Task.DETECTION)


def test_the_reference_itself_is_refused_when_its_fp32_output_is_not_finite() -> None:
    nan = Prediction(np.array([0], np.int32), np.array([np.nan], np.float32), ())
    reason, score = check_reference(Task.CLASSIFICATION, [top1(0), nan, nan], ["a.png", "b.png", "c.png"],
                                    AcceptanceSpec())
    assert reason.startswith("the model's own FP32 output is NaN or infinite on 2 of 3 validation images "
                             "(first: b.png)") and score is None
    assert check_reference(Task.CLASSIFICATION, [top1(0)], ["a.png"], AcceptanceSpec()) == ("", None)


def test_the_reference_must_reach_the_accuracy_its_bundle_states() -> None:
    expected = [top1(0), top1(1), top1(2), top1(0)]
    fp32 = [top1(0), top1(1), top1(0), top1(0)]  # 3 of 4 right
    names = [f"{i}.png" for i in range(4)]
    reason, score = check_reference(Task.CLASSIFICATION, fp32, names, AcceptanceSpec(min_accuracy=0.8), expected)
    assert score == pytest.approx(0.75)
    assert reason == ("the model's own FP32 top-1 accuracy against validation.expected is 0.750, below the 0.800 "
                      "its bundle states (acceptance.min_accuracy)")
    assert check_reference(Task.CLASSIFICATION, fp32, names, AcceptanceSpec(min_accuracy=0.75), expected)[0] == ""
    # Unstated (the default 0): any score is the bundle's own business.
    assert check_reference(Task.CLASSIFICATION, fp32, names, AcceptanceSpec(), expected) == ("", 0.75)
    detected = check_reference(Task.DETECTION, [boxes([(0, 0, 10, 10)])], ["d.png"], AcceptanceSpec(min_accuracy=0.9),
                               [boxes([(50, 50, 60, 60)])])
    assert "box F1 at IoU 0.5 against validation.expected is 0.000" in detected[0]
