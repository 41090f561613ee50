"""Agreement measures between two models' predictions for the same images."""
from __future__ import annotations

import numpy as np
import pytest

from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.validation.metrics import (
    DetectionMatch, detection_agreement, match_detections, percentile, top1_agreement, top1_agrees,
)

LABELS = ("red", "green", "blue")


def top(*class_ids: int) -> Prediction:
    ids = np.array(class_ids, np.int32)
    scores = np.linspace(0.9, 0.1, len(ids)).astype(np.float32)
    return Prediction(ids, scores, tuple(LABELS[i] for i in ids))


def boxes(*rows: tuple[float, float, float, float, int, float]) -> Prediction:
    """Rows of (x1, y1, x2, y2, class id, score)."""
    data = np.array(rows, np.float32).reshape(-1, 6)
    ids = data[:, 4].astype(np.int32)
    return Prediction(ids, data[:, 5].copy(), tuple(LABELS[i] for i in ids), data[:, :4].copy())


NONE = boxes()


# Top-1 ---------------------------------------------------------------------------

def test_top1_agrees_on_best_class_only() -> None:
    assert top1_agrees(top(0, 1, 2), top(0, 2, 1))
    assert not top1_agrees(top(1, 0, 2), top(0, 1, 2))


def test_top1_empty_predictions_agree_only_with_empty() -> None:
    assert top1_agrees(top(), top())
    assert not top1_agrees(top(), top(0))
    assert not top1_agrees(top(0), top())


def test_top1_agreement_is_the_share_of_matching_images() -> None:
    candidates = [top(0), top(1), top(2), top(2)]
    references = [top(0), top(1), top(0), top(2)]
    assert top1_agreement(candidates, references) == pytest.approx(0.75)


def test_top1_agreement_of_nothing_is_perfect() -> None:
    assert top1_agreement([], []) == 1.0


@pytest.mark.parametrize("measure", [top1_agreement, detection_agreement])
def test_length_mismatch_is_refused(measure) -> None:
    with pytest.raises(ValueError, match="cannot compare 2 predictions with 1"):
        measure([top(0), top(1)], [top(0)])


# Detection matching --------------------------------------------------------------

def test_identical_detections_match_fully() -> None:
    pred = boxes((0, 0, 10, 10, 0, 0.9), (20, 20, 30, 30, 1, 0.8))
    match = match_detections(pred, pred)
    assert match == DetectionMatch(2, 2, 2, 0.0)
    assert (match.precision, match.recall, match.f1) == (1.0, 1.0, 1.0)


def test_iou_threshold_decides_a_match() -> None:
    reference = boxes((0, 0, 10, 10, 0, 0.9))
    candidate = boxes((5, 0, 15, 10, 0, 0.9))  # IoU 1/3
    assert match_detections(candidate, reference, iou_threshold=0.3).true_positives == 1
    assert match_detections(candidate, reference, iou_threshold=0.5).true_positives == 0
    assert match_detections(candidate, reference).true_positives == 0  # default 0.5


def test_iou_exactly_at_threshold_matches() -> None:
    reference = boxes((0, 0, 10, 10, 0, 0.9))
    candidate = boxes((0, 0, 10, 5, 0, 0.9))  # IoU 0.5
    assert match_detections(candidate, reference, iou_threshold=0.5).true_positives == 1


def test_class_must_match() -> None:
    match = match_detections(boxes((0, 0, 10, 10, 1, 0.9)), boxes((0, 0, 10, 10, 0, 0.9)))
    assert match.true_positives == 0
    assert (match.precision, match.recall, match.f1) == (0.0, 0.0, 0.0)


def test_a_reference_box_is_matched_at_most_once() -> None:
    reference = boxes((0, 0, 10, 10, 0, 0.9))
    candidate = boxes((0, 0, 10, 10, 0, 0.9), (0, 0, 10, 9, 0, 0.8))
    match = match_detections(candidate, reference)
    assert (match.true_positives, match.candidate_boxes, match.reference_boxes) == (1, 2, 1)
    assert match.precision == 0.5 and match.recall == 1.0
    assert match.f1 == pytest.approx(2 / 3)


