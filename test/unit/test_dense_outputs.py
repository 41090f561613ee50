"""Segmentation, instance mask and keypoint decoding: crafted tensors with known answers, and tiny real models."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.dense_specs import SegmentationFormat
from robot_model_deployer.bundle.manifest import manifest_from_dict
from robot_model_deployer.inference.dense import (decode_dense, instance_masks, keypoints_to_image, sample_to_image,
                                                  semantic_labels)
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.postprocess import OutputSpecError
from robot_model_deployer.inference.preprocess import ImageTransform, PixelFormat
from robot_model_deployer.testing import dense_models
from robot_model_deployer.testing.models import COLOUR_LABELS, write_bundle

IDENTITY = ImageTransform(1.0, 1.0, 0.0, 0.0)


def yolo_rows(boxes_xyxy: list[list[float]], class_scores: list[list[float]], extras: list[list[float]]) -> np.ndarray:
    """A YOLOv8 [1, 4 + C + E, N] output from per-candidate values."""
    rows = []
    for (x1, y1, x2, y2), scores, extra in zip(boxes_xyxy, class_scores, extras):
        rows.append([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, *scores, *extra])
    return np.asarray(rows, np.float32).T[None]


def test_logits_argmax_per_pixel_and_class_ids_pass_through() -> None:
    logits = np.zeros((1, 3, 2, 2), np.float32)
    logits[0, 2, 0, 1] = 5.0
    logits[0, 1, 1, 0] = 5.0
    assert semantic_labels(logits, SegmentationFormat.LOGITS).tolist() == [[0, 2], [1, 0]]
    ids = np.array([[[4, 0], [300, 1]]], np.int64)
    assert semantic_labels(ids, SegmentationFormat.CLASS_IDS).tolist() == [[4, 0], [300, 1]]
    assert semantic_labels(ids[:, None], SegmentationFormat.CLASS_IDS).dtype == np.uint16


def test_wrong_rank_is_an_output_spec_error() -> None:
    with pytest.raises(OutputSpecError, match=r"\[1, C, H, W\]"):
        semantic_labels(np.zeros((1, 4, 4), np.float32), SegmentationFormat.LOGITS)


def test_label_map_is_sampled_back_through_a_letterbox() -> None:
    # A 8x4 image letterboxed into 8x8: scale 1, 2 rows of padding on top; a 4x4 output map (half resolution).
    grid = np.arange(16, dtype=np.uint16).reshape(4, 4)
    transform = ImageTransform(1.0, 1.0, 0.0, 2.0)
    sampled = sample_to_image(grid, transform, 8, 8, 8, 4)
    assert sampled.shape == (4, 8)
    # Image row 0 is input row 2 -> map row 1; image column 3 is map column 1.
    assert sampled[0].tolist() == [4, 4, 5, 5, 6, 6, 7, 7]
    assert sampled[3].tolist() == [8, 8, 9, 9, 10, 10, 11, 11]


def test_pixels_cropped_away_are_background() -> None:
    # Centre crop: image 12 wide into an 8 wide input, 2 columns cut on each side.
    sampled = sample_to_image(np.full((8, 8), 3, np.uint16), ImageTransform(1.0, 1.0, -2.0, 0.0), 8, 8, 12, 8)
    assert sampled[0].tolist() == [0, 0] + [3] * 8 + [0, 0]


def test_instance_mask_is_the_protos_combination_cut_to_its_box() -> None:
    # One proto channel that is 10 left of column 4 and -10 right of it, at full resolution.
    protos = np.full((1, 1, 8, 8), -10.0, np.float32)
    protos[0, 0, :, :4] = 10.0
    masks = instance_masks(np.array([[1.0]], np.float32), protos, np.array([[2.0, 1.0, 8.0, 5.0]], np.float32),
                           IDENTITY, 8, 8, 8, 8, threshold=0.5)
    expected = np.zeros((8, 8), bool)
    expected[1:5, 2:4] = True
    assert masks.shape == (1, 8, 8)
    assert (masks[0] == expected).all()


def test_protos_with_the_wrong_channel_count_are_refused() -> None:
    with pytest.raises(OutputSpecError, match="protos"):
        instance_masks(np.ones((1, 32), np.float32), np.zeros((1, 16, 4, 4), np.float32),
                       np.array([[0, 0, 4, 4]], np.float32), IDENTITY, 16, 16, 16, 16, 0.5)


def test_keypoints_map_back_through_scale_and_offset() -> None:
    keypoints = np.array([[[10.0, 20.0, 0.9], [0.0, 0.0, 0.1]]], np.float32)
    out = keypoints_to_image(keypoints, ImageTransform(0.5, 0.5, 2.0, 4.0), 100, 100)
    assert out[0, 0].tolist() == pytest.approx([16.0, 32.0, 0.9])
    assert out[0, 1, :2].tolist() == [0.0, 0.0]  # clipped to the image


def test_pose_decode_keeps_each_boxes_keypoints_after_nms() -> None:
    manifest = manifest_from_dict({**dense_models.pose_manifest(size=64), "labels": ""})
    # Two overlapping candidates (the weaker is suppressed) and one apart; 2 keypoints each.
    output = yolo_rows([[0, 0, 10, 10], [1, 1, 10, 10], [30, 30, 40, 40]], [[0.9], [0.8], [0.7]],
                       [[1, 2, 0.9, 3, 4, 0.9], [9, 9, 0.9, 9, 9, 0.9], [31, 32, 0.8, 35, 36, 0.2]])
    prediction = decode_dense([output], manifest, (), IDENTITY, 64, 64)
    assert prediction.scores.tolist() == pytest.approx([0.9, 0.7])
    assert prediction.keypoints.shape == (2, 2, 3)
    assert np.allclose(prediction.keypoints[1], [[31, 32, 0.8], [35, 36, 0.2]])
    assert prediction.boxes[1].tolist() == [30, 30, 40, 40]


def bundle_engine(tmp_path: Path, model, manifest, labels=COLOUR_LABELS) -> InferenceEngine:
    return InferenceEngine.from_bundle(load_bundle_dir(write_bundle(tmp_path / "bundle", model, manifest, labels)))


@pytest.mark.parametrize("class_ids", [False, True])
def test_colour_segmenter_labels_a_red_square_where_it_is(tmp_path: Path, class_ids: bool) -> None:
    engine = bundle_engine(tmp_path, dense_models.colour_segmenter(32, class_ids=class_ids),
                           dense_models.segmenter_manifest(size=32, class_ids=class_ids))
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :, 1] = 255
    image[16:40, 8:32] = (255, 0, 0)
    prediction = engine.infer(image)
    expected = np.ones((64, 64), np.uint16)
    expected[16:40, 8:32] = 0
    assert (prediction.label_image == expected).all()
    assert prediction.labels == ("green", "red")
    assert prediction.scores.tolist() == pytest.approx([1 - 24 * 24 / 64 ** 2, 24 * 24 / 64 ** 2])


def test_bgr_camera_gives_the_same_label_image(tmp_path: Path) -> None:
    engine = bundle_engine(tmp_path, dense_models.colour_segmenter(32), dense_models.segmenter_manifest(size=32))
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16, 2] = 255
    rgb = engine.infer(image).label_image
    assert (engine.infer(image[:, :, ::-1].copy(), PixelFormat.BGR8).label_image == rgb).all()
    assert set(np.unique(rgb[:, :16])) == {2}


def test_instance_segmenter_masks_the_red_half_of_a_cell(tmp_path: Path) -> None:
    engine = bundle_engine(tmp_path, dense_models.colour_instance_segmenter(64, 16),
                           dense_models.instance_manifest(size=64))
    image = np.zeros((64, 64, 3), np.uint8)
    image[16:32, 16:24] = (255, 0, 0)  # half of cell (1, 1)
    prediction = engine.infer(image)
    assert prediction.labels == ("red",)
    assert prediction.boxes.tolist() == [[16, 16, 32, 32]]
    expected = np.zeros((64, 64), bool)
    expected[16:32, 16:24] = True
    assert prediction.masks.shape == (1, 64, 64)
    # Bilinear at a quarter resolution blurs the edge column; everything else is exact.
    assert np.logical_xor(prediction.masks[0], expected).sum() <= 16
    assert not prediction.masks[0][:, 25:].any() and prediction.masks[0][17:31, 17:23].all()


def test_pose_model_keypoints_land_on_the_cell_corner_and_centre(tmp_path: Path) -> None:
    engine = bundle_engine(tmp_path, dense_models.corner_pose_model(64, 16), dense_models.pose_manifest(size=64),
                           dense_models.POSE_LABELS)
    image = np.zeros((32, 64, 3), np.uint8)  # letterboxed: 16 rows of padding above
    image[0:16, 32:48] = 255
    prediction = engine.infer(image)
    assert prediction.boxes.tolist() == [[32, 0, 48, 16]]
    assert prediction.keypoints.tolist() == [[[32, 0, 1.0], [40, 8, 1.0]]]
