"""Mask IoU and OKS on known cases, the per-task measure table, and the optimize gate judging by them."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import AcceptanceSpec, Task
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.postprocess import Prediction
from robot_model_deployer.optimize.gate import check_variant
from robot_model_deployer.testing import dense_models
from robot_model_deployer.testing.models import COLOUR_LABELS, write_bundle
from robot_model_deployer.validation.dense_metrics import (COCO_SIGMAS, GateMeasure, instance_tally,
                                                           keypoint_similarity, mask_iou, pose_tally, semantic_tally)
from robot_model_deployer.validation.metrics import TASK_MEASURES, frame_disagreement, labelled_score


def labels(rows: list[list[int]]) -> Prediction:
    image = np.asarray(rows, np.uint16)
    return Prediction(np.zeros(0, np.int32), np.zeros(0, np.float32), (), label_image=image)


def instances(boxes: list[list[float]], masks: list[np.ndarray], classes: list[int] | None = None) -> Prediction:
    count = len(boxes)
    return Prediction(np.asarray(classes or [0] * count, np.int32), np.linspace(0.9, 0.5, count).astype(np.float32),
                      (), np.asarray(boxes, np.float32).reshape(-1, 4),
                      masks=np.asarray(masks, bool).reshape(count, 8, 8) if count else np.zeros((0, 8, 8), bool))


def test_every_task_has_one_measure() -> None:
    assert set(TASK_MEASURES) == set(Task)
    assert TASK_MEASURES[Task.SEGMENTATION].measure is GateMeasure.MASK_IOU
    assert TASK_MEASURES[Task.INSTANCE_SEGMENTATION].measure is GateMeasure.MASK_IOU
    assert TASK_MEASURES[Task.POSE].measure is GateMeasure.KEYPOINT_OKS
    for measure in TASK_MEASURES.values():
        assert measure.threshold_field in AcceptanceSpec.__dataclass_fields__


def test_mask_iou_known_cases() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[1:3] = True  # 8 pixels, 4 shared
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(a, a) == 1.0
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_semantic_mean_iou_over_the_classes_either_image_has() -> None:
    # class 0: inter 1, union 2; class 1: inter 2, union 3 -> mean (0.5 + 2/3) / 2.
    tally = semantic_tally(labels([[0, 1], [1, 1]]), labels([[0, 0], [1, 1]]))
    assert tally.value == pytest.approx((0.5 + 2 / 3) / 2)
    assert semantic_tally(labels([[2, 2]]), labels([[2, 2]])).value == 1.0
    assert semantic_tally(labels([[0, 0]]), labels([[0], [0]])).value == 0.0  # different sizes


def test_instance_tally_weights_matches_by_mask_iou_and_counts_unmatched_as_zero() -> None:
    full = np.zeros((8, 8), bool)
    full[:4, :4] = True
    three_quarters = full.copy()
    three_quarters[3, :4] = False  # 12 of the 16 pixels
    box = [0, 0, 4, 4]
    reference = instances([box], [full])
    assert instance_tally(instances([box], [three_quarters]), reference).value == pytest.approx(12 / 16)
    # An extra candidate object halves it: 2 * 0.75 / (2 + 1).
    elsewhere = np.zeros((8, 8), bool)
    elsewhere[6:, 6:] = True
    both = instances([box, [6, 6, 8, 8]], [three_quarters, elsewhere])
    assert instance_tally(both, reference).value == pytest.approx(2 * 0.75 / 3)
    # Another class never matches.
    assert instance_tally(instances([box], [full], classes=[1]), reference).value == 0.0
    assert instance_tally(instances([], []), instances([], [])).value == 1.0


def test_oks_known_cases() -> None:
    reference = np.array([[10.0, 10.0, 1.0], [20.0, 20.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
    box = np.array([0, 0, 10, 10], np.float32)  # area 100
    assert keypoint_similarity(reference, reference, box) == 1.0
    shifted = reference.copy()
    shifted[0, 0] += 1.0  # one pixel off on the first keypoint; the invisible third is not judged
    sigma = 0.05  # three keypoints: not COCO's 17
    expected = (math.exp(-1.0 / (2 * 100 * (2 * sigma) ** 2)) + 1.0) / 2
    assert keypoint_similarity(shifted, reference, box) == pytest.approx(expected)
    far = reference.copy()
    far[:2, :2] += 100.0
    assert keypoint_similarity(far, reference, box) < 1e-6


def test_oks_uses_cocos_constants_for_17_keypoints() -> None:
    reference = np.zeros((17, 3), np.float32)
    reference[:, 2] = 1.0
    candidate = reference.copy()
    candidate[:, 0] = 1.0
    box = np.array([0, 0, 10, 10], np.float32)
    expected = np.mean([math.exp(-1.0 / (2 * 100 * (2 * s) ** 2)) for s in COCO_SIGMAS])
    assert keypoint_similarity(candidate, reference, box) == pytest.approx(expected)


def pose(boxes: list[list[float]], keypoints: np.ndarray) -> Prediction:
    return Prediction(np.zeros(len(boxes), np.int32), np.full(len(boxes), 0.9, np.float32), (),
                      np.asarray(boxes, np.float32), keypoints=np.asarray(keypoints, np.float32))


def test_pose_tally_matches_by_box_then_scores_keypoints() -> None:
    keypoints = np.array([[[2, 2, 1], [8, 8, 1]]], np.float32)
    reference = pose([[0, 0, 10, 10]], keypoints)
    assert pose_tally(reference, reference).value == 1.0
    moved = pose([[50, 50, 60, 60]], keypoints)  # box does not overlap: unmatched, 0
    assert pose_tally(moved, reference).value == 0.0
    assert "keypoint OKS" in frame_disagreement(Task.POSE, moved, reference)
    assert frame_disagreement(Task.POSE, reference, reference) == ""


def test_labelled_score_of_segmentation_is_mean_iou() -> None:
    score = labelled_score(Task.SEGMENTATION, [labels([[0, 1]]), labels([[1, 1]])],
                           [labels([[0, 1]]), labels([[0, 0]])])
    assert score == pytest.approx((1.0 + 0.0) / 2)


def engine(tmp_path: Path, name: str, model, manifest, labels=COLOUR_LABELS) -> InferenceEngine:
    return InferenceEngine.from_bundle(load_bundle_dir(write_bundle(tmp_path / name, model, manifest, labels)))


def scenes() -> list[np.ndarray]:
    images = []
    for colour in range(3):
        image = np.zeros((32, 32, 3), np.uint8)
        image[:, :, colour] = 255
        image[8:24, 8:24] = 0
        image[8:24, 8:24, (colour + 1) % 3] = 255
        images.append(image)
    return images


def test_gate_passes_an_equivalent_segmenter_and_refuses_a_wrong_one_by_mask_iou(tmp_path: Path) -> None:
    manifest = dense_models.segmenter_manifest(size=32)
    reference = engine(tmp_path, "fp32", dense_models.colour_segmenter(32), manifest)
    unsure = engine(tmp_path, "unsure", dense_models.colour_segmenter(32, scale=1.0), manifest)
    shifted = engine(tmp_path, "shifted", dense_models.colour_segmenter(32, label_shift=1), manifest)
    references = [reference.infer(i) for i in scenes()]
    passed = check_variant(Task.SEGMENTATION, [unsure.infer(i) for i in scenes()], references, AcceptanceSpec())
    assert passed.passed and passed.mask_iou == 1.0 and passed.top1_agreement is None
    refused = check_variant(Task.SEGMENTATION, [shifted.infer(i) for i in scenes()], references, AcceptanceSpec())
    assert not refused.passed and refused.mask_iou == 0.0
    assert "mean mask IoU vs FP32 0.000 < 0.900 (acceptance.min_mask_iou)" in refused.reason


def test_gate_refuses_keypoints_that_moved(tmp_path: Path) -> None:
    keypoints = np.array([[[2, 2, 1], [8, 8, 1]]], np.float32)
    reference = [pose([[0, 0, 10, 10]], keypoints)]
    moved = [pose([[0, 0, 10, 10]], keypoints + np.array([3, 3, 0], np.float32))]
    result = check_variant(Task.POSE, moved, reference, AcceptanceSpec())
    assert not result.passed and result.keypoint_oks < 0.9
    assert "acceptance.min_keypoint_oks" in result.reason
    assert check_variant(Task.POSE, reference, reference, AcceptanceSpec()).keypoint_oks == 1.0


def test_disagreement_samples_keep_keypoints_and_mask_sizes() -> None:
    from robot_model_deployer.validation.samples import prediction_record

    keypoints = np.array([[[2, 2, 1], [8, 8, 0.5]]], np.float32)
    assert prediction_record(pose([[0, 0, 10, 10]], keypoints))["keypoints"] == [[[2, 2, 1], [8, 8, 0.5]]]
    mask = np.zeros((8, 8), bool)
    mask[:2, :3] = True
    assert prediction_record(instances([[0, 0, 3, 2]], [mask]))["mask_pixels"] == [6]