def test_a_candidate_takes_the_best_overlapping_reference_of_its_class() -> None:
    reference = boxes((0, 0, 10, 10, 0, 0.5), (2, 0, 12, 10, 0, 0.9), (2, 0, 12, 10, 1, 0.1))
    candidate = boxes((2, 0, 12, 10, 0, 0.8))
    match = match_detections(candidate, reference)
    assert match.true_positives == 1
    assert match.mean_score_drift == pytest.approx(0.1)  # matched the 0.9 box, not the 0.5 one


def test_higher_scoring_candidate_is_matched_first() -> None:
    reference = boxes((0, 0, 10, 10, 0, 0.6))
    candidate = boxes((0, 0, 10, 10, 0, 0.3), (0, 0, 10, 10, 0, 0.7))
    assert match_detections(candidate, reference).mean_score_drift == pytest.approx(0.1)


def test_score_drift_is_the_mean_absolute_difference_of_matched_pairs() -> None:
    reference = boxes((0, 0, 10, 10, 0, 0.9), (20, 20, 30, 30, 1, 0.5), (50, 50, 60, 60, 2, 0.5))
    candidate = boxes((0, 0, 10, 10, 0, 0.7), (20, 20, 30, 30, 1, 0.6))
    match = match_detections(candidate, reference)
    assert match.true_positives == 2
    assert match.mean_score_drift == pytest.approx((0.2 + 0.1) / 2)
    assert match.precision == 1.0 and match.recall == pytest.approx(2 / 3)


@pytest.mark.parametrize("candidate, reference, expected", [
    (NONE, NONE, (0, 0, 0, 1.0, 1.0, 1.0)),
    (boxes((0, 0, 1, 1, 0, 0.5)), NONE, (0, 1, 0, 0.0, 1.0, 0.0)),
    (NONE, boxes((0, 0, 1, 1, 0, 0.5)), (0, 0, 1, 1.0, 0.0, 0.0)),
])
def test_empty_cases(candidate, reference, expected) -> None:
    match = match_detections(candidate, reference)
    assert (match.true_positives, match.candidate_boxes, match.reference_boxes,
            match.precision, match.recall, match.f1) == expected
    assert match.mean_score_drift == 0.0


def test_pooled_f1_counts_boxes_over_all_images_not_per_image_mean() -> None:
    # Image 1: 1 of 1 matched. Image 2: 0 of 3 candidates, 3 references.
    candidates = [boxes((0, 0, 10, 10, 0, 0.8)),
                  boxes((0, 0, 5, 5, 1, 0.5), (10, 10, 15, 15, 1, 0.5), (20, 20, 25, 25, 1, 0.5))]
    references = [boxes((0, 0, 10, 10, 0, 0.9)),
                  boxes((40, 40, 45, 45, 1, 0.5), (50, 50, 55, 55, 1, 0.5), (60, 60, 65, 65, 1, 0.5))]
    pooled = detection_agreement(candidates, references)
    assert (pooled.true_positives, pooled.candidate_boxes, pooled.reference_boxes) == (1, 4, 4)
    assert pooled.f1 == pytest.approx(2 * 1 / 8)  # per-image mean would be (1 + 0) / 2


def test_pooled_score_drift_is_weighted_by_matches() -> None:
    candidates = [boxes((0, 0, 10, 10, 0, 0.5)),
                  boxes((0, 0, 10, 10, 0, 0.9), (20, 20, 30, 30, 0, 0.9), (40, 40, 50, 50, 0, 0.9))]
    references = [boxes((0, 0, 10, 10, 0, 0.9)),
                  boxes((0, 0, 10, 10, 0, 0.9), (20, 20, 30, 30, 0, 0.9), (40, 40, 50, 50, 0, 0.9))]
    pooled = detection_agreement(candidates, references)
    assert pooled.true_positives == 4
    assert pooled.mean_score_drift == pytest.approx(0.4 / 4)


def test_pooled_agreement_of_no_images_or_no_boxes_is_perfect() -> None:
    assert detection_agreement([], []).f1 == 1.0
    empty = detection_agreement([NONE, NONE], [NONE, NONE])
    assert (empty.f1, empty.mean_score_drift) == (1.0, 0.0)


def test_percentile() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([5.0], 50) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
