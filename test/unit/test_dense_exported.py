"""Ultralytics' real -seg, -pose and -sem architectures, exported to ONNX here, through the decoders and verify.

No segmentation or pose weights with a usable licence come in a package this
machine reaches, so these are the real graphs (head, protos, keypoint
decode, baked argmax) with seeded random weights; DrivenHead makes every
anchor of the coarsest level one known box, so the boxes tile the input.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bundle_helpers import Keys, make_keys, signed_tar
from robot_model_deployer.bundle.errors import ModelCheckError
from robot_model_deployer.bundle.loader import load_bundle_dir
from robot_model_deployer.bundle.manifest import Task
from robot_model_deployer.cli.main import main
from robot_model_deployer.inference.engine import InferenceEngine
from robot_model_deployer.inference.model_check import check_model
from robot_model_deployer.testing.models import write_bundle
from robot_model_deployer.testing.yolo_export import DrivenHead, export_yolo, require_ultralytics
from robot_model_deployer.validation.metrics import labelled_score

SIZE = 128
COARSE = 32  # the coarsest stride: 4 x 4 driven boxes at 128


@pytest.fixture(scope="module")
def exported() -> dict[str, bytes]:
    require_ultralytics()
    return {"seg": export_yolo("yolov8n-seg", SIZE, nc=3, head=DrivenHead(class_id=1)).read_bytes(),
            "pose": export_yolo("yolov8n-pose", SIZE, nc=1, head=DrivenHead()).read_bytes(),
            "sem": export_yolo("yolo26n-sem", SIZE, nc=4).read_bytes()}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("keys"))


def manifest(task: str, **sections: Any) -> dict[str, Any]:
    return {"schema_version": 1, "name": f"yolov8n-{task}", "version": "1.0.0", "task": task, "model": "model.onnx",
            "labels": "labels.txt" if task == "instance_segmentation" else "",
            "input": {"width": SIZE, "height": SIZE, "resize": "letterbox", "letterbox_fill": 114}, **sections}


def engine(tmp_path: Path, model: bytes, body: dict[str, Any]) -> InferenceEngine:
    labels = ("a", "b", "c") if body["labels"] else None
    return InferenceEngine.from_bundle(load_bundle_dir(write_bundle(tmp_path / "b", model, body, labels)))


def tiles(image_width: int, image_height: int) -> list[list[float]]:
    """The driven boxes (one per coarse cell of the letterboxed input) mapped back to a wide image."""
    scale = SIZE / image_width
    pad = (SIZE - round(image_height * scale)) // 2
    boxes = []
    for row in range(SIZE // COARSE):
        for col in range(SIZE // COARSE):
            y1, y2 = (row * COARSE - pad) / scale, ((row + 1) * COARSE - pad) / scale
            boxes.append([col * COARSE / scale, y1, (col + 1) * COARSE / scale, y2])
    return boxes


def test_yolov8_seg_gives_one_mask_per_driven_box_inside_its_box(tmp_path: Path, exported) -> None:
    """And FP32 agrees with itself: boxes in the letterbox padding once made identical outputs disagree."""
    served = engine(tmp_path, exported["seg"], manifest("instance_segmentation",
                                                        detection={"score_threshold": 0.5, "iou_threshold": 0.5}))
    image = np.random.default_rng(1).integers(0, 255, (96, 256, 3), dtype=np.uint8)
    prediction = served.infer(image)
    assert set(prediction.labels) == {"b"} and (prediction.scores > 0.99).all()
    got = sorted(map(tuple, np.round(prediction.boxes, 3).tolist()))
    # Tiles wholly in the letterbox padding say nothing about the image: they are dropped.
    want = sorted(tuple(round(v, 3) for v in (box[0], max(box[1], 0), box[2], min(box[3], 96)))
                  for box in tiles(256, 96) if box[3] > 0 and box[1] < 96)
    assert got == want
    assert prediction.masks.shape == (len(want), 96, 256) and prediction.masks.any()
    again = served.infer(image)
    assert labelled_score(Task.INSTANCE_SEGMENTATION, [again], [prediction]) == 1.0
    for box, mask in zip(prediction.boxes, prediction.masks):
        outside = mask.copy()
        outside[int(np.floor(box[1])):int(np.ceil(box[3])), int(np.floor(box[0])):int(np.ceil(box[2]))] = False
        assert not outside.any()


def test_yolov8_pose_gives_17_keypoints_per_box_in_image_pixels(tmp_path: Path, exported) -> None:
    served = engine(tmp_path, exported["pose"], manifest("pose", detection={"score_threshold": 0.5}))
    image = np.random.default_rng(2).integers(0, 255, (96, 128, 3), dtype=np.uint8)  # 16 rows of padding each side
    prediction = served.infer(image)
    assert labelled_score(Task.POSE, [served.infer(image)], [prediction]) == 1.0
    assert len(prediction.scores) == (SIZE // COARSE) ** 2  # every tile reaches into the image
    assert prediction.keypoints.shape == (len(prediction.scores), 17, 3)
    assert ((prediction.keypoints[..., :2] >= 0) & (prediction.keypoints[..., :2] <= SIZE)).all()
    assert ((prediction.keypoints[..., 2] >= 0) & (prediction.keypoints[..., 2] <= 1)).all()


def test_yolo26_sem_class_map_becomes_a_label_image_of_the_cameras_size(tmp_path: Path, exported) -> None:
    served = engine(tmp_path, exported["sem"], manifest("segmentation", segmentation={"format": "class_ids"}))
    image = np.random.default_rng(3).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    prediction = served.infer(image)
    assert prediction.label_image.shape == (60, 80) and int(prediction.label_image.max()) < 4
    assert prediction.scores.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("model, body, hint", [
    ("sem", manifest("segmentation"), "set segmentation.format: class_ids"),
    ("seg", manifest("instance_segmentation", instances={"mask_coefficients": 16}),
     "set instances.mask_coefficients: 32"),
    ("seg", manifest("pose"), "set task: instance_segmentation"),
    ("pose", manifest("pose", pose={"keypoints": 5}), "1 class(es) leave 51 keypoint values: set pose.keypoints: 17"),
    ("pose", manifest("instance_segmentation"), "no mask protos"),
])
def test_verify_refuses_an_exported_model_declared_with_the_wrong_layout(tmp_path: Path, exported, keys: Keys,
                                                                        capsys: pytest.CaptureFixture[str],
                                                                        model: str, body: dict, hint: str) -> None:
    bundle = signed_tar(tmp_path / "bundle.tar", keys.private, model=exported[model], manifest=body)
    assert main(["bundle", "verify", str(bundle), "--trust", str(keys.trust_dir)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and hint in err, err


@pytest.mark.parametrize("model, body", [
    ("sem", manifest("segmentation", segmentation={"format": "class_ids"})),
    ("pose", manifest("pose")),
])
def test_verify_says_ok_for_exported_models_declared_right(tmp_path: Path, exported, keys: Keys,
                                                           capsys: pytest.CaptureFixture[str], model: str,
                                                           body: dict) -> None:
    bundle = signed_tar(tmp_path / "bundle.tar", keys.private, model=exported[model], manifest=body)
    assert main(["bundle", "verify", str(bundle), "--trust", str(keys.trust_dir)]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_seg_model_with_the_labels_it_was_trained_on_passes_the_model_check(tmp_path: Path, exported) -> None:
    root = write_bundle(tmp_path / "ok", exported["seg"], manifest("instance_segmentation"), ("a", "b", "c"))
    check_model(root)
    root = write_bundle(tmp_path / "wrong", exported["seg"], manifest("instance_segmentation"), ("a", "b"))
    with pytest.raises(ModelCheckError, match="gives 3 classes but the labels file labels.txt lists 2"):
        check_model(root)
