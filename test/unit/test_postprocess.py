"""Raw model outputs to top-k classes and to thresholded, NMS-filtered boxes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from robot_model_deployer.bundle.manifest import ClassificationSpec, DetectionFormat, DetectionSpec
from robot_model_deployer.inference.detection import box_iou, decode_detections, detect, non_max_suppression
from robot_model_deployer.inference.postprocess import OutputSpecError, Prediction, classify, label_for

LABELS = ("cat", "dog", "bird")


def decoded(*args: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    candidates = decode_detections(*args)
    return candidates.boxes, candidates.scores, candidates.class_ids


def yolo_rows(*rows: tuple[float, ...]) -> np.ndarray:
    """Rows of (cx, cy, w, h, objectness, class scores...) as a [1, N, 5 + C] output."""
    return np.array(rows, np.float32)[None]


def spec(**kwargs) -> DetectionSpec:
    kwargs.setdefault("score_threshold", 0.25)
    return DetectionSpec(**kwargs)


# Classification ------------------------------------------------------------------

def test_top_k_is_best_first() -> None:
    top = classify(np.array([[0.1, 0.5, 0.2, 0.9]], np.float32), ClassificationSpec(top_k=3), LABELS)
    assert top.class_ids.tolist() == [3, 1, 2]
    np.testing.assert_allclose(top.scores, [0.9, 0.5, 0.2])
    assert top.labels == ("3", "dog", "bird")
    assert top.class_ids.dtype == np.int32 and top.scores.dtype == np.float32
    assert top.boxes.shape == (0, 4)


def test_top_k_larger_than_class_count_returns_every_class() -> None:
    top = classify(np.array([0.3, 0.1, 0.6]), ClassificationSpec(top_k=10), LABELS)
    assert top.class_ids.tolist() == [2, 0, 1]
    assert top.labels == ("bird", "cat", "dog")


def test_top_1() -> None:
    top = classify(np.arange(100, dtype=np.float32)[::-1].copy(), ClassificationSpec(top_k=1), ())
    assert top.class_ids.tolist() == [0] and top.labels == ("0",)


@pytest.mark.parametrize("shape", [(3,), (1, 3), (1, 3, 1, 1)])
def test_any_shape_with_one_class_axis_is_accepted(shape) -> None:
    top = classify(np.array([1.0, 3.0, 2.0], np.float32).reshape(shape), ClassificationSpec(top_k=3), LABELS)
    assert top.labels == ("dog", "bird", "cat")


def test_softmax_turns_logits_into_probabilities() -> None:
    logits = np.array([1.0, 2.0, 3.0], np.float32)
    top = classify(logits, ClassificationSpec(top_k=3, softmax=True), LABELS)
    expected = np.exp(logits) / np.exp(logits).sum()
    assert top.class_ids.tolist() == [2, 1, 0]
    np.testing.assert_allclose(top.scores, expected[[2, 1, 0]], rtol=1e-6)


def test_softmax_is_over_all_classes_not_just_top_k() -> None:
    top = classify(np.zeros(4, np.float32), ClassificationSpec(top_k=1, softmax=True), ())
    assert top.scores[0] == pytest.approx(0.25)


def test_softmax_is_stable_for_large_logits() -> None:
    top = classify(np.array([1000.0, 1001.0], np.float32), ClassificationSpec(top_k=2, softmax=True), ())
    assert np.isfinite(top.scores).all()
    np.testing.assert_allclose(top.scores, [1 / (1 + math.e ** -1), 1 / (1 + math.e)], rtol=1e-5)


def test_without_softmax_scores_are_raw() -> None:
    top = classify(np.array([-5.0, 7.5]), ClassificationSpec(top_k=2), ())
    np.testing.assert_allclose(top.scores, [7.5, -5.0])


def test_empty_classification_output_is_an_output_spec_error() -> None:
    with pytest.raises(OutputSpecError, match="classification output is empty"):
        classify(np.zeros((1, 0)), ClassificationSpec(), LABELS)


@pytest.mark.parametrize("class_id, expected", [(0, "cat"), (2, "bird"), (3, "3"), (-1, "-1"), (40, "40")])
def test_labels_fall_back_to_id_strings(class_id: int, expected: str) -> None:
    assert label_for(class_id, LABELS) == expected


def test_prediction_is_finite() -> None:
    good = Prediction(np.array([0]), np.array([0.5], np.float32), ("a",), np.ones((1, 4), np.float32))
    assert good.is_finite()
    assert not Prediction(np.array([0]), np.array([np.nan], np.float32), ("a",)).is_finite()
    assert not Prediction(np.array([0]), np.array([1.0], np.float32), ("a",),
                          np.array([[0, 0, np.inf, 1]], np.float32)).is_finite()


# Decoding --------------------------------------------------------------------------

def test_yolo_decode_centre_size_to_corners_and_scores_objectness_times_class() -> None:
    raw = yolo_rows((10, 20, 4, 6, 0.5, 0.2, 0.8), (30, 30, 10, 10, 1.0, 0.9, 0.1))
    boxes, scores, ids = decoded([raw], spec(), 64, 64)
    np.testing.assert_allclose(boxes, [[8, 17, 12, 23], [25, 25, 35, 35]])
    np.testing.assert_allclose(scores, [0.4, 0.9])
    assert ids.tolist() == [1, 0] and ids.dtype == np.int32


def test_yolo_without_class_columns_is_single_class_objectness() -> None:
    boxes, scores, ids = decoded([yolo_rows((8, 8, 4, 4, 0.7))], spec(), 16, 16)
    np.testing.assert_allclose(boxes, [[6, 6, 10, 10]])
    np.testing.assert_allclose(scores, [0.7])
    assert ids.tolist() == [0]


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (1, 3, 4), (1, 2, 3, 7)])
def test_yolo_with_wrong_output_shape_is_refused(shape) -> None:
    with pytest.raises(OutputSpecError, match=r"needs an output of shape \[1, N, 5 \+ classes\], got "
                                              + str(list(shape)).replace("[", r"\[").replace("]", r"\]")):
        decode_detections([np.zeros(shape, np.float32)], spec(), 64, 64)


def test_yolox_decodes_grid_offsets_with_strides() -> None:
    # 32x16 input, strides 8 and 16: a 4x2 grid (8 anchors) then a 2x1 grid (2 anchors).
    raw = np.zeros((1, 10, 6), np.float32)
    raw[0, :, 4] = 1.0
    raw[0, :, 5] = 1.0
    raw[0, 5, :4] = (0.5, 0.5, math.log(2.0), 0.0)  # stride 8, row 1 column 1
    raw[0, 9, :4] = (0.0, 0.0, 0.0, 0.0)  # stride 16, row 0 column 1
    boxes, scores, ids = decoded([raw], spec(format=DetectionFormat.YOLOX, strides=(8, 16)), 32, 16)
    assert boxes.shape == (10, 4)
    np.testing.assert_allclose(boxes[5], [4, 8, 20, 16], rtol=1e-6)   # centre (12, 12), 16x8
    np.testing.assert_allclose(boxes[9], [8, -8, 24, 8], rtol=1e-6)   # centre (16, 0), 16x16
    np.testing.assert_allclose(boxes[0], [-4, -4, 4, 4], rtol=1e-6)   # first cell: centre (0, 0), 8x8
    np.testing.assert_allclose(boxes[3], [20, -4, 28, 4], rtol=1e-6)  # row 0 column 3
    np.testing.assert_allclose(scores, 1.0)
    assert ids.tolist() == [0] * 10


def test_yolox_does_not_modify_the_model_output() -> None:
    raw = np.zeros((1, 2, 6), np.float32)
    before = raw.copy()
    decode_detections([raw], spec(format=DetectionFormat.YOLOX, strides=(16,)), 32, 16)
    np.testing.assert_array_equal(raw, before)


def test_yolox_size_is_clamped_so_huge_logits_stay_finite() -> None:
    raw = np.zeros((1, 2, 6), np.float32)
    raw[0, 0, 2:4] = 1000.0
    boxes, _, _ = decoded([raw], spec(format=DetectionFormat.YOLOX, strides=(16,)), 32, 16)
    assert np.isfinite(boxes).all()


def test_yolox_anchor_count_mismatch_explains_the_expected_count() -> None:
    raw = np.zeros((1, 9, 6), np.float32)
    with pytest.raises(OutputSpecError, match=r"yolox output has 9 anchors but strides \[8, 16\] on a 32x16 "
                                              r"input give 10"):
        decode_detections([raw], spec(format=DetectionFormat.YOLOX, strides=(8, 16)), 32, 16)


def test_boxes_scores_takes_best_class_per_box() -> None:
    boxes = np.array([[[0, 0, 10, 10], [5, 5, 20, 30]]], np.float32)
    scores = np.array([[[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]]], np.float32)
    out_boxes, out_scores, ids = decoded([boxes, scores], spec(format=DetectionFormat.BOXES_SCORES),
                                                   64, 64)
    np.testing.assert_array_equal(out_boxes, boxes[0])
    np.testing.assert_allclose(out_scores, [0.7, 0.6])
    assert ids.tolist() == [1, 0]


def test_boxes_scores_needs_two_outputs() -> None:
    with pytest.raises(OutputSpecError, match="boxes_scores needs two outputs"):
        decode_detections([np.zeros((1, 2, 4), np.float32)], spec(format=DetectionFormat.BOXES_SCORES), 64, 64)


def test_boxes_scores_with_no_candidates_gives_no_detections() -> None:
    outputs = [np.zeros((1, 0, 4), np.float32), np.zeros((1, 0, 3), np.float32)]
    boxes, scores, ids, labels = detect(outputs, spec(format=DetectionFormat.BOXES_SCORES), LABELS, 64, 64)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels == ()


@pytest.mark.parametrize("scores_shape", [(1, 3, 3), (1, 2, 0), ()], ids=["3 rows for 2 boxes", "no classes", "scalar"])
def test_boxes_scores_count_mismatch_is_an_output_spec_error(scores_shape: tuple) -> None:
    outputs = [np.zeros((1, 2, 4), np.float32), np.zeros(scores_shape, np.float32)]
    with pytest.raises(OutputSpecError, match=r"boxes_scores needs scores of shape \[1, N, classes\] for its 2 boxes"):
        decode_detections(outputs, spec(format=DetectionFormat.BOXES_SCORES), 64, 64)


def test_yolo_with_no_candidates_gives_no_detections() -> None:
    boxes, scores, ids, labels = detect([np.zeros((1, 0, 7), np.float32)], spec(), LABELS, 64, 64)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and ids.shape == (0,) and labels == ()


# IoU and NMS ----------------------------------------------------------------------

def test_box_iou_values() -> None:
    box = np.array([0, 0, 10, 10], np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(box_iou(box, others), [1.0, 50 / 150, 0.0, 0.0])


def test_nms_keeps_best_of_overlapping_boxes_best_first() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = non_max_suppression(boxes, np.array([0.6, 0.9, 0.5], np.float32), iou_threshold=0.5, limit=10)
    assert keep.tolist() == [1, 2]


def test_nms_keeps_boxes_overlapping_at_most_the_threshold() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # IoU 1/3
    assert non_max_suppression(boxes, np.array([0.9, 0.8]), 0.34, 10).tolist() == [0, 1]
    assert non_max_suppression(boxes, np.array([0.9, 0.8]), 0.33, 10).tolist() == [0]


def test_nms_stops_at_limit() -> None:
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(5)], np.float32)
    keep = non_max_suppression(boxes, np.array([0.1, 0.5, 0.3, 0.9, 0.2]), 0.5, limit=2)
    assert keep.tolist() == [3, 1]


# detect(): threshold, NMS per class, limits, labels ---------------------------------

OVERLAPPING_TWO_CLASSES = yolo_rows(
    (20, 20, 20, 20, 0.9, 1.0, 0.0, 0.0),   # cat, score 0.9
    (21, 21, 20, 20, 0.8, 0.0, 1.0, 0.0),   # dog on almost the same place, score 0.8
    (22, 20, 20, 20, 0.7, 1.0, 0.0, 0.0),   # another cat on the same place, score 0.7
)


def test_nms_is_per_class_by_default() -> None:
    boxes, scores, ids, labels = detect([OVERLAPPING_TWO_CLASSES], spec(iou_threshold=0.5), LABELS, 64, 64)
    assert labels == ("cat", "dog")
    np.testing.assert_allclose(scores, [0.9, 0.8])
    np.testing.assert_allclose(boxes, [[10, 10, 30, 30], [11, 11, 31, 31]])
    assert ids.tolist() == [0, 1]


def test_class_agnostic_nms_suppresses_across_classes() -> None:
    _, scores, _, labels = detect([OVERLAPPING_TWO_CLASSES], spec(iou_threshold=0.5, class_agnostic_nms=True),
                                  LABELS, 64, 64)
    assert labels == ("cat",)
    np.testing.assert_allclose(scores, [0.9])


def test_per_class_nms_never_suppresses_another_class() -> None:
    raw = yolo_rows(
        (62, 62, 64, 64, 0.9, 1.0, 0.0),   # cat cut off at the bottom-right corner: x 30..94
        (20, 20, 40, 40, 0.8, 0.0, 1.0),   # dog at the top-left, far from the cat
    )
    _, _, _, labels = detect([raw], spec(iou_threshold=0.1), LABELS, 64, 64)
    assert labels == ("cat", "dog")


def test_per_class_nms_orders_all_classes_by_score_and_stops_at_the_limit() -> None:
    raw = yolo_rows(
        (10, 10, 8, 8, 0.5, 1.0, 0.0, 0.0),   # cat, suppressed by the better cat next to it
        (40, 40, 8, 8, 0.9, 0.0, 1.0, 0.0),   # dog
        (10, 40, 8, 8, 0.7, 0.0, 0.0, 1.0),   # bird
        (11, 10, 8, 8, 0.6, 1.0, 0.0, 0.0),   # cat, IoU 0.78 with the first cat
        (40, 10, 8, 8, 0.8, 1.0, 0.0, 0.0),   # cat far from the others
    )
    _, scores, ids, labels = detect([raw], spec(iou_threshold=0.5, max_detections=3), LABELS, 64, 64)
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7])
    assert labels == ("dog", "cat", "bird")
    _, scores, _, _ = detect([raw], spec(iou_threshold=0.5), LABELS, 64, 64)
    np.testing.assert_allclose(scores, [0.9, 0.8, 0.7, 0.6])


def test_score_threshold_is_inclusive() -> None:
    raw = yolo_rows((10, 10, 4, 4, 0.5, 1.0), (40, 40, 4, 4, 0.25, 1.0), (20, 40, 4, 4, 0.2499, 1.0))
    _, scores, _, _ = detect([raw], spec(score_threshold=0.25), (), 64, 64)
    np.testing.assert_allclose(scores, [0.5, 0.25])


def test_score_threshold_applies_to_objectness_times_class_score() -> None:
    raw = yolo_rows((10, 10, 4, 4, 0.6, 0.5, 0.1))  # 0.3 < 0.35
    _, scores, _, _ = detect([raw], spec(score_threshold=0.35), (), 64, 64)
    assert scores.size == 0


def test_max_detections_keeps_the_highest_scores() -> None:
    rows = [(8 + 16 * i, 8, 8, 8, s, 1.0) for i, s in enumerate([0.3, 0.9, 0.5, 0.7])]
    boxes, scores, ids, labels = detect([yolo_rows(*rows)], spec(max_detections=2), ("thing",), 64, 64)
    np.testing.assert_allclose(scores, [0.9, 0.7])
    np.testing.assert_allclose(boxes[:, 0], [20, 52])
    assert labels == ("thing", "thing")


def test_detect_labels_fall_back_to_class_ids() -> None:
    raw = yolo_rows((10, 10, 4, 4, 0.9, 0, 0, 0, 0, 1.0))  # class 4 with only three labels
    _, _, ids, labels = detect([raw], spec(), LABELS, 64, 64)
    assert ids.tolist() == [4] and labels == ("4",)


def test_detect_output_types() -> None:
    boxes, scores, ids, labels = detect([OVERLAPPING_TWO_CLASSES], spec(), LABELS, 64, 64)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32 and ids.dtype == np.int32
    assert isinstance(labels, tuple)
